// Package forwarder is gvs's pipeline: everything between "a frame arrived
// on this link at this time" and "send these bytes on that link" (or drop
// with a counted reason, answer with an ICMP error, or leave the frame to the
// kernel), with IPVS's behaviour. The step is a pure function of (frame,
// arrival link, time, tables): the daemon runs it under its rings, gvs-replay
// over a capture, the tests directly.
//
// One packet's walk (Worker.Process):
//
//	parse (rewrite.Parsed)                 malformed -> Drop(reason)
//	ICMP error related to a connection  -> NAT: rewrite outer+embedded; DR/TUN: to the real server
//	client -> VIP:port of a connection  -> state machine, rewrite for the method, Transmit
//	real server -> client (NAT reply)   -> state machine (OUTPUT), SNAT to VIP:port, Transmit
//	first packet to a service           -> persistence template or scheduler, new entry, Transmit
//	                                       (no real server: ICMP port unreachable, as IPVS)
//	anything else                       -> Pass (the kernel's)
//
// The direction of a packet is found by lookup, as IPVS does, never assumed
// from the interface it arrived on.
//
// The stages are in files of their own: this one holds the types and the
// walk (Process), flowcache.go the flow and route caches, schedule.go first
// packets, xmit.go transmission, icmp.go ICMP errors related to a
// connection, replies.go the director's own answers (ICMP errors, RSTs),
// counters.go counting.
//
// Concurrency: a Pipeline is shared; each worker goroutine owns one Worker
// (scratch space, counters). Process does not allocate and takes no lock
// shared by all workers (the connection table locks one shard).
package forwarder

import (
	"net/netip"
	"sync/atomic"

	"gvs/conntrack"
	"gvs/ipvs"
	"gvs/rewrite"
)

// Headroom is the room the pipeline needs in front of a frame in its buffer:
// IPIP encapsulation writes 20 bytes there. (Removing a VLAN tag moves the
// frame 4 bytes further in, which only adds room.)
const Headroom = rewrite.TUNHeadroom

// Config assembles a pipeline.
type Config struct {
	// Env knows the director's links and next hops.
	Env Env
	// Services is the virtual-service registry (ipvsadm rules).
	Services *ipvs.Table
	// Conns is the connection table.
	Conns *conntrack.Table
	// Settings are IPVS's sysctls (nil: the kernel's defaults). The
	// pipeline reads those it honours when a packet needs them:
	// conn_reuse_mode, expire_nodest_conn, sloppy_tcp.
	Settings *ipvs.Settings
	// DefragSlots is the number of IPv4 datagrams each worker reassembles
	// at once (0: DefaultDefragSlots), each with a 64 KiB buffer
	// allocated with the worker (defrag.go).
	DefragSlots int
}

// Generationer is an optional interface of an Env whose answers can change:
// Generation changes whenever any Route answer may have changed, so that
// workers may cache routes until it does. An Env without it is asked every
// time; a staticenv.Env never changes.
type Generationer interface {
	Generation() uint64
}

// Learner is an optional interface of an Env: the pipeline tells it the
// source MAC address of the first packet of every new connection (before
// rewriting) and the link it came in on. A live Env uses it for on-link
// clients whose frames the host kernel never sees (gvs hides them from it),
// so that the first reply to a new client need not wait for ARP. It is
// called only on new connections and must be safe for concurrent use.
type Learner interface {
	Learn(src netip.Addr, mac [6]byte, link int)
}

// Pipeline is the shared part of the data path.
type Pipeline struct {
	env     Env
	gen     Generationer // nil: do not cache routes
	learner Learner      // nil: nothing to tell
	unreach Unreachabler // nil: a failed Route is always "pending"
	svcs    *ipvs.Table
	conns   *conntrack.Table
	set     *ipvs.Settings
	defrags int // Config.DefragSlots
	workers atomic.Int32
	sync    syncHook // syncrec.go
}

