package rewrite

import (
	"encoding/binary"

	"gvs/checksum"
)

// Ethernet II header, optionally followed by one 802.1Q tag:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination MAC (6)                        |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+       Source MAC (6)          +
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  EtherType (0x8100 if tagged) | [TCI | inner EtherType]       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ethDst  = 0
	ethSrc  = 6
	ethType = 12
	vlanTCI = 14 // in a tagged frame
	vlanTyp = 16 // the EtherType behind the tag

	// EthernetLen is the length of an untagged Ethernet II header.
	EthernetLen = 14
	// VLANLen is the length of one 802.1Q tag.
	VLANLen = 4

	// EtherTypeIPv4, EtherTypeARP, EtherTypeVLAN and EtherTypeIPv6 are the
	// EtherType values Decode distinguishes.
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100
	EtherTypeIPv6 = 0x86dd
)

// Ethernet is a view of an Ethernet II header at the start of a frame. The
// accessors do not check bounds: the slice must hold at least EthernetLen
// bytes (Decode checks that).
type Ethernet []byte

// Dst is the destination MAC address.
func (e Ethernet) Dst() [6]byte { return [6]byte(e[ethDst : ethDst+6]) }

// Src is the source MAC address.
func (e Ethernet) Src() [6]byte { return [6]byte(e[ethSrc : ethSrc+6]) }

// MACs is the pair of link-layer addresses a forwarded or generated frame
// gets: Dst is the next hop's MAC, Src the egress interface's.
type MACs struct {
	Dst, Src [6]byte
}

// apply writes the addresses into the Ethernet header of frame. It moves
// the 12 bytes as one 8-byte and one 4-byte word: callers pass MACs by value
// and store it that way, and reading it back in other widths (6-byte copies)
// defeats store-to-load forwarding, a stall of a dozen cycles per packet.
// (The byte-wise expressions below compile to single word loads.)
func (m *MACs) apply(frame []byte) {
	_ = frame[11]
	lo := uint64(m.Dst[0]) | uint64(m.Dst[1])<<8 | uint64(m.Dst[2])<<16 | uint64(m.Dst[3])<<24 |
		uint64(m.Dst[4])<<32 | uint64(m.Dst[5])<<40 | uint64(m.Src[0])<<48 | uint64(m.Src[1])<<56
	hi := uint32(m.Src[2]) | uint32(m.Src[3])<<8 | uint32(m.Src[4])<<16 | uint32(m.Src[5])<<24
	binary.LittleEndian.PutUint64(frame[ethDst:], lo)
	binary.LittleEndian.PutUint32(frame[ethSrc+2:], hi)
}

// IPv4 header (RFC 791):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ipVerIHL   = 0
	ipTOS      = 1
	ipTotalLen = 2
	ipID       = 4
	ipFrag     = 6
	ipTTL      = 8
	ipProto    = 9
	ipCsum     = 10
	ipSrc      = 12
	ipDst      = 16

	ipFlagDF       = 0x4000
	ipFlagMF       = 0x2000
	ipFragOffMask  = 0x1fff
	ipECNMask      = 0x03
	ipECNCE        = 0x03
	ipECNECT0      = 0x02
	ipPrecInetCtrl = 0xc0 // IP precedence "internetwork control"

	// IPv4MinLen is the length of an IPv4 header without options.
	IPv4MinLen = 20
	// IPv4MaxLen is the largest IPv4 header (IHL 15).
	IPv4MaxLen = 60
)

