package scheduler

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"testing"

	"gvs/ipvs"
)

func TestHash32AndFold(t *testing.T) {
	tests := []struct {
		val  uint32
		bits uint
		want uint32
	}{
		{1, 8, 0x61},          // GOLDEN_RATIO_32 >> 24
		{0x0A000001, 8, 39},   // 10.0.0.1: 0x27C88647 >> 24
		{0x0A000002, 8, 0x89}, // 10.0.0.1 + port 1
		{0, 8, 0},
		{1, 32, 0x61C88647},
		{1, 10, 0x61C88647 >> 22},
	}
	for _, tt := range tests {
		if got := hash32(tt.val, tt.bits); got != tt.want {
			t.Errorf("hash32(%#x, %d) = %#x, want %#x", tt.val, tt.bits, got, tt.want)
		}
	}
	folds := []struct {
		addr string
		want uint32
	}{
		{"10.0.0.1", 0x0A000001},
		{"::ffff:10.0.0.1", 0x0A000001},
		{"2001:db8::1", 0x20010db8 ^ 1},
		{"::", 0},
	}
	for _, tt := range folds {
		if got := fold(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("fold(%s) = %#x, want %#x", tt.addr, got, tt.want)
		}
	}
}

func TestDH(t *testing.T) {
	svc, m := build(t, spec{name: "A", w: 1}, spec{name: "B", w: 100}, spec{name: "C", w: 0})
	s := mustNew(t, "dh", 0)
	if s.Schedule(svc, flow("1.1.1.1", "10.0.0.1", 1)) != nil {
		t.Fatal("scheduled before Update")
	}
	s.Update(svc)
	tab := s.(*dh).table.Load()
	for i, d := range tab {
		if want := svc.Dests()[i%3]; d != want {
			t.Fatalf("bucket %d = %s, want %s (round-robin, weights ignored)", i, nameOf(m, d), nameOf(m, want))
		}
	}
	// 10.0.0.1 -> bucket 39 -> 39%3 = 0 -> A, whatever the source.
	for _, src := range []string{"1.1.1.1", "203.0.113.9"} {
		if got := nameOf(m, s.Schedule(svc, flow(src, "10.0.0.1", 5))); got != "A" {
			t.Errorf("dst 10.0.0.1 from %s: %s, want A", src, got)
		}
	}
	// Find destinations that land on B and on C.
	var dstB, dstC *ipvs.Flow
	for i := 0; dstB == nil || dstC == nil; i++ {
		f := flow("1.1.1.1", fmt.Sprintf("10.0.%d.%d", i/256, i%256), 5)
		switch hash32(fold(f.DstAddr), 8) % 3 {
		case 1:
			dstB = f
		case 2:
			dstC = f
		}
	}
	if got := nameOf(m, s.Schedule(svc, dstB)); got != "B" {
		t.Errorf("B bucket: %s", got)
	}
	if got := s.Schedule(svc, dstC); got != nil {
		t.Errorf("weight-0 bucket gave %s, want nil (no fallback)", nameOf(m, got))
	}
	setOverload(m["B"], true)
	if got := s.Schedule(svc, dstB); got != nil {
		t.Errorf("overloaded bucket gave %s, want nil", nameOf(m, got))
	}
	empty := testService(0)
	s.Update(empty)
	if s.Schedule(empty, dstB) != nil {
		t.Error("empty service scheduled")
	}
}

func TestSHTable(t *testing.T) {
	svc, m := build(t, spec{name: "A", w: 3}, spec{name: "B", w: 0}, spec{name: "C", w: 2})
	s := mustNew(t, "sh", 0)
	s.Update(svc)
	pattern := []string{"A", "A", "A", "B", "C", "C"}
	tab := s.(*sh).table.Load()
	for i, d := range tab {
		if got, want := nameOf(m, d), pattern[i%6]; got != want {
			t.Fatalf("bucket %d = %s, want %s", i, got, want)
		}
	}
}

