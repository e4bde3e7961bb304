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
// Concurrency: a Pipeline is shared; each worker goroutine owns one Worker
// (scratch space, counters). Process does not allocate and takes no lock
// shared by all workers (the connection table locks one shard).
package forwarder

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

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
}

// Generationer is an optional interface of an Env whose answers can change:
// Generation changes whenever any Route answer may have changed, so that
// workers may cache routes until it does. An Env without it is asked every
// time; StaticEnv never changes.
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
	svcs    *ipvs.Table
	conns   *conntrack.Table
	set     *ipvs.Settings
	workers atomic.Int32
}

// New makes a pipeline.
func New(c Config) *Pipeline {
	p := &Pipeline{env: c.Env, svcs: c.Services, conns: c.Conns, set: c.Settings}
	if p.set == nil {
		p.set = ipvs.NewSettings()
	}
	p.gen, _ = c.Env.(Generationer)
	p.learner, _ = c.Env.(Learner)
	return p
}

// Services is the pipeline's service registry.
func (p *Pipeline) Services() *ipvs.Table { return p.svcs }

// Counters are one worker's frame counters. Only the worker writes them;
// others may read them at any time.
type Counters struct {
	Actions [numActions]atomic.Uint64
	Reasons [NumReasons]atomic.Uint64
}

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
	pkt      packet // the frame being processed
	tx       txPlan // the plan of a packet whose flow is not cached
	ipid     uint16
	rstTAT   int64 // the RST rate limit's theoretical arrival time (GCRA)
	scratch  [rewrite.ICMPErrorMaxFrame]byte
	Counters Counters
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
	return &Worker{p: p, id: id, ipid: uint16(id) << 12}
}

// The route cache: direct-mapped by the destination's low address bits.
const routeCacheSize = 64

// routeEntry caches a successful Route answer, as a transmit plan (misses
// are not cached).
type routeEntry struct {
	addr netip.Addr
	tx   txPlan
}

// The flow cache. Most packets of an established connection cannot change
// its state: a TCP segment with ACK and none of SYN, FIN or RST on an
// ESTABLISHED connection (in either direction, whatever the other direction
// did meanwhile: see steadyPacket), and any UDP datagram. For those, a
// worker reuses the connection it last got from the table for up to
// flowSlack, skipping the table's hash, shard lock and copy (and, while the
// route generation stands, the next-hop lookup: see txPlan); the table still
// sees the flow at least once per flowSlack, which re-arms its timer and
// applies any state change the other direction made. The cost is bounded
// and documented: a connection's timer may run out up to flowSlack earlier
// than IPVS's, and a transition the skipped packet would have made in a
// pathological sequence is delayed by at most flowSlack.
//
// The cache is per worker and the same flow always reaches the same worker
// (fanout hashes the flow), so it needs no locking. The only path that
// removes a connection from the table while its packets still flow (SYN
// reuse) is the same worker's, and forgets the entry.
const (
	flowCacheSize = 1024 // entries per worker, direct-mapped
	flowSlack     = int64(time.Second)
)

// flowKey packs a flow's tuple into two words (cheap to build, hash and
// compare): addresses, then ports, protocol and direction.
type flowKey struct{ addrs, rest uint64 }

func makeFlowKey(src, dst [4]byte, sport, dport uint16, proto uint8, out bool) flowKey {
	return packFlowKey(binary.BigEndian.Uint32(src[:]), binary.BigEndian.Uint32(dst[:]), sport, dport, proto, out)
}

// parsedFlowKey is the flow key of a parsed packet, read through the
// pointer: passing its address arrays by value would bounce them through
// the stack.
func parsedFlowKey(p *rewrite.Parsed, out bool) flowKey {
	return packFlowKey(binary.BigEndian.Uint32(p.Src[:]), binary.BigEndian.Uint32(p.Dst[:]), p.SrcPort, p.DstPort, p.Proto, out)
}

func packFlowKey(src, dst uint32, sport, dport uint16, proto uint8, out bool) flowKey {
	k := flowKey{
		addrs: uint64(src)<<32 | uint64(dst),
		rest:  uint64(sport)<<48 | uint64(dport)<<32 | uint64(proto)<<8 | 1, // 1: never the zero key
	}
	if out {
		k.rest |= 2
	}
	return k
}

func (k flowKey) out() bool { return k.rest&2 != 0 }

