package scheduler

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"gvs/ipvs"
)

// fakeClock is an injectable cache clock.
type fakeClock struct{ t int64 }

func (c *fakeClock) now() int64              { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t += int64(d) }

func toDst(dst string) *ipvs.Flow { return flow("198.51.100.1", dst, 1000) }

func TestLBLC(t *testing.T) {
	svc, m := build(t, spec{name: "A", w: 1, act: 1}, spec{name: "B", w: 1}, spec{name: "C", w: 4, act: 1})
	s := newLBLC()
	clk := &fakeClock{t: 1}
	s.now = clk.now
	s.Update(svc)
	sched := func(dst string) string { return nameOf(m, s.Schedule(svc, toDst(dst))) }

	// Miss: wlc picks B (overhead 0).
	if got := sched("10.9.0.1"); got != "B" {
		t.Fatalf("first pick %s, want B", got)
	}
	// B gets busy; the cached B is still used for this address...
	m["B"].ActiveConns.Store(1)
	if got := sched("10.9.0.1"); got != "B" {
		t.Fatalf("cached pick %s, want B", got)
	}
	// ... while a new address goes by wlc: C (256/4).
	if got := sched("10.9.0.2"); got != "C" {
		t.Fatalf("new address %s, want C", got)
	}
	// B "overloaded": active 2 > weight 1, and C has 1*2 < 4: re-pick (C) and re-cache.
	m["B"].ActiveConns.Store(2)
	if got := sched("10.9.0.1"); got != "C" {
		t.Fatalf("overloaded cached B: %s, want C", got)
	}
	m["B"].ActiveConns.Store(0)
	if got := sched("10.9.0.1"); got != "C" {
		t.Fatalf("re-cached: %s, want C", got)
	}
	// Active > weight but no destination below half its weight: keep.
	m["C"].ActiveConns.Store(5)
	m["A"].ActiveConns.Store(1)
	m["B"].ActiveConns.Store(1)
	if got := sched("10.9.0.1"); got != "C" {
		t.Fatalf("not overloaded by lblc's rule: %s, want C", got)
	}
	// The OVERLOAD flag (-x threshold) is not looked at on a cache hit, as
	// in ip_vs_lblc_schedule: the cached C stays. wlc, on a miss, skips it.
	setOverload(m["C"], true)
	if got := sched("10.9.0.1"); got != "C" {
		t.Fatalf("cached C flagged OVERLOAD: %s, want C (kept)", got)
	}
	if got := sched("10.9.0.3"); got == "C" || got == "-" {
		t.Fatalf("new address with C flagged OVERLOAD: %s", got)
	}
	setOverload(m["C"], false)
	// Weight 0: re-pick.
	for _, tc := range []struct {
		desc   string
		break_ func()
		fix    func()
	}{
		{"weight 0", func() { setWeight(m["C"], 0) }, func() { setWeight(m["C"], 4) }},
	} {
		tc.break_()
		if got := sched("10.9.0.1"); got == "C" || got == "-" {
			t.Fatalf("%s: got %s", tc.desc, got)
		}
		tc.fix()
	}
	// Expiry: the entry for 10.9.0.2 (C) is forgotten after the expiration.
	for _, d := range m {
		d.ActiveConns.Store(0)
	}
	m["A"].InactConns.Store(5)
	m["C"].InactConns.Store(5) // wlc would now pick B
	s.SetExpiration(time.Hour)
	clk.advance(59 * time.Minute)
	if got := sched("10.9.0.2"); got != "C" {
		t.Fatalf("before expiry: %s, want C", got)
	}
	clk.advance(59 * time.Minute) // used 59 min ago: still valid
	if got := sched("10.9.0.2"); got != "C" {
		t.Fatalf("touched entry: %s, want C", got)
	}
	clk.advance(61 * time.Minute)
	if got := sched("10.9.0.2"); got != "B" {
		t.Fatalf("after expiry: %s, want B", got)
	}
	// Update drops entries of removed destinations.
	svc.SetDests([]*ipvs.Dest{m["A"], m["C"]})
	s.Update(svc)
	for i := range s.buckets {
		for _, sl := range s.buckets[i].slots {
			if sl.lastUse != 0 && sl.val == m["B"] {
				t.Fatal("entry for removed B kept")
			}
		}
	}
	// No usable destination: nil.
	empty, _ := build(t, spec{w: 0})
	if d := s.Schedule(empty, toDst("10.9.9.9")); d != nil {
		t.Fatal("scheduled with no usable destination")
	}
}

// sameBucket returns n distinct addresses that share one cache bucket.
func sameBucket(n int) []string {
	var out []string
	want := uint32(1 << 31)
	for i := 0; len(out) < n; i++ {
		a := netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)})
		b := cacheBucket(a)
		if want == 1<<31 {
			want = b
		}
		if b == want {
			out = append(out, a.String())
		}
	}
	return out
}

