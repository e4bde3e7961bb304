package xdp

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UMEM is the packet memory of one worker's sockets: Frames frames of
// FrameSize bytes, and a stack of the frames userspace owns (free). The
// frames are handed to the kernel by the sockets' fill rings and come back
// on their RX rings (received) and completion rings (sent).
//
// A UMEM and its sockets belong to one goroutine.
type UMEM struct {
	Mem       []byte
	FrameSize int
	free      []uint64
	owner     *Socket // the socket the UMEM is registered with
}

// NewUMEM maps frames*frameSize bytes of anonymous memory. frameSize must
// be a power of two between 2048 and the page size.
func NewUMEM(frames, frameSize int) (*UMEM, error) {
	if frameSize < 2048 || frameSize > unix.Getpagesize() || frameSize&(frameSize-1) != 0 {
		return nil, fmt.Errorf("xdp: frame size %d: want a power of two from 2048 to the page size", frameSize)
	}
	if frames <= 0 {
		return nil, fmt.Errorf("xdp: %d frames", frames)
	}
	mem, err := unix.Mmap(-1, 0, frames*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("xdp: UMEM: %w", err)
	}
	u := &UMEM{Mem: mem, FrameSize: frameSize, free: make([]uint64, 0, frames)}
	for i := frames - 1; i >= 0; i-- {
		u.free = append(u.free, uint64(i*frameSize))
	}
	return u, nil
}

// Alloc takes a free frame (its offset in Mem).
func (u *UMEM) Alloc() (uint64, bool) {
	n := len(u.free)
	if n == 0 {
		return 0, false
	}
	a := u.free[n-1]
	u.free = u.free[:n-1]
	return a, true
}

// Free gives back the frame holding addr (any address inside it).
func (u *UMEM) Free(addr uint64) {
	u.free = append(u.free, addr&^uint64(u.FrameSize-1))
}

// FreeFrames is the number of frames userspace holds unused.
func (u *UMEM) FreeFrames() int { return len(u.free) }

// Frame returns the whole frame holding addr and addr's offset in it.
func (u *UMEM) Frame(addr uint64) ([]byte, int) {
	base := addr &^ uint64(u.FrameSize-1)
	return u.Mem[base : base+uint64(u.FrameSize) : base+uint64(u.FrameSize)], int(addr - base)
}

// Close unmaps the memory; its sockets must be closed first.
func (u *UMEM) Close() error {
	if u.Mem == nil {
		return nil
	}
	err := unix.Munmap(u.Mem)
	u.Mem = nil
	return err
}

// SocketConfig configures a Socket.
type SocketConfig struct {
	Ifindex, Queue int
	// RingSize is the number of entries of each ring (a power of two);
	// 0: 2048.
	RingSize int
	// ZeroCopy asks for XDP_ZEROCOPY, and fails where the driver cannot;
	// otherwise the socket binds in copy mode. The second and later
	// sockets of a UMEM get the first one's mode (the kernel's rule).
	ZeroCopy bool
}

// Socket is an AF_XDP socket bound to one (interface, RX queue), with RX
// and TX rings and its own fill and completion rings on the shared UMEM.
type Socket struct {
	fd    int
	umem  *UMEM
	fill  addrRing
	comp  addrRing
	rx    descRing
	tx    descRing
	mmaps [][]byte
	// Kicks counts sendto(2) calls; KickErrors those that failed other
	// than EAGAIN/EBUSY/ENOBUFS.
	Kicks, KickErrors uint64
}