// New makes a pipeline.
func New(c Config) *Pipeline {
	p := &Pipeline{env: c.Env, svcs: c.Services, conns: c.Conns, set: c.Settings, defrags: c.DefragSlots}
	if p.set == nil {
		p.set = ipvs.NewSettings()
	}
	p.gen, _ = c.Env.(Generationer)
	p.learner, _ = c.Env.(Learner)
	p.unreach, _ = c.Env.(Unreachabler)
	return p
}

// Services is the pipeline's service registry.
func (p *Pipeline) Services() *ipvs.Table { return p.svcs }

// Worker is one worker goroutine's state. It is not safe for concurrent use.
type Worker struct {
	p        *Pipeline
	id       int // statistics slot, < ipvs.MaxWorkers; this worker is its only writer
	parsed   rewrite.Parsed
	conn     conntrack.Conn
	flow     ipvs.Flow
	routes   [routeCacheSize]routeEntry
	flows    [flowCacheSize]flowEntry
	res      Result
	pkt      packet  // the frame being processed
	tx       txPlan  // the plan of a packet whose flow is not cached
	ipid     uint16  // the IPv4 ID counter (nextID), unless ids
	ids      *uint32 // a shared IPv4 ID counter (ShareIPID)
	rstTAT   int64   // the RST rate limit's theoretical arrival time (GCRA)
	icmpTAT  int64   // the ICMP global rate limit's (allowICMP)
	scratch  [rewrite.ICMPErrorMaxFrame]byte
	sync     syncScratch  // syncrec.go
	large    *workerLarge // rarely used, large state: kept out of the Worker's cache lines
	defrag   *defragPool  // IPv4 reassembly (defrag.go)
	Counters Counters
}

// workerLarge is a worker's state that is large and only used off the
// common path: fragmentation and the ICMP rate limit's destinations.
type workerLarge struct {
	icmpPeers [icmpPeers]icmpPeer
	frags     [rewrite.MaxFragments][]byte // Result.Frags
	fragBuf   [rewrite.FragmentBufLen]byte // the fragments' bytes
}

// packet is the frame being processed and what came with it, passed by
// pointer through every step instead of as a row of parameters. It lives
// in the Worker (no allocation) and Process sets all of it for each frame.
type packet struct {
	buf     []byte // the caller's buffer: the frame is buf[off:off+n]
	off, n  int    // moved past a removed VLAN tag
	link    int    // the link it arrived on (VIPSide or DIPSide)
	partial bool   // the L4 checksum is only the pseudo-header sum
	now     int64  // the clock, in nanoseconds
	isNew   bool   // the frame created its connection (set by schedule)
	related bool   // an ICMP error forwarded for its connection (icmpRelated)
	// fragMax, for a datagram reassembled from fragments (defrag.go), is
	// its largest fragment's IP length (the kernel's frag_max_size); 0
	// for any other packet.
	fragMax int
}

// frame is the packet's frame, buf[off:off+n].
func (pk *packet) frame() []byte { return pk.buf[pk.off : pk.off+pk.n] }

// NewWorker makes the state for one worker goroutine. Workers are numbered
// in creation order and each owns a statistics slot; a pipeline has at most
// ipvs.MaxWorkers workers (asking for more is a programming error: panic).
func (p *Pipeline) NewWorker() *Worker {
	id := int(p.workers.Add(1) - 1)
	if id >= ipvs.MaxWorkers {
		panic("forwarder: more than ipvs.MaxWorkers workers")
	}
	return &Worker{p: p, id: id, ipid: uint16(id) << 12, large: new(workerLarge), defrag: newDefragPool(p.defrags)}
}

// nextID is the IPv4 ID of the next packet the worker builds (an IPIP
// outer header, an ICMP error): one counter per worker, shared with the
// XDP fast path when ShareIPID gave one.
func (w *Worker) nextID() uint16 {
	if w.ids != nil {
		return uint16(atomic.AddUint32(w.ids, 1))
	}
	w.ipid++
	return w.ipid
}

