package rewrite

import (
	"encoding/binary"
	"math/bits"

	"gvs/checksum"
)

// The rewrites below work in place on a frame that Decode accepted (verdict
// IP) together with its Parsed; passing any other frame is a programming
// error. Each one first checks the TTL and returns false without touching
// the frame when it is <= 1, so the caller can still quote the original in
// an ICMP time exceeded (TimeExceeded). They never allocate.
//
// csumPartial tells that the frame came with an unfinished transport
// checksum (CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY: the TCP/UDP checksum
// field holds only the folded pseudo-header sum). The rewrite then computes
// the full TCP or UDP checksum from scratch after changing the headers,
// because an incremental update of a partial value is not a checksum. Only
// unfragmented packets can be partial; for fragments the flag is ignored.

// CompleteL4 computes the full TCP or UDP checksum of an unfragmented packet
// from scratch (pseudo-header from the current addresses, header and data)
// and stores it; a UDP result of 0 is stored as 0xFFFF. It does nothing for
// other packets. Use it to finish a CHECKSUM_PARTIAL frame that is forwarded
// otherwise unchanged; the rewrites call it themselves when csumPartial.
func CompleteL4(frame []byte, p *Parsed) {
	if p.IsFragment() || (p.Proto != ProtoTCP && p.Proto != ProtoUDP) || p.L4Csum == 0 {
		return
	}
	ip := IPv4(frame[p.L3:])
	seg := frame[p.L4 : p.L4+p.L4Len]
	seg[p.L4Csum-p.L4], seg[p.L4Csum-p.L4+1] = 0, 0
	c := checksum.Checksum(seg, checksum.Fold(checksum.PseudoHeaderV4(ip.Src(), ip.Dst(), p.Proto, uint16(p.L4Len))))
	if p.Proto == ProtoUDP {
		c = checksum.ForUDP(c)
	}
	binary.BigEndian.PutUint16(frame[p.L4Csum:], c)
}

// DR rewrites a frame for direct routing: destination MAC := the real
// server's, source MAC := the egress interface's, TTL-1. Nothing else
// changes (apart from completing a partial checksum).
func DR(frame []byte, p *Parsed, m MACs, csumPartial bool) bool {
	if !DecTTL(IPv4(frame[p.L3:])) {
		return false
	}
	if csumPartial {
		CompleteL4(frame, p)
	}
	m.apply(frame)
	return true
}

// NATIn rewrites a client->VIP:VPORT packet into client->RIP:RPORT (IPVS
// masquerading, ip_vs_nat_xmit): destination address and port, TTL-1, MACs.
// The IPv4 header checksum and the TCP/UDP checksum (whose pseudo-header
// holds the address) are updated incrementally, except that a UDP datagram
// sent without a checksum (0) gets its full checksum computed, as IPVS
// does (a first fragment keeps 0: gvs does not reassemble). A UDP result
// of 0 is sent as 0xFFFF. For a non-first fragment only the address changes. Other protocols get
// the address change only.
func NATIn(frame []byte, p *Parsed, rip [4]byte, rport uint16, m MACs, csumPartial bool) bool {
	return nat(frame, p, rip, rport, m, csumPartial, ipDst, l4DstPort)
}

// NATOut rewrites a reply RIP:RPORT->client into VIP:VPORT->client (IPVS
// masquerading, handle_response): source address and port, TTL-1, MACs, with
// the same checksum rules as NATIn.
func NATOut(frame []byte, p *Parsed, vip [4]byte, vport uint16, m MACs, csumPartial bool) bool {
	return nat(frame, p, vip, vport, m, csumPartial, ipSrc, l4SrcPort)
}

