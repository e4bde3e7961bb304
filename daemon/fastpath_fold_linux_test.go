package daemon

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"gvs/conntrack"
	"gvs/forwarder/xdp"
	"gvs/ipvs"
)

// foldBed is a fast path with n UDP NAT flows (client 198.18.x.y:1024+i to
// 198.18.0.10:53, real server 198.19.0.2:53), each with its connection,
// installed directly (no program, no egress check), with UDP timeout udp
// (0: the default).
type foldBed struct {
	f     *fastPath
	dest  *ipvs.Dest
	keys  []xdp.FlowKey
	slots []uint32
	now   int64
}

func newFoldBed(tb testing.TB, n int, udp time.Duration) *foldBed {
	tb.Helper()
	flows, err := xdp.NewFlowMap()
	if err != nil {
		tb.Fatalf("flow map: %v", err)
	}
	tb.Cleanup(func() { flows.Close() })
	conns := conntrack.New(conntrack.Config{Capacity: 2 * n, Timeouts: conntrack.Timeouts{UDP: udp}})
	svc := ipvs.NewService(ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: netip.MustParseAddr("198.18.0.10"), Port: 53}})
	dest := ipvs.NewDest(svc, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.2"), Port: 53, Method: ipvs.Masq, Weight: 1})
	f := &fastPath{flows: flows, conns: conns}
	for i := range f.shards {
		f.shards[i].m = map[xdp.FlowKey]*fastEntry{}
		f.shards[i].base = uint32(i * fastSlots)
	}
	f.changes, f.timeouts = f.tableState()
	conns.SetSeen(f.lastSeen)
	tb.Cleanup(func() { conns.SetSeen(nil) })
	b := &foldBed{f: f, dest: dest, now: int64(time.Second)}
	timeout := conns.Timeouts().UDP - fastMargin
	for i := range n {
		k := xdp.FlowKey{Src: [4]byte{198, 18, 1 + byte(i>>8), byte(i)}, Dst: [4]byte{198, 18, 0, 10},
			SrcPort: [2]byte{byte((1024 + i) >> 8), byte(1024 + i)}, DstPort: [2]byte{0, 53}, Proto: 17}
		sp, dp := k.Ports()
		var c conntrack.Conn
		if err := conns.Create(conntrack.InKeyV4(ipvs.ProtoUDP, k.Src, sp, k.Dst, dp), dest, 53, conntrack.TemplateRef{}, 0, b.now, &c); err != nil {
			tb.Fatalf("conn %d: %v", i, err)
		}
		plan := xdp.FlowPlan{Method: xdp.FastNATIn, Ifindex: 1, MTU: 1500, Timeout: uint64(timeout)}
		f.install(&k, &plan, &fastEntry{dest: dest}, uint64(b.now+f.mono0))
		if !f.has(&k) {
			tb.Fatalf("flow %d not installed", i)
		}
		b.keys = append(b.keys, k)
		b.slots = append(b.slots, plan.Slot)
	}
	return b
}

// traffic has flow i forward a packet of size bytes every every-th
// flow (as the program would), at the bed's clock.
func (b *foldBed) traffic(every int, size uint64) {
	for i := 0; i < len(b.slots); i += every {
		c := b.f.flows.Counters(b.slots[i])
		atomic.AddUint64(&c.Packets, 1)
		atomic.AddUint64(&c.Bytes, size)
		atomic.StoreUint64(&c.Seen, uint64(b.now+b.f.mono0))
	}
}

// run advances the bed's clock by d in ticks of 100 ms, each with a
// packet of every every-th flow (0: none) and a fold.
func (b *foldBed) run(d time.Duration, every int) {
	for end := b.now + int64(d); b.now < end; {
		b.now += int64(100 * time.Millisecond)
		if every > 0 {
			b.traffic(every, 100)
		}
		b.f.foldSlots(b.now)
	}
}

