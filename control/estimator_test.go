package control

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"gvs/ipvs"
)

var rateHead = "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n" +
	"  -> RemoteAddress:Port\n"

// rateSetup makes a NAT service 198.51.100.10:80 with one real server.
func rateSetup(t *testing.T) (*testEngine, *ipvs.Service, *ipvs.Dest) {
	t.Helper()
	te := newTestEngine(t)
	te.mustRun(t, "-A", "-t", "198.51.100.10:80", "-s", "rr")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-m")
	svc := rateSvc(te)
	return te, svc, svc.Dests()[0]
}

func rateSvc(te *testEngine) *ipvs.Service {
	return te.Table.Service(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80})
}

// traffic adds one 2 s interval of traffic to svc and d: 10 conns, 1000
// packets in, 600 out, 100000 bytes in, 2 MB out (5 cps, 500 pps, 300 pps,
// 50000 B/s, 1 MB/s).
func traffic(svc *ipvs.Service, d *ipvs.Dest) {
	for _, s := range []*ipvs.CounterSlot{&svc.Stats[0], &d.Stats[1]} {
		s.Conns.Add(10)
		s.InPkts.Add(1000)
		s.OutPkts.Add(600)
		s.InBytes.Add(100000)
		s.OutBytes.Add(2_000_000)
	}
}

// oneTick is --rate after the first sample of traffic(): a quarter of the
// interval's rate, rounded as ip_vs_read_estimator does.
const oneTick = "TCP  198.51.100.10:80                    1      125       75    12500   250000\n" +
	"  -> 198.18.2.11:80                      1      125       75    12500   250000\n"

// TestRateFirstSample: the kernel's estimator starts with zero averages and
// a zero baseline (last_*), so the first estimation after a service or real
// server is added covers all its traffic since it was added. The first
// tick must not just take a baseline.
func TestRateFirstSample(t *testing.T) {
	te, svc, d := rateSetup(t)
	traffic(svc, d)
	te.TickEstimator()
	if got := te.mustRun(t, "-Ln", "--rate"); got != head0+rateHead+oneTick {
		t.Errorf("first tick after -A/-a:\n%q\nwant:\n%q", got, head0+rateHead+oneTick)
	}
}

const head0 = "IP Virtual Server version 1.2.1 (size=4096)\n"

// TestRate: --rate prints the estimator's averages, which follow IPVS's
// fixed-point EWMA (a quarter of the step per 2 s tick), and -Z resets them.
func TestRate(t *testing.T) {
	te, svc, d := rateSetup(t)
	interval := func() {
		traffic(svc, d)
		te.TickEstimator()
	}
	interval()
	if got := te.mustRun(t, "-Ln", "--rate", "-t", "198.51.100.10:80"); got != rateHead+oneTick {
		t.Errorf("after one tick:\n%q\nwant:\n%q", got, rateHead+oneTick)
	}
	for range 80 {
		interval()
	}
	want := rateHead +
		"TCP  198.51.100.10:80                    5      500      300    50000  1000000\n" +
		"  -> 198.18.2.11:80                      5      500      300    50000  1000000\n"
	if got := te.mustRun(t, "-Ln", "--rate", "-t", "198.51.100.10:80"); got != want {
		t.Errorf("steady state:\n%q\nwant:\n%q", got, want)
	}
	te.mustRun(t, "-Z", "-t", "198.51.100.10:80")
	want = rateHead +
		"TCP  198.51.100.10:80                    0        0        0        0        0\n" +
		"  -> 198.18.2.11:80                      0        0        0        0        0\n"
	if got := te.mustRun(t, "-Ln", "--rate", "-t", "198.51.100.10:80"); got != want {
		t.Errorf("after -Z:\n%q\nwant:\n%q", got, want)
	}
	// After -Z the next tick samples from the zeroed counters.
	interval()
	if got := te.mustRun(t, "-Ln", "--rate", "-t", "198.51.100.10:80"); got != rateHead+oneTick {
		t.Errorf("one tick after -Z:\n%q\nwant:\n%q", got, rateHead+oneTick)
	}
	// A deleted service is forgotten at the next tick.
	te.mustRun(t, "-D", "-t", "198.51.100.10:80")
	te.TickEstimator()
	if n := len(te.est.svcs); n != 0 {
		t.Errorf("%d service estimators left after -D", n)
	}
}

// steady runs n intervals of traffic() to svc and d.
func steady(te *testEngine, svc *ipvs.Service, d *ipvs.Dest, n int) {
	for range n {
		traffic(svc, d)
		te.TickEstimator()
	}
}

