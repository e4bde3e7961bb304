package main

import (
	"math"
	"testing"
)

const procStatSample = `cpu  100 5 50 1000 10 1 20 3 0 0
cpu0 60 5 30 500 5 1 15 2 0 0
cpu1 40 0 20 500 5 0 5 1 0 0
intr 12345 0 0
ctxt 999
`

func TestParseProcStat(t *testing.T) {
	ps, err := parseProcStat([]byte(procStatSample))
	if err != nil {
		t.Fatal(err)
	}
	want1 := cpuTimes{User: 40, System: 20, Idle: 500, IOWait: 5, SoftIRQ: 5, Steal: 1}
	if ps.CPUs[1] != want1 {
		t.Errorf("cpu1 = %+v, want %+v", ps.CPUs[1], want1)
	}
	if got := ps.All.Busy(); got != 100+5+50+1+20 {
		t.Errorf("all busy = %d", got)
	}
	if got := ps.CPUs[0].Total(); got != 60+5+30+500+5+1+15+2 {
		t.Errorf("cpu0 total = %d", got)
	}
	if len(ps.CPUs) != 2 {
		t.Errorf("%d cpus, want 2", len(ps.CPUs))
	}
}

func TestParseProcStatErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"intr 1 2 3\n",
		"cpu 1 2\n",
		"cpu 1 2 x 4 5\n",
		"cpu 1 2 3 4 5\ncpuX 1 2 3 4 5\n",
		"cpu 1 2 3 4 5\ncpu-1 1 2 3 4 5\n",
	} {
		if _, err := parseProcStat([]byte(in)); err == nil {
			t.Errorf("parseProcStat(%q): no error", in)
		}
	}
	// Old kernels have only four numbers after "cpu": the rest are 0.
	ps, err := parseProcStat([]byte("cpu 1 2 3 4\ncpu0 1 2 3 4\n"))
	if err != nil || ps.All.Idle != 4 || ps.All.SoftIRQ != 0 {
		t.Errorf("short but valid line: %+v, %v", ps, err)
	}
}

func TestCPUTimesSub(t *testing.T) {
	a := cpuTimes{User: 10, System: 5, SoftIRQ: 7, Idle: 100}
	b := cpuTimes{User: 15, System: 4, SoftIRQ: 9, Idle: 130}
	d := b.Sub(a)
	want := cpuTimes{User: 5, System: 0, SoftIRQ: 2, Idle: 30}
	if d != want {
		t.Errorf("Sub = %+v, want %+v (a counter going back gives 0)", d, want)
	}
}

func TestParsePidStat(t *testing.T) {
	for _, tc := range []struct {
		in         string
		utime, sys uint64
		ok         bool
	}{
		{"1234 (gvsd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0", 250, 75, true},
		{"77 (a) b) (c) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14", 11, 12, true},
		{"77 (x) R 1 2", 0, 0, false},
		{"no parenthesis", 0, 0, false},
		{"1 (x) R 1 2 3 4 5 6 7 8 9 10 u 12", 0, 0, false},
	} {
		u, s, err := parsePidStat([]byte(tc.in))
		if (err == nil) != tc.ok || u != tc.utime || s != tc.sys {
			t.Errorf("parsePidStat(%q) = %d, %d, %v; want %d, %d, ok=%v", tc.in, u, s, err, tc.utime, tc.sys, tc.ok)
		}
	}
}

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in            []float64
		n             int
		med, min, max float64
	}{
		{[]float64{3, 1, 2}, 3, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 4, 2.5, 1, 4},
		{[]float64{5}, 1, 5, 5, 5},
		{[]float64{nan, 7, 9}, 2, 8, 7, 9},
	} {
		s := summarize(tc.in)
		if s.N != tc.n || s.Median != tc.med || s.Min != tc.min || s.Max != tc.max {
			t.Errorf("summarize(%v) = %+v", tc.in, s)
		}
	}
	if s := summarize(nil); s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("summarize(nil) = %+v", s)
	}
}

func TestPercentile(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(i + 1)
	}
	for _, tc := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {0, 1}, {1, 1}} {
		if got := percentile(v, tc.p); got != tc.want {
			t.Errorf("percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile of nothing is not NaN")
	}
}

func TestDescribeBusy(t *testing.T) {
	a := procStat{CPUs: map[int]cpuTimes{0: {User: 0, Idle: 0}, 1: {}}}
	b := procStat{CPUs: map[int]cpuTimes{0: {User: 25, Idle: 75}, 1: {SoftIRQ: 50, Idle: 50}}}
	if got, want := describeBusy(a, b), "background busy cpu0 25% cpu1 50%"; got != want {
		t.Errorf("describeBusy = %q, want %q", got, want)
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte(procStatSample))
	f.Add([]byte("cpu 1 2 3 4\n"))
	f.Add([]byte("cpu0 99999999999999999999 1 2 3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parseProcStat(b)
		if err == nil && ps.CPUs == nil {
			t.Fatal("nil CPU map without error")
		}
	})
}

func FuzzParsePidStat(f *testing.F) {
	f.Add([]byte("1234 (gvsd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0"))
	f.Add([]byte("1 ()) R"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _, _ = parsePidStat(b) })
}

// TestCPUCharge pins the cpu case's accounting: softirq and irq of every
// CPU, user and system of the director's CPU only, each tick once.
func TestCPUCharge(t *testing.T) {
	cpus := map[int]cpuTimes{
		0: {User: 100, Nice: 1, System: 20, Idle: 5, IRQ: 2, SoftIRQ: 30}, // generator: its user/system is not forwarding
		1: {User: 7, Nice: 0, System: 11, Idle: 60, IOWait: 1, IRQ: 1, SoftIRQ: 9, Steal: 3},
	}
	got, all := cpuCharge(cpus, 1)
	if want := uint64(2 + 30 + 1 + 9 + 7 + 11); got != want {
		t.Errorf("charged %d ticks, want %d", got, want)
	}
	if all.User != 108 || all.System != 31 || all.SoftIRQ != 39 || all.IRQ != 3 || all.Total() != 108+31+39+3+65+1+3 {
		t.Errorf("sum %+v", all)
	}
	if got, _ := cpuCharge(cpus, 0); got != 2+30+1+9+101+20 {
		t.Errorf("director CPU 0: charged %d", got)
	}
}

// TestLastStats reads the last complete stats line of gvsd's console log.
func TestLastStats(t *testing.T) {
	log := "2026-11-21T10:00:00.000Z\tINFO\tgvsd ready\n" +
		"2026-11-21T10:00:02.000Z\tDEBUG\tdaemon/daemon.go:315\tstats\t{\"rx\": 10, \"go_allocs\": 100, \"go_gc_cycles\": 1}\n" +
		"2026-11-21T10:00:04.000Z\tDEBUG\tdaemon/daemon.go:315\tstats\t{\"rx\": 20, \"go_allocs\": 150, \"go_gc_cycles\": 2, \"actions\": {}}\n" +
		"2026-11-21T10:00:06.000Z\tDEBUG\tdaemon/daemon.go:315\tstats\t{\"rx\": 3"
	st, n, err := lastStats(log)
	if err != nil || n != 2 || st != (gvsdStats{RX: 20, GoAllocs: 150, GoGCCycles: 2}) {
		t.Errorf("lastStats = %+v, %d, %v", st, n, err)
	}
	if _, _, err := lastStats("gvsd ready\n"); err == nil {
		t.Error("no stats line: no error")
	}
}
