package daemon

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/forwarder/ring"
	"gvs/forwarder/staticenv"
	"gvs/internal/frames"
)

// fakeRX hands out a fixed list of frames.
type fakeRX struct {
	frames   [][]byte
	metas    []ring.Meta
	next     int
	released int
}

func (r *fakeRX) Next() ([]byte, ring.Meta, bool) {
	if r.next == len(r.frames) {
		return nil, ring.Meta{}, false
	}
	i := r.next
	r.next++
	return r.frames[i], r.metas[i], true
}
func (r *fakeRX) Release()                                    { r.released++ }
func (r *fakeRX) Wait(time.Duration) error                    { return ring.ErrTimeout }
func (r *fakeRX) SetFilter(filter []bpf.RawInstruction) error { return nil }
func (r *fakeRX) Fd() int                                     { return -1 }
func (r *fakeRX) TakeError() error                            { return nil }

// fakeTX records committed frames in a fixed number of slots.
type fakeTX struct {
	slot    [2048]byte // first: aligned as a ring slot's data is
	slots   int
	max     int
	sent    [][]byte
	offs    []int // slot offset of each sent frame
	record  bool
	flushes int
	commits int
	pending int // frames a kick "left queued"; Flush sends them
}

func (t *fakeTX) Slot() ([]byte, bool) {
	if t.commits >= t.slots {
		return nil, false
	}
	return t.slot[:], true
}
func (t *fakeTX) Commit(n int) bool { return t.CommitAt(0, n) }
func (t *fakeTX) Discard() int      { return 0 }
func (t *fakeTX) CommitAt(off, n int) bool {
	if n < 14 || n > t.max || off < 0 || off+n > len(t.slot) {
		return false
	}
	t.commits++
	if t.record {
		t.sent = append(t.sent, append([]byte(nil), t.slot[off:off+n]...))
		t.offs = append(t.offs, off)
	}
	return true
}
func (t *fakeTX) Flush() error  { t.flushes++; t.pending = 0; return nil }
func (t *fakeTX) Pending() int  { return t.pending }
func (t *fakeTX) MaxFrame() int { return t.max }

var (
	testVIP    = netip.MustParseAddr("198.51.100.10")
	testClient = netip.MustParseAddr("198.18.1.11")
	testRIP    = netip.MustParseAddr("198.18.2.11")
)

// testWorker is a worker over the lab's static facts and a NAT service.
func testWorker(tb testing.TB) (*worker, [2]*fakeTX) {
	tb.Helper()
	env, err := staticenv.New(staticenv.DefaultFacts())
	if err != nil {
		tb.Fatal(err)
	}
	tbl := tableFrom(tb, "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n"+
		"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m\n"+
		"-A -u 198.51.100.10:54 -s rr\n") // no real server: port unreachable
	p := forwarder.New(forwarder.Config{Env: env, Services: tbl, Conns: conntrack.New(conntrack.Config{Shards: 4})})
	var clock atomic.Int64
	w := newWorker(p.NewWorker(), func() int64 { return clock.Add(1000) }, 0)
	txs := [2]*fakeTX{{slots: 1 << 30, max: 1514}, {slots: 1 << 30, max: 1514}}
	w.tx = [2]txRing{txs[0], txs[1]}
	return w, txs
}