// inKey is flow i's connection key.
func (b *foldBed) inKey(i int) conntrack.InKey {
	k := &b.keys[i]
	sp, dp := k.Ports()
	return conntrack.InKeyV4(ipvs.ProtoUDP, k.Src, sp, k.Dst, dp)
}

// alive reports whether flow i's connection lives at now.
func (b *foldBed) alive(i int, now int64) bool {
	var c conntrack.Conn
	return b.f.conns.PeekIn(b.inKey(i), now, &c)
}

// listed is the expiry -Lnc lists for each flow's connection (by client
// port), from the table's Walk at the bed's clock.
func (b *foldBed) listed() map[uint16]int64 {
	m := map[uint16]int64{}
	b.f.conns.Walk(b.now, func(c *conntrack.Conn) { m[c.CPort] = c.Expires })
	return m
}

// TestFastPathFoldSlots: the fold adds what the program counted in the
// counter slots to the real server's statistics, re-arms the timers of
// the connections of flows seen, removes idle entries, and a removed
// entry's slot is reused only after two folds.
func TestFastPathFoldSlots(t *testing.T) {
	b := newFoldBed(t, 100, 0)
	f := b.f
	seenSlots := map[uint32]bool{}
	for _, s := range b.slots {
		if seenSlots[s] {
			t.Fatalf("slot %d given twice", s)
		}
		seenSlots[s] = true
	}
	b.now += int64(time.Second)
	b.traffic(1, 100)
	for range fastDue {
		f.foldSlots(b.now)
	}
	if got := b.dest.Stats[0].InPkts.Load(); got != 100 {
		t.Errorf("InPkts %d, want 100", got)
	}
	if got := b.dest.Stats[0].InBytes.Load(); got != 100*100 {
		t.Errorf("InBytes %d, want 10000", got)
	}
	// Every connection is listed as expiring at the packets' time plus
	// the UDP timeout (its timer is re-armed only when it comes due).
	udp := f.conns.Timeouts().UDP
	listed := b.listed()
	for i := range b.keys {
		if exp, want := listed[uint16(1024+i)], b.now+int64(udp); exp != want {
			t.Fatalf("flow %d: listed expiry %v after the last packet, want the UDP timeout %v", i, time.Duration(exp-b.now), udp)
		}
	}
	// Idle past the program's timeout (the flows every 2nd go on, a
	// packet every tick): removed, their last counts folded; their
	// connections live on until the UDP timeout after their last packet
	// (the fold re-armed them there when they came due), not longer.
	k0, slot0 := b.keys[1], b.slots[1]
	atomic.AddUint64(&f.flows.Counters(slot0).Packets, 1)
	last := b.now
	b.run(udp-fastMargin+100*time.Millisecond, 2)
	ticks := uint64((b.now - last) / int64(100*time.Millisecond))
	if n := f.entries(); n != 50 {
		t.Fatalf("%d entries after the idle ones went, want 50", n)
	}
	if f.has(&k0) {
		t.Fatal("idle flow still installed")
	}
	if got, want := b.dest.Stats[0].InPkts.Load(), 100+50*ticks+1; got != want {
		t.Errorf("InPkts %d, want %d", got, want)
	}
	if !b.alive(1, last+int64(udp)-1) || b.alive(1, last+int64(udp)) {
		t.Errorf("an idle flow's connection does not expire at its last packet plus the UDP timeout")
	}
	// Slots removed are reused after two folds, not before.
	k := xdp.FlowKey{Src: [4]byte{198, 18, 200, 1}, Dst: [4]byte{198, 18, 0, 10}, SrcPort: [2]byte{4, 1}, DstPort: [2]byte{0, 53}, Proto: 17}
	for i := range 1 << 16 {
		k.Src[2], k.Src[3] = byte(i>>8), byte(i)
		if hashFlowKey(&k).shard() == hashFlowKey(&k0).shard() {
			break
		}
	}
	install := func() uint32 {
		plan := xdp.FlowPlan{Method: xdp.FastNATIn, Ifindex: 1, MTU: 1500, Timeout: uint64(time.Hour)}
		f.install(&k, &plan, &fastEntry{dest: b.dest}, uint64(b.now+f.mono0))
		if !f.has(&k) {
			t.Fatal("not installed")
		}
		f.remove(&k)
		return plan.Slot
	}
	if s := install(); s == slot0 {
		t.Fatalf("slot %d reused right after the fold that removed its entry", s)
	}
	f.foldSlots(b.now)
	if s := install(); s == slot0 {
		t.Fatalf("slot %d reused after one fold", s)
	}
	f.foldSlots(b.now)
	found := false
	for range 4 {
		found = found || install() == slot0
	}
	if !found {
		t.Fatalf("slot %d not reused after two folds", slot0)
	}
}