// nat sets the address at IPv4 offset addrOff and the port at transport
// offset portOff.
func nat(frame []byte, p *Parsed, addr [4]byte, port uint16, m MACs, csumPartial bool, addrOff, portOff int) bool {
	ip := IPv4(frame[p.L3:])
	ttl := ip[ipTTL]
	if ttl <= 1 {
		return false
	}
	// TTL-1 and the address change in one incremental header checksum
	// update (RFC 1624 eqn. 3 over both changed fields): the same bits as
	// DecTTL followed by UpdateAddr, one fold and one store fewer. Written
	// out rather than helpers: a call here costs ~1 ns per packet.
	oldTP := uint16(ttl)<<8 | uint16(ip[ipProto]) // TTL and protocol share a word
	ip[ipTTL] = ttl - 1
	old := [4]byte(ip[addrOff : addrOff+4])
	copy(ip[addrOff:addrOff+4], addr[:])
	o, n := binary.BigEndian.Uint32(old[:]), binary.BigEndian.Uint32(addr[:])
	sum := uint32(^ip.Checksum()) + uint32(^oldTP) + uint32(oldTP-0x100) +
		uint32(^uint16(o>>16)) + uint32(^uint16(o)) + n>>16 + n&0xffff
	ip.SetChecksum(^checksum.Fold(sum))
	if p.Ports {
		pp := frame[p.L4+portOff:]
		oldPort := binary.BigEndian.Uint16(pp)
		binary.BigEndian.PutUint16(pp, port)
		// IPVS (udp_snat_handler, udp_dnat_handler) updates a UDP
		// checksum incrementally only when it is not 0: a datagram sent
		// without one gets the full checksum. The kernel works on the
		// reassembled datagram; gvs sees one fragment at a time, so a
		// zero checksum in a first fragment stays 0 (fixL4).
		if !p.IsFragment() && (csumPartial ||
			p.Proto == ProtoUDP && frame[p.L4Csum]|frame[p.L4Csum+1] == 0) {
			CompleteL4(frame, p)
		} else {
			fixL4(frame[p.L4Csum:], p.Proto, old, addr, oldPort, port)
		}
	}
	m.apply(frame)
	return true
}

// fixL4 updates the TCP or UDP checksum at c[0:2] for an address and a port
// change. A UDP checksum of 0 (none) is left alone (a first fragment, or a
// quote in an ICMP error); a UDP result of 0 is written as 0xFFFF.
func fixL4(c []byte, proto uint8, oldAddr, newAddr [4]byte, oldPort, newPort uint16) {
	sum := binary.BigEndian.Uint16(c)
	if proto == ProtoUDP && sum == 0 {
		return
	}
	// UpdateAddr then Update16 in one fold (the same bits: folding is
	// exact modulo 0xFFFF and never turns a non-zero sum into zero).
	o, n := binary.BigEndian.Uint32(oldAddr[:]), binary.BigEndian.Uint32(newAddr[:])
	s := uint32(^sum) + uint32(^uint16(o>>16)) + uint32(^uint16(o)) + n>>16 + n&0xffff +
		uint32(^oldPort) + uint32(newPort)
	sum = ^checksum.Fold(s)
	if proto == ProtoUDP {
		sum = checksum.ForUDP(sum)
	}
	binary.BigEndian.PutUint16(c, sum)
}

// TUNHeadroom is the headroom TUN needs in front of the frame: one outer
// IPv4 header.
const TUNHeadroom = IPv4MinLen

// TUN encapsulates a packet in IPIP for a tunnel real server (IPVS
// ip_vs_tunnel_xmit). The frame sits at buf[headroom:] and p describes it;
// headroom must be at least TUNHeadroom (TUN panics otherwise, a programming
// error). Only the Ethernet header (14 or 18 bytes, the 802.1Q tag kept) is
// moved 20 bytes back; the payload is not copied. The new outer IPv4 header
// has version 4, IHL 5, the inner TOS (ECN CE becomes ECT(0), as Linux's
// INET_ECN_encapsulate does), the inner DF flag, TTL = the inner TTL after
// its decrement, protocol 4, the given ID, src = DIP, dst = RIP and a full
// header checksum. The inner TTL is decremented with an incremental checksum
// update and a partial transport checksum completed when csumPartial.
//
// It returns the new frame, buf[headroom-20 : headroom+p.End] (Ethernet
// padding dropped), or nil and false when the inner TTL is <= 1 or the
// packet is too long to carry another 20 bytes (total length > 65515);
// in both cases buf is unchanged.
func TUN(buf []byte, headroom int, p *Parsed, dip, rip [4]byte, id uint16, m MACs, csumPartial bool) ([]byte, bool) {
	if headroom < TUNHeadroom {
		panic("rewrite: TUN needs TUNHeadroom bytes of headroom")
	}
	frame := buf[headroom:]
	inner := IPv4(frame[p.L3:])
	total := p.End - p.L3
	if total > 0xffff-IPv4MinLen || !DecTTL(inner) {
		return nil, false
	}
	if csumPartial {
		CompleteL4(frame, p)
	}
	start := headroom - IPv4MinLen
	out := buf[start : headroom+p.End]
	// The MAC addresses are overwritten anyway: move only the EtherType
	// (and 802.1Q tag), a fixed-size move rather than a memmove call.
	if p.L3 == EthernetLen+VLANLen {
		copy(out[ethType:ethType+6], frame[ethType:ethType+6])
	} else {
		copy(out[ethType:ethType+2], frame[ethType:ethType+2])
	}
	m.apply(out)

	tos := inner.TOS()
	if tos&ipECNMask == ipECNCE {
		tos = tos&^ipECNMask | ipECNECT0
	}
	var frag uint16
	if inner.DF() {
		frag = ipFlagDF
	}
	// The outer header is built in registers, its checksum summed from
	// the same words, and stored in three wide writes: summing it back
	// from memory would read words just stored in narrower pieces.
	o := out[p.L3 : p.L3+IPv4MinLen]
	w0 := uint64(0x45)<<56 | uint64(tos)<<48 | uint64(total+IPv4MinLen)<<32 | uint64(id)<<16 | uint64(frag)
	ttlProto := uint32(inner.TTL())<<8 | ProtoIPIP
	addrs := uint64(binary.BigEndian.Uint32(dip[:]))<<32 | uint64(binary.BigEndian.Uint32(rip[:]))
	sum, c := bits.Add64(w0, addrs, 0)
	sum, c = bits.Add64(sum, uint64(ttlProto)<<16, c)
	sum += c // cannot carry again
	s32, c32 := bits.Add32(uint32(sum>>32), uint32(sum), 0)
	csum := ^checksum.Fold(s32 + c32)
	binary.BigEndian.PutUint64(o[0:8], w0)
	binary.BigEndian.PutUint32(o[8:12], ttlProto<<16|uint32(csum))
	binary.BigEndian.PutUint64(o[12:20], addrs)
	return out, true
}