func TestLBLCBounded(t *testing.T) {
	svc, m := build(t, spec{name: "A", w: 1}, spec{name: "B", w: 1})
	s := newLBLC()
	clk := &fakeClock{t: 1}
	s.now = clk.now
	s.Update(svc)
	addrs := sameBucket(cacheBucketSlots + 1)
	// Fill one bucket with 16 entries on A (B kept busier).
	m["B"].InactConns.Store(10)
	for _, a := range addrs[:cacheBucketSlots] {
		clk.advance(time.Second)
		if got := nameOf(m, s.Schedule(svc, toDst(a))); got != "A" {
			t.Fatalf("%s -> %s", a, got)
		}
	}
	// Make B the wlc choice: new entries go to B, cached ones stay on A.
	m["B"].InactConns.Store(0)
	m["A"].InactConns.Store(10)
	clk.advance(time.Second)
	// Touch the first address so that the LRU is the second one.
	if got := nameOf(m, s.Schedule(svc, toDst(addrs[0]))); got != "A" {
		t.Fatalf("cached %s", got)
	}
	clk.advance(time.Second)
	if got := nameOf(m, s.Schedule(svc, toDst(addrs[cacheBucketSlots]))); got != "B" {
		t.Fatalf("17th address -> %s, want B", got)
	}
	// The 17th insert evicted the least recently used (addrs[1]); re-adding
	// it evicts the next one (addrs[2]).
	if got := nameOf(m, s.Schedule(svc, toDst(addrs[1]))); got != "B" {
		t.Fatalf("evicted address -> %s, want B (re-picked)", got)
	}
	for _, a := range []string{addrs[0], addrs[3], addrs[cacheBucketSlots-1]} {
		if got := nameOf(m, s.Schedule(svc, toDst(a))); got != "A" {
			t.Fatalf("%s -> %s, want A (still cached)", a, got)
		}
	}
}

func TestLBLCR(t *testing.T) {
	svc, m := build(t, spec{name: "A", w: 1}, spec{name: "B", w: 1, inact: 1}, spec{name: "C", w: 2, inact: 4})
	s := newLBLCR()
	clk := &fakeClock{t: 1}
	s.now = clk.now
	s.SetExpiration(time.Hour)
	s.Update(svc)
	dst := toDst("10.9.0.1")
	sched := func() string { return nameOf(m, s.Schedule(svc, dst)) }
	set := func() string {
		b := &s.buckets[cacheBucket(dst.DstAddr)]
		for _, sl := range b.slots {
			if sl.lastUse != 0 && sl.key == dst.DstAddr.As16() {
				out := ""
				for _, d := range sl.val.set[:sl.val.n] {
					out += nameOf(m, d)
				}
				return out
			}
		}
		return ""
	}

	if got := sched(); got != "A" || set() != "A" {
		t.Fatalf("first pick %s set %s, want A, {A}", got, set())
	}
	// A overloaded by lblc's rule (active 2 > 1, and C has 0*2 < 2): wlc over the service -> B joins.
	m["A"].ActiveConns.Store(2)
	if got := sched(); got != "B" || set() != "AB" {
		t.Fatalf("got %s set %s, want B, {A,B}", got, set())
	}
	// Now the least loaded member of {A,B} is used: B (overhead 1 vs 512).
	m["C"].InactConns.Store(0) // C is the least loaded overall, but not in the set
	if got := sched(); got != "B" {
		t.Fatalf("set min: %s, want B", got)
	}
	// Member ties: newest member first. A: 0, B: 0.
	m["A"].ActiveConns.Store(0)
	m["B"].InactConns.Store(0)
	if got := sched(); got != "B" {
		t.Fatalf("tie: %s, want B (newest)", got)
	}
	// OVERLOAD and weight 0 members are not used.
	setOverload(m["B"], true)
	if got := sched(); got != "A" {
		t.Fatalf("B overloaded: %s, want A", got)
	}
	setOverload(m["B"], false)
	setWeight(m["A"], 0)
	setWeight(m["B"], 0)
	if got := sched(); got != "C" || set() != "ABC" {
		t.Fatalf("no usable member: %s set %s, want C, {A,B,C}", got, set())
	}
	setWeight(m["A"], 1)
	setWeight(m["B"], 1)
	// After the expiration without change, the most loaded member is dropped.
	m["A"].ActiveConns.Store(3)
	clk.advance(59 * time.Minute)
	sched()
	if set() != "ABC" {
		t.Fatalf("too early shrink: %s", set())
	}
	clk.advance(2 * time.Minute)
	if got := sched(); got != "C" || set() != "BC" {
		t.Fatalf("shrink: %s set %s, want C, {B,C}", got, set())
	}
	// Removed destinations leave every set.
	svc.SetDests([]*ipvs.Dest{m["A"], m["B"]})
	s.Update(svc)
	if set() != "B" {
		t.Fatalf("after removing C: set %s, want {B}", set())
	}
}

func TestLBLCRSetBounded(t *testing.T) {
	var specs []spec
	for i := range lblcrSetMax + 2 {
		specs = append(specs, spec{name: fmt.Sprint(i), w: 1})
	}
	svc, _ := build(t, specs...)
	s := newLBLCR()
	s.Update(svc)
	dst := toDst("10.9.0.1")
	// Each pick makes the chosen member "overloaded", forcing a new member.
	for i := range lblcrSetMax + 2 {
		d := s.Schedule(svc, dst)
		if d == nil {
			t.Fatalf("pick %d nil", i)
		}
		d.ActiveConns.Store(2)
	}
	b := &s.buckets[cacheBucket(dst.DstAddr)]
	for _, sl := range b.slots {
		if n := sl.val.n; sl.lastUse != 0 && n != lblcrSetMax {
			t.Fatalf("set size %d, want %d", n, lblcrSetMax)
		}
	}
}
