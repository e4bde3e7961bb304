package main

import (
	"net/netip"

	"gvs/checksum"
	"gvs/rewrite"
)

// offProtocol is the offset of the protocol byte in an IPv4 header (RFC
// 791), for the capture filter and the nftables rule, which match it outside
// Go.
const offProtocol = 9

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

func (s vipSet) contains(a [4]byte) bool {
	for i := range s {
		if s[i] == a {
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
	if len(pkt) < rewrite.IPv4MinLen {
		return nil, verdictShort
	}
	ip := rewrite.IPv4(pkt)
	if ip.Version() != 4 {
		return nil, verdictNotIPv4
	}
	hlen, total := ip.HeaderLen(), int(ip.TotalLen())
	if hlen < rewrite.IPv4MinLen || total < hlen || total > len(pkt) {
		return nil, verdictBadHeader
	}
	if checksum.Checksum(pkt[:hlen], 0) != 0 {
		return nil, verdictBadChecksum
	}
	if ip.Protocol() != rewrite.ProtoIPIP {
		return nil, verdictNotIPIP
	}
	if ip.MF() || ip.FragOff() != 0 {
		return nil, verdictFragment
	}
	inner := rewrite.IPv4(pkt[hlen:total])
	if len(inner) < rewrite.IPv4MinLen || inner.Version() != 4 {
		return nil, verdictInnerBad
	}
	ihlen, itotal := inner.HeaderLen(), int(inner.TotalLen())
	if ihlen < rewrite.IPv4MinLen || itotal < ihlen || itotal > len(inner) {
		return nil, verdictInnerBad
	}
	if !vips.contains(inner.Dst()) {
		return nil, verdictNotVIP
	}
	return inner[:itotal], verdictOK
}