// Open opens a socket on u. The first socket of a UMEM registers it (with
// XDP_USE_NEED_WAKEUP); later ones bind with XDP_SHARED_UMEM, on any
// interface and queue (kernel 5.10+), with their own fill and completion
// rings.
func Open(u *UMEM, cfg SocketConfig) (s *Socket, err error) {
	size := cfg.RingSize
	if size == 0 {
		size = 2048
	}
	if size&(size-1) != 0 {
		return nil, fmt.Errorf("xdp: ring size %d is not a power of two", size)
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("xdp: socket: %w", err)
	}
	s = &Socket{fd: fd, umem: u}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	shared := u.owner != nil
	if !shared {
		reg := unix.XDPUmemReg{
			Addr: uint64(uintptr(unsafe.Pointer(&u.Mem[0]))),
			Len:  uint64(len(u.Mem)),
			Size: uint32(u.FrameSize),
		}
		if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
			return s, fmt.Errorf("xdp: XDP_UMEM_REG: %w", err)
		}
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING, unix.XDP_TX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, size); err != nil {
			return s, fmt.Errorf("xdp: ring option %d: %w", opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	ol := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&ol)), 0); e != 0 {
		return s, fmt.Errorf("xdp: XDP_MMAP_OFFSETS: %w", e)
	}
	if s.fill.mem, err = s.mmap(off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, size, 8); err != nil {
		return s, err
	}
	s.fill.init(off.Fr, size)
	if s.comp.mem, err = s.mmap(off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, size, 8); err != nil {
		return s, err
	}
	s.comp.init(off.Cr, size)
	if s.rx.mem, err = s.mmap(off.Rx, unix.XDP_PGOFF_RX_RING, size, 16); err != nil {
		return s, err
	}
	s.rx.init(off.Rx, size)
	if s.tx.mem, err = s.mmap(off.Tx, unix.XDP_PGOFF_TX_RING, size, 16); err != nil {
		return s, err
	}
	s.tx.init(off.Tx, size)
	// Copy-mode TX sends at most this many frames per sendto(2) (default
	// 32): one batch of the worker goes in one call. Older kernels lack
	// the option.
	_ = unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, size)

	sa := &unix.SockaddrXDP{Ifindex: uint32(cfg.Ifindex), QueueID: uint32(cfg.Queue)}
	if shared {
		sa.Flags = unix.XDP_SHARED_UMEM
		sa.SharedUmemFD = uint32(u.owner.fd)
	} else {
		sa.Flags = unix.XDP_USE_NEED_WAKEUP | unix.XDP_COPY
		if cfg.ZeroCopy {
			sa.Flags = unix.XDP_USE_NEED_WAKEUP | unix.XDP_ZEROCOPY
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return s, fmt.Errorf("xdp: bind ifindex %d queue %d (flags %#x): %w", cfg.Ifindex, cfg.Queue, sa.Flags, err)
	}
	if !shared {
		u.owner = s
	}
	return s, nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0); e != 0 {
		return e
	}
	return nil
}

func (s *Socket) mmap(off unix.XDPRingOffset, pgoff int64, size, descSize int) ([]byte, error) {
	m, err := unix.Mmap(s.fd, pgoff, int(off.Desc)+size*descSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("xdp: mmap ring at %#x: %w", pgoff, err)
	}
	s.mmaps = append(s.mmaps, m)
	return m, nil
}

// Fd is the socket's descriptor (for the XSKMAP and poll).
func (s *Socket) Fd() int { return s.fd }

// ZeroCopy reports whether the socket is bound in zero-copy mode.
func (s *Socket) ZeroCopy() (bool, error) {
	var opts uint32
	ol := uint32(4)
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_XDP, unix.XDP_OPTIONS,
		uintptr(unsafe.Pointer(&opts)), uintptr(unsafe.Pointer(&ol)), 0); e != 0 {
		return false, e
	}
	return opts&unix.XDP_OPTIONS_ZEROCOPY != 0, nil
}

// Stats reads the socket's XDP_STATISTICS.
func (s *Socket) Stats() (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	ol := uint32(unsafe.Sizeof(st))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&ol)), 0); e != 0 {
		return st, e
	}
	return st, nil
}

// Refill moves free UMEM frames to the fill ring, at most n (and at most
// what the ring has room for); it returns how many.
func (s *Socket) Refill(n int) int {
	free := s.fill.free()
	n = min(n, free, len(s.umem.free))
	if n <= 0 {
		return 0
	}
	for i := 0; i < n; i++ {
		a, _ := s.umem.Alloc()
		s.fill.put(uint32(i), a)
	}
	s.fill.produce(uint32(n))
	return n
}

// FillLevel is the number of frames the kernel holds for receiving.
func (s *Socket) FillLevel() int { return s.fill.size() - s.fill.free() }

// Complete returns the frames the kernel has sent to the UMEM's free
// frames, and how many.
func (s *Socket) Complete() int {
	n := s.comp.avail()
	for i := uint32(0); i < n; i++ {
		s.umem.Free(s.comp.get(i))
	}
	s.comp.consume(n)
	return int(n)
}

// Received returns the number of RX descriptors ready (at most max); read
// them with RX(i) and release them with Release(n).
func (s *Socket) Received(max int) int { return int(min(s.rx.avail(), uint32(max))) }

// RX is the i-th ready RX descriptor.
func (s *Socket) RX(i int) unix.XDPDesc { return s.rx.get(uint32(i)) }

// Release gives n RX descriptors back to the kernel (their frames are now
// the caller's: sent with Send, or freed with UMEM.Free).
func (s *Socket) Release(n int) { s.rx.consume(uint32(n)) }