func TestWorkerHandle(t *testing.T) {
	vipMAC := frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))
	l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: vipMAC}
	syn := frames.TCP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, SYN: true})
	udp := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: 40001, DstPort: 53, Payload: []byte("q")})
	big := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: 40002, DstPort: 53, Payload: make([]byte, 1400)})
	other := frames.UDP(l2, frames.IP{Src: testClient, Dst: netip.MustParseAddr("198.18.1.1")}, frames.UDPDgram{SrcPort: 1, DstPort: 2})
	noRS := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: 40003, DstPort: 54, Payload: []byte("q")})
	full := func(f []byte) ring.Meta { return ring.Meta{Len: uint32(len(f)), Snap: uint32(len(f))} }

	tests := []struct {
		name   string
		frame  []byte
		meta   ring.Meta
		txFull bool // the DIP-side TX ring has no free slot
		txMax  int
		back   bool // the frame leaves on the VIP side (the one it came in on)
		check  func(t *testing.T, c *WorkerCounters, sent [][]byte)
	}{
		{name: "SYN to NAT service goes to the real server", frame: syn, meta: full(syn), check: func(t *testing.T, c *WorkerCounters, sent [][]byte) {
			if c.TX.Load() != 1 || len(sent) != 1 {
				t.Fatalf("tx %d, sent %d", c.TX.Load(), len(sent))
			}
			if dst := netip.AddrFrom4([4]byte(sent[0][30:34])); dst != testRIP {
				t.Errorf("NAT destination %v, want %v", dst, testRIP)
			}
			if mac := [6]byte(sent[0][0:6]); mac != staticenv.DerivedMAC(testRIP) {
				t.Errorf("destination MAC %x", mac)
			}
		}},
		{name: "truncated frame counts oversize", frame: syn, meta: ring.Meta{Len: 3000, Snap: uint32(len(syn))}, check: func(t *testing.T, c *WorkerCounters, sent [][]byte) {
			if c.Oversize.Load() != 1 || len(sent) != 0 {
				t.Errorf("oversize %d sent %d", c.Oversize.Load(), len(sent))
			}
		}},
		{name: "VLAN-tagged (stripped) frame is left to the kernel", frame: udp,
			meta: ring.Meta{Len: uint32(len(udp)), Snap: uint32(len(udp)), Status: ring.StatusVLANValid, VLANTCI: 5},
			check: func(t *testing.T, c *WorkerCounters, sent [][]byte) {
				if c.VLAN.Load() != 1 || len(sent) != 0 {
					t.Errorf("vlan %d sent %d", c.VLAN.Load(), len(sent))
				}
			}},
		{name: "full TX ring counts tx_full", frame: udp, meta: full(udp), txFull: true, check: func(t *testing.T, c *WorkerCounters, sent [][]byte) {
			if c.TXFull.Load() != 1 || c.TX.Load() != 0 {
				t.Errorf("tx_full %d tx %d", c.TXFull.Load(), c.TX.Load())
			}
		}},
		{name: "longer than the egress MTU+14 counts oversize", frame: big, meta: full(big), txMax: 1000, check: func(t *testing.T, c *WorkerCounters, sent [][]byte) {
			if c.Oversize.Load() != 1 || len(sent) != 0 {
				t.Errorf("oversize %d sent %d", c.Oversize.Load(), len(sent))
			}
		}},
		{name: "no real server: port unreachable back to the client", frame: noRS, meta: full(noRS), back: true, check: func(t *testing.T, c *WorkerCounters, sent [][]byte) {
			if c.TX.Load() != 1 || len(sent) != 1 {
				t.Fatalf("tx %d, sent %d", c.TX.Load(), len(sent))
			}
			if proto, dst := sent[0][23], netip.AddrFrom4([4]byte(sent[0][30:34])); proto != 1 || dst != testClient {
				t.Errorf("reply protocol %d to %v, want ICMP to %v", proto, dst, testClient)
			}
		}},
		{name: "not ours: passed, nothing sent", frame: other, meta: full(other), check: func(t *testing.T, c *WorkerCounters, sent [][]byte) {
			if c.RX.Load() != 1 || len(sent) != 0 || c.Oversize.Load()+c.TXFull.Load()+c.TXError.Load() != 0 {
				t.Errorf("counters rx %d, sent %d", c.RX.Load(), len(sent))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, txs := testWorker(t)
			out, other := txs[forwarder.DIPSide], txs[forwarder.VIPSide]
			if tc.back {
				out, other = other, out
			}
			out.record = true
			if tc.txFull {
				txs[1].slots = 0
			}
			if tc.txMax != 0 {
				txs[1].max = tc.txMax
			}
			rx := &fakeRX{frames: [][]byte{tc.frame}, metas: []ring.Meta{tc.meta}}
			w.addRX(rx, forwarder.VIPSide)
			if n := w.poll(); n != 1 || rx.released != 1 {
				t.Fatalf("poll took %d, released %d", n, rx.released)
			}
			if other.commits != 0 {
				t.Error("something was sent on the wrong side")
			}
			tc.check(t, &w.c, out.sent)
		})
	}
}

