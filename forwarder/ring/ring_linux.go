//go:build linux

package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ethPAllBE is htons(ETH_P_ALL).
const ethPAllBE = (unix.ETH_P_ALL&0xff)<<8 | unix.ETH_P_ALL>>8

// base is the socket and mapping common to RX and TX rings.
type base struct {
	fd      int
	ifindex int
	geo     geometry
	mem     []byte
	offs    []uint32 // slot offsets into mem
	pfd     [1]unix.PollFd
	ts      unix.Timespec
	closed  atomic.Bool
}

// hdr returns the tpacket2_hdr of slot i.
func (b *base) hdr(i int) *unix.Tpacket2Hdr {
	return (*unix.Tpacket2Hdr)(unsafe.Pointer(&b.mem[b.offs[i]]))
}

// open creates the socket (protocol 0: nothing is queued before bind) and
// selects TPACKET_V2.
func (b *base) open(ifindex int, frameSize, blockSize, frameCount int) error {
	geo, err := newGeometry(frameSize, blockSize, frameCount, os.Getpagesize())
	if err != nil {
		return err
	}
	b.geo = geo
	b.ifindex = ifindex
	b.fd = -1
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	b.fd = fd
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return os.NewSyscallError("setsockopt PACKET_VERSION", err)
	}
	return nil
}

// mapRing creates the ring (PACKET_RX_RING or PACKET_TX_RING) and maps it.
func (b *base) mapRing(opt int) error {
	req := unix.TpacketReq{
		Block_size: uint32(b.geo.blockSize),
		Block_nr:   uint32(b.geo.blockNr),
		Frame_size: uint32(b.geo.frameSize),
		Frame_nr:   uint32(b.geo.frameNr),
	}
	if err := unix.SetsockoptTpacketReq(b.fd, unix.SOL_PACKET, opt, &req); err != nil {
		return os.NewSyscallError("setsockopt PACKET_*_RING", err)
	}
	mem, err := unix.Mmap(b.fd, 0, b.geo.totalBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	b.mem = mem
	b.offs = make([]uint32, b.geo.frameNr)
	for i := range b.offs {
		b.offs[i] = uint32(b.geo.offset(i))
	}
	return nil
}

// bind binds the socket to the interface with the given protocol
// (network byte order).
func (b *base) bind(protoBE uint16) error {
	sa := &unix.SockaddrLinklayer{Protocol: protoBE, Ifindex: b.ifindex}
	if err := unix.Bind(b.fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	return nil
}

// release unmaps the ring and closes the socket. It is idempotent.
func (b *base) release() error {
	if b.closed.Swap(true) {
		return nil
	}
	var err error
	if b.mem != nil {
		err = unix.Munmap(b.mem)
		b.mem = nil
	}
	b.offs = nil
	if b.fd >= 0 {
		if cerr := unix.Close(b.fd); cerr != nil && err == nil {
			err = cerr
		}
		b.fd = -1
	}
	return err
}

// poll waits for events on the socket. timeout < 0 waits forever. It
// returns nil when an event arrived (or on EINTR), ErrTimeout, or the
// socket's pending error.
func (b *base) poll(events int16, timeout time.Duration) error {
	b.pfd[0] = unix.PollFd{Fd: int32(b.fd), Events: events}
	var tsp *unix.Timespec
	if timeout >= 0 {
		b.ts = unix.NsecToTimespec(int64(timeout))
		tsp = &b.ts
	}
	n, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&b.pfd[0])), 1,
		uintptr(unsafe.Pointer(tsp)), 0, 0, 0)
	switch {
	case e == unix.EINTR:
		return nil
	case e != 0:
		return e
	case n == 0:
		return ErrTimeout
	}
	if b.pfd[0].Revents&unix.POLLERR != 0 {
		if v, err := unix.GetsockoptInt(b.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && v != 0 {
			return unix.Errno(v)
		}
	}
	if b.pfd[0].Revents&unix.POLLNVAL != 0 {
		return ErrClosed
	}
	return nil
}

