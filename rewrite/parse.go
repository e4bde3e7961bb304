package rewrite

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"gvs/checksum"
)

// Parsed is the decoded summary of one frame, filled in place by Decode.
// Offsets are from the start of the frame. A Parsed holds no pointers into
// the frame, so it can be reused for the next frame without clearing.
//
// The fields describe the frame as decoded: the rewrites in this package do
// not update them (their offsets stay valid for the rewritten frame, except
// after TUN, which returns a new frame start).
type Parsed struct {
	// Reason is why Decode returned Malformed (ReasonNone otherwise).
	Reason Reason

	// VLAN reports one 802.1Q tag; TCI is its tag control information
	// (priority, DEI, VLAN ID).
	VLAN bool
	TCI  uint16
	// EtherType is the type behind the tag, if any.
	EtherType uint16
	// L3 is the offset of the network header: 14, or 18 with a tag.
	L3 int

	// IPv4 (Verdict IP only).

	IHL      int    // header length in bytes, 20..60
	End      int    // L3 + total length; frame[End:] is Ethernet padding
	TOS      uint8  // type of service (DSCP, ECN)
	TTL      uint8  // time to live as received
	Proto    uint8  // payload protocol
	DF, MF   bool   // don't-fragment and more-fragments flags
	FragOff  uint16 // fragment offset in 8-byte units
	Src, Dst [4]byte

	// L4 is the offset of the IPv4 payload (L3+IHL). For TCP, UDP and ICMP
	// it is the transport header unless the packet is a non-first fragment.
	L4 int
	// Ports reports that SrcPort and DstPort hold the TCP or UDP ports (the
	// packet carries its transport header).
	Ports            bool
	SrcPort, DstPort uint16
	// TCPFlags are the TCP flag bits (TCPSyn, TCPAck...) of a TCP packet.
	TCPFlags uint8
	// L4Csum is the offset of the transport checksum field (TCP, UDP or
	// ICMP), 0 when the packet carries no transport header.
	L4Csum int
	// L4Len is the length the transport checksum covers: TCP header and
	// data, the UDP length field, or the ICMP message (0 when unknown).
	L4Len int

	// ICMPType and ICMPCode are set for ICMP packets with a header.
	ICMPType, ICMPCode uint8
	// Embedded reports an ICMP error that IPVS relates to connections
	// (DEST_UNREACH, SOURCE_QUENCH, TIME_EXCEEDED) whose checksum was
	// verified and whose quoted packet was parsed into Inner.
	Embedded bool
	Inner    Inner
}

// Inner describes the packet quoted in an ICMP error: an IPv4 header and,
// for TCP and UDP, at least its first 8 payload bytes.
type Inner struct {
	L3      int // offset of the quoted IPv4 header in the frame
	IHL     int // its header length in bytes
	Proto   uint8
	FragOff uint16 // fragment offset of the quoted packet, 8-byte units
	Src     [4]byte
	Dst     [4]byte
	// L4 is the offset of the quoted transport header.
	L4 int
	// Ports reports that SrcPort and DstPort hold the quoted TCP or UDP
	// ports (the quoted packet is TCP or UDP and not a non-first fragment).
	Ports            bool
	SrcPort, DstPort uint16
}

// SrcAddr is the source address as a netip.Addr (no allocation).
func (p *Parsed) SrcAddr() netip.Addr { return netip.AddrFrom4(p.Src) }

// DstAddr is the destination address as a netip.Addr (no allocation).
func (p *Parsed) DstAddr() netip.Addr { return netip.AddrFrom4(p.Dst) }

// IsFragment reports that the packet is a fragment: MF set or a non-zero
// offset.
func (p *Parsed) IsFragment() bool { return p.MF || p.FragOff != 0 }

// IsFirstFragment reports that the packet starts its datagram and so carries
// the transport header: an unfragmented packet or the first fragment.
func (p *Parsed) IsFirstFragment() bool { return p.FragOff == 0 }