// A one-arm worker has one TX ring for both sides: a forwarded frame is
// committed in the slot it was rewritten in, a reply is copied there.
func TestWorkerOneArm(t *testing.T) {
	w, txs := testWorker(t)
	tx := txs[forwarder.DIPSide]
	tx.record = true
	w.tx[forwarder.VIPSide] = tx
	l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
	syn := frames.TCP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, SYN: true})
	noRS := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: 40003, DstPort: 54})
	rx := &fakeRX{frames: [][]byte{syn, noRS}}
	for _, f := range rx.frames {
		rx.metas = append(rx.metas, ring.Meta{Len: uint32(len(f)), Snap: uint32(len(f))})
	}
	w.addRX(rx, forwarder.DIPSide) // as openRings does when one-armed
	if n := w.poll(); n != 2 || w.c.TX.Load() != 2 || len(tx.sent) != 2 {
		t.Fatalf("poll took %d, tx %d, sent %d", n, w.c.TX.Load(), len(tx.sent))
	}
	if dst := netip.AddrFrom4([4]byte(tx.sent[0][30:34])); dst != testRIP {
		t.Errorf("NAT destination %v, want %v", dst, testRIP)
	}
	if !slices.Equal(tx.offs, []int{forwarder.Headroom, 0}) {
		t.Errorf("slot offsets %v: want the NAT frame committed in place, the reply copied", tx.offs)
	}
	if proto, dst := tx.sent[1][23], netip.AddrFrom4([4]byte(tx.sent[1][30:34])); proto != 1 || dst != testClient {
		t.Errorf("reply protocol %d to %v, want ICMP to %v", proto, dst, testClient)
	}
}

func TestWorkerBatchAndStats(t *testing.T) {
	w, txs := testWorker(t)
	l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
	rx := &fakeRX{}
	for i := 0; i < 100; i++ {
		f := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: uint16(1000 + i), DstPort: 53})
		rx.frames = append(rx.frames, f)
		rx.metas = append(rx.metas, ring.Meta{Len: uint32(len(f)), Snap: uint32(len(f))})
	}
	w.addRX(rx, forwarder.VIPSide)
	// An established ring is drained in one turn, a batch at a time.
	if n := w.poll(); n != 100 {
		t.Errorf("first turn took %d frames, want all 100", n)
	}
	if n := w.poll(); n != 0 {
		t.Errorf("second turn took %d", n)
	}
	if txs[1].flushes < 2 {
		t.Errorf("TX flushed %d times, want once per batch", txs[1].flushes)
	}
	s := sumStats([]*worker{w})
	if s.RX != 100 || s.TX != 100 || s.Actions["transmit"] != 100 || s.Workers != 1 {
		t.Errorf("stats %+v", s)
	}
	var rxField, txField int64
	for _, f := range s.Fields() {
		switch f.Key {
		case "rx":
			rxField = f.Integer
		case "tx":
			txField = f.Integer
		}
	}
	if rxField != 100 || txField != 100 {
		t.Errorf("log fields rx %d, tx %d; want 100, 100", rxField, txField)
	}
}

func TestWorkerNoAllocs(t *testing.T) {
	w, _ := testWorker(t)
	l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
	udp := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: 40001, DstPort: 53, Payload: []byte("q")})
	meta := ring.Meta{Len: uint32(len(udp)), Snap: uint32(len(udp))}
	w.handle(udp, meta, forwarder.VIPSide, 1) // creates the connection
	allocs := testing.AllocsPerRun(1000, func() { w.handle(udp, meta, forwarder.VIPSide, 2) })
	if allocs != 0 {
		t.Errorf("handle allocates %v times per frame", allocs)
	}
	if w.c.TX.Load() < 1000 {
		t.Errorf("only %d frames sent", w.c.TX.Load())
	}
	// The SYN budget's check, passing and refusing.
	w.budget.setRate(1000, 1)
	syn := synFrames(netip.MustParseAddr("198.18.3.3"), 1).frames[0]
	if allocs := testing.AllocsPerRun(1000, func() { w.budget.allow(syn, 5) }); allocs != 0 {
		t.Errorf("the SYN budget allocates %v times per frame", allocs)
	}
}

func BenchmarkWorkerHandle(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			w, _ := testWorker(b)
			l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
			udp := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: 40001, DstPort: 53, Payload: make([]byte, size)})
			meta := ring.Meta{Len: uint32(len(udp)), Snap: uint32(len(udp))}
			b.ReportAllocs()
			b.SetBytes(int64(len(udp)))
			for b.Loop() {
				w.handle(udp, meta, forwarder.VIPSide, 2)
			}
			if w.c.TX.Load() == 0 {
				b.Fatal("nothing sent")
			}
		})
	}
}

