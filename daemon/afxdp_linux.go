package daemon

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/safchain/ethtool"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"gvs/forwarder"
	"gvs/forwarder/kernel"
	"gvs/forwarder/xdp"
	"gvs/ipvs"
)

// AF_XDP sizes: each socket's rings hold xskRingSize entries; a worker's
// UMEM has twice that many frames per socket (a full fill ring and as
// many again in flight to TX).
const (
	xskRingSize  = 1024
	xskFrameSize = 2048
)

// xdpIO is the AF_XDP data path: the XDP program on each interface and the
// workers' sockets.
type xdpIO struct {
	progs  [2]*xdp.Program // per side; the same program twice when one-armed
	ios    []*xskIO
	queues int       // RX queues served per interface
	fast   *fastPath // the fast path for established flows (nil: off)
}

// foldFastPath folds the fast path's counters and last-seen times into
// the statistics and the connection table (housekeeping).
func (d *Daemon) foldFastPath() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.xdp != nil && d.xdp.fast != nil {
		d.xdp.fast.fold(d.Clock())
	}
}

// tryXDP sets AF_XDP up on vip and dip for the workers when Config.IO asks
// for it and reports whether it did; on failure it logs one line, removes
// what it set up and switches the daemon to TPACKET for good. d.mu is
// held (or New owns the daemon).
func (d *Daemon) tryXDP(vip, dip LinkInfo) bool {
	if d.cfg.IO != IOAFXDP {
		return false
	}
	err := d.openXDP(vip, dip)
	if err == nil {
		return true
	}
	d.closeXDP()
	d.cfg.IO = IOTPacket
	d.log.Warn("AF_XDP unavailable, using TPACKET rings", zap.Error(err))
	return false
}

// openXDP attaches the XDP programs and opens each worker's sockets.
func (d *Daemon) openXDP(vip, dip LinkInfo) error {
	links := []LinkInfo{vip}
	if !d.oneArm {
		links = append(links, dip)
	}
	queues := d.cfg.Workers
	for _, l := range links {
		if need := l.MTU + 18 + xdp.Headroom + forwarder.Headroom; need > xskFrameSize {
			return fmt.Errorf("%s: MTU %d does not fit a %d-byte UMEM frame", l.Name, l.MTU, xskFrameSize)
		}
		queues = min(queues, rxQueues(l.Name))
	}
	for len(d.workers) < d.cfg.Workers {
		w := newWorker(d.pipe.NewWorker(), d.Clock, d.cfg.Batch)
		w.busyPoll = int64(d.cfg.BusyPoll)
		d.workers = append(d.workers, w)
	}
	x := &xdpIO{queues: queues}
	d.xdp = x
	var flows *xdp.FlowMap
	if d.cfg.XDPFastPath {
		var err error
		if flows, err = xdp.NewFlowMap(); err != nil {
			return err
		}
		ifx := [2]int{vip.Index, dip.Index}
		if d.oneArm {
			ifx[forwarder.DIPSide] = vip.Index
		}
		x.fast = newFastPath(flows, d.env, d.conns, d.cfg.Settings, ifx, d.Clock, d.log)
		// TUN's outer IPv4 IDs: the program draws them from the
		// counter of the worker that serves the RX queue (below).
		ids, err := flows.IDCounters(queues)
		if err != nil {
			return err
		}
		for k, w := range d.workers[:min(queues, len(d.workers))] {
			w.fw.ShareIPID(ids[k])
		}
	}
	for side, l := range links {
		p, err := xdp.Attach(xdp.AttachConfig{Ifindex: l.Index, MAC: l.MAC, Modes: d.cfg.XDPModes, Flows: flows})
		if err != nil {
			return fmt.Errorf("%s: %w", l.Name, err)
		}
		x.progs[side] = p
	}
	if d.oneArm {
		x.progs[forwarder.DIPSide] = x.progs[forwarder.VIPSide]
	}
	// Worker k serves queues k, k+W, ... of each interface (W: the workers
	// with a queue); the others idle. A queue has one worker, so the
	// fragments of a datagram that the NIC puts on one queue meet in one
	// reassembly pool (forwarder/defrag.go).
	for k, w := range d.workers {
		io := &xskIO{fast: x.fast}
		if x.fast != nil {
			io.recent = new(fastRecent)
		}
		x.ios = append(x.ios, io)
		w.xsk = io
		if k >= queues {
			continue
		}
		for side, l := range links {
			io.maxFrame[side] = l.MTU + 14
		}
		if d.oneArm {
			io.maxFrame[forwarder.DIPSide] = io.maxFrame[forwarder.VIPSide]
		}
		nsock := 0
		for _, l := range links {
			for q := k; q < rxQueues(l.Name); q += queues {
				nsock++
			}
		}
		var err error
		if io.umem, err = xdp.NewUMEM(2*xskRingSize*nsock, xskFrameSize); err != nil {
			return err
		}
		for side, l := range links {
			for q := k; q < rxQueues(l.Name); q += queues {
				s, err := d.openXSK(io.umem, l, q)
				if err != nil {
					return err
				}
				io.rx = append(io.rx, s)
				io.rxSide = append(io.rxSide, side)
				io.pfds = append(io.pfds, unix.PollFd{Fd: int32(s.Fd()), Events: unix.POLLIN})
				if io.tx[side] == nil {
					io.tx[side] = s
				}
				s.Refill(xskRingSize)
				if err := x.progs[side].SetSocket(q, s.Fd()); err != nil {
					return fmt.Errorf("%s: XSKMAP: %w", l.Name, err)
				}
			}
		}
		if d.oneArm {
			io.tx[forwarder.DIPSide] = io.tx[forwarder.VIPSide]
			io.rxSide[0] = forwarder.DIPSide
		}
	}
	zc, _ := x.ios[0].rx[0].ZeroCopy()
	d.log.Info("AF_XDP data path",
		zap.String("xdp_mode", x.progs[0].Mode().String()), zap.Bool("zero_copy", zc), zap.Bool("fast_path", x.fast != nil),
		zap.Int("queues", queues), zap.Int("workers_with_queues", min(queues, len(d.workers))))
	if d.synced {
		return d.syncXDP(d.derived)
	}
	return nil
}

