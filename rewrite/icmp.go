package rewrite

import "encoding/binary"

const (
	// ICMPErrorMaxLen bounds the IP datagram of a generated ICMP error:
	// its IP header, ICMP header and quote fit in 576 bytes (RFC 1812
	// 4.3.2.3).
	ICMPErrorMaxLen = 576
	// ICMPErrorMaxFrame is a buffer size that always suffices for a
	// generated ICMP error frame: a tagged Ethernet header plus
	// ICMPErrorMaxLen.
	ICMPErrorMaxFrame = EthernetLen + VLANLen + ICMPErrorMaxLen
	// ICMPErrorTTL is the TTL of generated ICMP errors: the kernel's
	// sysctl_ip_default_ttl (net.ipv4.ip_default_ttl), 64.
	ICMPErrorTTL = 64
	// ipTOSMask is the kernel's IPTOS_TOS_MASK: the TOS bits RT_TOS keeps.
	ipTOSMask = 0x1e
)

// TimeExceeded builds an ICMP time exceeded (type 11, code 0: TTL exceeded
// in transit) about the offending frame, decoded into p, into dst. See
// PortUnreachable for the arguments and the result.
func TimeExceeded(dst, frame []byte, p *Parsed, src [4]byte, m MACs, id uint16) ([]byte, bool) {
	return icmpError(dst, frame, p, src, m, ICMPTimeExceeded, 0, 0, id)
}

// FragTimeExceeded builds an ICMP time exceeded, fragment reassembly time
// exceeded (type 11, code 1) about the first fragment of a datagram whose
// reassembly timed out (frame, decoded into p), as the kernel's ip_expire
// sends it. See PortUnreachable for the arguments and the result.
func FragTimeExceeded(dst, frame []byte, p *Parsed, src [4]byte, m MACs, id uint16) ([]byte, bool) {
	return icmpError(dst, frame, p, src, m, ICMPTimeExceeded, ICMPCodeFragTime, 0, id)
}

// FragNeeded builds an ICMP destination unreachable, fragmentation needed
// and DF set (type 3, code 4), carrying the next-hop mtu in bytes 6-7 (RFC
// 1191). See PortUnreachable for the other arguments and the result.
func FragNeeded(dst, frame []byte, p *Parsed, src [4]byte, mtu uint16, m MACs, id uint16) ([]byte, bool) {
	return icmpError(dst, frame, p, src, m, ICMPDestUnreach, ICMPCodeFragNeeded, mtu, id)
}

// PortUnreachable builds an ICMP destination unreachable, port unreachable
// (type 3, code 3) about the offending frame into dst.
//
// frame is the offending frame as received (not rewritten) and p its
// decoding (verdict IP). src is the director's address facing the sender,
// the ICMP source; the ICMP destination is the offending packet's source.
// m gives the Ethernet addresses, normally Dst = the offending frame's
// source MAC and Src = our interface's MAC. A VLAN tag of the offending
// frame is repeated. The reply's IP header is the one the kernel's icmp_send
// writes: TTL 64 (ip_default_ttl), TOS = the original's TOS bits (RT_TOS:
// & 0x1E) with precedence "internetwork control" (| 0xC0), DF clear (the
// kernel's ICMP socket uses IP_PMTUDISC_DONT) and the IP ID id (the caller's
// counter, where the kernel uses ip_select_ident); it quotes the original IP
// packet (Ethernet padding excluded) up to the 576-byte limit
// (ICMPErrorMaxLen, as icmp_send's "room") and what dst holds. IP options of
// the original are not echoed (the kernel's __ip_options_echo would).
//
// It returns the frame, a prefix of dst, and true; or nil and false when no
// error may be sent (RFC 1812 4.3.2.7): about an ICMP error, a non-first
// fragment, a packet to a broadcast or multicast IP or MAC address, or from
// an address that is not a unicast host (0/8, 127/8, 224/4 and above) -
// or when dst cannot hold the IP header and 8 bytes of the quote.
// ICMPErrorMaxFrame bytes are always enough.
func PortUnreachable(dst, frame []byte, p *Parsed, src [4]byte, m MACs, id uint16) ([]byte, bool) {
	return icmpError(dst, frame, p, src, m, ICMPDestUnreach, ICMPCodePortUnreach, 0, id)
}

func icmpError(dst, frame []byte, p *Parsed, src [4]byte, m MACs, typ, code uint8, mtu, id uint16) ([]byte, bool) {
	if !mayReply(frame, p) {
		return nil, false
	}
	return buildICMPError(dst, frame[p.L3:p.End], p.IHL, p, src, p.Src, m, typ, code, uint32(mtu), id)
}

