package main

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header offsets used by the decapsulator (RFC 791).
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	|         Identification        |Flags|      Fragment Offset    |
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	|                       Source Address                          |
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ipv4MinLen   = 20
	offTotalLen  = 2
	offFragment  = 6
	offProtocol  = 9
	offDstAddr   = 16
	protoIPIP    = 4
	fragMFOffset = 0x3fff // MF flag and the 13-bit fragment offset
)

// verdict says what happened to one captured packet. verdictOK is the only
// one that produces an inner packet; every other value is a counted drop.
type verdict uint8

const (
	verdictOK          verdict = iota // decapsulated
	verdictShort                      // shorter than an IPv4 header
	verdictNotIPv4                    // version nibble is not 4
	verdictBadHeader                  // IHL < 5 or header / total length inconsistent
	verdictBadChecksum                // outer header checksum does not verify
	verdictFragment                   // outer packet is a fragment (not reassembled here)
	verdictNotIPIP                    // outer protocol is not 4
	verdictInnerBad                   // inner packet is not a well-formed IPv4 packet
	verdictNotVIP                     // inner destination is not a served VIP
	numVerdicts
)

var verdictNames = [numVerdicts]string{
	verdictOK:          "decapsulated",
	verdictShort:       "short",
	verdictNotIPv4:     "not-ipv4",
	verdictBadHeader:   "bad-header",
	verdictBadChecksum: "bad-checksum",
	verdictFragment:    "fragment",
	verdictNotIPIP:     "not-ipip",
	verdictInnerBad:    "inner-malformed",
	verdictNotVIP:      "not-vip",
}

func (v verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return "unknown"
}

// vipSet is the small set of IPv4 VIPs the decapsulator serves. A linear scan
// over a handful of 4-byte arrays beats a map and never allocates.
type vipSet [][4]byte

func newVIPSet(addrs []netip.Addr) vipSet {
	s := make(vipSet, 0, len(addrs))
	for _, a := range addrs {
		s = append(s, a.As4())
	}
	return s
}

func (s vipSet) contains(b []byte) bool {
	for i := range s {
		if s[i][0] == b[0] && s[i][1] == b[1] && s[i][2] == b[2] && s[i][3] == b[3] {
			return true
		}
	}
	return false
}

// decapsulate validates pkt as an IPIP packet (outer IPv4, protocol 4) whose
// inner IPv4 destination is in vips and returns the inner packet: a sub-slice
// of pkt, neither copied nor modified (its TTL and checksums are what the
// director sent). pkt may carry link-layer padding after the outer total
// length; it is ignored. Malformed input yields a drop verdict, never a panic,
// and the function does not allocate.
func decapsulate(pkt []byte, vips vipSet) ([]byte, verdict) {
	if len(pkt) < ipv4MinLen {
		return nil, verdictShort
	}
	if pkt[0]>>4 != 4 {
		return nil, verdictNotIPv4
	}
	hlen := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[offTotalLen:]))
	if hlen < ipv4MinLen || total < hlen || total > len(pkt) {
		return nil, verdictBadHeader
	}
	if headerSum(pkt[:hlen]) != 0xffff {
		return nil, verdictBadChecksum
	}
	if pkt[offProtocol] != protoIPIP {
		return nil, verdictNotIPIP
	}
	if binary.BigEndian.Uint16(pkt[offFragment:])&fragMFOffset != 0 {
		return nil, verdictFragment
	}
	inner := pkt[hlen:total]
	if len(inner) < ipv4MinLen || inner[0]>>4 != 4 {
		return nil, verdictInnerBad
	}
	ihlen := int(inner[0]&0x0f) * 4
	itotal := int(binary.BigEndian.Uint16(inner[offTotalLen:]))
	if ihlen < ipv4MinLen || itotal < ihlen || itotal > len(inner) {
		return nil, verdictInnerBad
	}
	if !vips.contains(inner[offDstAddr : offDstAddr+4]) {
		return nil, verdictNotVIP
	}
	return inner[:itotal], verdictOK
}

// headerSum is the RFC 1071 ones'-complement sum of b (even length, as IPv4
// headers are) folded to 16 bits. A header with a correct checksum sums to
// 0xffff.
func headerSum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