// rxQueues is the number of RX queues in use on an interface (ethtool's
// channels; 1 when the driver does not say). Netlink's IFLA_NUM_RX_QUEUES
// is the number allocated, which can be more: veth allocates one per CPU
// and uses one, and binding a socket to an unused queue fails (EINVAL).
func rxQueues(ifname string) int {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return 1
	}
	defer e.Close()
	ch, err := e.GetChannels(ifname)
	if err != nil {
		return 1
	}
	return max(1, int(ch.RxCount+ch.CombinedCount))
}

// openXSK opens an AF_XDP socket on (l, q): zero-copy where the driver
// can, copy mode otherwise (only the UMEM's first socket chooses).
func (d *Daemon) openXSK(u *xdp.UMEM, l LinkInfo, q int) (*xdp.Socket, error) {
	cfg := xdp.SocketConfig{Ifindex: l.Index, Queue: q, RingSize: xskRingSize, ZeroCopy: true}
	s, err := xdp.Open(u, cfg)
	if err == nil {
		return s, nil
	}
	cfg.ZeroCopy = false
	if s, err2 := xdp.Open(u, cfg); err2 == nil {
		return s, nil
	} else {
		return nil, fmt.Errorf("%s queue %d: %w", l.Name, q, errors.Join(err, err2))
	}
}

// closeXDP detaches the programs and closes the sockets (the workers are
// stopped); the workers go back to no I/O.
func (d *Daemon) closeXDP() error {
	x := d.xdp
	if x == nil {
		return nil
	}
	d.xdp = nil
	var errs []error
	for side, p := range x.progs {
		if p != nil && (side == 0 || p != x.progs[0]) {
			errs = append(errs, p.Close())
		}
	}
	for _, io := range x.ios {
		errs = append(errs, io.close())
	}
	for _, w := range d.workers {
		w.xsk = nil
		if w.fw != nil {
			w.fw.ShareIPID(nil) // before the counters' map goes
		}
	}
	if x.fast != nil {
		x.fast.detach() // before the counter slots go
		errs = append(errs, x.fast.flows.Close())
	}
	return errors.Join(errs...)
}

// syncXDP gives the XDP programs the rules of der: the nftables ingress
// drops' matches (a service's VIP:port on the VIP interface, a masqueraded
// real server's address:port as source on the DIP interface; their Frags
// rules select every fragment, first included, of the service's protocol
// to the VIP or from the real server, for the pipeline's reassembly), ICMP errors
// to a VIP, and every ICMP error on the DIP interface (the TPACKET filters'
// sets). d.mu is held.
func (d *Daemon) syncXDP(der Derived) error {
	x := d.xdp
	if x == nil {
		return nil
	}
	if x.fast != nil {
		// Services, real servers or their settings changed: the
		// pipeline decides every flow afresh.
		x.fast.flush()
	}
	dipIf := d.ifNames[forwarder.DIPSide]
	if d.oneArm {
		dipIf = ""
	}
	rules := xdpRules(&der, dipIf)
	// The host's own addresses: a real server answering the host itself
	// is the host's (followed on address changes, hostAddrsChanged).
	host, err := hostAddrs()
	if err != nil {
		return err
	}
	for a := range host {
		for s := range rules {
			rules[s] = append(rules[s], xdp.Rule{Local: true, Addr: a})
		}
	}
	if d.oneArm {
		return x.progs[0].SetRules(rules[forwarder.VIPSide], true)
	}
	return errors.Join(
		x.progs[forwarder.VIPSide].SetRules(rules[forwarder.VIPSide], false),
		x.progs[forwarder.DIPSide].SetRules(rules[forwarder.DIPSide], true))
}