// attachFilter attaches (or, for nil, detaches) a classic BPF program.
func attachFilter(fd int, filter []bpf.RawInstruction) error {
	if filter == nil {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return os.NewSyscallError("setsockopt SO_DETACH_FILTER", err)
		}
		return nil
	}
	if len(filter) == 0 || len(filter) > maxFilterLen {
		return fmt.Errorf("ring: filter length %d out of range 1..%d", len(filter), maxFilterLen)
	}
	prog := make([]unix.SockFilter, len(filter))
	for i, ins := range filter {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err)
	}
	return nil
}

// RX is a TPACKET_V2 receive ring on one interface. See the package
// documentation for the concurrency contract.
type RX struct {
	base
	head int // next slot to hand out
	tail int // oldest slot still held by the caller
	held int // slots handed out and not yet released

	statsMu sync.Mutex
	stats   RXStats
}

// OpenRX opens an RX ring bound to ifindex (0: all interfaces) with ETH_P_ALL.
// The socket is created in the calling thread's network namespace.
func OpenRX(ifindex int, cfg *RXConfig) (*RX, error) {
	c := DefaultRXConfig()
	if cfg != nil {
		c = *cfg
	}
	if ifindex < 0 {
		return nil, fmt.Errorf("ring: invalid interface index %d", ifindex)
	}
	r := &RX{}
	if err := r.setup(ifindex, &c); err != nil {
		r.release()
		return nil, fmt.Errorf("ring: open RX on ifindex %d: %w", ifindex, err)
	}
	return r, nil
}

func (r *RX) setup(ifindex int, c *RXConfig) error {
	if err := r.open(ifindex, c.FrameSize, c.BlockSize, c.FrameCount); err != nil {
		return err
	}
	if c.Filter != nil {
		if err := attachFilter(r.fd, c.Filter); err != nil {
			return err
		}
	}
	if !c.KeepOutgoing {
		if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return os.NewSyscallError("setsockopt PACKET_IGNORE_OUTGOING", err)
		}
	}
	if err := r.mapRing(unix.PACKET_RX_RING); err != nil {
		return err
	}
	if err := r.bind(ethPAllBE); err != nil {
		return err
	}
	if c.Fanout != nil {
		// A fanout group's own hook replaces the socket's, so the group
		// must ignore outgoing frames itself.
		f := *c.Fanout
		if !c.KeepOutgoing {
			f.Flags |= FanoutFlagIgnoreOutgoing
		}
		if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_FANOUT, f.sockoptValue()); err != nil {
			return os.NewSyscallError("setsockopt PACKET_FANOUT", err)
		}
	}
	return nil
}

// Next hands out the next received frame, or ok=false when none is ready.
// The frame points into the ring (its capacity is clipped to its length)
// and stays valid until it is released with Release or ReleaseAll; frames
// are released oldest first. Up to FrameCount frames may be held at once.
func (r *RX) Next() (frame []byte, meta Meta, ok bool) {
	if r.held == len(r.offs) {
		return nil, Meta{}, false
	}
	h := r.hdr(r.head)
	st := atomic.LoadUint32(&h.Status)
	if st&StatusUser == 0 {
		return nil, Meta{}, false
	}
	start := int(r.offs[r.head]) + int(h.Mac)
	snap := int(h.Snaplen)
	if limit := int(r.offs[r.head]) + r.geo.frameSize; start > limit {
		start, snap = limit, 0
	} else if start+snap > limit {
		snap = limit - start
	}
	meta = Meta{
		Status: st, Len: h.Len, Snap: uint32(snap),
		Sec: h.Sec, Nsec: h.Nsec,
		VLANTCI: h.Vlan_tci, VLANTPID: h.Vlan_tpid,
	}
	if r.head++; r.head == len(r.offs) {
		r.head = 0
	}
	r.held++
	return r.mem[start : start+snap : start+snap], meta, true
}

// Release returns the oldest held frame to the kernel. It does nothing when
// no frame is held.
func (r *RX) Release() {
	if r.held == 0 {
		return
	}
	atomic.StoreUint32(&r.hdr(r.tail).Status, unix.TP_STATUS_KERNEL)
	if r.tail++; r.tail == len(r.offs) {
		r.tail = 0
	}
	r.held--
}

// ReleaseAll returns every held frame to the kernel.
func (r *RX) ReleaseAll() {
	for r.held > 0 {
		r.Release()
	}
}