type flowEntry struct {
	key  flowKey
	at   int64 // when the table last saw the flow
	conn conntrack.Conn
	tx   txPlan
}

// txPlan is how the packets of one cached flow leave: the route answer
// and the rewrite's inputs, worked out once per route generation instead
// of once per packet. It is valid while gen equals the Env's generation+1
// (0: never; without a Generationer no plan is valid).
type txPlan struct {
	gen  uint64
	macs rewrite.MACs
	link int
	mtu  int     // the hop's MTU
	src  [4]byte // the hop's source address (the IPIP outer source)
}

func (k *flowKey) index() uint32 {
	h := (k.addrs ^ k.rest>>32) * 0x9e3779b97f4a7c15
	return uint32(h>>54) & (flowCacheSize - 1)
}

// steadyPacket reports a packet that cannot change the state of a
// connection that was ESTABLISHED (or UDP) when the table last saw it. In
// IPVS's tables an ACK (without SYN, FIN, RST) leaves ESTABLISHED, and every
// state the other direction can lead ESTABLISHED into without this
// direction's help, unchanged — except OUTPUT ack on SYN_RECV (after a
// client FIN then SYN), whose move to ESTABLISHED is then delayed until the
// table next sees the flow.
func steadyPacket(proto ipvs.Protocol, flags uint8) bool {
	if proto == ipvs.ProtoUDP {
		return true
	}
	return flags&(rewrite.TCPSyn|rewrite.TCPFin|rewrite.TCPRst) == 0 && flags&rewrite.TCPAck != 0
}

// cached returns the cache entry of a flow, if fresh enough.
func (w *Worker) cached(k *flowKey, now int64) *flowEntry {
	e := &w.flows[k.index()]
	if e.key != *k || now < e.at || now-e.at >= flowSlack {
		return nil
	}
	return e
}

// remember caches a connection the table just returned for a steady
// packet, if its state lets later steady packets skip the table, and
// returns the entry's transmit plan for the packet's own transmission to
// fill; otherwise it forgets any cached copy and returns nil.
func (w *Worker) remember(k *flowKey, steady bool, c *conntrack.Conn, now int64) *txPlan {
	e := &w.flows[k.index()]
	ok := steady && c.Flags&conntrack.FlagOnePacket == 0 &&
		(c.State == conntrack.StateEstablished || c.State == conntrack.StateUDP)
	switch {
	case ok:
		if e.key != *k || !sameTarget(&e.conn, c) {
			e.tx.gen = 0
		}
		e.key, e.at, e.conn = *k, now, *c
		return &e.tx
	case e.key == *k:
		e.key = flowKey{}
	}
	if c.State != conntrack.StateEstablished && c.State != conntrack.StateUDP {
		// The connection left the steady state: this worker's copy of the
		// other direction is stale too. (Another worker's copy lags by at
		// most flowSlack, as described above.)
		var o flowKey
		if k.out() { // the client's direction: client -> VIP
			o = makeFlowKey(c.CAddr.As4(), c.VAddr.As4(), c.CPort, c.VPort, uint8(c.Proto), false)
		} else { // the NAT reply direction: real server -> client
			o = makeFlowKey(c.DAddr.As4(), c.CAddr.As4(), c.DPort, c.CPort, uint8(c.Proto), true)
		}
		w.forget(&o)
	}
	return nil
}

// sameTarget reports that two copies of a connection are transmitted the
// same way, so that a transmit plan made for one serves the other.
func sameTarget(a, b *conntrack.Conn) bool {
	return a.Dest == b.Dest && a.Method == b.Method && a.DAddr == b.DAddr && a.DPort == b.DPort &&
		a.CAddr == b.CAddr && a.VAddr == b.VAddr && a.VPort == b.VPort
}

