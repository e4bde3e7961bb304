// ICMP errors related to a connection (ip_vs_in_icmp, ip_vs_out_icmp),
// including the relay of errors about the director's own IPIP packets.

package forwarder

import (
	"encoding/binary"
	"net/netip"

	"gvs/conntrack"
	"gvs/ipvs"
	"gvs/rewrite"
)

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
		return w.xmitICMPIn(pk, c)
	}

	// From a real server, about a client packet it got client -> RIP:rport:
	// the reversed quote is the NAT reply key.
	rk := conntrack.ReplyKeyV4(proto, in.Dst, in.DstPort, in.Src, in.SrcPort)
	if w.p.conns.PeekOut(rk, now, c) && c.Method == ipvs.Masq {
		w.countOut(c.Dest, ipLen)
		return w.xmitICMPNAT(pk, c, true)
	}

	// schedule_icmp: an error about a packet VIP:vport -> client of a
	// service (ip_vs_in_icmp's ip_vs_try_to_schedule with the quote
	// reversed; tcp_conn_schedule checks no TCP flags of a quote, which
	// holds only its first 8 bytes) is scheduled as a first packet.
	if w.p.set.Get(ipvs.SysScheduleIcmp) != 0 {
		if svc := w.p.svcs.Lookup(proto, netip.AddrFrom4(in.Src), in.SrcPort, 0); svc != nil {
			return w.schedule(pk, svc, k, true)
		}
	}
	return w.result(Result{Action: Pass})
}

// xmitICMPIn forwards an ICMP error from outside to the real server of
// its connection c (ip_vs_icmp_xmit): DR and TUN send it unchanged by the
// connection's own transmitter, NAT rewrites the outer and quoted headers.
func (w *Worker) xmitICMPIn(pk *packet, c *conntrack.Conn) *Result {
	if c.Method != ipvs.Masq {
		// The error goes out with its checksum taken as complete.
		pk.partial, pk.related = false, true
		return w.xmitIn(pk, c, nil)
	}
	return w.xmitICMPNAT(pk, c, false)
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
		// Not even under schedule_icmp: IPVS schedules no error that
		// comes back from a tunnel.
		return w.result(Result{Action: Pass})
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
	out, ok := rewrite.ICMPRelay(w.icmpBuf(p.L3, tx.mtu), frame, p, o, p.ICMPType, p.ICMPCode, rest, ip.Dst(), tx.macs, w.nextID())
	res.Reason = TunICMP
	if !ok {
		res.Action = Drop
		w.Counters.Reasons[NoReply].Add(1)
		return w.count(res)
	}
	if !w.allowICMP(p.ICMPType, p.ICMPCode, ip.Src(), now) {
		res.Action = Drop
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
	*res = Result{Dest: c.Dest, State: c.State, Method: c.Method, New: pk.isNew, Out: out}
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
	if p.End-p.L3 > tx.mtu {
		// ip_vs_icmp_xmit: no MTU check for ICMP; the error is
		// fragmented (ignore_df), whatever its DF.
		return w.fragment(res, tx.link, frame[:p.End], tx.mtu)
	}
	res.Action, res.Link, res.Frame = Transmit, tx.link, frame[:p.End]
	return w.count(res)
}
