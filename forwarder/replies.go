// The director's own answers: ICMP errors (time exceeded, fragmentation
// needed, port unreachable) and, for packets IPVS leaves to the host's
// stack, the RST or port unreachable that stack would send (rate-limited).

package forwarder

import (
	"net/netip"
	"time"

	"gvs/ipvs"
	"gvs/rewrite"
)

// The RST rate limit of a worker: resetBurst RSTs at once, then one per
// resetInterval.
const (
	resetInterval = int64(time.Millisecond)
	resetBurst    = 64
)

// The kernel's ICMP rate limits (net/ipv4/icmp.c) at their defaults:
// icmp_global_allow's token bucket (net.ipv4.icmp_msgs_per_sec,
// icmp_msgs_burst) and icmpv4_xrlim_allow's per-destination bucket
// (inet_peer_xrlim_allow: net.ipv4.icmp_ratelimit, a burst of
// XRLIM_BURST_FACTOR), both only for the types in net.ipv4.icmp_ratemask
// (destination unreachable, source quench, time exceeded, parameter
// problem) and never for fragmentation needed ("Don't limit PMTU
// discovery").
const (
	icmpMsgsPerSec = 1000
	icmpMsgsBurst  = 50
	icmpRatelimit  = int64(time.Second)
	icmpXrlimBurst = 6
	icmpRatemask   = 1<<3 | 1<<4 | 1<<11 | 1<<12 // 0x1818
	// icmpPeers is the size of a worker's table of destinations (the
	// kernel's inet_peer cache): direct-mapped; a destination that takes
	// another's slot starts with a full bucket, as a new inet_peer does.
	icmpPeers = 256
)

// icmpPeer is one destination's bucket (a GCRA: its theoretical arrival
// time).
type icmpPeer struct {
	addr [4]byte
	tat  int64
	used bool
}

// allowICMP applies the kernel's ICMP rate limits to an error of type typ
// and code to address to. The kernel's buckets are shared by the whole
// host; gvs keeps them per worker (no shared lock) with the rates split
// among the workers: each worker's global bucket refills at
// icmp_msgs_per_sec/n with a burst of icmp_msgs_burst/n, each destination's
// at one per n*icmp_ratelimit with a burst of 6/n (at least 1). Unlike
// the kernel's global bucket, which takes 0 to 2 credits at random and
// refills in steps of 20 ms, gvs's takes exactly one and refills smoothly.
// A refused error is counted (ICMPLimited).
func (w *Worker) allowICMP(typ, code uint8, to [4]byte, now int64) bool {
	if typ == rewrite.ICMPDestUnreach && code == rewrite.ICMPCodeFragNeeded || typ > 31 || icmpRatemask&(1<<typ) == 0 {
		return true
	}
	n := int64(max(w.p.workers.Load(), 1))
	// icmpv4_global_allow first; it spends its credit even when the
	// destination's bucket then refuses, as the kernel's does.
	interval := n * int64(time.Second) / icmpMsgsPerSec
	if !gcra(&w.icmpTAT, now, interval, max(icmpMsgsBurst/n, 1)) {
		w.Counters.Reasons[ICMPLimited].Add(1)
		return false
	}
	h := (uint32(to[0])<<24 | uint32(to[1])<<16 | uint32(to[2])<<8 | uint32(to[3])) * 0x9e3779b1
	pe := &w.large.icmpPeers[h>>24%icmpPeers]
	if !pe.used || pe.addr != to {
		*pe = icmpPeer{addr: to, tat: now, used: true}
	}
	if !gcra(&pe.tat, now, n*icmpRatelimit, max(icmpXrlimBurst/n, 1)) {
		w.Counters.Reasons[ICMPLimited].Add(1)
		return false
	}
	return true
}

// gcra takes a token from a bucket of burst tokens refilled one per
// interval, whose state is its theoretical arrival time *tat.
func gcra(tat *int64, now, interval, burst int64) bool {
	t := max(*tat, now)
	if t-now > (burst-1)*interval {
		return false
	}
	*tat = t + interval
	return true
}