// xdpRules are the XDP programs' rules (VIP side, DIP side) for der's
// matches, the host's addresses aside: an ingress rule on dipIf ("": one
// arm, every rule on the VIP side) is the DIP side's. A Frags rule stays
// one (address and protocol, every fragment), never a port-0 rule: that
// would take every port of the protocol on the address. A port range
// (PortMax: an FTP service's data ports) stays a range.
func xdpRules(der *Derived, dipIf string) [2][]xdp.Rule {
	var rules [2][]xdp.Rule
	for _, r := range der.Ingress {
		s := forwarder.VIPSide
		if dipIf != "" && r.Interface == dipIf {
			s = forwarder.DIPSide
		}
		protos := []ipvs.Protocol{r.Proto}
		if r.Proto == 0 {
			protos = []ipvs.Protocol{ipvs.ProtoTCP, ipvs.ProtoUDP}
		}
		for _, p := range protos {
			rules[s] = append(rules[s], xdp.Rule{Dst: r.Dir == kernel.MatchDst, Frags: r.Frags, Addr: r.Addr, Proto: uint8(p), Port: r.Port, PortMax: r.PortMax})
		}
	}
	for _, a := range der.VIPs {
		rules[forwarder.VIPSide] = append(rules[forwarder.VIPSide], xdp.Rule{Dst: true, Addr: a, Proto: 1})
	}
	return rules
}

// xskIO is one worker's AF_XDP sockets: one per RX queue it serves on each
// interface, all on one UMEM (XDP_SHARED_UMEM across the interfaces, so
// that a received frame is sent from where it lies); the first socket of
// each side is the side's TX socket.
type xskIO struct {
	umem     *xdp.UMEM
	rx       []*xdp.Socket
	rxSide   []int
	tx       [2]*xdp.Socket
	pfds     []unix.PollFd
	maxFrame [2]int
	fast     *fastPath   // nil: no fast path
	recent   *fastRecent // the worker's install attempts
}

func (x *xskIO) close() error {
	var errs []error
	for _, s := range x.rx {
		errs = append(errs, s.Close())
	}
	if x.umem != nil {
		errs = append(errs, x.umem.Close())
	}
	return errors.Join(errs...)
}

// runXSK is the worker loop over AF_XDP sockets (worker.run's twin).
func (w *worker) runXSK(stop *atomic.Bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	x := w.xsk
	if len(x.rx) == 0 {
		// More workers than queues: nothing to do.
		for !stop.Load() {
			time.Sleep(pollTimeout)
		}
		return
	}
	var last int64
	for turn := uint64(1); !stop.Load(); turn++ {
		w.beat.Store(turn)
		x.expire(w)
		if x.poll(w) > 0 {
			if w.busyPoll > 0 {
				last = w.clock()
			}
			continue
		}
		if w.busyPoll > 0 && w.clock()-last < w.busyPoll {
			x.flush(w)
			x.complete()
			continue
		}
		x.wait(w)
	}
	x.flush(w)
}

// expire sends what the pipeline answers for datagrams whose reassembly
// timed out (ICMP time exceeded, copied into free frames; worker.expire's
// twin); nothing to do costs one check.
func (x *xskIO) expire(w *worker) {
	now := w.clock()
	sent := false
	for {
		res, ok := w.fw.Expire(now)
		if !ok {
			break
		}
		if res.Action != forwarder.Reply || uint(res.Link) > 1 || len(res.Frame) > x.maxFrame[res.Link] {
			continue
		}
		x.sendCopy(w, res.Link, res.Frame)
		sent = true
	}
	if sent {
		x.flush(w)
	}
}

// poll takes up to a batch from every socket's RX ring, sends what the
// pipeline forwards, recycles sent frames and refills the fill rings; it
// returns the number of frames taken.
func (x *xskIO) poll(w *worker) int {
	total := 0
	for i, s := range x.rx {
		n := s.Received(w.batch)
		if n > 0 {
			now := w.clock()
			side := x.rxSide[i]
			for j := 0; j < n; j++ {
				x.handle(w, s.RX(j), side, now)
			}
			s.Release(n)
			x.flush(w)
			total += n
		}
		x.complete()
		s.Refill(xskRingSize)
	}
	return total
}

