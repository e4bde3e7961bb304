package daemon

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"gvs/health"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/keepalived"
	"gvs/scheduler"
)

// kaLab is a keepalived manager over a plain table, with fake probes whose
// outcome the test sets per real server address, a fake clock and probes
// run inline: deterministic.
type kaLab struct {
	t     *testing.T
	table *ipvs.Table
	clock *health.FakeClock
	m     *keepalivedManager
	logs  *observer.ObservedLogs
	path  string

	mu   sync.Mutex
	down map[netip.Addr]bool
}

type kaProbe struct {
	l    *kaLab
	kind health.Kind
	addr netip.Addr
}

func (p *kaProbe) Kind() health.Kind { return p.kind }
func (p *kaProbe) Steps() int        { return 1 }
func (p *kaProbe) Check(context.Context, int) health.Result {
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	if p.l.down[p.addr] {
		return health.Result{Err: errors.New("connection refused")}
	}
	return health.Result{}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newKALab(t *testing.T, conf, rules string) (*kaLab, error) {
	t.Helper()
	l := &kaLab{t: t, clock: health.NewFakeClock(t0), down: map[netip.Addr]bool{}}
	l.table = ipvs.NewTable(scheduler.New)
	l.path = filepath.Join(t.TempDir(), "keepalived.conf")
	l.write(conf)
	core, logs := observer.New(zap.InfoLevel)
	l.logs = logs
	m, err := newKeepalived(l.path, l.table, zap.New(core), kaOptions{ConfigID: "lb1",
		Probe: func(_ *keepalived.VirtualServer, rs *keepalived.RealServer, c *keepalived.Checker) (health.Probe, error) {
			return &kaProbe{l: l, kind: health.Kind(c.Kind), addr: rs.Dest.Addr}, nil
		},
		Clock: l.clock, Runner: health.InlineRunner{}, Scripts: nopScripts{},
		Random: func(time.Duration) time.Duration { return 0 }})
	if err != nil {
		return nil, err
	}
	l.m = m
	if rules != "" {
		cmds, err := ipvsadm.ParseRules(strings.NewReader(rules))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.checkRules("rules", cmds); err != nil {
			return nil, err
		}
		if err := ipvsadm.ApplyAll(l.table, cmds); err != nil {
			t.Fatal(err)
		}
	}
	m.startChecks()
	t.Cleanup(m.stopChecks)
	return l, nil
}

type nopScripts struct{}

func (nopScripts) Run(health.Script) {}

func (l *kaLab) write(conf string) {
	if err := os.WriteFile(l.path, []byte(conf), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

func (l *kaLab) setDown(addr string, down bool) {
	l.mu.Lock()
	l.down[netip.MustParseAddr(addr)] = down
	l.mu.Unlock()
}

func (l *kaLab) at(d time.Duration) { l.clock.Advance(t0.Add(d).Sub(l.clock.Now())) }

func (l *kaLab) save() string {
	var b bytes.Buffer
	l.table.Read(func(svcs []*ipvs.Service) { _ = ipvsadm.WriteSave(&b, svcs, true) })
	return b.String()
}

func (l *kaLab) logged(msg string) bool {
	for _, e := range l.logs.All() {
		if e.Message == msg {
			return true
		}
	}
	return false
}

const kaNAT = `
global_defs {
    router_id lb1
    lvs_timeouts tcp 800 tcpfin 100 udp 200
}
virtual_server 198.51.100.10 80 {
    delay_loop 10
    lvs_sched wlc
    lvs_method NAT
    protocol TCP
    quorum 2
    sorry_server 198.18.2.99 8080
    real_server 198.18.2.11 8080 {
        weight 3
        inhibit_on_failure
        TCP_CHECK {
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
    real_server 198.18.2.12 8080 {
        weight 2
        HTTP_GET {
            url {
                path /healthz
            }
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
}
`

// The keepalived.conf's services are in the table with their real servers
// before any check; a failing inhibited real server goes to weight 0
// (gvsadm -Ln shows it as under keepalived), a failing plain one is
// deleted; losing the quorum brings the sorry server in; recovery takes it
// out again. Timeouts come from lvs_timeouts.
func TestKeepalivedStartAndFailures(t *testing.T) {
	l, err := newKALab(t, kaNAT, "")
	if err != nil {
		t.Fatal(err)
	}
	want := `-A -t 198.51.100.10:80 -s wlc
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 3
-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 2
`
	if got := l.save(); got != want {
		t.Fatalf("at start:\n%s\nwant\n%s", got, want)
	}
	if to := l.table.Timeouts(); to != (ipvs.Timeouts{TCP: 800, TCPFin: 100, UDP: 200}) {
		t.Errorf("timeouts %+v", to)
	}
	l.at(time.Second) // first checks: all fine
	if got := l.save(); got != want {
		t.Fatalf("after the first checks:\n%s", got)
	}
	// .11 fails: retry 1 → down at the second failure (1 s apart), weight 0.
	l.setDown("198.18.2.11", true)
	l.at(11 * time.Second)
	l.at(12 * time.Second)
	want = `-A -t 198.51.100.10:80 -s wlc
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 0
-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 2
`
	if got := l.save(); got != want {
		t.Fatalf("after .11 failed:\n%s\nwant\n%s", got, want)
	}
	if !l.logged("Disabling service [198.18.2.11]:tcp:8080 of VS [198.51.100.10]:tcp:80") {
		t.Error("transition not logged in keepalived's words")
	}
	// .12 fails too: quorum 2 lost (alive weight 0): .12 deleted, sorry in.
	l.setDown("198.18.2.12", true)
	l.at(22 * time.Second)
	want = `-A -t 198.51.100.10:80 -s wlc
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 0
-a -t 198.51.100.10:80 -r 198.18.2.99:8080 -m -w 1
`
	if got := l.save(); got != want {
		t.Fatalf("after the quorum was lost:\n%s\nwant\n%s", got, want)
	}
	// Both recover: the sorry server leaves, both come back.
	l.setDown("198.18.2.11", false)
	l.setDown("198.18.2.12", false)
	l.at(32 * time.Second)
	// HTTP_GET walks its urls once more after the failed one answers
	// (check_http.c): up one delay_loop later.
	l.at(42 * time.Second)
	want = `-A -t 198.51.100.10:80 -s wlc
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 3
-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 2
`
	if got := l.save(); got != want {
		t.Fatalf("after recovery:\n%s\nwant\n%s", got, want)
	}
	// The health metrics follow: .11's TCP_CHECK went down once and up once.
	var found bool
	for _, b := range l.m.HealthSnapshot() {
		if b.Backend == netip.MustParseAddrPort("198.18.2.11:8080") {
			found = true
			c := b.Checkers[0]
			if c.Name != "TCP_CHECK" || c.DownTransitions != 1 || c.UpTransitions != 1 || c.Failures != 3 || c.Successes != 3 ||
				!b.Up || b.ConfiguredWeight != 3 || b.Service.Port != 80 {
				t.Errorf("health snapshot of .11: %+v %+v", b, c)
			}
		}
	}
	if !found {
		t.Error("no health snapshot for .11")
	}
}

// A service defined in both the rules file and the keepalived.conf is an
// error at start, in one line naming both.
func TestKeepalivedRulesConflict(t *testing.T) {
	_, err := newKALab(t, kaNAT, "-A -t 198.51.100.10:80 -s rr\n-A -t 198.51.100.11:80 -s rr\n")
	if err == nil {
		t.Fatal("conflict accepted")
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "-t 198.51.100.10:80") ||
		!strings.Contains(msg, "rules") || !strings.Contains(msg, "keepalived.conf") {
		t.Errorf("error %q", msg)
	}
	// Beside each other, distinct services are fine.
	l, err := newKALab(t, kaNAT, "-A -t 198.51.100.11:80 -s rr\n-a -t 198.51.100.11:80 -r 198.18.2.21:80 -m\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(l.table.Services()); got != 2 {
		t.Errorf("%d services", got)
	}
	// lvs_timeouts win over the rules file's --set.
	l, err = newKALab(t, kaNAT, "--set 10 20 30\n")
	if err != nil {
		t.Fatal(err)
	}
	if to := l.table.Timeouts(); to != (ipvs.Timeouts{TCP: 800, TCPFin: 100, UDP: 200}) {
		t.Errorf("timeouts %+v", to)
	}
}

// A configuration keepalived cannot run is refused, and nothing is
// programmed.
func TestKeepalivedFatal(t *testing.T) {
	_, err := newKALab(t, "virtual_server 192.0.2.10 80 {\n protocol TCP\n delay_loop\n real_server 10.0.0.1 80 {\n }\n}\n", "")
	if err == nil {
		t.Fatal("accepted")
	}
}

// A reload applies the difference: a kept real server keeps its Dest
// object (counters, connections), a failed one is not re-added, a weight
// change is an edit, a removed real server is deleted, a new one added;
// the health state of unchanged checkers is kept.
func TestKeepalivedReload(t *testing.T) {
	conf := strings.Replace(kaNAT, "    quorum 2\n", "", 1)
	conf = strings.Replace(conf, "    sorry_server 198.18.2.99 8080\n", "", 1)
	conf = strings.Replace(conf, "        inhibit_on_failure\n", "", 1)
	l, err := newKALab(t, conf, "")
	if err != nil {
		t.Fatal(err)
	}
	l.at(time.Second)
	l.setDown("198.18.2.12", true)
	l.at(11 * time.Second)
	l.at(12 * time.Second) // .12 deleted
	svc := l.table.Services()[0]
	d11 := svc.Dests()[0]
	if d11.AddrPort() != netip.MustParseAddrPort("198.18.2.11:8080") || len(svc.Dests()) != 1 {
		t.Fatalf("before reload:\n%s", l.save())
	}
	// Weight of .11 3 → 5, .13 added; .12 unchanged (still failed).
	next := strings.Replace(conf, "weight 3", "weight 5", 1)
	next = strings.Replace(next, "    real_server 198.18.2.12 8080 {", `    real_server 198.18.2.13 8080 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
        }
    }
    real_server 198.18.2.12 8080 {`, 1)
	l.write(next)
	p, err := l.m.prepareReload()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.m.applyReload(p); err != nil {
		t.Fatal(err)
	}
	want := `-A -t 198.51.100.10:80 -s wlc
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 5
-a -t 198.51.100.10:80 -r 198.18.2.13:8080 -m -w 1
`
	if got := l.save(); got != want {
		t.Fatalf("after reload:\n%s\nwant\n%s", got, want)
	}
	if l.table.Services()[0] != svc || l.table.Services()[0].Dests()[len(svc.Dests())-1] != d11 {
		t.Error("the kept service or real server is a new object")
	}
	st := l.m.eng.Status()[0]
	for _, r := range st.Reals {
		if r.Dest.Addr == netip.MustParseAddr("198.18.2.11") && r.Checkers[0].Checks != 2 {
			t.Errorf(".11's checker lost its state: %+v", r.Checkers[0])
		}
	}
	// Removing .11 from the file deletes it; the service stays.
	l.write(strings.Replace(next, "    real_server 198.18.2.11 8080 {", "    real_server 198.18.2.14 8080 {", 1))
	if p, err = l.m.prepareReload(); err != nil {
		t.Fatal(err)
	}
	if err := l.m.applyReload(p); err != nil {
		t.Fatal(err)
	}
	want = `-A -t 198.51.100.10:80 -s wlc
-a -t 198.51.100.10:80 -r 198.18.2.13:8080 -m -w 1
-a -t 198.51.100.10:80 -r 198.18.2.14:8080 -m -w 5
`
	if got := l.save(); got != want {
		t.Fatalf("after the second reload:\n%s\nwant\n%s", got, want)
	}
	// A broken file changes nothing.
	l.write("virtual_server 192.0.2.10 80 {\n protocol TCP\n delay_loop\n real_server 10.0.0.1 80 {\n }\n}\n")
	if _, err := l.m.prepareReload(); err == nil {
		t.Error("broken configuration accepted")
	}
	if got := l.save(); got != want {
		t.Fatalf("after a refused reload:\n%s", got)
	}
}

// The rules-file part of a reload leaves the keepalived.conf's services
// alone.
func TestReloadChangesSkipsKeepalived(t *testing.T) {
	cur := tableFrom(t, "-A -t 198.51.100.10:80 -s rr\n-A -t 198.51.100.11:80 -s rr\n")
	cmds, err := ipvsadm.ParseRules(strings.NewReader("-A -t 198.51.100.11:80 -s wrr\n"))
	if err != nil {
		t.Fatal(err)
	}
	ka := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80}
	batch, _, err := reloadChanges(cur, cmds, func(k ipvs.ServiceKey) bool { return k == ka })
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.Apply(batch...); err != nil {
		t.Fatal(err)
	}
	if cur.Service(ka) == nil {
		t.Error("the keepalived service was deleted by the rules reload")
	}
}

// A reload adding an address to a kept virtual_server_group gives the new
// IPVS service the group's real servers as the health engine has them.
func TestKeepalivedReloadGroupEntry(t *testing.T) {
	conf := `
virtual_server_group WEB {
    198.51.100.20 80
}
virtual_server group WEB {
    delay_loop 10
    lvs_sched rr
    lvs_method DR
    protocol TCP
    real_server 198.18.2.31 80 {
        weight 2
        TCP_CHECK {
            connect_timeout 1
        }
    }
    real_server 198.18.2.32 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
`
	l, err := newKALab(t, conf, "")
	if err != nil {
		t.Fatal(err)
	}
	l.setDown("198.18.2.32", true)
	l.at(time.Second) // .32 fails its first check: deleted
	l.write(strings.Replace(conf, "    198.51.100.20 80\n", "    198.51.100.20 80\n    198.51.100.21 80\n", 1))
	p, err := l.m.prepareReload()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.m.applyReload(p); err != nil {
		t.Fatal(err)
	}
	want := `-A -t 198.51.100.20:80 -s rr
-a -t 198.51.100.20:80 -r 198.18.2.31:80 -g -w 2
-A -t 198.51.100.21:80 -s rr
-a -t 198.51.100.21:80 -r 198.18.2.31:80 -g -w 2
`
	if got := l.save(); got != want {
		t.Fatalf("after adding a group entry:\n%s\nwant\n%s", got, want)
	}
	// .32 recovers: added to both.
	l.setDown("198.18.2.32", false)
	l.at(11 * time.Second)
	if got := l.save(); strings.Count(got, "198.18.2.32:80 -g -w 1") != 2 {
		t.Errorf("after recovery:\n%s", got)
	}
}