// allowReset takes a token from the worker's RST bucket (a GCRA: no
// state but one time).
func (w *Worker) allowReset(now int64) bool {
	return gcra(&w.rstTAT, now, resetInterval, resetBurst)
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

// icmpReply answers the frame's sender with an ICMP error from the address
// the frame was sent to (the VIP), as the kernel does for a local address.
func (w *Worker) icmpReply(pk *packet, why Reason) *Result {
	w.res = Result{}
	return w.icmpError(pk, why, &w.res, w.parsed.Dst, 0)
}

// icmpError answers the frame's sender, on the link it came in on, with the
// ICMP error for why — time exceeded (TTLExceeded), fragmentation needed
// with mtu (FragNeeded), host unreachable (HostUnreach), port unreachable
// (NoDest) — sent from src. When the
// rules forbid an error (about an ICMP error, a broadcast...) the frame is
// dropped and NoReply counted too.
func (w *Worker) icmpError(pk *packet, why Reason, res *Result, src [4]byte, mtu int) *Result {
	p := &w.parsed
	frame, link := pk.frame(), pk.link
	m := rewrite.MACs{Dst: [6]byte(frame[6:12]), Src: w.p.env.Links()[link].MAC}
	var out []byte
	var ok bool
	var typ, code uint8
	id := w.nextID()
	buf := w.icmpBuf(p.L3, w.p.env.Links()[link].MTU)
	switch why {
	case TTLExceeded:
		typ = rewrite.ICMPTimeExceeded
		out, ok = rewrite.TimeExceeded(buf, frame, p, src, m, id)
	case FragTimeout: // defrag.go's Expire: about the first fragment
		typ, code = rewrite.ICMPTimeExceeded, rewrite.ICMPCodeFragTime
		out, ok = rewrite.FragTimeExceeded(buf, frame, p, src, m, id)
	case FragNeeded:
		typ, code = rewrite.ICMPDestUnreach, rewrite.ICMPCodeFragNeeded
		out, ok = rewrite.FragNeeded(buf, frame, p, src, uint16(mtu), m, id)
	case HostUnreach:
		typ, code = rewrite.ICMPDestUnreach, rewrite.ICMPCodeHostUnreach
		out, ok = rewrite.HostUnreachable(buf, frame, p, src, m, id)
	default: // NoDest
		typ, code = rewrite.ICMPDestUnreach, rewrite.ICMPCodePortUnreach
		out, ok = rewrite.PortUnreachable(buf, frame, p, src, m, id)
	}
	res.Reason = why
	if !ok {
		res.Action = Drop
		w.Counters.Reasons[NoReply].Add(1)
		return w.count(res)
	}
	if !w.allowICMP(typ, code, p.Src, pk.now) {
		res.Action = Drop
		return w.count(res)
	}
	res.Action, res.Link, res.Frame = Reply, link, out
	return w.count(res)
}

// natNoConn is ip_vs_out's end for a packet that matched no connection:
// the host's (Pass) — unless nat_icmp_send is set and the packet comes
// from a NAT real server's address and port (ip_vs_has_real_service) and
// is not a TCP RST: then the real server is told with ICMP port
// unreachable (from the director's address towards it, as icmp_send
// picks it for a forwarded packet) and the packet is dropped.
func (w *Worker) natNoConn(pk *packet) *Result {
	p := &w.parsed
	if w.p.set.Get(ipvs.SysNatIcmpSend) == 0 || p.Proto == rewrite.ProtoTCP && p.TCPFlags&rewrite.TCPRst != 0 ||
		!w.p.svcs.HasRealService(ipvs.Protocol(p.Proto), netip.AddrFrom4(p.Src), p.SrcPort) {
		return w.result(Result{Action: Pass})
	}
	w.res = Result{}
	return w.icmpError(pk, NATNoConn, &w.res, w.linkAddr(pk.link), 0)
}

// icmpBuf is the scratch space for an ICMP error behind an l2-byte link
// header, cut so that the error's IP datagram stays within the egress MTU
// as well as 576 bytes (icmp_send's "room": min(dst_mtu, 576)).
func (w *Worker) icmpBuf(l2, mtu int) []byte {
	if mtu <= 0 || mtu > rewrite.ICMPErrorMaxLen { // 0: unknown
		mtu = rewrite.ICMPErrorMaxLen
	}
	return w.scratch[:min(len(w.scratch), l2+max(mtu, 68))]
}

// linkAddr is the director's own address on a link.
func (w *Worker) linkAddr(link int) [4]byte {
	return w.p.env.Links()[link].Prefix.Addr().As4()
}