// handle runs one received frame through the pipeline where it lies in the
// UMEM (behind the kernel's XDP headroom) and queues it on the egress
// side's TX ring: no copy. A reply built in the pipeline's scratch space
// is copied into a free frame. A frame that is not sent goes back to the
// free frames. It does not allocate.
func (x *xskIO) handle(w *worker, d unix.XDPDesc, side int, now int64) {
	w.c.RX.Add(1)
	buf, off := x.umem.Frame(d.Addr)
	n := int(d.Len)
	if d.Options&unix.XDP_PKT_CONTD != 0 || off < forwarder.Headroom || off+n > len(buf) {
		w.c.Oversize.Add(1)
		x.umem.Free(d.Addr)
		return
	}
	var fk xdp.FlowKey
	var steady, keyOK bool
	if x.fast != nil {
		// The flow's tuple before the pipeline rewrites the frame.
		fk, steady, keyOK = xdp.FrameKey(buf[off : off+n])
	}
	res := w.fw.Process(buf, off, n, side, false, now)
	if keyOK && res.Dest != nil {
		x.fast.after(&fk, steady, &res, now, x.recent)
	}
	if res.Action != forwarder.Transmit && res.Action != forwarder.Reply {
		// Drop (counted by the pipeline); Pass and Control: the XDP
		// program selects only what the pipeline handles.
		x.umem.Free(d.Addr)
		return
	}
	if uint(res.Link) > 1 || len(res.Frame) == 0 {
		w.c.TXError.Add(1)
		x.umem.Free(d.Addr)
		return
	}
	if res.Frags != 0 {
		// IPv4 fragments in the pipeline's scratch space (a reassembled
		// datagram, or a packet too big for the egress MTU), as
		// worker.handle sends them: each copied into a free frame.
		x.umem.Free(d.Addr)
		for i := range int(res.Frags) {
			x.sendCopy(w, res.Link, w.fw.Fragment(i))
		}
		return
	}
	if len(res.Frame) > x.maxFrame[res.Link] {
		w.c.Oversize.Add(1)
		x.umem.Free(d.Addr)
		return
	}
	base := d.Addr - uint64(off)
	if fo := cap(buf) - cap(res.Frame); fo >= 0 && fo < len(buf) && &buf[fo] == &res.Frame[0] {
		x.send(w, res.Link, base+uint64(fo), len(res.Frame))
		return
	}
	// A reply in the pipeline's scratch space.
	x.umem.Free(d.Addr)
	x.sendCopy(w, res.Link, res.Frame)
}

// sendCopy copies frame (not in the UMEM: the pipeline's scratch space)
// into a free UMEM frame and queues it on side's TX ring.
func (x *xskIO) sendCopy(w *worker, side int, frame []byte) {
	if len(frame) > x.maxFrame[side] {
		w.c.Oversize.Add(1)
		return
	}
	a, ok := x.umem.Alloc()
	if !ok {
		w.c.TXFull.Add(1)
		return
	}
	fb, _ := x.umem.Frame(a)
	x.send(w, side, a, copy(fb, frame))
}

// send queues the UMEM frame at addr on side's TX ring, kicking the kernel
// once if the ring is full.
func (x *xskIO) send(w *worker, side int, addr uint64, n int) {
	s := x.tx[side]
	if !s.Send(addr, n) {
		_ = s.Kick()
		x.complete()
		if !s.Send(addr, n) {
			w.c.TXFull.Add(1)
			x.umem.Free(addr)
			return
		}
	}
	w.c.TX.Add(1)
}

// flush kicks the TX sockets that hold frames.
func (x *xskIO) flush(w *worker) {
	for side, s := range x.tx {
		if s == nil || side == 1 && s == x.tx[0] {
			continue
		}
		if err := s.Kick(); err != nil {
			w.c.TXError.Add(1)
		}
	}
}

// complete returns sent frames to the UMEM.
func (x *xskIO) complete() {
	for _, s := range x.rx {
		s.Complete()
	}
}

// wait sleeps in poll(2) until a socket has a frame, briefly when frames
// still wait to be sent, at most pollTimeout.
func (x *xskIO) wait(w *worker) {
	w.c.Sleeps.Add(1)
	timeout := pollTimeout
	for _, s := range x.tx {
		if s != nil && s.TXPending() > 0 {
			x.flush(w)
			timeout = time.Millisecond
		}
	}
	_, _ = unix.Poll(x.pfds, int(timeout/time.Millisecond))
	x.complete()
}
