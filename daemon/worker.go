package daemon

import (
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"gvs/forwarder"
	"gvs/forwarder/ring"
)

// rxRing is the part of *ring.RX a worker uses (an interface so that the
// per-frame code can be tested without sockets).
type rxRing interface {
	Next() ([]byte, ring.Meta, bool)
	Release()
	Wait(timeout time.Duration) error
	SetFilter(filter []bpf.RawInstruction) error
	TakeError() error
	Fd() int
}

// txRing is the part of *ring.TX a worker uses.
type txRing interface {
	Slot() ([]byte, bool)
	Commit(n int) bool
	CommitAt(off, n int) bool
	Flush() error
	Discard() int
	Pending() int
	MaxFrame() int
}

// WorkerCounters are one worker's own frame counters (the pipeline's are in
// forwarder.Counters). Only the worker writes them; anyone may read them.
type WorkerCounters struct {
	// RX counts frames taken from the RX rings.
	RX atomic.Uint64
	// TX counts frames committed to a TX ring.
	TX atomic.Uint64
	// Oversize counts frames dropped because they were truncated in the RX
	// ring (GRO/LRO super-frames, jumbo frames) or longer than the egress
	// MTU + 14.
	Oversize atomic.Uint64
	// TXFull counts frames dropped because the egress TX ring had no free
	// slot.
	TXFull atomic.Uint64
	// TXError counts frames the TX ring refused (should not happen after
	// the length check; counted to be seen).
	TXError atomic.Uint64
	// VLAN counts frames that arrived with a stripped 802.1Q tag of a
	// VLAN (not a priority tag, VLAN 0): they belong to a VLAN interface
	// on top of ours and are left to the kernel.
	VLAN atomic.Uint64
	// Sleeps counts the times the worker found every RX ring empty and
	// went to sleep in poll(2): frames per sleep is the batching it got.
	Sleeps atomic.Uint64
	// SYNBudget counts connection openings (frames of the SYN ring)
	// dropped because their source had used its new-connection budget
	// (Config.SYNRate).
	SYNBudget atomic.Uint64
}

const (
	// DefaultBatch is the number of frames a worker takes from one RX ring
	// before it flushes its TX rings and turns to the other ring.
	DefaultBatch = 64
	// pollTimeout bounds how long an idle worker sleeps, and so how long
	// it takes to notice shutdown.
	pollTimeout = 100 * time.Millisecond
	// bufSize is the worker's frame buffer after the headroom: more than
	// any RX slot holds.
	bufSize = 64 << 10
)

// worker is one data-path goroutine's state.
type worker struct {
	fw     *forwarder.Worker
	rx     []rxRing // one per distinct interface: the established traffic
	rxSide []int    // the link each rx ring receives on
	// syn is the ring of the connection openings to the VIPs (TCP SYN
	// without ACK; nil: none), which the rx rings' filters leave out. It
	// gets one batch per turn after the rx rings are drained, so that a
	// flood of SYNs overflows this ring, in the kernel, and not the
	// established traffic's.
	syn     rxRing
	synSide int
	// udp is the ring of the UDP frames to the VIPs (nil: none), which the
	// rx rings' filters leave out too. It gets a batch after the rx rings
	// in each round of a turn: UDP flows get their share of the worker,
	// while a UDP flood overflows this ring, in the kernel, and not the
	// established TCP traffic's.
	udp     rxRing
	udpSide int
	budget  synBudget
	tx      [2]txRing // per egress side; the same ring twice when one-armed
	batch   int
	// busyPoll is how long (ns) the worker keeps polling after its last
	// frame before it sleeps (Config.BusyPoll).
	busyPoll int64
	clock    func() int64
	buf      []byte
	pfds     []unix.PollFd
	polled   []rxRing // the ring of each of pfds, in order
	c        WorkerCounters
	// xsk, when set, is the worker's AF_XDP I/O (afxdp_linux.go), used
	// instead of the rings above.
	xsk *xskIO
	// beat counts the turns of the worker's loop (one store per turn, a
	// batch or a sleep, not per frame): the watchdog's sign of progress.
	beat atomic.Uint64
}

func newWorker(fw *forwarder.Worker, clock func() int64, batch int) *worker {
	if batch <= 0 {
		batch = DefaultBatch
	}
	return &worker{fw: fw, clock: clock, batch: batch, buf: make([]byte, forwarder.Headroom+bufSize)}
}

// addRX adds an RX ring receiving on side.
func (w *worker) addRX(r rxRing, side int) {
	w.rx = append(w.rx, r)
	w.rxSide = append(w.rxSide, side)
	w.addPoll(r)
}

