package main

import (
	"math"
	"strings"
	"testing"
)

func TestGapMeter(t *testing.T) {
	g := gapMeter{threshold: 500, last: 1000}
	// Reads every 40 ns, then a 3 µs gap (an interrupt), then a gap of
	// exactly the threshold (not counted), then 10 µs (another task).
	for _, now := range []int64{1040, 1080, 4080, 4120, 4620, 14620, 14660} {
		g.observe(now)
	}
	if g.stolen != 3000+10000 {
		t.Errorf("stolen = %d, want 13000", g.stolen)
	}
	if g.iters != 7 || g.last != 14660 {
		t.Errorf("iters %d last %d", g.iters, g.last)
	}
	if p := g.pending(14660 + 400); p != 0 {
		t.Errorf("pending below the threshold = %d", p)
	}
	if p := g.pending(14660 + 2000); p != 2000 {
		t.Errorf("pending = %d, want 2000", p)
	}
}

func TestSpinWindow(t *testing.T) {
	a := []spinSnap{{CPU: 0, Elapsed: 1e9, Stolen: 1e8, Iters: 100, Exec: 5e8}, {CPU: 1, Elapsed: 1e9, Stolen: 0, Iters: 100, Exec: -1}}
	b := []spinSnap{{CPU: 1, Elapsed: 3e9, Stolen: 5e8, Iters: 100 + 1.5e9/50, Exec: 1e9}, {CPU: 0, Elapsed: 3e9, Stolen: 1e8 + 6e8, Iters: 100 + 1.4e9/35, Exec: 5e8 + 1.6e9}}
	us, err := spinWindow(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 2 {
		t.Fatalf("%d cpus", len(us))
	}
	u1, u0 := us[0], us[1]
	if u1.CPU != 1 || u1.Wall != 2e9 || u1.Stolen != 5e8 || u1.TaskNS != -1 || u1.IntrNS != -1 {
		t.Errorf("cpu1 %+v (unknown exec must leave the split unknown)", u1)
	}
	if math.Abs(u1.NSPerIter-50) > 1e-9 {
		t.Errorf("cpu1 ns/iter %v, want 50", u1.NSPerIter)
	}
	// cpu0: the spinner ran 1.6 s of 2 s (so other tasks had 0.4 s), and
	// 0.6 s was stolen in all: 0.2 s by interrupts on top of it.
	if u0.Stolen != 6e8 || u0.TaskNS != 4e8 || u0.IntrNS != 2e8 {
		t.Errorf("cpu0 %+v", u0)
	}
	st, wall := spinTotal(us)
	if st != 11e8 || wall != 2e9 {
		t.Errorf("total %d over %d", st, wall)
	}
	// A counted gap in progress at the first snapshot counted again at its
	// end cannot make a CPU more than fully busy.
	us, _ = spinWindow([]spinSnap{{CPU: 0, Elapsed: 0, Stolen: 0}}, []spinSnap{{CPU: 0, Elapsed: 100, Stolen: 150, Iters: 1}})
	if us[0].Stolen != 100 {
		t.Errorf("clamp: %+v", us[0])
	}
	for _, bad := range [][2][]spinSnap{
		{{{CPU: 0, Elapsed: 5}}, {{CPU: 1, Elapsed: 9}}},                       // cpu missing
		{{{CPU: 0, Elapsed: 5}}, {{CPU: 0, Elapsed: 5}}},                       // no time passed
		{{{CPU: 0, Elapsed: 5, Stolen: 3}}, {{CPU: 0, Elapsed: 9, Stolen: 2}}}, // backwards
		{{{CPU: 0, Elapsed: 5, Iters: 9}}, {{CPU: 0, Elapsed: 9, Iters: 2}}},   // backwards
	} {
		if _, err := spinWindow(bad[0], bad[1]); err == nil {
			t.Errorf("spinWindow(%v): no error", bad)
		}
	}
}

func TestNetPerUnit(t *testing.T) {
	// 0.9 CPU-s for 240k packets, the generator alone 0.3 CPU-s for 240k:
	// 2500 ns net per packet.
	if got := netPerUnit(9e8, 240000, 3e8, 240000); math.Abs(got-2500) > 1e-6 {
		t.Errorf("net = %v, want 2500", got)
	}
	if !math.IsNaN(netPerUnit(1, 0, 1, 1)) || !math.IsNaN(netPerUnit(1, 1, 1, 0)) {
		t.Error("no work must give NaN")
	}
	if got := perCPUSecond(2500); got != 400000 {
		t.Errorf("perCPUSecond(2500) = %v", got)
	}
	if !math.IsNaN(perCPUSecond(0)) || !math.IsNaN(perCPUSecond(-5)) || !math.IsNaN(perCPUSecond(math.NaN())) {
		t.Error("perCPUSecond of a non-positive cost must be NaN")
	}
}

func TestParseTaskSchedstat(t *testing.T) {
	e, w, err := parseTaskSchedstat([]byte("1128957 1081212 3\n"))
	if err != nil || e != 1128957 || w != 1081212 {
		t.Errorf("got %d %d %v", e, w, err)
	}
	for _, in := range []string{"", "1 2", "1 2 3 4", "x 2 3", "1 -2 3"} {
		if _, _, err := parseTaskSchedstat([]byte(in)); err == nil {
			t.Errorf("parseTaskSchedstat(%q): no error", in)
		}
	}
}

func TestRunSpinFlags(t *testing.T) {
	var errb strings.Builder
	if err := runSpin([]string{"-threshold", "1ns"}, strings.NewReader(""), &errb, &errb); err == nil {
		t.Error("a 1 ns threshold was accepted")
	}
}

func TestHTTPOK(t *testing.T) {
	for in, want := range map[string]bool{
		"HTTP/1.1 200 OK\r\n": true, "HTTP/1.0 200 OK\r\n": true, "HTTP/1.1 503 Service": false,
		"HTTP/1.1 2000": false, "": false, "garbage": false,
	} {
		if got := httpOK([]byte(in)); got != want {
			t.Errorf("httpOK(%q) = %v", in, got)
		}
	}
	var errb strings.Builder
	for _, args := range [][]string{{}, {"-dst", "x"}, {"-dst", "1.2.3.4:80", "-rate", "0"}, {"-dst", "1.2.3.4:80", "-max-inflight", "0"}} {
		if err := runConn(args, &errb, &errb); err == nil {
			t.Errorf("runConn(%q) accepted", args)
		}
	}
}

// The split is not clamped: gaps that fall short of the scheduler's count
// of other tasks' time show as a negative rest.
func TestSpinWindowShortGaps(t *testing.T) {
	us, err := spinWindow([]spinSnap{{CPU: 0, Elapsed: 0, Exec: 0}}, []spinSnap{{CPU: 0, Elapsed: 1000, Stolen: 300, Iters: 10, Exec: 600}})
	if err != nil {
		t.Fatal(err)
	}
	if us[0].TaskNS != 400 || us[0].IntrNS != -100 {
		t.Errorf("%+v, want TaskNS 400 and IntrNS -100", us[0])
	}
}

func TestTaskExecDelta(t *testing.T) {
	a := map[int]int64{1: 100, 2: 500, 3: 70}
	// 1 ran 50 ns, 2 did not run, 3 ended (lost), 4 was born and ran 30.
	b := map[int]int64{1: 150, 2: 500, 4: 30}
	if got := taskExecDelta(a, b); got != 80 {
		t.Errorf("delta = %d, want 80", got)
	}
	// A tid reused with a smaller count adds nothing rather than going negative.
	if got := taskExecDelta(map[int]int64{5: 900}, map[int]int64{5: 10}); got != 0 {
		t.Errorf("reused tid: %d", got)
	}
}

func TestParseNSLink(t *testing.T) {
	if ino, err := parseNSLink("net:[4026532281]"); err != nil || ino != 4026532281 {
		t.Errorf("got %d, %v", ino, err)
	}
	for _, bad := range []string{"mnt:[1]", "net:[x]", "net:[12", ""} {
		if _, err := parseNSLink(bad); err == nil {
			t.Errorf("parseNSLink(%q): no error", bad)
		}
	}
}

func TestLabCost(t *testing.T) {
	// Interrupts on top of the spinners count; a negative rest (snapshot
	// skew) and an unknown split (-1) add nothing.
	us := []spinUsage{{IntrNS: 300}, {IntrNS: -40}, {IntrNS: -1}}
	if got := labCost(1000, us); got != 1300 {
		t.Errorf("labCost = %d, want 1300", got)
	}
}