// IP protocol numbers Decode and the rewrites know.
const (
	ProtoICMP = 1
	ProtoIPIP = 4
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// IPv4 is a view of an IPv4 header (and what follows). The accessors do not
// check bounds: the slice must hold the whole header, which Decode verifies
// for the packets it accepts.
type IPv4 []byte

// Version is the IP version field (4).
func (b IPv4) Version() uint8 { return b[ipVerIHL] >> 4 }

// HeaderLen is the header length in bytes (IHL*4).
func (b IPv4) HeaderLen() int { return int(b[ipVerIHL]&0x0f) * 4 }

// TOS is the type-of-service byte (DSCP and ECN).
func (b IPv4) TOS() uint8 { return b[ipTOS] }

// TotalLen is the total length of the datagram, header included.
func (b IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(b[ipTotalLen:]) }

// DF reports the don't-fragment flag.
func (b IPv4) DF() bool { return b[ipFrag]&(ipFlagDF>>8) != 0 }

// MF reports the more-fragments flag.
func (b IPv4) MF() bool { return b[ipFrag]&(ipFlagMF>>8) != 0 }

// FragOff is the fragment offset in units of 8 bytes.
func (b IPv4) FragOff() uint16 { return binary.BigEndian.Uint16(b[ipFrag:]) & ipFragOffMask }

// TTL is the time to live.
func (b IPv4) TTL() uint8 { return b[ipTTL] }

// Protocol is the protocol number of the payload.
func (b IPv4) Protocol() uint8 { return b[ipProto] }

// Checksum is the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ipCsum:]) }

// Src is the source address.
func (b IPv4) Src() [4]byte { return [4]byte(b[ipSrc : ipSrc+4]) }

// Dst is the destination address.
func (b IPv4) Dst() [4]byte { return [4]byte(b[ipDst : ipDst+4]) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[ipCsum:], c) }

// SetSrc sets the source address without touching any checksum.
func (b IPv4) SetSrc(a [4]byte) { copy(b[ipSrc:ipSrc+4], a[:]) }

// SetDst sets the destination address without touching any checksum.
func (b IPv4) SetDst(a [4]byte) { copy(b[ipDst:ipDst+4], a[:]) }

// FixChecksum recomputes the header checksum from scratch.
func (b IPv4) FixChecksum() {
	h := b[:b.HeaderLen()]
	h[ipCsum], h[ipCsum+1] = 0, 0
	b.SetChecksum(checksum.Checksum(h, 0))
}

// DecTTL decrements the TTL of ip and updates its header checksum
// incrementally (RFC 1624). It returns false, and changes nothing, when the
// TTL is already 1 or 0: the packet must not be forwarded and the caller
// sends ICMP time exceeded instead (IPVS decrement_ttl).
func DecTTL(ip IPv4) bool {
	ttl := ip[ipTTL]
	if ttl <= 1 {
		return false
	}
	ip[ipTTL] = ttl - 1
	// TTL and protocol share one 16-bit word w, which becomes w-0x100:
	// RFC 1624 eqn. 3 adds ^w + (w-0x100) = 0xFEFF whatever the protocol
	// (the same bits as checksum.Update16, small enough to inline).
	ip.SetChecksum(^checksum.Fold(uint32(^ip.Checksum()) + 0xfeff))
	return true
}

// TCP header (RFC 9293), the part the load balancer uses:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Source Port          |       Destination Port        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        Sequence Number                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Acknowledgment Number                      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Data |       |C|E|U|A|P|R|S|F|                               |
//	| Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Checksum            |         Urgent Pointer        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	l4SrcPort  = 0
	l4DstPort  = 2
	tcpSeq     = 4
	tcpAck     = 8
	tcpDataOff = 12
	tcpFlags   = 13
	tcpCsum    = 16

	// TCPMinLen is the length of a TCP header without options.
	TCPMinLen = 20
)

// TCP flag bits, as in Parsed.TCPFlags and TCP.Flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// TCP is a view of a TCP header. The accessors do not check bounds.
type TCP []byte

// SrcPort is the source port.
func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[l4SrcPort:]) }

// DstPort is the destination port.
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[l4DstPort:]) }

// HeaderLen is the header length in bytes (data offset * 4).
func (t TCP) HeaderLen() int { return int(t[tcpDataOff]>>4) * 4 }