// ICMPIn rewrites an ICMP error from the outside about a VIP:VPORT->client
// reply, for a NAT connection (IPVS ip_vs_nat_icmp, inout=0): outer
// destination := RIP, quoted source := RIP, quoted source port := RPORT (for
// quoted TCP/UDP), TTL-1 on the outer header, MACs. It returns false, and
// changes nothing, when the outer TTL is <= 1 or p is not Embedded.
//
// Checksums: the outer IPv4 header is updated incrementally; the quoted
// IPv4 header is recomputed in full; the ICMP checksum is recomputed in full
// over the message. IPVS leaves the quoted transport checksum alone because
// the quote is truncated; gvs updates it incrementally when it lies inside
// the quote (always for UDP, for TCP when at least 18 bytes are quoted), so
// the quote matches what the real server sent; a quoted UDP checksum of 0
// stays 0. The incremental update is exact whatever the truncation, because
// it only depends on the changed fields.
func ICMPIn(frame []byte, p *Parsed, rip [4]byte, rport uint16, m MACs) bool {
	return natICMP(frame, p, rip, rport, m, ipDst, ipSrc, l4SrcPort)
}

// ICMPOut rewrites an ICMP error from a NAT real server about a client
// packet (quoted CIP:CPORT->RIP:RPORT) for the client (IPVS ip_vs_nat_icmp,
// inout=1): outer source := VIP, quoted destination := VIP, quoted
// destination port := VPORT, TTL-1, MACs, checksums as in ICMPIn.
func ICMPOut(frame []byte, p *Parsed, vip [4]byte, vport uint16, m MACs) bool {
	return natICMP(frame, p, vip, vport, m, ipSrc, ipDst, l4DstPort)
}

// natICMP sets the outer address at outerOff, the quoted address at
// innerOff and the quoted port at portOff.
func natICMP(frame []byte, p *Parsed, addr [4]byte, port uint16, m MACs, outerOff, innerOff, portOff int) bool {
	ip := IPv4(frame[p.L3:])
	if !p.Embedded || !DecTTL(ip) {
		return false
	}
	old := [4]byte(ip[outerOff : outerOff+4])
	copy(ip[outerOff:outerOff+4], addr[:])
	ip.SetChecksum(checksum.UpdateAddr(ip.Checksum(), old, addr))

	in := &p.Inner
	q := IPv4(frame[in.L3:])
	oldIn := [4]byte(q[innerOff : innerOff+4])
	copy(q[innerOff:innerOff+4], addr[:])
	q.FixChecksum()
	if in.Ports {
		pp := frame[in.L4+portOff:]
		oldPort := binary.BigEndian.Uint16(pp)
		binary.BigEndian.PutUint16(pp, port)
		cs := in.L4 + udpCsum
		if in.Proto == ProtoTCP {
			cs = in.L4 + tcpCsum
		}
		if cs+2 <= p.End {
			fixL4(frame[cs:], in.Proto, oldIn, addr, oldPort, port)
		}
	}
	ICMPv4(frame[p.L4:p.End]).FixChecksum()
	m.apply(frame)
	return true
}