// ShareIPID makes the worker draw its IPv4 IDs from the counter at ids,
// which it sets to the worker's current one: another writer adding to it
// atomically (the XDP fast path's TUN encapsulation on the worker's RX
// queues) draws from the same sequence, as if the worker had built those
// packets. ShareIPID(nil) takes the counter back into the worker. It must
// not be called while the worker runs.
func (w *Worker) ShareIPID(ids *uint32) {
	if w.ids != nil {
		w.ipid = uint16(atomic.LoadUint32(w.ids))
	}
	if w.ids = ids; ids != nil {
		atomic.StoreUint32(ids, uint32(w.ipid))
	}
}

// Result is the outcome of one frame.
type Result struct {
	Action Action
	// Link is the egress link (Transmit, Reply).
	Link int
	// Frame holds the bytes to send (Transmit, Reply): a slice of the
	// caller's buffer, or of the worker's scratch space for replies, valid
	// until the next call.
	Frame  []byte
	Reason Reason
	// Conn describes the connection the frame belongs to, when there is one
	// (Dest non-nil).
	Dest   *ipvs.Dest
	State  conntrack.State
	Method ipvs.Method
	// New reports a newly scheduled connection.
	New bool
	// Out reports a packet in the OUTPUT direction (real server -> client).
	Out bool
	// Frags, when not 0, is the number of frames to send on Link, in
	// order, instead of Frame alone: the IPv4 fragments of a packet too
	// big for the egress MTU, Worker.Fragment(0) to Fragment(Frags-1)
	// (Frame is the first). They lie in the worker's scratch space, valid
	// until the next call. (A count, not a slice: the Result stays within
	// 64 bytes, copied once per packet.)
	Frags uint8
}

// Fragment is fragment i (< Result.Frags) of the last Result.
func (w *Worker) Fragment(i int) []byte { return w.large.frags[i] }

// Process runs one frame through the pipeline. The frame is
// buf[off:off+n]; off must be at least Headroom. link is the link it
// arrived on (VIPSide or DIPSide); csumPartial reports a frame whose L4
// checksum is only the pseudo-header sum (TP_STATUS_CSUMNOTREADY); now is
// the clock in nanoseconds. The frame may be rewritten in place.
func (w *Worker) Process(buf []byte, off, n, link int, csumPartial bool, now int64) Result {
	return *w.process(buf, off, n, link, csumPartial, now) // small enough to inline
}