// TestRateDestFromTrash: a deleted real server goes to the trash with its
// estimator stopped (__ip_vs_del_dest); added back it is the same object
// and its estimator restarts from its frozen state (ip_vs_add_dest), so the
// first sample covers what it counted since its last sample, including the
// traffic of connections that kept flowing to it while it was deleted.
func TestRateDestFromTrash(t *testing.T) {
	te, svc, d := rateSetup(t)
	steady(te, svc, d, 80) // 500 pps in
	te.mustRun(t, "-d", "-t", "198.51.100.10:80", "-r", "198.18.2.11")
	d.Stats[0].InPkts.Add(4000) // existing connections, while in the trash
	te.TickEstimator()
	te.TickEstimator()
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-m")
	if svc.Dests()[0] != d {
		t.Fatal("the real server did not come back from the trash")
	}
	te.TickEstimator()
	// avg ~ 500<<10; + ((4000<<9) - avg) >> 2 = 875 pps.
	if got := te.est.destRates(d).InPPS; got != 875 {
		t.Errorf("dest from the trash: %d pps in, want 875", got)
	}
}

// TestRateServiceRecreated: IPVS keeps no deleted services, so a service
// deleted and added again has a new estimator, even when gvs reuses the
// Service object and no tick ran in between (a reload). A real server
// taken back from the trash into the new service gets ip_vs_zero_stats
// (__ip_vs_update_dest with old_svc != svc): its averages restart.
func TestRateServiceRecreated(t *testing.T) {
	for _, tickBetween := range []bool{false, true} {
		te, svc, d := rateSetup(t)
		steady(te, svc, d, 80)
		te.mustRun(t, "-D", "-t", "198.51.100.10:80")
		if tickBetween {
			te.TickEstimator()
		}
		te.mustRun(t, "-A", "-t", "198.51.100.10:80", "-s", "rr")
		te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-m")
		svc2 := rateSvc(te)
		d2 := svc2.Dests()[0]
		svc2.Stats[0].InPkts.Add(1000)
		d2.Stats[0].InPkts.Add(1000)
		te.TickEstimator()
		if got := te.est.svcRates(svc2).InPPS; got != 125 {
			t.Errorf("tick between %v: re-created service %d pps in, want 125", tickBetween, got)
		}
		if got := te.est.destRates(d2).InPPS; got != 125 {
			t.Errorf("tick between %v: its real server %d pps in, want 125", tickBetween, got)
		}
	}
}

// TestEstimatorShifts checks one sample against the kernel's integer
// arithmetic: rate = diff << 9 (<< 4 for bytes), avg += (rate - avg) >> 2
// with an arithmetic shift, read back as (avg + 0x1FF) >> 10 and
// (avg + 0xF) >> 5.
func TestEstimatorShifts(t *testing.T) {
	s := estState{avg: [numRates]int64{0, 5, 1 << 20, 7, 1 << 15}}
	s.last = [numRates]uint64{0, 0, 100, 0, 50}
	s.sample([numRates]uint64{3, 0, 100, 9, 50})
	want := [numRates]int64{
		0 + (3<<9-0)>>2,
		5 + (0-5)>>2, // -2: the shift floors
		1<<20 + (0-1<<20)>>2,
		7 + (9<<4-7)>>2,
		1<<15 + (0-1<<15)>>2,
	}
	if s.avg != want {
		t.Errorf("avg %v, want %v", s.avg, want)
	}
	r := s.rates()
	if r.CPS != uint64((want[0]+0x1FF)>>10) || r.InPPS != uint64((want[1]+0x1FF)>>10) ||
		r.InBPS != uint64((want[3]+0xF)>>5) || r.OutBPS != uint64((want[4]+0xF)>>5) {
		t.Errorf("rates %+v", r)
	}
}

// TestEstimatorDecay checks the EWMA arithmetic against a float model.
func TestEstimatorDecay(t *testing.T) {
	var s estState
	var cur [numRates]uint64
	model := 0.0
	for i := range 30 {
		if i < 15 {
			cur[1] += 2000 // 1000 pps
		}
		s.sample(cur)
		r := 0.0
		if i < 15 {
			r = 1000
		}
		model += (r - model) / 4
		got := float64(s.rates().InPPS)
		if got < model-2 || got > model+2 {
			t.Fatalf("tick %d: %v pps, model %.1f", i, got, model)
		}
	}
	// A counter that went backwards (zeroed behind the estimator's back)
	// adds nothing.
	cur[1] = 0
	s.sample(cur)
	if s.avg[1] < 0 {
		t.Errorf("negative average %d", s.avg[1])
	}
}

// statsHead is -Ln --stats -t's header.
var statsHead = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n" +
	"  -> RemoteAddress:Port\n"

const statsZero = "TCP  198.51.100.10:80                    0        0        0        0        0\n" +
	"  -> 198.18.2.11:80                      0        0        0        0        0\n"

