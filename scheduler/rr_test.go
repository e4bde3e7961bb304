package scheduler

import (
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"gvs/ipvs"
)

func seqString(s []string) string { return strings.Join(s, "") }

func TestRR(t *testing.T) {
	f := flow("198.51.100.1", "192.0.2.1", 1000)
	t.Run("order", func(t *testing.T) {
		svc, m := build(t, spec{name: "A", w: 1}, spec{name: "B", w: 7}, spec{name: "C", w: 1})
		s := mustNew(t, "rr", 0)
		s.Update(svc)
		if got := seqString(picks(s, svc, m, f, 7)); got != "ABCABCA" {
			t.Fatalf("picks %s, want ABCABCA", got)
		}
	})
	t.Run("weight0 and overload skipped", func(t *testing.T) {
		svc, m := build(t, spec{name: "A", w: 1}, spec{name: "B", w: 0}, spec{name: "C", w: 1}, spec{name: "D", w: 1, over: true})
		s := mustNew(t, "rr", 0)
		s.Update(svc)
		if got := seqString(picks(s, svc, m, f, 5)); got != "ACACA" {
			t.Fatalf("picks %s, want ACACA", got)
		}
		// D's overload clears: it is next after C.
		setOverload(m["D"], false)
		if got := seqString(picks(s, svc, m, f, 4)); got != "CDAC" {
			t.Fatalf("picks %s, want CDAC", got)
		}
	})
	t.Run("none usable", func(t *testing.T) {
		svc, _ := build(t, spec{name: "A", w: 0}, spec{name: "B", w: 1, over: true})
		s := mustNew(t, "rr", 0)
		s.Update(svc)
		if d := s.Schedule(svc, f); d != nil {
			t.Fatalf("got %v, want nil", d.AddrPort())
		}
		empty := testService(0)
		s.Update(empty)
		if d := s.Schedule(empty, f); d != nil {
			t.Fatal("empty service scheduled")
		}
	})
	t.Run("cursor follows list changes", func(t *testing.T) {
		svc, m := build(t, spec{name: "A", w: 1}, spec{name: "B", w: 1}, spec{name: "C", w: 1})
		s := mustNew(t, "rr", 0)
		s.Update(svc)
		if got := seqString(picks(s, svc, m, f, 2)); got != "AB" {
			t.Fatalf("picks %s", got)
		}
		// Add D at the head: the cursor stays on B, so C comes next, then D.
		d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: m["A"].Addr.Next().Next().Next().Next(), Port: 1, Weight: 1})
		m["D"] = d
		svc.SetDests(append([]*ipvs.Dest{d}, svc.Dests()...))
		s.Update(svc)
		if got := seqString(picks(s, svc, m, f, 3)); got != "CDA" {
			t.Fatalf("after add: picks %s, want CDA", got)
		}
		// Delete A (the last pick): the cursor moves to D, B comes next.
		m["A"].SetUnavailable()
		svc.SetDests([]*ipvs.Dest{m["D"], m["B"], m["C"]})
		s.Update(svc)
		if got := seqString(picks(s, svc, m, f, 3)); got != "BCD" {
			t.Fatalf("after delete: picks %s, want BCD", got)
		}
		// Delete D (the head, last pick) and C: back to the head.
		svc.SetDests([]*ipvs.Dest{m["B"]})
		s.Update(svc)
		if got := seqString(picks(s, svc, m, f, 2)); got != "BB" {
			t.Fatalf("after delete head: picks %s, want BB", got)
		}
	})
}

// TestRRConcurrent checks that concurrent picks are serialised: every
// destination gets exactly its share.
func TestRRConcurrent(t *testing.T) {
	svc, _ := build(t, spec{w: 1}, spec{w: 1}, spec{w: 1}, spec{w: 1}, spec{w: 1})
	s := mustNew(t, "rr", 0)
	s.Update(svc)
	counts := countConcurrent(t, s, svc, 4, 5000)
	for i, c := range counts {
		if c != 4*5000/5 {
			t.Errorf("dest %d got %d picks, want %d", i, c, 4*5000/5)
		}
	}
}