// Held returns the number of frames handed out and not yet released.
func (r *RX) Held() int { return r.held }

// Recv fills b with up to len(b.Frames) ready frames and returns their
// number (also stored in b.N). The frames are held: release them with
// ReleaseAll (or Release, oldest first) before they are reused.
func (r *RX) Recv(b *Batch) int {
	n := 0
	for n < len(b.Frames) && n < len(b.Metas) {
		f, m, ok := r.Next()
		if !ok {
			break
		}
		b.Frames[n], b.Metas[n] = f, m
		n++
	}
	b.N = n
	return n
}

// Ready reports whether Next would return a frame.
func (r *RX) Ready() bool {
	return r.held < len(r.offs) && atomic.LoadUint32(&r.hdr(r.head).Status)&StatusUser != 0
}

// Wait blocks until a frame is ready, the timeout expires (ErrTimeout) or
// the socket reports an error (e.g. ENETDOWN). A negative timeout waits
// forever. It returns at once when a frame is already ready. Release held
// frames before waiting: while the newest frame is held the kernel reports
// the socket readable and Wait returns at once.
func (r *RX) Wait(timeout time.Duration) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if r.Ready() {
		return nil
	}
	return r.poll(unix.POLLIN|unix.POLLERR, timeout)
}

// TakeError returns the socket's pending error and clears it (SO_ERROR), or
// nil when there is none. The kernel sets ENETDOWN when the interface goes
// down or is removed; until it is taken, poll(2) reports POLLERR at once,
// so a caller polling the socket itself (several rings in one poll) must
// take it when it sees POLLERR, or spin. (Wait takes it itself.) The ring
// keeps working when the interface comes back up; a removed interface's
// ring stays silent and must be reopened on the new interface.
func (r *RX) TakeError() error {
	if r.closed.Load() {
		return ErrClosed
	}
	v, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	if v != 0 {
		return unix.Errno(v)
	}
	return nil
}

// SetFilter replaces the socket's classic BPF filter atomically; nil
// removes it (everything is accepted).
func (r *RX) SetFilter(filter []bpf.RawInstruction) error {
	if r.closed.Load() {
		return ErrClosed
	}
	return attachFilter(r.fd, filter)
}

// Stats reads and accumulates the kernel's PACKET_STATISTICS. It is safe to
// call from any goroutine.
func (r *RX) Stats() (RXStats, error) {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	if r.closed.Load() {
		return r.stats, ErrClosed
	}
	st, err := unix.GetsockoptTpacketStats(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return r.stats, os.NewSyscallError("getsockopt PACKET_STATISTICS", err)
	}
	r.stats.Packets += uint64(st.Packets)
	r.stats.Drops += uint64(st.Drops)
	return r.stats, nil
}

// FrameCount returns the number of slots in the ring.
func (r *RX) FrameCount() int { return len(r.offs) }

// SnapLen returns the longest frame a slot holds without truncation.
func (r *RX) SnapLen() int { return r.geo.frameSize - RXDataOffset }

// Fd returns the socket's file descriptor.
func (r *RX) Fd() int { return r.fd }

// Ifindex returns the interface index the ring is bound to.
func (r *RX) Ifindex() int { return r.ifindex }

// Close unmaps the ring and closes the socket; frames handed out become
// invalid. It is idempotent and must not run concurrently with the owner's
// calls.
func (r *RX) Close() error {
	r.statsMu.Lock() // a concurrent Stats must not use the closed fd
	defer r.statsMu.Unlock()
	r.head, r.tail, r.held = 0, 0, 0
	return r.release()
}

// TX is a TPACKET_V2 transmit ring on one interface. See the package
// documentation for the concurrency contract.
type TX struct {
	base
	data       int  // where frame data starts in a slot
	vnet       bool // slots carry a virtio_net_hdr in front of the frame
	capacity   int  // writable bytes per slot
	maxFrame   int  // largest frame the device accepts (MTU + 14)
	flushEvery int

	prod      int // next slot to fill
	pend      int // oldest committed slot not yet seen taken by the kernel
	queued    int // committed slots from pend up to prod
	sinceKick int // commits since the last kick

	frames, kicks, again, nobufs, errs, wrong, malformed, full atomic.Uint64
}