// Send queues the frame at addr (len n, inside one UMEM frame) on the TX
// ring; false when the ring is full. The frame comes back on the
// completion ring once sent; Kick makes the kernel send.
func (s *Socket) Send(addr uint64, n int) bool {
	if s.tx.free() == 0 {
		return false
	}
	s.tx.put(0, unix.XDPDesc{Addr: addr, Len: uint32(n)})
	s.tx.produce(1)
	return true
}

// TXPending is the number of frames queued and not yet taken by the
// kernel.
func (s *Socket) TXPending() int { return s.tx.size() - s.tx.free() }

// Kick makes the kernel send what the TX ring holds, when the ring needs a
// wake-up (always in copy mode). EAGAIN/EBUSY/ENOBUFS (come back later)
// return nil; ENETDOWN and the like are returned.
func (s *Socket) Kick() error {
	if s.TXPending() == 0 || !s.tx.needWakeup() {
		return nil
	}
	s.Kicks++
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
		return nil
	}
	s.KickErrors++
	return e
}

// NeedsRXWakeup reports whether the kernel wants a poll(2) or recvfrom(2)
// before it fills the RX ring (XDP_USE_NEED_WAKEUP on the fill ring).
func (s *Socket) NeedsRXWakeup() bool { return s.fill.needWakeup() }

// Close closes the socket and unmaps its rings; frames it held are lost
// to the UMEM (close the UMEM with it).
func (s *Socket) Close() error {
	var errs []error
	for _, m := range s.mmaps {
		errs = append(errs, unix.Munmap(m))
	}
	s.mmaps = nil
	if s.fd >= 0 {
		errs = append(errs, unix.Close(s.fd))
		s.fd = -1
	}
	if s.umem != nil && s.umem.owner == s {
		s.umem.owner = nil
	}
	return errors.Join(errs...)
}

// ring is the shared part of the four rings: producer and consumer
// indexes and flags in the mapping, and the cached index of our side.
type ring struct {
	mem        []byte
	prod, cons *uint32
	flags      *uint32
	mask       uint32
	n          uint32
	cached     uint32 // our own index (producer or consumer)
	other      uint32 // last read of the kernel's index
	desc       unsafe.Pointer
}

func (r *ring) init(off unix.XDPRingOffset, size int) {
	base := unsafe.Pointer(&r.mem[0])
	r.prod = (*uint32)(unsafe.Add(base, off.Producer))
	r.cons = (*uint32)(unsafe.Add(base, off.Consumer))
	r.flags = (*uint32)(unsafe.Add(base, off.Flags))
	r.desc = unsafe.Add(base, off.Desc)
	r.n = uint32(size)
	r.mask = uint32(size - 1)
}

func (r *ring) size() int { return int(r.n) }

// Producer side (fill, TX): free entries.
func (r *ring) free() int {
	r.cached = atomic.LoadUint32(r.prod) // ours; the kernel never writes it
	return int(r.n - (r.cached - atomic.LoadUint32(r.cons)))
}

func (r *ring) produce(n uint32) { atomic.StoreUint32(r.prod, r.cached+n) }

// Consumer side (completion, RX): ready entries.
func (r *ring) avail() uint32 {
	r.cached = atomic.LoadUint32(r.cons)
	return atomic.LoadUint32(r.prod) - r.cached
}

func (r *ring) consume(n uint32) { atomic.StoreUint32(r.cons, atomic.LoadUint32(r.cons)+n) }

func (r *ring) needWakeup() bool { return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0 }

// addrRing is a fill or completion ring (u64 frame addresses).
type addrRing struct{ ring }

func (r *addrRing) put(i uint32, a uint64) {
	*(*uint64)(unsafe.Add(r.desc, uintptr((r.cached+i)&r.mask)*8)) = a
}

func (r *addrRing) get(i uint32) uint64 {
	return *(*uint64)(unsafe.Add(r.desc, uintptr((r.cached+i)&r.mask)*8))
}

// descRing is an RX or TX ring (struct xdp_desc).
type descRing struct{ ring }

func (r *descRing) put(i uint32, d unix.XDPDesc) {
	*(*unix.XDPDesc)(unsafe.Add(r.desc, uintptr((r.cached+i)&r.mask)*16)) = d
}

func (r *descRing) get(i uint32) unix.XDPDesc {
	return *(*unix.XDPDesc)(unsafe.Add(r.desc, uintptr((r.cached+i)&r.mask)*16))
}
