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
// installed directly (no program, no egress check).
type foldBed struct {
	f     *fastPath
	dest  *ipvs.Dest
	keys  []xdp.FlowKey
	slots []uint32
	now   int64
}

func newFoldBed(tb testing.TB, n int) *foldBed {
	tb.Helper()
	flows, err := xdp.NewFlowMap()
	if err != nil {
		tb.Fatalf("flow map: %v", err)
	}
	tb.Cleanup(func() { flows.Close() })
	conns := conntrack.New(conntrack.Config{Capacity: 2 * n})
	svc := ipvs.NewService(ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: netip.MustParseAddr("198.18.0.10"), Port: 53}})
	dest := ipvs.NewDest(svc, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.2"), Port: 53, Method: ipvs.Masq, Weight: 1})
	f := &fastPath{flows: flows, conns: conns}
	for i := range f.shards {
		f.shards[i].m = map[xdp.FlowKey]*fastEntry{}
		f.shards[i].base = uint32(i * fastSlots)
	}
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

// TestFastPathFoldSlots: the fold adds what the program counted in the
// counter slots to the real server's statistics, re-arms the timers of
// the connections of flows seen, removes idle entries, and a removed
// entry's slot is reused only after two folds.
func TestFastPathFoldSlots(t *testing.T) {
	b := newFoldBed(t, 100)
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
	// Every connection's timer re-armed at the packets' time: alive
	// until then plus the UDP timeout.
	udp := f.conns.Timeouts().UDP
	for i, k := range b.keys {
		sp, dp := k.Ports()
		var c conntrack.Conn
		if !f.conns.PeekIn(conntrack.InKeyV4(ipvs.ProtoUDP, k.Src, sp, k.Dst, dp), b.now+int64(udp)-int64(time.Millisecond), &c) {
			t.Fatalf("flow %d: connection not re-armed at the flow's last packet", i)
		}
	}
	// Idle past the timeout (the flows every 2nd go on): removed,
	// their last counts folded.
	k0, slot0 := b.keys[1], b.slots[1]
	atomic.AddUint64(&f.flows.Counters(slot0).Packets, 1)
	b.now += int64(udp - fastMargin + time.Millisecond)
	b.traffic(2, 100)
	f.foldSlots(b.now)
	if n := f.entries(); n != 50 {
		t.Fatalf("%d entries after the idle ones went, want 50", n)
	}
	if f.has(&k0) {
		t.Fatal("idle flow still installed")
	}
	if got := b.dest.Stats[0].InPkts.Load(); got != 100+50+1 {
		t.Errorf("InPkts %d, want 151", got)
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

// BenchmarkFastPathFold: one fold of 10k UDP flows (ns/op), without the
// egress check; between folds (not timed) every flow, every 2nd, 3rd or
// 4th in turn forwards a packet. Before the counter slots (the whole hash
// map read in batches, a Go map lookup per entry, a quarter of the
// connections looked up every tick): ~6 ms per fold; with them ~0.4 ms,
// most of it the re-arming of the seen flows' connections.
func BenchmarkFastPathFold(b *testing.B) {
	bed := newFoldBed(b, 10000)
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