// Decode parses frame (Ethernet II, at most one 802.1Q tag, IPv4 with TCP,
// UDP or ICMP) into p and says what it is. It never allocates and never
// fails otherwise: a malformed frame gives Malformed with p.Reason set. For
// the verdict IP every offset in p lies within frame[:p.End], and the views
// (IPv4(frame[p.L3:]), TCP(frame[p.L4:])...) may be used unchecked on the
// parts Decode validated:
//
//   - IPv4: version 4, IHL >= 5, 20 <= total length <= bytes after the
//     Ethernet header (Ethernet padding beyond it is ignored, see End),
//     header checksum valid. Options are allowed and skipped.
//   - Fragments (MF or offset != 0) are recognised; a non-first fragment
//     has no transport header (Ports false, L4Csum 0).
//   - TCP: at least 20 bytes, 5 <= data offset and header within the packet.
//   - UDP: at least 8 bytes, 8 <= length field <= payload (for a first
//     fragment the length field may exceed the fragment).
//   - ICMP: at least 8 bytes. DEST_UNREACH, SOURCE_QUENCH and TIME_EXCEEDED
//     in an unfragmented packet have their checksum verified and must quote
//     a whole IPv4 header (version 4, IHL >= 5) followed, for TCP and UDP,
//     by at least 8 bytes; it is parsed into p.Inner. Other types (echo...)
//     are IP with only type and code parsed.
//   - Other protocols are IP with L4 pointing at the payload.
//
// Transport checksums of TCP and UDP are not verified (the forwarder passes
// packets on; the end host verifies them).
func (p *Parsed) Decode(frame []byte) Verdict {
	if p.decodeCommon(frame) {
		return IP
	}
	return p.decode(frame)
}