// TestFastPathFoldKeepsConnections: flows the program forwards for three
// times their connections' timeout (10 s) keep their connections, whose
// timers the fold re-arms only when they come due (half the timeout
// before they run out), not every few ticks: each connection counts an
// input packet per re-arm, a few in 30 s (every fastDue ticks: 75). Once
// the flows stop, their connections expire the timeout after their last
// packet, not later.
func TestFastPathFoldKeepsConnections(t *testing.T) {
	const udp = 10 * time.Second
	b := newFoldBed(t, 100, udp)
	b.run(30*time.Second, 1)
	last := b.now
	var c conntrack.Conn
	for i := range b.keys {
		if !b.f.conns.PeekIn(b.inKey(i), b.now, &c) {
			t.Fatalf("flow %d: connection gone after 30 s of packets", i)
		}
		if c.InPkts > 8 {
			t.Errorf("flow %d: connection re-armed %d times in 30 s with a 10 s timeout", i, c.InPkts-1)
		}
	}
	if n := b.f.conns.Len(); n != 100 {
		t.Errorf("%d connections, want 100", n)
	}
	b.run(udp-fastMargin+100*time.Millisecond, 0)
	if n := b.f.entries(); n != 0 {
		t.Errorf("%d entries left after the program's timeout", n)
	}
	for i := range b.keys {
		if !b.alive(i, last+int64(udp)-1) || b.alive(i, last+int64(udp)) {
			t.Fatalf("flow %d: connection does not expire the UDP timeout after its last packet", i)
		}
	}
}

// TestFastPathListedExpire: -Lnc (the table's Walk) lists a fast-path
// connection's expiry as the kernel's would be, the timeout after the
// flow's latest packet in either direction, although the connection's
// timer is re-armed only when it comes due: with a 10 s UDP timeout, after
// 3 s of packets every 100 ms, 10 s; for flows that stopped 1 s before,
// 9 s; for a NAT flow whose replies go on, from the replies. Without the
// program's last-seen times (SetSeen) the timer alone says ~7 s.
func TestFastPathListedExpire(t *testing.T) {
	const udp = 10 * time.Second
	b := newFoldBed(t, 50, udp)
	f := b.f
	// Flow 1's replies (real server -> client) through the fast path too.
	k := b.keys[1]
	out := xdp.FlowKey{Src: [4]byte{198, 19, 0, 2}, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: 17}
	plan := xdp.FlowPlan{Method: xdp.FastNATOut, Ifindex: 1, MTU: 1500, Timeout: uint64(udp - fastMargin)}
	f.install(&out, &plan, &fastEntry{out: true, dest: b.dest}, uint64(b.now+f.mono0))
	if !f.has(&out) {
		t.Fatal("reply flow not installed")
	}
	b.run(2*time.Second, 1)
	stop := b.now
	for range 10 {
		b.now += int64(100 * time.Millisecond)
		b.traffic(2, 100)
		atomic.StoreUint64(&f.flows.Counters(plan.Slot).Seen, uint64(b.now+f.mono0))
		f.foldSlots(b.now)
	}
	check := func() (bad int) {
		listed := b.listed()
		for i := range b.keys {
			want := b.now + int64(udp)
			if i%2 == 1 && i != 1 {
				want = stop + int64(udp)
			}
			if exp := listed[uint16(1024+i)]; exp != want {
				if bad == 0 {
					t.Logf("flow %d: listed expire %v, want %v", i, time.Duration(exp-b.now), time.Duration(want-b.now))
				}
				bad++
			}
		}
		return bad
	}
	// Flow 1's requests stopped with the others, its replies went on.
	if bad := check(); bad != 0 {
		t.Errorf("%d of %d connections listed with the wrong expire", bad, len(b.keys))
	}
	f.conns.SetSeen(nil)
	if bad := check(); bad == 0 {
		t.Errorf("without the last-seen times every connection still listed as expiring the timeout after its last packet: the test shows nothing")
	}
}