// TestZeroKeepsLastSample: -Z zeroes the averages and moves the counters'
// baseline, but leaves the estimator's last sample (ip_vs_zero_stats:
// ip_vs_zero_estimator sets last_* to kstats, which the last estimation
// left equal to them). The first sample after -Z therefore covers the
// whole interval since the previous tick, traffic before the -Z included.
func TestZeroKeepsLastSample(t *testing.T) {
	te, svc, d := rateSetup(t)
	te.TickEstimator()
	traffic(svc, d) // one interval's traffic, before the -Z
	te.mustRun(t, "-Z")
	svcOnly := []string{"-t", "198.51.100.10:80"}
	if got := te.mustRun(t, append([]string{"-Ln", "--rate"}, svcOnly...)...); got != rateHead+statsZero {
		t.Errorf("--rate right after -Z:\n%q", got)
	}
	if got := te.mustRun(t, append([]string{"-Ln", "--stats"}, svcOnly...)...); got != statsHead+statsZero {
		t.Errorf("--stats right after -Z:\n%q", got)
	}
	te.TickEstimator()
	if got := te.mustRun(t, append([]string{"-Ln", "--rate"}, svcOnly...)...); got != rateHead+oneTick {
		t.Errorf("first tick after -Z:\n%q\nwant:\n%q", got, rateHead+oneTick)
	}
	// The listing counts from the -Z: only what came after.
	svc.Stats[5].InPkts.Add(3)
	d.Stats[5].InPkts.Add(3)
	want := statsHead +
		"TCP  198.51.100.10:80                    0        3        0        0        0\n" +
		"  -> 198.18.2.11:80                      0        3        0        0        0\n"
	if got := te.mustRun(t, append([]string{"-Ln", "--stats"}, svcOnly...)...); got != want {
		t.Errorf("--stats after -Z and 3 packets:\n%q\nwant:\n%q", got, want)
	}
}

// TestStatsServiceRecreated: ipvsadm -D, -A, -a of the same service and
// real server lists zero counts for both (a new IPVS service; the real
// server taken back from the trash gets ip_vs_zero_stats), while -d and -a
// of a real server of a service that lives on keeps its counts.
func TestStatsServiceRecreated(t *testing.T) {
	svcOnly := []string{"-Ln", "--stats", "-t", "198.51.100.10:80"}
	te, svc, d := rateSetup(t)
	traffic(svc, d)
	te.mustRun(t, "-d", "-t", "198.51.100.10:80", "-r", "198.18.2.11")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-m")
	kept := statsHead +
		"TCP  198.51.100.10:80                   10     1000      600   100000  2000000\n" +
		"  -> 198.18.2.11:80                     10     1000      600   100000  2000000\n"
	if got := te.mustRun(t, svcOnly...); got != kept {
		t.Errorf("after -d and -a:\n%q\nwant:\n%q", got, kept)
	}
	te.mustRun(t, "-D", "-t", "198.51.100.10:80")
	te.mustRun(t, "-A", "-t", "198.51.100.10:80", "-s", "rr")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-m")
	if rateSvc(te).Dests()[0] != d {
		t.Fatal("the real server did not come back from the trash")
	}
	if got := te.mustRun(t, svcOnly...); got != statsHead+statsZero {
		t.Errorf("after -D, -A, -a:\n%q\nwant:\n%q", got, statsHead+statsZero)
	}
	// The same through ipvsadm-restore (-C, then the rules, one batch).
	traffic(svc, d)
	_, errOut, code := te.run(root, "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11 -m\n", "prog=ipvsadm-restore")
	if code != 0 || errOut != "" {
		t.Fatalf("ipvsadm-restore: %d %q", code, errOut)
	}
	if got := te.mustRun(t, svcOnly...); got != statsHead+statsZero {
		t.Errorf("after ipvsadm-restore:\n%q\nwant:\n%q", got, statsHead+statsZero)
	}
}

// TestZeroWhileCounting: -Z, listings and estimator ticks while a worker
// counts (run with -race). After each -Z the listing never shows more than
// what the worker added since the -Z began (plus one in flight).
func TestZeroWhileCounting(t *testing.T) {
	te, svc, d := rateSetup(t)
	var progress atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
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
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				te.TickEstimator()
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := range 500 {
		p0 := progress.Load()
		te.mustRun(t, "-Z")
		out := te.mustRun(t, "-Ln", "--stats", "--exact", "-t", "198.51.100.10:80")
		p1 := progress.Load()
		lines := strings.Split(out, "\n")
		for _, l := range lines[2:4] {
			f := strings.Fields(l)
			n, err := strconv.ParseUint(f[3], 10, 64)
			if err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			if n > p1-p0+1 {
				t.Fatalf("round %d: %q lists %d packets, but only %d were added since the -Z", i, l, n, p1-p0)
			}
		}
	}
}