// stoppingRX is a fakeRX that stops the worker after a number of polls.
type stoppingRX struct {
	fakeRX
	polls, stopAfter int
	stop             *atomic.Bool
	// queueAt, if positive, leaves 2 frames queued on queueOn at that poll
	// (after the frame was handled and flushed).
	queueAt int
	queueOn *fakeTX
	// lateQueued is queueOn's queued count seen at the last poll, before
	// the worker's final flush on the way out.
	lateQueued int
}

func (r *stoppingRX) Next() ([]byte, ring.Meta, bool) {
	if r.polls++; r.polls >= r.stopAfter {
		r.stop.Store(true)
	}
	if r.polls == r.queueAt {
		r.queueOn.pending = 2
	}
	if r.queueOn != nil && r.polls == r.stopAfter {
		r.lateQueued = r.queueOn.pending
	}
	return r.fakeRX.Next()
}

// TestWorkerBusyPoll runs the worker loop over one frame and then an empty
// ring: without BusyPoll it sleeps at every empty turn; with it, not until
// BusyPoll has passed since the last frame (the test clock moves 1 µs per
// reading, about 2 µs per empty turn).
func TestWorkerBusyPoll(t *testing.T) {
	for _, tc := range []struct {
		busy               time.Duration
		minSleeps, maxSlps uint64
	}{
		{0, 190, 200},                      // every empty turn
		{time.Millisecond, 0, 0},           // 200 turns are ~400 µs: still polling
		{100 * time.Microsecond, 100, 180}, // polls ~50 turns, then sleeps
	} {
		w, txs := testWorker(t)
		w.busyPoll = int64(tc.busy)
		l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
		f := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: 1000, DstPort: 53})
		var stop atomic.Bool
		rx := &stoppingRX{fakeRX: fakeRX{frames: [][]byte{f}, metas: []ring.Meta{{Len: uint32(len(f)), Snap: uint32(len(f))}}}, stopAfter: 201, stop: &stop}
		rx.queueAt, rx.queueOn = 10, txs[1]
		w.addRX(rx, forwarder.VIPSide)
		w.run(&stop)
		if got := w.c.Sleeps.Load(); got < tc.minSleeps || got > tc.maxSlps || w.c.RX.Load() != 1 {
			t.Errorf("busy-poll %v: %d sleeps (want %d..%d), rx %d", tc.busy, got, tc.minSleeps, tc.maxSlps, w.c.RX.Load())
		}
		if rx.lateQueued != 0 {
			t.Errorf("busy-poll %v: queued frames never flushed", tc.busy)
		}
	}
}

// TestGoMetrics: the allocation and GC counts gvsd logs are live.
func TestGoMetrics(t *testing.T) {
	a0, c0 := goMetrics()
	var keep [][]byte
	for i := 0; i < 1000; i++ {
		keep = append(keep, make([]byte, 64<<10))
	}
	runtime.GC()
	a1, c1 := goMetrics()
	if a1 < a0+1000 || c1 <= c0 || len(keep) != 1000 {
		t.Errorf("allocs %d -> %d, GC cycles %d -> %d", a0, a1, c0, c1)
	}
}

// synFrames returns n TCP SYNs to the VIP from src (source ports from
// 20000) with their metas.
func synFrames(src netip.Addr, n int) *fakeRX {
	l2 := frames.L2{Src: frames.DerivedMAC(src), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
	rx := &fakeRX{}
	for i := 0; i < n; i++ {
		f := frames.TCP(l2, frames.IP{Src: src, Dst: testVIP}, frames.TCPSeg{SrcPort: uint16(20000 + i), DstPort: 80, SYN: true})
		rx.frames = append(rx.frames, f)
		rx.metas = append(rx.metas, ring.Meta{Len: uint32(len(f)), Snap: uint32(len(f))})
	}
	return rx
}

// TestWorkerSYNRing: a turn empties the established ring and takes one
// batch from the SYN ring, so a full SYN ring cannot hold the established
// traffic back by more than a batch.
func TestWorkerSYNRing(t *testing.T) {
	w, _ := testWorker(t)
	l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
	est := &fakeRX{}
	for i := 0; i < 150; i++ {
		f := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: uint16(1000 + i), DstPort: 53})
		est.frames = append(est.frames, f)
		est.metas = append(est.metas, ring.Meta{Len: uint32(len(f)), Snap: uint32(len(f))})
	}
	w.addRX(est, forwarder.VIPSide)
	syn := synFrames(netip.MustParseAddr("198.18.3.3"), 300)
	w.addSYN(syn, forwarder.VIPSide)
	if n := w.poll(); n != 150+DefaultBatch || est.released != 150 || syn.released != DefaultBatch {
		t.Fatalf("turn took %d (established %d, SYN %d), want all 150 established and a batch of %d SYNs",
			n, est.released, syn.released, DefaultBatch)
	}
	if n := w.poll(); n != DefaultBatch {
		t.Errorf("second turn took %d, want a batch of SYNs", n)
	}
	if got := w.c.SYNBudget.Load(); got != 0 {
		t.Errorf("syn_budget %d without a budget", got)
	}
}