// OpenTX opens a TX ring bound to ifindex (protocol 0: the socket receives
// nothing). The socket is created in the calling thread's network namespace.
func OpenTX(ifindex int, cfg *TXConfig) (*TX, error) {
	c := DefaultTXConfig()
	if cfg != nil {
		c = *cfg
	}
	if ifindex <= 0 {
		return nil, fmt.Errorf("ring: invalid interface index %d for TX", ifindex)
	}
	t := &TX{}
	if err := t.setup(ifindex, &c); err != nil {
		t.release()
		return nil, fmt.Errorf("ring: open TX on ifindex %d: %w", ifindex, err)
	}
	return t, nil
}

func (t *TX) setup(ifindex int, c *TXConfig) error {
	if err := t.open(ifindex, c.FrameSize, c.BlockSize, c.FrameCount); err != nil {
		return err
	}
	switch {
	case c.FlushEvery == 0:
		t.flushEvery = DefaultFlushEvery
	case c.FlushEvery < 0:
		t.flushEvery = 0
	default:
		t.flushEvery = c.FlushEvery
	}
	t.data = TXDataOffset
	if !c.ZeroCopy {
		t.vnet = true
		t.data += txVnetRoom
	}
	t.capacity = t.geo.frameSize - t.data
	mtu, err := deviceMTU(t.fd, ifindex)
	if err != nil {
		return err
	}
	t.maxFrame = min(t.capacity, mtu+ethHdrLen)
	if c.QdiscBypass {
		if err := unix.SetsockoptInt(t.fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return os.NewSyscallError("setsockopt PACKET_QDISC_BYPASS", err)
		}
	}
	// Frames carry their own offset (tp_mac), for CommitAt.
	if err := unix.SetsockoptInt(t.fd, unix.SOL_PACKET, unix.PACKET_TX_HAS_OFF, 1); err != nil {
		return os.NewSyscallError("setsockopt PACKET_TX_HAS_OFF", err)
	}
	if t.vnet {
		// Before the ring is mapped: the kernel refuses it afterwards.
		if err := unix.SetsockoptInt(t.fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return os.NewSyscallError("setsockopt PACKET_VNET_HDR", err)
		}
	}
	if err := t.mapRing(unix.PACKET_TX_RING); err != nil {
		return err
	}
	// Let the whole ring be in flight: the default send buffer (~200 KiB)
	// would stop a kick after ~100 frames with EAGAIN. Best effort.
	sndbuf := min(t.geo.totalBytes*2, 64<<20)
	if unix.SetsockoptInt(t.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndbuf) != nil {
		_ = unix.SetsockoptInt(t.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return t.bind(0)
}

// deviceMTU asks the kernel for the MTU of ifindex through the socket, so
// the socket's network namespace is used.
func deviceMTU(fd, ifindex int) (int, error) {
	ifr, err := unix.NewIfreq("x")
	if err != nil {
		return 0, err
	}
	ifr.SetUint32(uint32(ifindex))
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr); err != nil {
		return 0, os.NewSyscallError("ioctl SIOCGIFNAME", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, os.NewSyscallError("ioctl SIOCGIFMTU", err)
	}
	return int(ifr.Uint32()), nil
}

// idx wraps a slot index.
func (t *TX) idx(i int) int {
	if i >= len(t.offs) {
		i -= len(t.offs)
	}
	return i
}

// Slot returns the writable buffer of the next free slot (MaxFrame or more
// bytes; FrameSize-48, FrameSize-32 with ZeroCopy), or false when the ring is full: the caller then
// counts a drop, or calls Flush/Wait and retries. The buffer stays valid
// until the next Commit, CommitAt or Flush. Calling Slot again without a
// commit returns the same slot.
func (t *TX) Slot() ([]byte, bool) {
	if !t.slotFree() {
		t.full.Add(1)
		return nil, false
	}
	off := int(t.offs[t.prod]) + t.data
	return t.mem[off : off+t.capacity : off+t.capacity], true
}

// slotFree reports whether the slot at prod may be filled.
func (t *TX) slotFree() bool {
	if t.closed.Load() {
		return false
	}
	if t.queued == len(t.offs) {
		t.retire()
		if t.queued == len(t.offs) {
			return false
		}
	}
	return atomic.LoadUint32(&t.hdr(t.prod).Status)&txBusyMask == 0
}

// Commit queues the first n bytes of the slot returned by Slot for
// transmission. It returns false, counting Malformed, when n is outside
// 14..MaxFrame (MaxFrame+4 for a frame with an 802.1Q/802.1ad tag) or no
// free slot was reserved. Every FlushEvery commits it flushes.
func (t *TX) Commit(n int) bool { return t.CommitAt(0, n) }

// CommitAt queues n bytes starting at byte off of the slot returned by Slot
// (PACKET_TX_HAS_OFF): a frame built behind headroom is sent without being
// moved. Limits as for Commit, and off+n must fit the slot.
func (t *TX) CommitAt(off, n int) bool {
	if t.closed.Load() {
		t.malformed.Add(1)
		return false
	}
	h := t.hdr(t.prod)
	start := int(t.offs[t.prod]) + t.data
	var frame []byte
	if off >= 0 && off <= t.capacity-ethHdrLen {
		frame = t.mem[start+off : start+t.capacity]
	}
	if t.queued == len(t.offs) || atomic.LoadUint32(&h.Status)&txBusyMask != 0 ||
		!validTXLen(frame, off, n, t.capacity, t.maxFrame) {
		t.malformed.Add(1)
		return false
	}
	mac, l := t.data+off, n
	if t.vnet {
		// struct virtio_net_hdr: no offloads, hdr_len = the whole frame,
		// so the kernel copies all of it into the skb's linear area.
		mac, l = mac-vnetHdrLen, n+vnetHdrLen
		v := t.mem[start+off-vnetHdrLen : start+off]
		clear(v)
		binary.NativeEndian.PutUint16(v[2:4], uint16(n))
	}
	h.Len = uint32(l)
	h.Snaplen = uint32(l)
	h.Mac = uint16(mac)
	atomic.StoreUint32(&h.Status, txSendRequest)
	t.prod = t.idx(t.prod + 1)
	t.queued++
	t.sinceKick++
	if t.flushEvery > 0 && t.sinceKick >= t.flushEvery {
		_ = t.Flush() // failures are counted in Stats
	}
	return true
}

// Pending returns the number of committed frames the kernel has not taken
// yet. A worker should Flush until it is 0 before it sleeps.
func (t *TX) Pending() int {
	t.retire()
	return t.queued
}

// Flush kicks the kernel to send every committed frame: one
// sendto(fd, NULL, 0, MSG_DONTWAIT), and nothing when no frame is pending.
// EAGAIN and ENOBUFS are counted and not returned (the frames stay queued
// for the next Flush). Frames the kernel refuses (TP_STATUS_WRONG_FORMAT)
// are counted, reclaimed and dropped, and the rest are kicked again. Other
// errors (ENETDOWN, ENXIO, ...) are counted and returned.
func (t *TX) Flush() error {
	if t.queued == 0 || t.closed.Load() {
		return nil
	}
	t.sinceKick = 0
	for tries := 0; tries <= len(t.offs); tries++ {
		// A raw system call: MSG_DONTWAIT never sleeps, so the Go
		// scheduler need not be told (entersyscall/exitsyscall). Told, its
		// sysmon thread keeps taking the P away from a worker that kicks
		// thousands of times a second, waking every 20 µs to do so; on a
		// worker's core that is a context switch each time.
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(t.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		t.kicks.Add(1)
		reclaimed := t.retire()
		if reclaimed && t.queued > 0 {
			continue // the frames behind a refused one: kick again
		}
		switch e {
		case 0:
			return nil
		case unix.EAGAIN, unix.EINTR:
			t.again.Add(1)
			return nil
		case unix.ENOBUFS:
			t.nobufs.Add(1)
			return nil
		}
		if reclaimed {
			return nil // the error was the refused frame's
		}
		t.errs.Add(1)
		return e
	}
	return nil
}

// Discard drops every committed frame the kernel has not taken and returns
// their number. Flush leaves frames queued when the device refuses them as
// a whole (ENETDOWN: the interface is down; ENXIO: it is gone): a worker
// that kept them would find the ring pending and kick it again and again.
// The kernel's send position stays on the oldest of them, which becomes
// the next slot to fill, so the ring stays in step with the kernel.
func (t *TX) Discard() int {
	if t.closed.Load() {
		return 0
	}
	t.retire()
	n := t.queued
	for j := 0; j < n; j++ {
		atomic.StoreUint32(&t.hdr(t.idx(t.pend+j)).Status, txAvailable)
	}
	t.prod, t.queued, t.sinceKick = t.pend, 0, 0
	return n
}

// retire advances pend over slots the kernel has taken and reclaims a
// refused one. It reports whether a slot was reclaimed.
func (t *TX) retire() (reclaimed bool) {
	var n uint64
	for t.queued > 0 {
		st := atomic.LoadUint32(&t.hdr(t.pend).Status)
		if st&txWrongFormat != 0 {
			t.reclaim()
			reclaimed = true
			continue
		}
		if st&txSendRequest != 0 {
			break
		}
		t.pend = t.idx(t.pend + 1)
		t.queued--
		n++
	}
	if n > 0 {
		t.frames.Add(n)
	}
	return reclaimed
}

// reclaim drops the refused frame at pend. The kernel's send position
// stays on that slot and only moves on when it holds a send request again,
// so the queued frames behind it are moved one slot back (keeping their
// order) and the last queued slot is freed. The kernel never touches
// send-request slots outside sendto, which only this goroutine calls.
func (t *TX) reclaim() {
	t.wrong.Add(1)
	for j := 0; j < t.queued-1; j++ {
		dst, src := t.idx(t.pend+j), t.idx(t.pend+j+1)
		hd, hs := t.hdr(dst), t.hdr(src)
		m, l := int(hs.Mac), int(hs.Len)
		if m+l > t.geo.frameSize { // cannot happen: CommitAt bounds both
			m, l = TXDataOffset, 0
		}
		copy(t.mem[int(t.offs[dst])+m:int(t.offs[dst])+m+l], t.mem[int(t.offs[src])+m:int(t.offs[src])+m+l])
		hd.Len, hd.Snaplen, hd.Mac = uint32(l), uint32(l), uint16(m)
		atomic.StoreUint32(&hd.Status, txSendRequest)
	}
	last := t.idx(t.pend + t.queued - 1)
	atomic.StoreUint32(&t.hdr(last).Status, txAvailable)
	t.prod = last
	t.queued--
}

// Wait blocks until Slot can return a slot, the timeout expires
// (ErrTimeout) or the socket reports an error. It flushes pending frames
// first. A negative timeout waits forever.
func (t *TX) Wait(timeout time.Duration) error {
	if t.closed.Load() {
		return ErrClosed
	}
	if t.slotFree() {
		return nil
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if t.slotFree() {
		return nil
	}
	return t.poll(unix.POLLOUT|unix.POLLERR, timeout)
}

// Stats returns the ring's counters. It is safe to call from any goroutine.
func (t *TX) Stats() TXStats {
	return TXStats{
		Frames: t.frames.Load(), Kicks: t.kicks.Load(), Again: t.again.Load(),
		NoBufs: t.nobufs.Load(), Errors: t.errs.Load(), WrongFormat: t.wrong.Load(),
		Malformed: t.malformed.Load(), Full: t.full.Load(),
	}
}

// MaxFrame returns the longest frame Commit accepts: min(FrameSize-32,
// MTU+14) with the device MTU sampled at open (4 more bytes are accepted
// for a frame carrying a VLAN tag).
func (t *TX) MaxFrame() int { return t.maxFrame }

// FrameCount returns the number of slots in the ring.
func (t *TX) FrameCount() int { return len(t.offs) }

// Fd returns the socket's file descriptor.
func (t *TX) Fd() int { return t.fd }

// Ifindex returns the interface index the ring is bound to.
func (t *TX) Ifindex() int { return t.ifindex }

// Close unmaps the ring and closes the socket. Frames committed but not yet
// taken by the kernel are dropped; call Flush first. It is idempotent and
// must not run concurrently with the owner's calls.
func (t *TX) Close() error {
	t.prod, t.pend, t.queued = 0, 0, 0
	return t.release()
}