// decodeCommon decodes the common case in one pass: an IPv4 packet without
// options or fragmentation carrying a well-formed TCP or UDP header, with
// at most one 802.1Q tag. It fills p exactly as decode would and returns
// true, or returns false (p untouched) for every other frame, which decode
// then handles. Building p in one assignment from locals saves the reloads
// and narrow read-after-write traffic of filling it field by field.
func (p *Parsed) decodeCommon(frame []byte) bool {
	if len(frame) < EthernetLen+IPv4MinLen {
		return false
	}
	l3 := EthernetLen
	et := binary.BigEndian.Uint16(frame[ethType:])
	var vlan bool
	var tci uint16
	if et == EtherTypeVLAN {
		if len(frame) < EthernetLen+VLANLen+IPv4MinLen {
			return false
		}
		vlan = true
		tci = binary.BigEndian.Uint16(frame[vlanTCI:])
		et = binary.BigEndian.Uint16(frame[vlanTyp:])
		l3 = EthernetLen + VLANLen
	}
	if et != EtherTypeIPv4 {
		return false
	}
	rest := frame[l3:]
	// The header is read in four loads (2, 8, 8 and 2 bytes) and taken
	// apart in registers. For an untagged frame they fall at frame offsets
	// 14, 16, 24 and 32, inside the 16-byte pieces in which the frame was
	// most likely just copied in, so that store-to-load forwarding works;
	// a word straddling two such stores stalls until both reach the cache.
	ip := (*[IPv4MinLen]byte)(rest)
	head := binary.BigEndian.Uint16(ip[0:2])   // version, IHL, TOS
	w1 := binary.BigEndian.Uint64(ip[2:10])    // total length, ID, fragment, TTL, protocol
	w2 := binary.BigEndian.Uint64(ip[10:18])   // checksum, source, destination (high half)
	tail := binary.BigEndian.Uint16(ip[18:20]) // destination (low half)
	total, frag := int(w1>>48), uint16(w1>>16)
	if head>>8 != 0x45 || total < IPv4MinLen || total > len(rest) ||
		frag&(ipFlagMF|ipFragOffMask) != 0 {
		return false
	}
	// The header checksum, inline: a call would end the out-of-order
	// overlap of this dependency chain with the loads below.
	sum, c := bits.Add64(w1, w2, 0)
	sum, c = bits.Add64(sum, uint64(head)<<48|uint64(tail), c)
	sum += c // cannot carry again
	s32, c32 := bits.Add32(uint32(sum>>32), uint32(sum), 0)
	if checksum.Fold(s32+c32) != 0xffff {
		return false
	}
	pay := rest[IPv4MinLen:total]
	proto := uint8(w1)
	var sport, dport uint16
	var flags uint8
	var csum, l4len int
	switch proto {
	case ProtoTCP:
		if len(pay) < TCPMinLen {
			return false
		}
		t := (*[TCPMinLen]byte)(pay)
		if hl := int(t[tcpDataOff]>>4) * 4; hl < TCPMinLen || hl > len(pay) {
			return false
		}
		sport, dport = binary.BigEndian.Uint16(t[l4SrcPort:]), binary.BigEndian.Uint16(t[l4DstPort:])
		flags = t[tcpFlags]
		csum, l4len = tcpCsum, len(pay)
	case ProtoUDP:
		if len(pay) < UDPLen {
			return false
		}
		u := (*[UDPLen]byte)(pay)
		ul := int(binary.BigEndian.Uint16(u[udpLen:]))
		if ul < UDPLen || ul > len(pay) {
			return false
		}
		sport, dport = binary.BigEndian.Uint16(u[l4SrcPort:]), binary.BigEndian.Uint16(u[l4DstPort:])
		csum, l4len = udpCsum, ul
	default:
		return false
	}
	// Every frame byte is read before p is written (p might alias frame
	// as far as the compiler knows), so the fields go straight from
	// registers into p: no temporary copy, no reloads.
	tos, ttl := uint8(head), uint8(w1>>8)
	var src, dst [4]byte
	binary.BigEndian.PutUint32(src[:], uint32(w2>>16))
	binary.BigEndian.PutUint32(dst[:], uint32(w2)<<16|uint32(tail))
	l4 := l3 + IPv4MinLen
	// Every field is assigned (no zeroing pass first): TestDecodeCommon
	// checks on a dirty Parsed that nothing is left over.
	p.Reason = ReasonNone
	p.VLAN, p.TCI, p.EtherType, p.L3 = vlan, tci, EtherTypeIPv4, l3
	p.IHL, p.End, p.TOS, p.TTL, p.Proto = IPv4MinLen, l3+total, tos, ttl, proto
	p.DF, p.Src, p.Dst = frag&ipFlagDF != 0, src, dst
	p.L4, p.Ports, p.SrcPort, p.DstPort, p.TCPFlags = l4, true, sport, dport, flags
	p.MF, p.FragOff = false, 0
	p.L4Csum, p.L4Len = l4+csum, l4len
	p.ICMPType, p.ICMPCode, p.Embedded = 0, 0, false
	p.Inner = Inner{}
	return true
}