func TestSH(t *testing.T) {
	specs := []spec{{name: "A", w: 3}, {name: "B", w: 0}, {name: "C", w: 2}}
	udp := flow("10.0.0.1", "192.0.2.1", 1)
	udp.Proto = ipvs.ProtoUDP
	icmp := flow("10.0.0.1", "192.0.2.1", 1)
	icmp.Proto = ipvs.ProtoICMP
	tests := []struct {
		desc  string
		flags ipvs.SvcFlags
		f     *ipvs.Flow
		want  string
	}{
		// 10.0.0.1 -> bucket 39 -> pattern[39%6=3] = B (weight 0).
		{"weight 0 bucket, no fallback", 0, flow("10.0.0.1", "192.0.2.1", 1), "-"},
		// fallback probes (off + 2*39) & 255 = 78.. -> pattern[0] = A.
		{"fallback", ipvs.SvcSched1, flow("10.0.0.1", "192.0.2.1", 1), "A"},
		// sh-port: 0x0A000001 + 1 -> bucket 0x89 = 137 -> pattern[5] = C.
		{"sh-port tcp", ipvs.SvcSched2, flow("10.0.0.1", "192.0.2.1", 1), "C"},
		{"sh-port udp", ipvs.SvcSched2, udp, "C"},
		{"sh-port icmp ignores port", ipvs.SvcSched2, icmp, "-"},
		{"port ignored without sh-port", ipvs.SvcSched1, flow("10.0.0.1", "192.0.2.1", 9999), "A"},
		{"v4-mapped source", 0, flow("::ffff:10.0.0.1", "192.0.2.1", 1), "-"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			svc, m := build(t, specs...)
			s := mustNew(t, "sh", tt.flags)
			s.Update(svc)
			if got := nameOf(m, s.Schedule(svc, tt.f)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	t.Run("fallback all unusable", func(t *testing.T) {
		svc, m := build(t, specs...)
		s := mustNew(t, "sh", ipvs.SvcSched1)
		s.Update(svc)
		setOverload(m["A"], true)
		setOverload(m["C"], true)
		if d := s.Schedule(svc, flow("10.0.0.1", "192.0.2.1", 1)); d != nil {
			t.Errorf("got %s, want nil", nameOf(m, d))
		}
		// Deleted (unavailable) destinations still in the table are not used.
		setOverload(m["A"], false)
		m["A"].SetUnavailable()
		if d := s.Schedule(svc, flow("10.0.0.1", "192.0.2.1", 1)); d != nil {
			t.Errorf("deleted dest: got %s, want nil", nameOf(m, d))
		}
	})
}

// checkShares schedules many client flows and checks each destination's
// share against its expected weight share within tol (absolute fraction).
func checkShares(t *testing.T, s ipvs.Scheduler, svc *ipvs.Service, weights []int, flows int, tol float64) {
	t.Helper()
	counts := make([]int, len(weights))
	for i := range flows {
		d := s.Schedule(svc, clientFlow(i))
		if d == nil {
			t.Fatalf("flow %d: nil", i)
		}
		counts[d.Index]++
	}
	sum := 0
	for _, w := range weights {
		sum += w
	}
	for i, w := range weights {
		got, want := float64(counts[i])/float64(flows), float64(w)/float64(sum)
		if math.Abs(got-want) > tol {
			t.Errorf("%s: dest %d (weight %d) share %.4f, want %.4f±%.3f (counts %v)", s.Name(), i, w, got, want, tol, counts)
		}
	}
}

func TestDistribution(t *testing.T) {
	weights := []int{1, 2, 3, 4}
	var specs []spec
	for _, w := range weights {
		specs = append(specs, spec{w: w})
	}
	for _, tt := range []struct {
		name string
		w    []int
		tol  float64
	}{
		{"rr", []int{1, 1, 1, 1}, 0},
		{"wrr", weights, 0},
		{"sh", weights, 0.03},
		{"mh", weights, 0.03},
		// The kernel draws in [0, total], so the first destination gets
		// one extra unit: shares (w1+1, w2, ...)/(total+1).
		{"twos", []int{2, 2, 3, 4}, 0.03},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc, _ := build(t, specs...)
			s := mustNew(t, tt.name, 0)
			s.Update(svc)
			checkShares(t, s, svc, tt.w, 10000, tt.tol)
		})
	}
}

// TestMHPopulatePaper is the Maglev paper's Table 1 (ANCHORS.md §3).
func TestMHPopulatePaper(t *testing.T) {
	b0, b1, b2 := mhSetup{3, 4, 1}, mhSetup{0, 2, 1}, mhSetup{3, 1, 1}
	if got, want := mhPopulate(7, []mhSetup{b0, b1, b2}), []int32{1, 0, 1, 0, 2, 2, 0}; !slices.Equal(got, want) {
		t.Errorf("before: %v, want %v", got, want)
	}
	// After removing B1 (indices now B0=0, B2=1).
	if got, want := mhPopulate(7, []mhSetup{b0, b2}), []int32{0, 0, 0, 0, 1, 1, 1}; !slices.Equal(got, want) {
		t.Errorf("after removing B1: %v, want %v", got, want)
	}
	// Turns: B0 takes two slots per round: B0 3,0; B1 2 (0 taken); B2 4; B0 1,5; B1 6.
	if got, want := mhPopulate(7, []mhSetup{{3, 4, 2}, b1, b2}), []int32{0, 0, 1, 0, 2, 0, 1}; !slices.Equal(got, want) {
		t.Errorf("weighted: %v, want %v", got, want)
	}
	// Zero turns: never placed; all zero: empty table.
	if got, want := mhPopulate(7, []mhSetup{b0, {0, 2, 0}, b2}), []int32{0, 0, 0, 0, 2, 2, 2}; !slices.Equal(got, want) {
		t.Errorf("zero turns: %v, want %v", got, want)
	}
	if got := mhPopulate(7, []mhSetup{{0, 2, 0}}); !slices.Equal(got, []int32{-1, -1, -1, -1, -1, -1, -1}) {
		t.Errorf("no turns: %v", got)
	}
	if got := mhPopulate(7, nil); got[0] != -1 {
		t.Errorf("no backends: %v", got)
	}
}

func TestMHTurns(t *testing.T) {
	s, _ := newMH(0, DefaultMHTableSize) // tabBits 6
	tests := []struct {
		weights []int
		turns   []int
	}{
		{[]int{2, 4, 6}, []int{1, 2, 3}},     // gcd 2
		{[]int{1, 1000}, []int{1, 62}},       // 1000 needs 10 bits: shift 4; 1>>4 = 0 -> 1
		{[]int{0, 3}, []int{0, 1}},           // never weighted: no turns
		{[]int{63, 1}, []int{63, 1}},         // 6 bits: no shift
		{[]int{64, 1}, []int{32, 1}},         // 7 bits: shift 1
		{[]int{65535, 65535}, []int{1, 1}},   // gcd
		{[]int{65535, 2}, []int{63, 1}},      // 16 bits: shift 10
		{[]int{0, 0}, []int{0, 0}},           // nothing
		{[]int{7, 0, 14}, []int{1, 0, 2}},    //
		{[]int{100, 50, 25}, []int{4, 2, 1}}, // gcd 25
		{[]int{5, 3}, []int{5, 3}},           //
		{[]int{120, 8}, []int{15, 1}},        // gcd 8: 15 fits in 6 bits
	}
	for _, tt := range tests {
		var specs []spec
		for _, w := range tt.weights {
			specs = append(specs, spec{w: w})
		}
		svc, _ := build(t, specs...)
		var got []int
		for _, st := range s.setups(svc.Dests()) {
			got = append(got, st.turns)
		}
		if !slices.Equal(got, tt.turns) {
			t.Errorf("weights %v: turns %v, want %v", tt.weights, got, tt.turns)
		}
	}
}

func mhTable(s ipvs.Scheduler) []netip.AddrPort {
	t := *s.(*mh).table.Load()
	out := make([]netip.AddrPort, len(t))
	for i, d := range t {
		if d != nil {
			out[i] = d.AddrPort()
		}
	}
	return out
}

// TestMHOrderIndependent: directors that added the same destinations in
// different orders build identical tables.
func TestMHOrderIndependent(t *testing.T) {
	mk := func(order []int) []netip.AddrPort {
		svc := testService(0)
		var list []*ipvs.Dest
		for _, i := range order {
			d := ipvs.NewDest(svc, ipvs.DestConfig{
				Addr: netip.AddrFrom4([4]byte{10, 2, byte(i % 3), byte(i)}), Port: uint16(80 + i%2), Weight: 1 + i%4,
			})
			list = append([]*ipvs.Dest{d}, list...) // newest first
		}
		svc.SetDests(list)
		s := mustNew(t, "mh", 0)
		s.Update(svc)
		return mhTable(s)
	}
	a := mk([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	b := mk([]int{9, 3, 7, 1, 0, 5, 8, 2, 6, 4})
	c := mk([]int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0})
	if !slices.Equal(a, b) || !slices.Equal(a, c) {
		t.Fatal("mh tables differ with insertion order")
	}
	if len(a) != DefaultMHTableSize || slices.Contains(a, netip.AddrPort{}) {
		t.Fatal("table not full")
	}
	// A different set gives a different table (the test can fail).
	if d := mk([]int{0, 1, 2, 3, 4, 5, 6, 7, 8}); slices.Equal(a, d) {
		t.Fatal("removing a destination did not change the table")
	}
}

func TestMH(t *testing.T) {
	specs := []spec{{name: "A", w: 1}, {name: "B", w: 1}, {name: "C", w: 1}}
	flows := make([]*ipvs.Flow, 2000)
	for i := range flows {
		flows[i] = clientFlow(i)
	}
	t.Run("lookup is the table slot of the keyed hash", func(t *testing.T) {
		svc, _ := build(t, specs...)
		s := mustNew(t, "mh", 0)
		s.Update(svc)
		tab := *s.(*mh).table.Load()
		for _, f := range flows[:100] {
			if got, want := s.Schedule(svc, f), tab[mhHashKey(mhFold(f.SrcAddr), 0, &mhHash1, 0)%DefaultMHTableSize]; got != want {
				t.Fatal("lookup differs from table slot")
			}
		}
	})
	t.Run("quiesce keeps slots", func(t *testing.T) {
		svc, m := build(t, specs...)
		s := mustNew(t, "mh", 0)
		s.Update(svc)
		before := mhTable(s)
		picksBefore := make([]*ipvs.Dest, len(flows))
		for i, f := range flows {
			picksBefore[i] = s.Schedule(svc, f)
		}
		setWeight(m["B"], 0)
		s.Update(svc)
		if !slices.Equal(before, mhTable(s)) {
			t.Fatal("quiescing B changed the table")
		}
		fb := mustNew(t, "mh", ipvs.SvcSched1)
		fb.Update(svc)
		nilB, movedB := 0, 0
		for i, f := range flows {
			got, gotFB := s.Schedule(svc, f), fb.Schedule(svc, f)
			if picksBefore[i] == m["B"] {
				if got != nil {
					t.Fatalf("flow %d: quiesced B's client got %s, want nil", i, nameOf(m, got))
				}
				if gotFB == nil || gotFB == m["B"] {
					t.Fatalf("flow %d: fallback gave %s", i, nameOf(m, gotFB))
				}
				nilB++
				if gotFB != nil {
					movedB++
				}
			} else if got != picksBefore[i] || gotFB != picksBefore[i] {
				t.Fatalf("flow %d: moved from %s to %s/%s", i, nameOf(m, picksBefore[i]), nameOf(m, got), nameOf(m, gotFB))
			}
		}
		if nilB == 0 {
			t.Fatal("no flow mapped to B")
		}
		// All destinations unusable: fallback gives nil too.
		setOverload(m["A"], true)
		setOverload(m["C"], true)
		if d := fb.Schedule(svc, flows[0]); d != nil {
			t.Fatalf("all unusable: got %s", nameOf(m, d))
		}
	})
	t.Run("mh-port", func(t *testing.T) {
		svc, _ := build(t, specs...)
		s := mustNew(t, "mh", ipvs.SvcSched2)
		s.Update(svc)
		plain := mustNew(t, "mh", 0)
		plain.Update(svc)
		seen := map[*ipvs.Dest]bool{}
		seenPlain := map[*ipvs.Dest]bool{}
		for p := range uint16(64) {
			f := flow("198.51.100.7", "192.0.2.1", 1000+p)
			seen[s.Schedule(svc, f)] = true
			seenPlain[plain.Schedule(svc, f)] = true
		}
		if len(seen) != 3 || len(seenPlain) != 1 {
			t.Fatalf("one client over 64 ports: mh-port reached %d dests (want 3), plain %d (want 1)", len(seen), len(seenPlain))
		}
	})
	t.Run("empty and never weighted", func(t *testing.T) {
		s := mustNew(t, "mh", ipvs.SvcSched1)
		if s.Schedule(testService(0), flows[0]) != nil {
			t.Fatal("scheduled before Update")
		}
		svc, _ := build(t, spec{w: 0}, spec{w: 0})
		s.Update(svc)
		if s.Schedule(svc, flows[0]) != nil {
			t.Fatal("scheduled with no weighted dest")
		}
	})
	t.Run("removal disruption is small", func(t *testing.T) {
		var many []spec
		for range 10 {
			many = append(many, spec{w: 1})
		}
		svc, _ := build(t, many...)
		s := mustNew(t, "mh", 0)
		s.Update(svc)
		before := mhTable(s)
		removed := svc.Dests()[4]
		svc.SetDests(slices.Delete(slices.Clone(svc.Dests()), 4, 5))
		s.Update(svc)
		after := mhTable(s)
		moved := 0
		for i := range before {
			if before[i] != removed.AddrPort() && before[i] != after[i] {
				moved++
			}
		}
		// Maglev moves few entries that did not belong to the removed dest.
		if frac := float64(moved) / float64(len(before)); frac > 0.05 {
			t.Errorf("%.1f%% of surviving entries moved", 100*frac)
		}
	})
}