func (w *Worker) forget(k *flowKey) {
	if e := &w.flows[k.index()]; e.key == *k {
		e.key = flowKey{}
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
}

// Process runs one frame through the pipeline. The frame is
// buf[off:off+n]; off must be at least Headroom. link is the link it
// arrived on (VIPSide or DIPSide); csumPartial reports a frame whose L4
// checksum is only the pseudo-header sum (TP_STATUS_CSUMNOTREADY); now is
// the clock in nanoseconds. The frame may be rewritten in place.
func (w *Worker) Process(buf []byte, off, n, link int, csumPartial bool, now int64) Result {
	// Field by field, as in transmit.
	pk := &w.pkt
	pk.buf, pk.off, pk.n, pk.link, pk.partial, pk.now, pk.isNew = buf, off, n, link, csumPartial, now, false
	return *w.process(pk)
}

// The steps below fill the worker's Result in place and return a pointer
// to it: one copy at the API boundary instead of one per step.
func (w *Worker) process(pk *packet) *Result {
	frame := pk.frame()
	now := pk.now
	p := &w.parsed
	switch p.Decode(frame) {
	case rewrite.Malformed:
		return w.drop(Reason(p.Reason))
	case rewrite.NotIP:
		return w.result(Result{Action: Pass})
	case rewrite.ARP:
		return w.result(Result{Action: Control})
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
	dst := p.DstAddr()
	if p.IsFragment() {
		if w.p.svcs.IsVIP(dst) {
			return w.drop(Fragment)
		}
		return w.result(Result{Action: Pass})
	}
	switch p.Proto {
	case rewrite.ProtoTCP, rewrite.ProtoUDP:
	case rewrite.ProtoICMP:
		if p.Embedded {
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
		rk := conntrack.ReplyKeyV4(proto, p.Src, p.SrcPort, p.Dst, p.DstPort)
		if w.p.conns.Out(rk, flags, now, c) {
			tx := w.remember(&fk, steady, c, now)
			w.countOut(c.Dest, p.End-p.L3)
			return w.xmitOut(pk, c, tx)
		}
		return w.result(Result{Action: Pass})
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
	return w.schedule(pk, svc, k)
}

// resched is the conn_reuse_mode decision of ip_vs_in for a SYN (any
// segment with SYN) that found connection c: start afresh when the
// connection's real server has weight 0 and expire_nodest_conn is set, or
// when a new connection is expected on it (is_new_conn_expected): it has
// no controlling template and is in TIME_WAIT or CLOSE, or (mode bit 2)
// in FIN_WAIT without output seen.
func (w *Worker) resched(c *conntrack.Conn) bool {
	mode := w.p.set.Get(ipvs.SysConnReuseMode)
	if mode == 0 {
		return false
	}
	if c.Dest != nil && c.Dest.Weight() == 0 && w.p.set.Get(ipvs.SysExpireNodestConn) != 0 {
		return true
	}
	if c.Flags&conntrack.FlagControlled != 0 {
		return false
	}
	switch c.State {
	case conntrack.StateTimeWait, conntrack.StateClose:
		return true
	case conntrack.StateFinWait:
		return mode&2 != 0 && c.Flags&conntrack.FlagNoOutput != 0
	}
	return false
}

// The RST rate limit of a worker: resetBurst RSTs at once, then one per
// resetInterval.
const (
	resetInterval = int64(time.Millisecond)
	resetBurst    = 64
)

// allowReset takes a token from the worker's RST bucket (a GCRA: no
// state but one time).
func (w *Worker) allowReset(now int64) bool {
	tat := max(w.rstTAT, now)
	if tat-now > (resetBurst-1)*resetInterval {
		return false
	}
	w.rstTAT = tat + resetInterval
	return true
}

// localStack answers a packet IPVS leaves to the host's stack (NF_ACCEPT)
// as that stack would with nothing listening on the VIP: TCP with a RST
// (none to a RST), UDP with ICMP port unreachable — after checking the
// transport checksum, as the stack does (a frame whose checksum is only
// partial, pk.partial, is taken as good). In gvsd the host never gets
// the VIP's traffic (ingress drops), so the pipeline sends the answer.
// why is the Result's reason.
func (w *Worker) localStack(pk *packet, why Reason) *Result {
	p := &w.parsed
	frame, link := pk.frame(), pk.link
	if !pk.partial && !rewrite.L4ChecksumOK(frame, p) {
		return w.drop(BadL4Checksum)
	}
	if p.Proto == rewrite.ProtoUDP {
		return w.icmpReply(pk, why) // port unreachable
	}
	if p.TCPFlags&rewrite.TCPRst != 0 {
		return w.drop(why)
	}
	if !w.allowReset(pk.now) {
		w.Counters.Reasons[ResetLimited].Add(1)
		return w.drop(why)
	}
	m := rewrite.MACs{Dst: [6]byte(frame[6:12]), Src: w.p.env.Links()[link].MAC}
	out, ok := rewrite.TCPReset(w.scratch[:], frame, p, m)
	if !ok {
		w.Counters.Reasons[NoReply].Add(1)
		return w.drop(why)
	}
	w.Counters.Reasons[Reset].Add(1)
	r := &w.res
	*r = Result{Action: Reply, Link: link, Frame: out, Reason: why}
	return w.count(r)
}

// leave is ip_vs_leave, for a first packet the service did not schedule
// (no real server, or a port a non-persistent service does not serve):
// another port of an FTP service's VIP goes to the host's stack, any other
// packet gets ICMP port unreachable.
func (w *Worker) leave(pk *packet, cfg *ipvs.ServiceConfig) *Result {
	if cfg.Port == 21 && w.parsed.DstPort != 21 {
		return w.localStack(pk, FTPPort)
	}
	return w.icmpReply(pk, NoDest)
}

func (w *Worker) schedule(pk *packet, svc *ipvs.Service, k conntrack.InKey) *Result {
	p := &w.parsed
	now := pk.now
	st := svc.State()
	cfg := &st.Config
	// ip_vs_schedule: never a packet from port 20 (active FTP data from
	// a real server), of any protocol; it goes to the host's stack.
	if p.SrcPort == 20 {
		return w.localStack(pk, FTPData)
	}
	// A non-persistent service schedules only its own port (the lookup
	// also finds it for other ports: the FTP and port-0 fallbacks).
	if !cfg.Persistent() && p.DstPort != cfg.Port {
		return w.leave(pk, cfg)
	}
	// The flow lives in the worker: handed to a scheduler through an
	// interface, a stack value would escape to the heap. It is set field
	// by field: a composite literal would be built on the stack and
	// copied, with stalls on the copy's wide loads of its narrow stores.
	flow := &w.flow
	flow.Proto, flow.SrcAddr, flow.DstAddr = ipvs.Protocol(p.Proto), p.SrcAddr(), p.DstAddr()
	flow.SrcPort, flow.DstPort = p.SrcPort, p.DstPort

	var dest *ipvs.Dest
	var tmpl conntrack.TemplateRef
	if cfg.Persistent() {
		vport := cfg.Port
		if vport == 21 || vport == 0 {
			// FTP and port-0 services: one template for every port.
			vport = 0
		}
		tk := conntrack.NewTemplateKey(flow.Proto, flow.SrcAddr, cfg.Netmask, flow.DstAddr, vport)
		if d, ref, ok := w.p.conns.Template(tk, now); ok {
			dest, tmpl = d, ref
		} else if d := pick(st, svc, flow); d != nil {
			ref, err := w.p.conns.CreateTemplate(tk, d, time.Duration(cfg.Timeout)*time.Second, now)
			if err != nil {
				return w.drop(TableFull)
			}
			dest, tmpl = ref.Dest(), ref
		}
	} else {
		dest = pick(st, svc, flow)
	}
	if dest == nil {
		return w.leave(pk, cfg)
	}
	// The real server's port for the service's own port; any other port
	// (FTP and port-0 persistent services) and a port-0 real server keep
	// the packet's.
	dport := p.DstPort
	if dport == cfg.Port && dest.Port != 0 {
		dport = dest.Port
	}
	c := &w.conn
	var err error
	if cfg.OnePacket() && flow.Proto == ipvs.ProtoUDP {
		err = w.p.conns.CreateOnePacket(k, dest, dport, tmpl, now, c)
	} else {
		err = w.p.conns.Create(k, dest, dport, tmpl, p.TCPFlags, now, c)
	}
	if err != nil {
		return w.drop(TableFull)
	}
	if w.p.learner != nil {
		w.p.learner.Learn(flow.SrcAddr, [6]byte(pk.frame()[6:12]), pk.link)
	}
	w.countConn(c.Dest)
	w.countIn(c.Dest, p.End-p.L3)
	pk.isNew = true
	return w.xmitIn(pk, c, nil)
}

// pick asks the service's scheduler for a destination (nil: none).
func pick(st *ipvs.ServiceState, svc *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	if st.Sched == nil {
		return nil
	}
	return st.Sched.Schedule(svc, f)
}

// plan returns the transmit plan for packets to dst: tx itself when it is
// still valid, else tx refilled from the worker's route cache or the Env;
// with tx nil, a plan valid until the worker's next call. ok is false when
// dst has no route.
func (w *Worker) plan(tx *txPlan, dst netip.Addr) (*txPlan, bool) {
	g := w.p.gen
	if g == nil { // answers may change at any time: ask every time
		if tx == nil {
			tx = &w.tx
		}
		return tx, w.fillPlan(tx, dst, 0)
	}
	gen := g.Generation() + 1 // +1: a zero plan is never valid
	if tx != nil && tx.gen == gen {
		return tx, true
	}
	a := dst.As4()
	e := &w.routes[a[3]&(routeCacheSize-1)]
	if e.tx.gen != gen || e.addr != dst {
		// A miss is asked again next time: asking may be what starts
		// resolution.
		if !w.fillPlan(&w.tx, dst, gen) {
			return nil, false
		}
		e.addr, e.tx = dst, w.tx
	}
	if tx == nil {
		return &e.tx, true
	}
	*tx = e.tx
	return tx, true
}

// fillPlan asks the Env for the next hop to dst and fills tx from it with
// generation gen.
func (w *Worker) fillPlan(tx *txPlan, dst netip.Addr, gen uint64) bool {
	hop, ok := w.p.env.Route(dst)
	if !ok {
		return false
	}
	*tx = txPlan{
		gen:  gen,
		macs: rewrite.MACs{Dst: hop.MAC, Src: w.p.env.Links()[hop.Link].MAC},
		link: hop.Link,
		mtu:  hop.MTU,
		src:  hop.Src.As4(),
	}
	return true
}

// xmitIn sends a client's packet (described by w.parsed) to the real server
// of connection c with c's method. tx is the flow's cached transmit plan
// (nil: none).
func (w *Worker) xmitIn(pk *packet, c *conntrack.Conn, tx *txPlan) *Result {
	p := &w.parsed
	frame := pk.frame()
	if p.TTL <= 1 {
		return w.icmpError(pk, TTLExceeded, w.connResult(pk, c, false), p.Dst, 0)
	}
	// A cached flow's plan is checked here, inline (plan is too big to
	// inline; the call would cost more than the check).
	ok := true
	if g := w.p.gen; tx == nil || g == nil || tx.gen != g.Generation()+1 {
		if tx, ok = w.plan(tx, c.DAddr); !ok {
			return w.connDrop(pk, c, false, NoRoute)
		}
	}
	mtu := tx.mtu
	if c.Method == ipvs.Tunnel {
		mtu -= rewrite.TUNHeadroom // the outer IPv4 header
	}
	if ipLen := p.End - p.L3; ipLen > mtu {
		if !p.DF {
			return w.connDrop(pk, c, false, TooBig)
		}
		return w.icmpError(pk, FragNeeded, w.connResult(pk, c, false), p.Dst, mtu)
	}
	out := frame[:p.End] // Ethernet padding is not forwarded
	switch c.Method {
	case ipvs.Masq:
		ok = rewrite.NATIn(frame, p, c.DAddr.As4(), c.DPort, tx.macs, pk.partial)
	case ipvs.Tunnel:
		if c.Dest.TunType() != ipvs.TunIPIP {
			return w.connDrop(pk, c, false, TunTypeUnsupported)
		}
		w.ipid++
		out, ok = rewrite.TUN(pk.buf[:pk.off+pk.n], pk.off, p, tx.src, c.DAddr.As4(), w.ipid, tx.macs, pk.partial)
	default: // Route, Local
		ok = rewrite.DR(frame, p, tx.macs, pk.partial)
	}
	if !ok {
		return w.connDrop(pk, c, false, RewriteFailed)
	}
	return w.transmit(pk, c, false, tx.link, out)
}

// xmitOut sends a NAT reply to the client as coming from the VIP. tx is
// the flow's cached transmit plan (nil: none).
func (w *Worker) xmitOut(pk *packet, c *conntrack.Conn, tx *txPlan) *Result {
	p := &w.parsed
	frame := pk.frame()
	if p.TTL <= 1 {
		return w.icmpError(pk, TTLExceeded, w.connResult(pk, c, true), w.linkAddr(pk.link), 0)
	}
	ok := true
	if g := w.p.gen; tx == nil || g == nil || tx.gen != g.Generation()+1 { // as in xmitIn
		if tx, ok = w.plan(tx, c.CAddr); !ok {
			return w.connDrop(pk, c, true, NoRoute)
		}
	}
	if ipLen := p.End - p.L3; ipLen > tx.mtu {
		if !p.DF {
			return w.connDrop(pk, c, true, TooBig)
		}
		return w.icmpError(pk, FragNeeded, w.connResult(pk, c, true), w.linkAddr(pk.link), tx.mtu)
	}
	if !rewrite.NATOut(frame, p, c.VAddr.As4(), c.VPort, tx.macs, pk.partial) {
		return w.connDrop(pk, c, true, RewriteFailed)
	}
	return w.transmit(pk, c, true, tx.link, frame[:p.End])
}

// connResult sets the worker's Result to describe connection c of packet
// pk (not yet counted: the caller decides the action).
func (w *Worker) connResult(pk *packet, c *conntrack.Conn, out bool) *Result {
	w.res = Result{Dest: c.Dest, State: c.State, Method: c.Method, New: pk.isNew, Out: out}
	return &w.res
}

// connDrop drops a frame of connection c for reason r.
func (w *Worker) connDrop(pk *packet, c *conntrack.Conn, out bool, r Reason) *Result {
	res := w.connResult(pk, c, out)
	res.Action, res.Reason = Drop, r
	return w.count(res)
}

// transmit is the Result of a frame of connection c leaving on link: the
// worker's Result written once, and counted.
func (w *Worker) transmit(pk *packet, c *conntrack.Conn, out bool, link int, frame []byte) *Result {
	// Field by field: a composite literal is built on the stack and
	// copied, and the copy's wide loads of its narrow stores stall. The
	// counter's locked add comes last: it drains the stores, so that the
	// caller's copy of the Result reads them from the cache.
	r := &w.res
	r.Action, r.Link, r.Frame, r.Reason = Transmit, link, frame, ReasonNone
	r.Dest, r.State, r.Method, r.New, r.Out = c.Dest, c.State, c.Method, pk.isNew, out
	w.Counters.Actions[Transmit].Add(1)
	return r
}

// icmpRelated handles an ICMP error whose quoted packet may belong to a
// connection (IPVS's ip_vs_in_icmp / ip_vs_out_icmp).
func (w *Worker) icmpRelated(pk *packet) *Result {
	p, c := &w.parsed, &w.conn
	in := &p.Inner
	if in.Proto == rewrite.ProtoIPIP {
		return w.tunICMP(pk)
	}
	if !in.Ports {
		return w.result(Result{Action: Pass})
	}
	proto := ipvs.Protocol(in.Proto)
	now := pk.now
	ipLen := p.End - p.L3

	// From outside, about a packet the director sent VIP:vport -> client:
	// the reversed quote is the connection's client -> VIP key.
	k := conntrack.InKeyV4(proto, in.Dst, in.DstPort, in.Src, in.SrcPort)
	if w.p.conns.PeekIn(k, now, c) {
		if !c.Dest.Available() {
			return w.drop(DestRemoved)
		}
		w.countIn(c.Dest, ipLen)
		if c.Method != ipvs.Masq {
			// DR and TUN: the real server gets the error unchanged, by the
			// connection's own transmitter.
			// The error goes out with its checksum taken as complete.
			pk.partial = false
			return w.xmitIn(pk, c, nil)
		}
		return w.xmitICMPNAT(pk, c, false)
	}

	// From a real server, about a client packet it got client -> RIP:rport:
	// the reversed quote is the NAT reply key.
	rk := conntrack.ReplyKeyV4(proto, in.Dst, in.DstPort, in.Src, in.SrcPort)
	if w.p.conns.PeekOut(rk, now, c) && c.Method == ipvs.Masq {
		w.countOut(c.Dest, ipLen)
		return w.xmitICMPNAT(pk, c, true)
	}
	return w.result(Result{Action: Pass})
}

// tunICMP handles an ICMP error about one of the director's own IPIP
// packets (ip_vs_in_icmp's IPIP case): the error is addressed to the
// director and quotes the outer IPIP header, behind which is the client's
// packet client -> VIP. For a connection of that packet the director
// relays the error to the client, built from the quoted client packet as
// the kernel's icmp_send builds it (from the VIP, the client packet's
// destination), and consumes the received one: the same type and code,
// and for fragmentation needed the tunnel's path MTU less the outer
// header — nothing at all when the client packet had no DF. Anything else
// is the host's.
func (w *Worker) tunICMP(pk *packet) *Result {
	p, c := &w.parsed, &w.conn
	frame, now := pk.frame(), pk.now
	in := &p.Inner
	if in.FragOff != 0 || !w.isLocal(p.Dst) {
		return w.result(Result{Action: Pass})
	}
	// The client packet, at in.L4: its header and ports must be there.
	o := in.L4
	if o+rewrite.IPv4MinLen > p.End {
		return w.result(Result{Action: Pass})
	}
	ip := rewrite.IPv4(frame[o:p.End])
	ihl := ip.HeaderLen()
	proto := ip.Protocol()
	if ip.Version() != 4 || ihl < rewrite.IPv4MinLen || o+ihl+4 > p.End || ip.FragOff() != 0 ||
		proto != rewrite.ProtoTCP && proto != rewrite.ProtoUDP {
		return w.result(Result{Action: Pass})
	}
	ports := frame[o+ihl:]
	// An error about a request, not a reply: the quote is the in-key.
	k := conntrack.InKeyV4(ipvs.Protocol(proto), ip.Src(), binary.BigEndian.Uint16(ports),
		ip.Dst(), binary.BigEndian.Uint16(ports[2:]))
	if !w.p.conns.PeekIn(k, now, c) {
		return w.result(Result{Action: Pass}) // schedule_icmp is not supported
	}
	res := w.connResult(pk, c, true)
	rest := binary.BigEndian.Uint32(frame[p.L4+4:])
	if p.ICMPType == rewrite.ICMPDestUnreach && p.ICMPCode == rewrite.ICMPCodeFragNeeded {
		if !ip.DF() {
			res.Action, res.Reason = Drop, TunICMPNoDF
			return w.count(res)
		}
		rest = w.tunPMTU(c, rest&0xffff)
	}
	// IPVS counts the relayed error as output of the connection, sent or
	// not ("ICMP can be shorter but anyways, account it").
	if c.Dest.Available() {
		w.countOut(c.Dest, p.End-o)
	}
	tx, ok := w.plan(nil, c.CAddr)
	if !ok {
		res.Action, res.Reason = Drop, NoRoute
		return w.count(res)
	}
	out, ok := rewrite.ICMPRelay(w.scratch[:], frame, p, o, p.ICMPType, p.ICMPCode, rest, ip.Dst(), tx.macs)
	res.Reason = TunICMP
	if !ok {
		res.Action = Drop
		w.Counters.Reasons[NoReply].Add(1)
		return w.count(res)
	}
	res.Action, res.Link, res.Frame = Reply, tx.link, out
	return w.count(res)
}

// tunPMTU is the MTU IPVS tells a client whose tunnelled packet was too
// big for a hop reporting mtu: the path MTU towards the real server after
// the kernel's route update (ipv4_update_pmtu never raises it and takes
// reports below 552 as 552), less the outer IPv4 header when more than 88.
func (w *Worker) tunPMTU(c *conntrack.Conn, mtu uint32) uint32 {
	if tx, ok := w.plan(nil, c.DAddr); ok {
		mtu = min(uint32(tx.mtu), max(mtu, minPMTU))
	}
	if mtu > 68+rewrite.IPv4MinLen {
		mtu -= rewrite.IPv4MinLen
	}
	return mtu
}

// minPMTU is the kernel's net.ipv4.route.min_pmtu default (512 + 20 + 20).
const minPMTU = 552

// isLocal reports one of the director's own addresses (an error about
// its IPIP packets is addressed to the tunnel's source, the director's
// address on the real servers' side).
func (w *Worker) isLocal(a [4]byte) bool {
	links := w.p.env.Links()
	return links[VIPSide].Prefix.Addr().As4() == a || links[DIPSide].Prefix.Addr().As4() == a
}

// xmitICMPNAT forwards an ICMP error related to a NAT connection with its
// outer and quoted headers rewritten: to the real server (out false: an
// error from outside about a reply the client never got) or to the client
// (out true: an error from the real server about a client's packet).
func (w *Worker) xmitICMPNAT(pk *packet, c *conntrack.Conn, out bool) *Result {
	p := &w.parsed
	frame := pk.frame()
	res := &w.res
	*res = Result{Dest: c.Dest, State: c.State, Method: c.Method, Out: out}
	to, from := c.DAddr, p.Dst
	if out {
		to, from = c.CAddr, w.linkAddr(pk.link)
	}
	if p.TTL <= 1 {
		return w.icmpError(pk, TTLExceeded, res, from, 0)
	}
	tx, ok := w.plan(nil, to)
	if !ok {
		res.Action, res.Reason = Drop, NoRoute
		return w.count(res)
	}
	if out {
		ok = rewrite.ICMPOut(frame, p, c.VAddr.As4(), c.VPort, tx.macs)
	} else {
		ok = rewrite.ICMPIn(frame, p, c.DAddr.As4(), c.DPort, tx.macs)
	}
	if !ok {
		res.Action, res.Reason = Drop, RewriteFailed
		return w.count(res)
	}
	res.Action, res.Link, res.Frame = Transmit, tx.link, frame[:p.End]
	return w.count(res)
}

// icmpReply answers the frame's sender with an ICMP error from the address
// the frame was sent to (the VIP), as the kernel does for a local address.
func (w *Worker) icmpReply(pk *packet, why Reason) *Result {
	w.res = Result{}
	return w.icmpError(pk, why, &w.res, w.parsed.Dst, 0)
}

// icmpError answers the frame's sender, on the link it came in on, with the
// ICMP error for why — time exceeded (TTLExceeded), fragmentation needed
// with mtu (FragNeeded), port unreachable (NoDest) — sent from src. When the
// rules forbid an error (about an ICMP error, a broadcast...) the frame is
// dropped and NoReply counted too.
func (w *Worker) icmpError(pk *packet, why Reason, res *Result, src [4]byte, mtu int) *Result {
	p := &w.parsed
	frame, link := pk.frame(), pk.link
	m := rewrite.MACs{Dst: [6]byte(frame[6:12]), Src: w.p.env.Links()[link].MAC}
	var out []byte
	var ok bool
	switch why {
	case TTLExceeded:
		out, ok = rewrite.TimeExceeded(w.scratch[:], frame, p, src, m)
	case FragNeeded:
		out, ok = rewrite.FragNeeded(w.scratch[:], frame, p, src, uint16(mtu), m)
	default: // NoDest
		out, ok = rewrite.PortUnreachable(w.scratch[:], frame, p, src, m)
	}
	res.Reason = why
	if !ok {
		res.Action = Drop
		w.Counters.Reasons[NoReply].Add(1)
		return w.count(res)
	}
	res.Action, res.Link, res.Frame = Reply, link, out
	return w.count(res)
}

// linkAddr is the director's own address on a link.
func (w *Worker) linkAddr(link int) [4]byte {
	return w.p.env.Links()[link].Prefix.Addr().As4()
}

func (w *Worker) drop(r Reason) *Result { return w.result(Result{Action: Drop, Reason: r}) }

// result sets the worker's Result and counts it.
func (w *Worker) result(r Result) *Result {
	w.res = r
	return w.count(&w.res)
}

func (w *Worker) count(r *Result) *Result {
	w.Counters.Actions[r.Action].Add(1)
	if r.Reason != ReasonNone {
		w.Counters.Reasons[r.Reason].Add(1)
	}
	return r
}

func (w *Worker) countConn(d *ipvs.Dest) {
	d.Stats[w.id].Conns.Add(1)
	d.Svc.Stats[w.id].Conns.Add(1)
}

func (w *Worker) countIn(d *ipvs.Dest, bytes int) {
	ds, ss := &d.Stats[w.id], &d.Svc.Stats[w.id]
	ds.InPkts.Add(1)
	ds.InBytes.Add(uint64(bytes))
	ss.InPkts.Add(1)
	ss.InBytes.Add(uint64(bytes))
}

func (w *Worker) countOut(d *ipvs.Dest, bytes int) {
	ds, ss := &d.Stats[w.id], &d.Svc.Stats[w.id]
	ds.OutPkts.Add(1)
	ds.OutBytes.Add(uint64(bytes))
	ss.OutPkts.Add(1)
	ss.OutBytes.Add(uint64(bytes))
}

// Totals sums the counters of a set of workers by name: actions by
// Action.String ("transmit", "drop", ...), drop and reply reasons by
// counter name ("no_route", ...). Counters that are zero are left out. It
// allocates (two small maps) and is not for the data path.
func Totals(ws ...*Worker) (actions, reasons map[string]uint64) {
	actions, reasons = map[string]uint64{}, map[string]uint64{}
	for _, w := range ws {
		for i := range w.Counters.Actions {
			if n := w.Counters.Actions[i].Load(); n != 0 {
				actions[Action(i).String()] += n
			}
		}
		for i := range w.Counters.Reasons {
			if n := w.Counters.Reasons[i].Load(); n != 0 {
				reasons[Reason(i).String()] += n
			}
		}
	}
	return actions, reasons
}