// decode is the general decoder behind Decode.
func (p *Parsed) decode(frame []byte) Verdict {
	*p = Parsed{}
	if len(frame) < EthernetLen {
		return p.bad(TruncatedEthernet)
	}
	et := binary.BigEndian.Uint16(frame[ethType:])
	p.L3 = EthernetLen
	if et == EtherTypeVLAN {
		if len(frame) < EthernetLen+VLANLen {
			return p.bad(TruncatedVLAN)
		}
		p.VLAN = true
		p.TCI = binary.BigEndian.Uint16(frame[vlanTCI:])
		et = binary.BigEndian.Uint16(frame[vlanTyp:])
		p.L3 = EthernetLen + VLANLen
	}
	p.EtherType = et
	switch et {
	case EtherTypeIPv4:
	case EtherTypeARP:
		return ARP
	default:
		return NotIP
	}

	rest := frame[p.L3:]
	if len(rest) < IPv4MinLen {
		return p.bad(TruncatedIP)
	}
	ip := IPv4(rest)
	if ip.Version() != 4 {
		return p.bad(BadIPVersion)
	}
	ihl := ip.HeaderLen()
	if ihl < IPv4MinLen {
		return p.bad(BadIHL)
	}
	total := int(ip.TotalLen())
	if total < IPv4MinLen || total > len(rest) {
		return p.bad(BadTotalLength)
	}
	if ihl > total {
		return p.bad(BadIHL)
	}
	if !headerSumOK(rest[:ihl]) {
		return p.bad(BadIPChecksum)
	}
	if ihl > IPv4MinLen {
		if r := checkOptions(rest[IPv4MinLen:ihl]); r != ReasonNone {
			return p.bad(r)
		}
	}
	p.IHL = ihl
	p.End = p.L3 + total
	p.TOS = ip.TOS()
	p.TTL = ip.TTL()
	p.Proto = ip.Protocol()
	p.DF, p.MF = ip.DF(), ip.MF()
	p.FragOff = ip.FragOff()
	p.Src, p.Dst = ip.Src(), ip.Dst()
	p.L4 = p.L3 + ihl
	if p.FragOff != 0 {
		return IP // no transport header in a non-first fragment
	}
	pay := frame[p.L4:p.End]
	switch p.Proto {
	case ProtoTCP:
		if len(pay) < TCPMinLen {
			return p.bad(TruncatedTCP)
		}
		t := TCP(pay)
		if hl := t.HeaderLen(); hl < TCPMinLen || hl > len(pay) {
			return p.bad(BadTCPOffset)
		}
		p.Ports = true
		p.SrcPort, p.DstPort = t.SrcPort(), t.DstPort()
		p.TCPFlags = t.Flags()
		p.L4Csum = p.L4 + tcpCsum
		p.L4Len = len(pay)
	case ProtoUDP:
		if len(pay) < UDPLen {
			return p.bad(TruncatedUDP)
		}
		u := UDP(pay)
		ul := int(u.Length())
		if ul < UDPLen || (ul > len(pay) && !p.MF) {
			return p.bad(BadUDPLength)
		}
		p.Ports = true
		p.SrcPort, p.DstPort = u.SrcPort(), u.DstPort()
		p.L4Csum = p.L4 + udpCsum
		p.L4Len = ul
	case ProtoICMP:
		if len(pay) < ICMPLen {
			return p.bad(TruncatedICMP)
		}
		c := ICMPv4(pay)
		p.ICMPType, p.ICMPCode = c.Type(), c.Code()
		p.L4Csum = p.L4 + icmpCsum
		p.L4Len = len(pay)
		if p.MF || !isRelatedError(p.ICMPType) {
			// The checksum of a fragment covers bytes we do not have.
			return IP
		}
		if checksum.Fold(checksum.Sum(pay, 0)) != 0xffff {
			return p.bad(BadICMPChecksum)
		}
		if r := p.decodeInner(frame); r != ReasonNone {
			return p.bad(r)
		}
		p.Embedded = true
	}
	if p.MF {
		p.L4Len = 0 // the checksum covers the whole datagram
	}
	return IP
}

// decodeInner parses the packet quoted by an ICMP error.
func (p *Parsed) decodeInner(frame []byte) Reason {
	off := p.L4 + ICMPLen
	q := frame[off:p.End]
	if len(q) < IPv4MinLen {
		return TruncatedICMPEmbedded
	}
	ip := IPv4(q)
	ihl := ip.HeaderLen()
	if ip.Version() != 4 || ihl < IPv4MinLen {
		return BadICMPEmbedded
	}
	if len(q) < ihl {
		return TruncatedICMPEmbedded
	}
	frag := ip.FragOff()
	hasPorts := frag == 0 && (ip.Protocol() == ProtoTCP || ip.Protocol() == ProtoUDP)
	// RFC 792: the internet header plus the first 64 bits of data. Only
	// TCP and UDP need them (ports, and the UDP checksum); a packet of
	// another protocol may have had less to quote.
	if hasPorts && len(q) < ihl+8 {
		return TruncatedICMPEmbedded
	}
	in := &p.Inner
	in.L3 = off
	in.IHL = ihl
	in.Proto = ip.Protocol()
	in.FragOff = frag
	in.Src, in.Dst = ip.Src(), ip.Dst()
	in.L4 = off + ihl
	if hasPorts {
		in.Ports = true
		in.SrcPort = binary.BigEndian.Uint16(frame[in.L4+l4SrcPort:])
		in.DstPort = binary.BigEndian.Uint16(frame[in.L4+l4DstPort:])
	}
	return ReasonNone
}