// TestFastPathFoldTableChanges: a connection removed from the table other
// than by its timer (here Remove) takes its entry with it within fastDue
// folds, whether its flow goes on or not; a new UDP timeout (--set)
// reaches the connections of the flows that go on within fastDue folds.
func TestFastPathFoldTableChanges(t *testing.T) {
	const udp = 10 * time.Second
	b := newFoldBed(t, 40, udp)
	f := b.f
	b.run(time.Second, 1)
	// Flow 0 goes on, flow 1 is idle.
	for _, i := range []int{0, 1} {
		if !f.conns.Remove(b.inKey(i)) {
			t.Fatalf("flow %d: no connection to remove", i)
		}
	}
	b.run(fastDue*100*time.Millisecond, 2)
	for _, i := range []int{0, 1} {
		if f.has(&b.keys[i]) {
			t.Errorf("flow %d: entry still installed %d folds after its connection was removed", i, fastDue)
		}
	}
	if n := f.entries(); n != 38 {
		t.Errorf("%d entries, want 38", n)
	}
	f.conns.SetTimeouts(0, 0, 5*time.Second)
	b.run(fastDue*100*time.Millisecond, 2)
	for i := 2; i < len(b.keys); i += 2 {
		if b.alive(i, b.now+int64(5*time.Second)) {
			t.Fatalf("flow %d: connection still on the old 10 s timeout %d folds after --set", i, fastDue)
		}
		if !b.alive(i, b.now+int64(5*time.Second-fastDue*100*time.Millisecond)) {
			t.Fatalf("flow %d: connection not re-armed at a recent packet after --set", i)
		}
	}
}

// BenchmarkFastPathFold: one fold of 10k UDP flows (ns/op), without the
// egress check; between folds (not timed) every flow, every 2nd, 3rd or
// 4th in turn forwards a packet. Before the counter slots (the whole hash
// map read in batches, a Go map lookup per entry, a quarter of the
// connections looked up every tick): ~6 ms per fold; with them ~0.4 ms,
// most of it the re-arming of the seen flows' connections (every fastDue
// ticks); with the re-arms only when a timer comes due (half the timeout
// before it runs out: never within the benchmark's 20 s of folds at the
// default 300 s UDP timeout), ~0.1 ms. BenchmarkFastPathFoldShortTimeout
// has a 3 s UDP timeout: each flow's connection is re-armed every 1.5 s.
func BenchmarkFastPathFold(b *testing.B) { benchFold(b, 0) }

func BenchmarkFastPathFoldShortTimeout(b *testing.B) { benchFold(b, 3*time.Second) }

func benchFold(b *testing.B, udp time.Duration) {
	bed := newFoldBed(b, 10000, udp)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		bed.now += int64(100 * time.Millisecond)
		bed.traffic(1+i%4, 100)
		b.StartTimer()
		bed.f.foldSlots(bed.now)
	}
	if n := bed.f.entries(); n != 10000 {
		b.Fatalf("%d entries left", n)
	}
}
