package daemon

import (
	"strings"
	"testing"

	"gvs/ipvs"
	"gvs/ipvsadm"
)

func TestReloadCommands(t *testing.T) {
	cur := tableFrom(t, `
-A -t 198.51.100.10:80 -s rr
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m
-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m
-a -t 198.51.100.10:80 -r 198.18.2.13:8080 -m
-A -u 198.51.100.10:53 -s rr
-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m
`)
	svc := cur.Services()[0]
	if svc.Config.Proto != ipvs.ProtoTCP {
		t.Fatal("unexpected order")
	}
	keep := map[string]*ipvs.Dest{}
	for _, d := range svc.Dests() {
		keep[d.AddrPort().String()] = d
		d.Stats[0].InPkts.Add(7)
		d.ActiveConns.Add(1)
	}
	svc.Stats[0].InPkts.Add(21)

	// r3 goes, r4 comes, r2 changes weight, the UDP service goes, a new
	// service comes, and the timeouts change.
	cmds, err := ipvsadm.ParseRules(strings.NewReader(`
-A -t 198.51.100.10:80 -s rr
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m
-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 5
-a -t 198.51.100.10:80 -r 198.18.2.14:8080 -m
-A -t 198.51.100.11:443 -s wlc
-a -t 198.51.100.11:443 -r 198.18.2.11:443 -g
--set 100 20 30
`))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := ReloadChanges(cur, cmds)
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.Apply(batch...); err != nil {
		t.Fatal(err)
	}

	svcs := cur.Services()
	if len(svcs) != 2 {
		t.Fatalf("%d services after reload", len(svcs))
	}
	if svcs[0] != svc {
		t.Error("the kept service is a new object")
	}
	if got := svc.Stats[0].InPkts.Load(); got != 21 {
		t.Errorf("kept service counters reset: %d", got)
	}
	got := map[string]*ipvs.Dest{}
	for _, d := range svc.Dests() {
		got[d.AddrPort().String()] = d
	}
	if len(got) != 3 || got["198.18.2.13:8080"] != nil || got["198.18.2.14:8080"] == nil {
		t.Errorf("dests after reload: %v", got)
	}
	for _, ap := range []string{"198.18.2.11:8080", "198.18.2.12:8080"} {
		d := got[ap]
		if d != keep[ap] {
			t.Errorf("%s: surviving dest is a new object", ap)
			continue
		}
		if d.Stats[0].InPkts.Load() != 7 || d.ActiveConns.Load() != 1 || !d.Available() {
			t.Errorf("%s: counters or state lost", ap)
		}
	}
	if w := got["198.18.2.12:8080"].Weight(); w != 5 {
		t.Errorf("edited weight %d", w)
	}
	if keep["198.18.2.13:8080"].Available() {
		t.Error("removed dest still available (its connections must see it gone)")
	}
	if to := cur.Timeouts(); to != (ipvs.Timeouts{TCP: 100, TCPFin: 20, UDP: 30}) {
		t.Errorf("timeouts %+v", to)
	}

	// Reloading the same file again changes nothing.
	batch, err = ReloadChanges(cur, cmds)
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.Apply(batch...); err != nil {
		t.Fatal(err)
	}
	if cur.Services()[0] != svc || svc.Stats[0].InPkts.Load() != 21 {
		t.Error("an idempotent reload changed the service")
	}
}

func TestReloadCommandsErrors(t *testing.T) {
	cur := tableFrom(t, "-A -t 198.51.100.10:80 -s rr\n")
	cmds, err := ipvsadm.ParseRules(strings.NewReader("-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReloadChanges(cur, cmds); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a file that does not apply on its own: err %v", err)
	}
	if len(cur.Services()) != 1 {
		t.Error("a failed reload changed the table")
	}
}