// The steps below fill the worker's Result in place and return a pointer
// to it: one copy at the API boundary instead of one per step. They share
// the packet's description through w.pkt, set here.
func (w *Worker) process(buf []byte, off, n, link int, csumPartial bool, now int64) *Result {
	// Field by field, as in transmit.
	pk := &w.pkt
	pk.buf, pk.off, pk.n, pk.link, pk.partial, pk.now, pk.isNew, pk.related, pk.fragMax = buf, off, n, link, csumPartial, now, false, false, 0
	frame := pk.frame()
	p := &w.parsed
	switch p.Decode(frame) {
	case rewrite.Malformed:
		return w.drop(Reason(p.Reason))
	case rewrite.NotIP:
		return w.result(Result{Action: Pass})
	case rewrite.ARP:
		return w.result(Result{Action: Control})
	}
	if w.p.sync.standby.Load() { // backup_only on a backup: the kernel's
		return w.result(Result{Action: Pass})
	}
	if p.VLAN {
		// The egress link decides tagging, not the ingress tag: forward
		// untagged. Move the MAC addresses over the 4-byte tag.
		copy(pk.buf[pk.off+4:pk.off+16], pk.buf[pk.off:pk.off+12])
		pk.off += 4
		pk.n -= 4
		frame = pk.frame()
		if p.Decode(frame) != rewrite.IP {
			return w.drop(Reason(p.Reason))
		}
	}
	if r := martian(frame, p); r != ReasonNone {
		return w.drop(r)
	}
	dst := p.DstAddr()
	if p.IsFragment() {
		// Reassembled first (defrag.go); the datagram then takes the walk.
		if !w.defragWanted(p, w.p.svcs.IsVIP(dst)) {
			return w.result(Result{Action: Pass})
		}
		if r := w.defragment(pk); r != nil {
			return r
		}
		frame, dst = pk.frame(), p.DstAddr()
	}
	switch p.Proto {
	case rewrite.ProtoTCP, rewrite.ProtoUDP:
	case rewrite.ProtoICMP:
		if p.Embedded {
			if w.ownSource(p) {
				return w.drop(MartianSource)
			}
			return w.icmpRelated(pk)
		}
		return w.result(Result{Action: Pass})
	default:
		return w.result(Result{Action: Pass})
	}

	proto := ipvs.Protocol(p.Proto)
	flags := p.TCPFlags
	tcp := proto == ipvs.ProtoTCP
	syn := tcp && flags&(rewrite.TCPSyn|rewrite.TCPRst) == rewrite.TCPSyn
	c := &w.conn

	// A packet to a VIP comes from a client; any other is at most a NAT
	// reply (real server -> client). Telling them apart first saves the
	// other direction's lookup.
	steady := steadyPacket(proto, flags)
	if !w.p.svcs.IsVIP(dst) {
		fk := parsedFlowKey(p, true)
		if steady {
			if fe := w.cached(&fk, now); fe != nil {
				w.countOut(fe.conn.Dest, p.End-p.L3)
				return w.xmitOut(pk, &fe.conn, &fe.tx)
			}
		}
		if w.ownSource(p) {
			return w.drop(MartianSource)
		}
		rk := conntrack.ReplyKeyV4(proto, p.Src, p.SrcPort, p.Dst, p.DstPort)
		if w.p.conns.Out(rk, flags, now, c) {
			tx := w.remember(&fk, steady, c, now)
			w.countOut(c.Dest, p.End-p.L3)
			return w.xmitOut(pk, c, tx)
		}
		return w.natNoConn(pk)
	}

	// Client -> virtual service, existing connection. A SYN looks first
	// without touching the state (conn_reuse_mode may start afresh), and
	// a SYN that finds nothing needs no second lookup.
	fk := parsedFlowKey(p, false)
	if steady {
		if fe := w.cached(&fk, now); fe != nil && fe.conn.Dest.Available() {
			w.countIn(fe.conn.Dest, p.End-p.L3)
			return w.xmitIn(pk, &fe.conn, &fe.tx)
		}
	}
	if w.ownSource(p) {
		return w.drop(MartianSource)
	}
	k := conntrack.InKeyV4(proto, p.Src, p.SrcPort, p.Dst, p.DstPort)
	known := true
	if tcp && flags&rewrite.TCPSyn != 0 { // IPVS's is_new_conn: any SYN
		known = w.p.conns.PeekIn(k, now, c)
		if known && w.resched(c) {
			// The old connection expires now; the SYN is scheduled
			// afresh.
			w.p.conns.Remove(k)
			w.forget(&fk)
			known = false
		}
	}
	if known {
		// ip_vs_in checks the server status before the state machine: a
		// packet for a deleted real server neither moves the state nor
		// re-arms the timer (InLive applies neither then).
		found, avail := w.p.conns.InLive(k, flags, now, c)
		if avail {
			w.syncConn(c, now)
			tx := w.remember(&fk, steady, c, now)
			w.countIn(c.Dest, p.End-p.L3)
			return w.xmitIn(pk, c, tx)
		}
		if found {
			w.forget(&fk)
			if w.p.set.Get(ipvs.SysExpireNodestConn) == 0 {
				return w.drop(DestRemoved)
			}
			// expire_nodest_conn: the connection expires now and the
			// packet is treated as a first packet (a TCP non-SYN then
			// gets the host's RST).
			w.p.conns.Remove(k)
		}
	}

	// First packet to a service.
	svc := w.p.svcs.Lookup(proto, dst, p.DstPort, 0)
	if svc == nil {
		return w.result(Result{Action: Pass})
	}
	// tcp_conn_schedule: only a SYN without RST is scheduled (any
	// segment without RST under sloppy_tcp); anything else goes on to
	// the host's TCP, which answers with a RST.
	if tcp && (flags&rewrite.TCPRst != 0 || !syn && w.p.set.Get(ipvs.SysSloppyTCP) == 0) {
		return w.localStack(pk, NoConn)
	}
	r := w.schedule(pk, svc, k, false)
	if pk.isNew {
		w.syncConn(c, now)
	}
	return r
}