// buildICMPError writes an ICMP error quoting orig (an IPv4 packet with an
// ihl-byte header, perhaps truncated) to address to, with the L2 header for
// the frame decoded into p, the 4-byte rest-of-header word rest, and the IP
// header conventions described at PortUnreachable (the TOS taken from orig's
// header).
func buildICMPError(dst, orig []byte, ihl int, p *Parsed, src, to [4]byte, m MACs, typ, code uint8, rest uint32, id uint16) ([]byte, bool) {
	l2 := EthernetLen
	if p.VLAN {
		l2 += VLANLen
	}
	hdr := l2 + IPv4MinLen + ICMPLen
	n := min(len(orig), ICMPErrorMaxLen-IPv4MinLen-ICMPLen, len(dst)-hdr)
	if n < len(orig) && n < ihl+8 {
		return nil, false
	}
	out := dst[:hdr+n]
	writeL2(out, p, m)

	ip := IPv4(out[l2 : l2+IPv4MinLen])
	ip[ipVerIHL] = 0x45
	ip[ipTOS] = orig[ipTOS]&ipTOSMask | ipPrecInetCtrl
	binary.BigEndian.PutUint16(ip[ipTotalLen:], uint16(IPv4MinLen+ICMPLen+n))
	binary.BigEndian.PutUint16(ip[ipID:], id)
	binary.BigEndian.PutUint16(ip[ipFrag:], 0)
	ip[ipTTL] = ICMPErrorTTL
	ip[ipProto] = ProtoICMP
	ip.SetSrc(src)
	ip.SetDst(to)
	ip.FixChecksum()

	c := ICMPv4(out[l2+IPv4MinLen:])
	c[icmpType] = typ
	c[icmpCode] = code
	binary.BigEndian.PutUint32(c[icmpRest:], rest)
	copy(c[ICMPLen:], orig[:n])
	c.FixChecksum()
	return out, true
}

// ICMPRelay builds into dst the ICMP error IPVS relays to a client when a
// router answers one of the director's IPIP packets with an error
// (ip_vs_in_icmp's IPIP case, which pulls the received error down to the
// original packet and calls icmp_send): type, code and the rest-of-header
// word rest (for fragmentation needed: the next-hop MTU) as given, quoting
// the original client packet, which starts at offset orig of frame (inside
// the received error's quote, up to p.End), sent from src to the original
// packet's source. frame and p are the received error; the L2 header,
// length limit and IP header conventions are those of PortUnreachable.
//
// It returns false, like icmp_send, when no error may be sent about the
// original packet: a non-first fragment, to a broadcast or multicast
// address, from a source that is not a unicast host; or when the original
// packet's header does not fit the quote.
func ICMPRelay(dst, frame []byte, p *Parsed, orig int, typ, code uint8, rest uint32, src [4]byte, m MACs, id uint16) ([]byte, bool) {
	if orig+IPv4MinLen > p.End {
		return nil, false
	}
	o := IPv4(frame[orig:p.End])
	ihl := o.HeaderLen()
	if o.Version() != 4 || ihl < IPv4MinLen || orig+ihl > p.End || o.FragOff() != 0 {
		return nil, false
	}
	if d := o.Dst(); d[0] >= 224 {
		return nil, false
	}
	to := o.Src()
	switch s := to[0]; {
	case s == 0, s == 127, s >= 224:
		return nil, false
	}
	if o.Protocol() == ProtoICMP && orig+ihl < p.End && isICMPError(frame[orig+ihl]) {
		return nil, false
	}
	return buildICMPError(dst, frame[orig:p.End], ihl, p, src, to, m, typ, code, rest, id)
}

// mayReply applies RFC 1812 4.3.2.7: no ICMP error about an ICMP error,
// a non-first fragment, a link-layer or IP broadcast or multicast, or a
// packet whose source is not a unicast host.
func mayReply(frame []byte, p *Parsed) bool {
	if p.IHL == 0 || p.FragOff != 0 {
		return false
	}
	if p.Proto == ProtoICMP && isICMPError(p.ICMPType) {
		return false
	}
	if frame[ethDst]&1 != 0 { // group bit: broadcast or multicast MAC
		return false
	}
	if p.Dst[0] >= 224 {
		return false // multicast, reserved and the limited broadcast
	}
	switch s := p.Src[0]; {
	case s == 0, s == 127, s >= 224:
		return false
	}
	return true
}