// Flags are the eight flag bits (TCPFin ... TCPCwr).
func (t TCP) Flags() uint8 { return t[tcpFlags] }

// Checksum is the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[tcpCsum:]) }

// SetDstPort sets the destination port without touching the checksum.
func (t TCP) SetDstPort(p uint16) { binary.BigEndian.PutUint16(t[l4DstPort:], p) }

// SetChecksum sets the checksum field.
func (t TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(t[tcpCsum:], c) }

// UDP header (RFC 768):
//
//	 0      7 8     15 16    23 24    31
//	+--------+--------+--------+--------+
//	|     Source      |   Destination   |
//	|      Port       |      Port       |
//	+--------+--------+--------+--------+
//	|     Length      |    Checksum     |
//	+--------+--------+--------+--------+
const (
	udpLen  = 4
	udpCsum = 6

	// UDPLen is the length of a UDP header.
	UDPLen = 8
)

// UDP is a view of a UDP header. The accessors do not check bounds.
type UDP []byte

// SrcPort is the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[l4SrcPort:]) }

// DstPort is the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[l4DstPort:]) }

// Length is the length field: header plus data.
func (u UDP) Length() uint16 { return binary.BigEndian.Uint16(u[udpLen:]) }

// ICMPv4 header (RFC 792); for errors the second word is unused except by
// "fragmentation needed", which carries the next-hop MTU in its low half
// (RFC 1191), and the data is the offending IP header plus the start of its
// payload:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type      |     Code      |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           unused              |         Next-Hop MTU          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      Internet Header + leading octets of original datagram    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	icmpType = 0
	icmpCode = 1
	icmpCsum = 2
	icmpRest = 4
	icmpMTU  = 6

	// ICMPLen is the length of the ICMP header (type, code, checksum and
	// the 4-byte rest-of-header word).
	ICMPLen = 8
)

// ICMPv4 types and codes gvs handles.
const (
	ICMPEchoReply       = 0
	ICMPDestUnreach     = 3
	ICMPSourceQuench    = 4
	ICMPRedirect        = 5
	ICMPEcho            = 8
	ICMPTimeExceeded    = 11
	ICMPParamProblem    = 12
	ICMPCodePortUnreach = 3 // DEST_UNREACH: port unreachable
	ICMPCodeFragNeeded  = 4 // DEST_UNREACH: fragmentation needed and DF set
	ICMPCodeFragTime    = 1 // TIME_EXCEEDED: fragment reassembly time exceeded
)

// ICMPv4 is a view of an ICMPv4 message. The accessors do not check bounds.
type ICMPv4 []byte

// Type is the message type.
func (c ICMPv4) Type() uint8 { return c[icmpType] }

// Code is the message code.
func (c ICMPv4) Code() uint8 { return c[icmpCode] }

// SetChecksum sets the checksum field.
func (c ICMPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(c[icmpCsum:], v) }

// FixChecksum recomputes the checksum over the whole slice, which must be
// exactly the ICMP message.
func (c ICMPv4) FixChecksum() {
	c[icmpCsum], c[icmpCsum+1] = 0, 0
	c.SetChecksum(checksum.Checksum(c, 0))
}

// isICMPError reports whether an ICMP type is an error message, about which
// no ICMP error may be sent (RFC 1812 4.3.2.7).
func isICMPError(t uint8) bool {
	switch t {
	case ICMPDestUnreach, ICMPSourceQuench, ICMPRedirect, ICMPTimeExceeded, ICMPParamProblem:
		return true
	}
	return false
}

// isRelatedError reports whether an ICMP type is one of the errors IPVS
// relates to a connection: DEST_UNREACH, SOURCE_QUENCH, TIME_EXCEEDED.
func isRelatedError(t uint8) bool {
	return t == ICMPDestUnreach || t == ICMPSourceQuench || t == ICMPTimeExceeded
}
