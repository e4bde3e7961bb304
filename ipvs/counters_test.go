package ipvs_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"gvs/ipvs"
	"gvs/ipvsadm"
)

// counterSetup makes 10.0.0.1:80 with one real server and counts 5
// connections and 100 packets in on both.
func counterSetup(t *testing.T) (*ipvs.Table, *ipvs.Service, *ipvs.Dest) {
	t.Helper()
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab, "-A -t 10.0.0.1:80", "-a -t 10.0.0.1:80 -r 192.168.1.1 -m")
	svc := tab.Service(key("-t 10.0.0.1:80"))
	d := svc.Dests()[0]
	for _, c := range []*ipvs.Counters{&svc.Stats, &d.Stats} {
		c[2].Conns.Add(5)
		c[2].InPkts.Add(100)
	}
	return tab, svc, d
}

// TestZeroMovesBaseline: -Z moves the baseline to the current counts
// (ip_vs_zero_stats: kstats0 = kstats); later traffic counts from there.
func TestZeroMovesBaseline(t *testing.T) {
	tab, svc, d := counterSetup(t)
	mustApply(t, tab, "-Z")
	d.Stats[0].InPkts.Add(3)
	svc.Stats[0].InPkts.Add(3)
	want := ipvs.Totals{InPkts: 3}
	if svc.Counts() != want || d.Counts() != want {
		t.Errorf("after -Z and 3 packets: service %+v, real server %+v, want %+v", svc.Counts(), d.Counts(), want)
	}
	if z := d.Zeroed(); z.Base != (ipvs.Totals{Conns: 5, InPkts: 100}) || z.Zeroings == 0 {
		t.Errorf("real server's zeroing %+v", z)
	}
	// -E and -e keep the counts (ip_vs_edit_service, ip_vs_edit_dest).
	mustApply(t, tab, "-E -t 10.0.0.1:80 -s wrr", "-e -t 10.0.0.1:80 -r 192.168.1.1 -m -w 3")
	if svc.Counts() != want || d.Counts() != want {
		t.Errorf("after -E/-e: service %+v, real server %+v", svc.Counts(), d.Counts())
	}
}

// TestZeroConcurrent: -Z while a worker counts. The workers' counters are
// never written by -Z (they only grow), and after -Z the listed count
// never exceeds what the worker added since the -Z began (one increment of
// slack: the worker counts, then publishes its progress).
func TestZeroConcurrent(t *testing.T) {
	tab, svc, d := counterSetup(t)
	var progress atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for range 64 {
				d.Stats[1].InPkts.Add(1)
				svc.Stats[1].InPkts.Add(1)
				progress.Add(1)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := range 2000 {
		raw0 := svc.Stats.Sum().InPkts
		p0 := progress.Load()
		mustApply(t, tab, "-Z -t 10.0.0.1:80")
		got, gotD := svc.Counts().InPkts, d.Counts().InPkts
		p1 := progress.Load()
		raw1 := svc.Stats.Sum().InPkts
		if raw1 < raw0 {
			t.Fatalf("round %d: the workers' counter went back from %d to %d", i, raw0, raw1)
		}
		if got > p1-p0+1 || gotD > p1-p0+1 {
			t.Fatalf("round %d: listed %d (service) %d (real server) after -Z, but only %d were added since", i, got, gotD, p1-p0)
		}
	}
}

// TestRecreatedServiceZeroesReusedDests: a real server taken back by its
// service deleted and created again starts from zero counts
// (__ip_vs_update_dest: old_svc != svc, ip_vs_zero_stats), in separate
// transactions or one; its connections and object are kept.
func TestRecreatedServiceZeroesReusedDests(t *testing.T) {
	for _, oneBatch := range []bool{false, true} {
		tab, svc, d := counterSetup(t)
		d.ActiveConns.Add(2)
		lines := []string{"-D -t 10.0.0.1:80", "-A -t 10.0.0.1:80", "-a -t 10.0.0.1:80 -r 192.168.1.1 -m"}
		if oneBatch {
			applyBatch(t, tab, lines...)
		} else {
			mustApply(t, tab, lines[:2]...)
			// Connections to the trashed real server keep counting.
			d.Stats[0].InPkts.Add(7)
			mustApply(t, tab, lines[2])
		}
		svc2 := tab.Service(key("-t 10.0.0.1:80"))
		if svc2 != svc || svc2.Dests()[0] != d || d.ActiveConns.Load() != 2 {
			t.Fatalf("one batch %v: objects not reused", oneBatch)
		}
		if svc.Counts() != (ipvs.Totals{}) || d.Counts() != (ipvs.Totals{}) {
			t.Errorf("one batch %v: re-created service %+v, its real server %+v, want zero", oneBatch, svc.Counts(), d.Counts())
		}
		d.Stats[0].InPkts.Add(1)
		if d.Counts().InPkts != 1 {
			t.Errorf("one batch %v: %d packets after one", oneBatch, d.Counts().InPkts)
		}
	}
}

// TestFlushRestoreZeroesReusedDests: -C then the rules again (ipvsadm-restore)
// re-creates every service.
func TestFlushRestoreZeroesReusedDests(t *testing.T) {
	tab, svc, d := counterSetup(t)
	applyBatch(t, tab, "-C", "-A -t 10.0.0.1:80", "-a -t 10.0.0.1:80 -r 192.168.1.1 -m")
	if tab.Service(key("-t 10.0.0.1:80")) != svc || svc.Dests()[0] != d {
		t.Fatal("objects not reused")
	}
	if svc.Counts() != (ipvs.Totals{}) || d.Counts() != (ipvs.Totals{}) {
		t.Errorf("after -C and restore: service %+v, real server %+v", svc.Counts(), d.Counts())
	}
}

// TestDestBackToLiveServiceKeepsCounts: a real server deleted and added
// back to a service that lived on keeps its counts (no old_svc != svc),
// and -Z in between does not reach it in the trash (ip_vs_zero_service
// walks the service's destinations only).
func TestDestBackToLiveServiceKeepsCounts(t *testing.T) {
	tab, _, d := counterSetup(t)
	mustApply(t, tab, "-d -t 10.0.0.1:80 -r 192.168.1.1", "-Z")
	d.Stats[0].InPkts.Add(7)
	mustApply(t, tab, "-a -t 10.0.0.1:80 -r 192.168.1.1 -m")
	if got, want := d.Counts(), (ipvs.Totals{Conns: 5, InPkts: 107}); got != want {
		t.Errorf("real server back from the trash: %+v, want %+v", got, want)
	}
	// Its service created again meanwhile: zeroed.
	mustApply(t, tab, "-d -t 10.0.0.1:80 -r 192.168.1.1", "-D -t 10.0.0.1:80", "-A -t 10.0.0.1:80")
	mustApply(t, tab, "-a -t 10.0.0.1:80 -r 192.168.1.1 -m")
	if tab.Service(key("-t 10.0.0.1:80")).Dests()[0] != d || d.Counts() != (ipvs.Totals{}) {
		t.Errorf("real server taken back by the re-created service: %+v", d.Counts())
	}
}

// applyBatch parses command lines and applies them as one batch (as -R
// does).
func applyBatch(t *testing.T, tab *ipvs.Table, lines ...string) {
	t.Helper()
	var cmds []*ipvsadm.Command
	for _, l := range lines {
		c, err := ipvsadm.ParseArgs(strings.Fields(l))
		if err != nil {
			t.Fatalf("ParseArgs(%q): %v", l, err)
		}
		cmds = append(cmds, c)
	}
	if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
		t.Fatal(err)
	}
}