// addPoll adds r to the rings wait polls.
func (w *worker) addPoll(r rxRing) {
	w.polled = append(w.polled, r)
	w.pfds = append(w.pfds, unix.PollFd{Fd: int32(r.Fd()), Events: unix.POLLIN | unix.POLLERR})
}

// addSYN sets the ring of connection openings, receiving on side.
func (w *worker) addSYN(r rxRing, side int) {
	w.syn, w.synSide = r, side
	w.addPoll(r)
}

// addUDP sets the ring of UDP to the VIPs, receiving on side.
func (w *worker) addUDP(r rxRing, side int) {
	w.udp, w.udpSide = r, side
	w.addPoll(r)
}

// clearRings forgets the worker's rings (they are being replaced).
func (w *worker) clearRings() {
	w.rx, w.rxSide, w.pfds, w.polled = w.rx[:0], w.rxSide[:0], w.pfds[:0], w.polled[:0]
	w.syn, w.udp = nil, nil
	w.tx = [2]txRing{}
}

// maxDrainBatches bounds how many batches per ring a turn takes from the
// established rings before the SYN ring gets its batch: established
// traffic beyond the worker's capacity must not shut new connections out
// for good.
const maxDrainBatches = 64

// run is the worker loop. It locks its OS thread and returns when stop is
// set (within pollTimeout).
func (w *worker) run(stop *atomic.Bool) {
	if w.xsk != nil {
		w.runXSK(stop)
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var last int64 // clock of the last turn that took a frame
	for turn := uint64(1); !stop.Load(); turn++ {
		w.beat.Store(turn)
		w.expire()
		if w.poll() > 0 {
			if w.busyPoll > 0 {
				last = w.clock()
			}
			continue
		}
		if w.busyPoll > 0 && w.clock()-last < w.busyPoll {
			// Frames a kick left queued (EAGAIN, ENOBUFS) go out now, not
			// when the worker next sleeps.
			if w.tx[0].Pending() > 0 || w.tx[1].Pending() > 0 {
				w.flush()
			}
			continue
		}
		w.wait()
	}
	w.flush()
}

// expire sends what the pipeline answers for datagrams whose reassembly
// timed out (ICMP time exceeded); nothing to do costs one check.
func (w *worker) expire() {
	if w.fw == nil { // a test's worker without a pipeline
		return
	}
	now := w.clock()
	for {
		res, ok := w.fw.Expire(now)
		if !ok {
			return
		}
		if res.Action == forwarder.Reply {
			w.send(res.Link, res.Frame)
		}
	}
}

// poll drains the established rings and the UDP ring (a batch from each
// in turn, the UDP ring last, until they are empty or maxDrainBatches),
// then takes one batch from the SYN ring, flushing the TX rings after each
// batch, and returns the number of frames taken. Under a SYN flood the SYN
// ring fills and the kernel drops there, while the established rings are
// emptied every turn; under a UDP flood the UDP ring fills, and the
// established rings are looked at between any two of its batches.
func (w *worker) poll() int {
	total := 0
	for range maxDrainBatches {
		got := 0
		for i, r := range w.rx {
			got += w.take(r, w.rxSide[i], false)
		}
		if w.udp != nil {
			got += w.take(w.udp, w.udpSide, false)
		}
		total += got
		if got == 0 {
			break
		}
	}
	if w.syn != nil {
		total += w.take(w.syn, w.synSide, true)
	}
	return total
}

// take runs up to a batch of r's frames through the pipeline, flushes the
// TX rings when it took any, and returns how many it took. Frames of the
// SYN ring (syn) pass the per-source budget first.
func (w *worker) take(r rxRing, side int, syn bool) int {
	now := w.clock()
	n := 0
	for n < w.batch {
		frame, meta, ok := r.Next()
		if !ok {
			break
		}
		if syn && !w.budget.allow(frame, now) {
			w.c.RX.Add(1)
			w.c.SYNBudget.Add(1)
		} else {
			w.handle(frame, meta, side, now)
		}
		r.Release()
		n++
	}
	if n > 0 {
		w.flush()
	}
	return n
}

// handle runs one received frame through the pipeline and queues what it
// sends. It does not allocate.
//
// The frame is copied once: into the free slot of the TX ring it most
// likely leaves by (the other side's; the only ring when one-armed),
// behind the pipeline's headroom, and rewritten there; a frame that does
// leave by that ring is committed where it lies (TX.CommitAt). Anything
// else (a reply built in the pipeline's scratch space, the other egress
// side, no free slot) is copied by send.
func (w *worker) handle(frame []byte, meta ring.Meta, side int, now int64) {
	w.c.RX.Add(1)
	if meta.Truncated() || meta.Status&ring.StatusCopy != 0 || len(frame) > bufSize {
		w.c.Oversize.Add(1)
		return
	}
	if meta.Status&ring.StatusVLANValid != 0 && !priorityTagged(frame, meta) {
		w.c.VLAN.Add(1)
		return
	}
	outSide := 1 - side
	out := w.tx[outSide]
	buf, inSlot := out.Slot()
	if !inSlot || len(buf) < forwarder.Headroom+len(frame) {
		buf, inSlot = w.buf, false
	}
	n := copy(buf[forwarder.Headroom:], frame)
	res := w.fw.Process(buf, forwarder.Headroom, n, side, meta.CsumNotReady(), now)
	if res.Action != forwarder.Transmit && res.Action != forwarder.Reply {
		return // Drop (counted by the pipeline); Pass, Control: the kernel has its copy
	}
	if res.Frags != 0 { // IPv4 fragments, in the pipeline's scratch space
		for i := range int(res.Frags) {
			w.send(res.Link, w.fw.Fragment(i))
		}
		return
	}
	if inSlot && len(res.Frame) > 0 && (res.Link == outSide || uint(res.Link) < 2 && w.tx[res.Link] == out) {
		// Where res.Frame starts in buf, if it is part of buf.
		if off := cap(buf) - cap(res.Frame); off >= 0 && off < len(buf) && &buf[off] == &res.Frame[0] {
			if len(res.Frame) > out.MaxFrame() {
				w.c.Oversize.Add(1)
				return
			}
			w.committed(out.CommitAt(off, len(res.Frame)))
			return
		}
	}
	w.send(res.Link, res.Frame)
}

// priorityTagged reports a frame whose stripped outer tag has VLAN ID 0
// (an 802.1p priority tag) and that carries no further tag: the kernel's
// receive path clears such a tag and takes the frame as untagged
// (__netif_receive_skb_core), so IPVS would see it, while gvs's ingress
// table, which runs before that, keeps it from the kernel. It is gvs's.
func priorityTagged(frame []byte, meta ring.Meta) bool {
	if meta.VLANTCI&0x0fff != 0 || len(frame) < 14 {
		return false
	}
	et := uint16(frame[12])<<8 | uint16(frame[13])
	return et != 0x8100 && et != 0x88a8
}

// send copies frame into the TX ring of side.
func (w *worker) send(side int, frame []byte) {
	if side < 0 || side > 1 {
		w.c.TXError.Add(1)
		return
	}
	tx := w.tx[side]
	if len(frame) > tx.MaxFrame() {
		w.c.Oversize.Add(1)
		return
	}
	slot, ok := tx.Slot()
	if !ok {
		// Let the kernel take what is queued and retry once.
		_ = tx.Flush()
		if slot, ok = tx.Slot(); !ok {
			w.c.TXFull.Add(1)
			return
		}
	}
	w.committed(tx.Commit(copy(slot, frame)))
}

// committed counts a TX commit: sent, or refused by the ring (which should
// not happen after the length check; counted to be seen).
func (w *worker) committed(ok bool) {
	if ok {
		w.c.TX.Add(1)
	} else {
		w.c.TXError.Add(1)
	}
}

// flush kicks every TX ring (once when both sides share one).
func (w *worker) flush() {
	w.flushOne(w.tx[0])
	if w.tx[1] != w.tx[0] {
		w.flushOne(w.tx[1])
	}
}

// flushOne kicks one TX ring. When the device refuses the whole batch
// because it is down or gone, the queued frames are dropped (counted in
// TXError): kept, they would make every turn kick again and the worker
// would never sleep for long.
func (w *worker) flushOne(tx txRing) {
	switch tx.Flush() {
	case unix.ENETDOWN, unix.ENXIO, unix.ENODEV:
		w.c.TXError.Add(uint64(tx.Discard()))
	}
}

// wait sleeps until an RX ring has a frame, or briefly when TX frames are
// still queued (EAGAIN/ENOBUFS on the last kick), or up to pollTimeout.
func (w *worker) wait() {
	w.c.Sleeps.Add(1)
	timeout := pollTimeout
	if w.tx[0].Pending() > 0 || w.tx[1].Pending() > 0 {
		w.flush()
		timeout = time.Millisecond
	}
	if len(w.rx) == 1 && w.syn == nil && w.udp == nil {
		_ = w.rx[0].Wait(timeout)
		return
	}
	// EINTR and errors: the loop polls the rings again anyway.
	n, _ := unix.Poll(w.pfds, int(timeout/time.Millisecond))
	if n <= 0 {
		return
	}
	for i := range w.pfds {
		if w.pfds[i].Revents&unix.POLLERR != 0 {
			// The socket's pending error (ENETDOWN: the interface went
			// down or away) keeps POLLERR raised until it is taken: left
			// there, every poll returns at once and the worker spins. The
			// daemon's link watcher logs the transition.
			_ = w.polled[i].TakeError()
		}
	}
}