// countConcurrent runs g goroutines doing n schedules each and counts the
// picks per destination Index.
func countConcurrent(t *testing.T, s ipvs.Scheduler, svc *ipvs.Service, g, n int) []int {
	t.Helper()
	per := make([][]int, g)
	var wg sync.WaitGroup
	for k := range g {
		per[k] = make([]int, len(svc.Dests()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				d := s.Schedule(svc, clientFlow(i))
				if d == nil {
					t.Error("nil pick")
					return
				}
				per[k][d.Index]++
			}
		}()
	}
	wg.Wait()
	total := make([]int, len(svc.Dests()))
	for _, p := range per {
		for i, c := range p {
			total[i] += c
		}
	}
	return total
}

func TestWRR(t *testing.T) {
	f := flow("198.51.100.1", "192.0.2.1", 1000)
	tests := []struct {
		desc    string
		weights []int
		want    string // one period or more, in kernel order
	}{
		{"4,3,2 interleaved", []int{4, 3, 2}, "AABABCABC" + "AABABCABC"},
		{"gcd 2", []int{4, 2}, "AAB" + "AAB"},
		{"gcd 3 with equal", []int{3, 6, 3}, "BABC" + "BABC"},
		{"equal weights = rr", []int{1, 1, 1}, "ABCABC"},
		{"weight 0 never", []int{2, 0, 1}, "AACAAC"},
		{"single", []int{5}, "AAAA"},
		{"all zero", []int{0, 0}, "--"},
	}
	for _, mode := range []struct {
		name   string
		maxSeq int
	}{{"sequence", 0}, {"walk", -1}} {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.desc, func(t *testing.T) {
				var specs []spec
				for i, w := range tt.weights {
					specs = append(specs, spec{name: string(rune('A' + i)), w: w})
				}
				svc, m := build(t, specs...)
				s := &wrr{maxSeq: mode.maxSeq}
				s.Update(svc)
				if got := seqString(picks(s, svc, m, f, len(tt.want))); got != tt.want {
					t.Fatalf("picks %s, want %s", got, tt.want)
				}
			})
		}
	}
}

func TestWRROverloadAndUpdate(t *testing.T) {
	f := flow("198.51.100.1", "192.0.2.1", 1000)
	for _, maxSeq := range []int{0, -1} {
		svc, m := build(t, spec{name: "A", w: 4}, spec{name: "B", w: 3}, spec{name: "C", w: 2})
		s := &wrr{maxSeq: maxSeq}
		s.Update(svc)
		// A overloaded: the kernel's scan skips it.
		setOverload(m["A"], true)
		if got := seqString(picks(s, svc, m, f, 6)); got != "BBCBCB" {
			t.Fatalf("maxSeq %d: overloaded A: picks %s, want BBCBCB", maxSeq, got)
		}
		setOverload(m["A"], false)
		setOverload(m["B"], true)
		setOverload(m["C"], true)
		if got := seqString(picks(s, svc, m, f, 3)); got != "AAA" {
			t.Fatalf("maxSeq %d: only A: picks %s", maxSeq, got)
		}
		setOverload(m["A"], true)
		if d := s.Schedule(svc, f); d != nil {
			t.Fatalf("maxSeq %d: all overloaded, got a pick", maxSeq)
		}
	}

	// Update keeps the pass (cw) and restarts at the list head.
	for _, maxSeq := range []int{0, -1} {
		svc, m := build(t, spec{name: "A", w: 4}, spec{name: "B", w: 3}, spec{name: "C", w: 2})
		s := &wrr{maxSeq: maxSeq}
		s.Update(svc)
		if got := seqString(picks(s, svc, m, f, 3)); got != "AAB" { // now in pass cw=3
			t.Fatalf("picks %s", got)
		}
		d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: m["C"].Addr.Next(), Port: 1, Weight: 1})
		m["D"] = d
		svc.SetDests(append([]*ipvs.Dest{d}, svc.Dests()...))
		s.Update(svc)
		if got, want := seqString(picks(s, svc, m, f, 10)), "ABABCDABCA"; got != want {
			t.Fatalf("maxSeq %d: after add: picks %s, want %s", maxSeq, got, want)
		}
	}
	// With di > 1, cw is rounded to (cw/di)*di+1.
	for _, maxSeq := range []int{0, -1} {
		svc, m := build(t, spec{name: "A", w: 5}, spec{name: "B", w: 3})
		s := &wrr{maxSeq: maxSeq}
		s.Update(svc)
		// passes cw=5: A; 4: A; 3: A B; 2: A B; 1: A B
		if got := seqString(picks(s, svc, m, f, 3)); got != "AAA" { // cw=3 now
			t.Fatalf("picks %s", got)
		}
		setWeight(m["A"], 6) // di=3, mw=4; cw 3 -> (3/3)*3+1 = 4 = mw: pass 0
		s.Update(svc)
		if got, want := seqString(picks(s, svc, m, f, 6)), "AABAAB"; got != want {
			t.Fatalf("maxSeq %d: after edit: picks %s, want %s", maxSeq, got, want)
		}
	}
}