// IPv4 option types checkOptions looks into.
const (
	ipoptEnd   = 0
	ipoptNoop  = 1
	ipoptRR    = 7
	ipoptTS    = 68
	ipoptLSRR  = 131
	ipoptCIPSO = 134
	ipoptSSRR  = 137
	ipoptRA    = 148
)

// checkOptions checks a received packet's IPv4 options as the kernel's
// ip_rcv_options does before IPVS sees the packet (net/ipv4/ip_input.c,
// ip_options_compile in net/ipv4/ip_options.c). Malformed (BadIPOptions;
// the kernel drops them, counted in InHdrErrors): an option cut short or
// longer than the header; record route, timestamp, source route and
// router alert options with impossible lengths or pointers; a second
// source route, record route or timestamp; a timestamp whose overflow
// counter is full; CIPSO (no DOI is configured for gvs's traffic). A
// well-formed loose or strict source route is dropped too while
// accept_source_route is 0, the kernel's default (SourceRoute). Other
// options pass, as the kernel lets them through on input. The common
// path never gets here: decodeCommon takes only IHL 5.
func checkOptions(opts []byte) Reason {
	var srr, rr, ts bool
	for i := 0; i < len(opts); {
		t := opts[i]
		if t == ipoptEnd {
			break
		}
		if t == ipoptNoop {
			i++
			continue
		}
		if len(opts)-i < 2 {
			return BadIPOptions
		}
		l := int(opts[i+1])
		if l < 2 || l > len(opts)-i {
			return BadIPOptions
		}
		o := opts[i : i+l]
		switch t {
		case ipoptLSRR, ipoptSSRR:
			if l < 3 || o[2] < 4 || srr {
				return BadIPOptions
			}
			srr = true
		case ipoptRR:
			if rr || l < 3 || o[2] < 4 || int(o[2]) <= l && int(o[2])+3 > l {
				return BadIPOptions
			}
			rr = true
		case ipoptTS:
			if ts || l < 4 || o[2] < 5 {
				return BadIPOptions
			}
			ts = true
			if int(o[2]) <= l {
				need := 3 // a timestamp
				if f := o[3] & 0xf; f == 1 || f == 3 {
					need = 7 // an address and a timestamp
				}
				if int(o[2])+need > l {
					return BadIPOptions
				}
			} else if o[3]>>4 == 15 {
				return BadIPOptions
			}
		case ipoptRA:
			if l < 4 {
				return BadIPOptions
			}
		case ipoptCIPSO:
			return BadIPOptions
		}
		i += l
	}
	if srr {
		return SourceRoute
	}
	return ReasonNone
}

func (p *Parsed) bad(r Reason) Verdict {
	p.Reason = r
	return Malformed
}

// headerSumOK verifies an IPv4 header checksum: the one's-complement sum of
// the whole header, checksum field included, is 0xFFFF. The common header
// without options is summed inline in three loads.
func headerSumOK(h []byte) bool {
	if len(h) != IPv4MinLen {
		return checksum.Fold(checksum.Sum(h, 0)) == 0xffff
	}
	a, c := bits.Add64(binary.BigEndian.Uint64(h[0:8]), binary.BigEndian.Uint64(h[8:16]), 0)
	a, c = bits.Add64(a, uint64(binary.BigEndian.Uint32(h[16:20])), c)
	a += c // cannot carry again
	s, c32 := bits.Add32(uint32(a>>32), uint32(a), 0)
	return checksum.Fold(s+c32) == 0xffff
}