// TestWorkerSYNBudget: one source's SYNs beyond its budget are dropped and
// counted; another source's are not held back by it.
func TestWorkerSYNBudget(t *testing.T) {
	w, _ := testWorker(t)
	now := int64(0)
	w.clock = func() int64 { return now }
	w.budget.setRate(100, 1) // burst: 100 ms worth, 10 SYNs
	w.budget.key = 0         // fixed, so that the two sources' slots are known to differ
	if mix32(0xc6120303)%synBudgetSlots == mix32(0xc6120304)%synBudgetSlots {
		t.Fatal("the test's sources share a budget slot")
	}
	flood := synFrames(netip.MustParseAddr("198.18.3.3"), 50)
	w.addSYN(flood, forwarder.VIPSide)
	w.poll()
	if got := w.c.SYNBudget.Load(); got != 40 {
		t.Errorf("flooding source: syn_budget %d, want 40 of 50 (a burst of 10 passes)", got)
	}
	if s := sumStats([]*worker{w}); s.SYNBudget != 40 || s.RX != 50 {
		t.Errorf("stats syn_budget %d, rx %d; want 40, 50", s.SYNBudget, s.RX)
	}
	w.syn = nil
	other := synFrames(netip.MustParseAddr("198.18.3.4"), 5)
	w.addSYN(other, forwarder.VIPSide)
	w.poll()
	if got := w.c.SYNBudget.Load(); got != 40 {
		t.Errorf("another source's SYNs dropped: syn_budget %d, want still 40", got)
	}
	// A second later the flooding source has its budget back.
	now += int64(time.Second)
	w.syn = nil
	again := synFrames(netip.MustParseAddr("198.18.3.3"), 10)
	w.addSYN(again, forwarder.VIPSide)
	w.poll()
	if got := w.c.SYNBudget.Load(); got != 40 {
		t.Errorf("after a second: syn_budget %d, want still 40", got)
	}
}

// TestWorkerUDPRing: the UDP ring gets a batch after the established rings
// in each round of a turn, up to maxDrainBatches, and the SYN ring still
// its batch: a UDP flood is taken at the worker's pace while the
// established ring is emptied at every round, and the rest of the flood
// waits (and overflows) in its own ring.
func TestWorkerUDPRing(t *testing.T) {
	w, _ := testWorker(t)
	l2 := frames.L2{Src: frames.DerivedMAC(testClient), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
	udpFrames := func(n int) *fakeRX {
		rx := &fakeRX{}
		for i := 0; i < n; i++ {
			f := frames.UDP(l2, frames.IP{Src: testClient, Dst: testVIP}, frames.UDPDgram{SrcPort: uint16(1000 + i), DstPort: 53})
			rx.frames = append(rx.frames, f)
			rx.metas = append(rx.metas, ring.Meta{Len: uint32(len(f)), Snap: uint32(len(f))})
		}
		return rx
	}
	est := synFrames(testClient, 0)
	w.addRX(est, forwarder.VIPSide)
	syn := synFrames(netip.MustParseAddr("198.18.3.3"), 300)
	w.addSYN(syn, forwarder.VIPSide)
	flood := udpFrames(maxDrainBatches*DefaultBatch + 1000)
	w.addUDP(flood, forwarder.VIPSide)
	if n := w.poll(); flood.released != maxDrainBatches*DefaultBatch || syn.released != DefaultBatch || n != flood.released+syn.released {
		t.Fatalf("turn took %d (UDP %d, SYN %d), want %d UDP and a batch of SYNs", n, flood.released, syn.released, maxDrainBatches*DefaultBatch)
	}
	if len(w.pfds) != 3 {
		t.Errorf("%d poll entries, want 3 (established, SYN, UDP)", len(w.pfds))
	}
	w.clearRings()
	if w.udp != nil || w.syn != nil || len(w.pfds) != 0 {
		t.Error("clearRings keeps the SYN or UDP ring")
	}
}