// TestWRRSequenceMatchesWalk is the differential test of the precomputed
// sequence against the kernel's walk, under random weights and random
// OVERLOAD flips between picks.
func TestWRRSequenceMatchesWalk(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	f := flow("198.51.100.1", "192.0.2.1", 1000)
	for iter := range 200 {
		n := 1 + r.IntN(6)
		var specs []spec
		for range n {
			w := r.IntN(7)
			if r.IntN(3) == 0 {
				w *= 4
			}
			specs = append(specs, spec{w: w})
		}
		svcA, _ := build(t, specs...)
		svcB, _ := build(t, specs...)
		a, b := &wrr{}, &wrr{maxSeq: -1}
		a.Update(svcA)
		b.Update(svcB)
		var gotA, gotB []int
		for step := range 60 {
			if r.IntN(4) == 0 {
				k := r.IntN(n)
				on := r.IntN(2) == 0
				setOverload(svcA.Dests()[k], on)
				setOverload(svcB.Dests()[k], on)
			}
			if step == 30 { // an edit in the middle
				k, w := r.IntN(n), r.IntN(9)
				setWeight(svcA.Dests()[k], w)
				setWeight(svcB.Dests()[k], w)
				a.Update(svcA)
				b.Update(svcB)
			}
			gotA = append(gotA, idx(a.Schedule(svcA, f)))
			gotB = append(gotB, idx(b.Schedule(svcB, f)))
		}
		if !slices.Equal(gotA, gotB) {
			t.Fatalf("iter %d weights %v:\nsequence %v\nwalk     %v", iter, specs, gotA, gotB)
		}
	}
}

func idx(d *ipvs.Dest) int {
	if d == nil {
		return -1
	}
	return d.Index
}

func TestWRRConcurrentDistribution(t *testing.T) {
	svc, _ := build(t, spec{w: 4}, spec{w: 3}, spec{w: 2}, spec{w: 1})
	s := mustNew(t, "wrr", 0)
	s.Update(svc)
	// 4 goroutines * 2500 = 10000 picks = 1000 whole periods of 10.
	counts := countConcurrent(t, s, svc, 4, 2500)
	if want := []int{4000, 3000, 2000, 1000}; !slices.Equal(counts, want) {
		t.Fatalf("counts %v, want %v", counts, want)
	}
}

func TestWRRHugePeriodUsesWalk(t *testing.T) {
	var specs []spec
	for i := range 40 {
		specs = append(specs, spec{w: 65535 - i}) // gcd 1, period ~2.6M
	}
	svc, _ := build(t, specs...)
	s := &wrr{}
	s.Update(svc)
	if st := s.state.Load(); st.seq != nil {
		t.Fatalf("sequence of %d entries precomputed", len(st.seq))
	}
	f := flow("198.51.100.1", "192.0.2.1", 1000)
	// The first pass (cw = 65535) picks only dest 0, then cw=65534: 0, 1.
	want := []int{0, 0, 1, 0, 1, 2}
	for i, w := range want {
		if got := idx(s.Schedule(svc, f)); got != w {
			t.Fatalf("pick %d: got %d, want %d", i, got, w)
		}
	}
}
