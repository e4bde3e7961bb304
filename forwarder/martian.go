// Martians: frames the kernel's input path drops before IPVS sees them.

package forwarder

import (
	"net/netip"

	"gvs/rewrite"
)

// martian is the reason to drop a frame (decoded into p) that the kernel
// would drop before IPVS sees it, or ReasonNone, as far as the frame alone
// tells; ownSource does the rest. It follows ip_route_input_slow
// (net/ipv4/route.c) for a unicast destination: a source in 224/4 or
// 255.255.255.255, in 0/8, or in 127/8 (route_localnet is 0) is a martian
// source. Class E sources (240/4 but the limited broadcast) are not
// martians to the kernel and are not dropped here. Frames to a multicast
// or broadcast IP address are the host's (the kernel checks them
// elsewhere, and IPVS never gets them): not judged here.
//
// A frame from a group (multicast, broadcast) MAC address is dropped too
// (MartianMAC): no station sends one (IEEE 802.3). The kernel's IPv4 input
// does not look at the source MAC; gvs must, because it learns clients'
// MACs from their frames (Learner) and would answer to a group address.
func martian(frame []byte, p *rewrite.Parsed) Reason {
	if p.Dst[0] >= 224 {
		return ReasonNone
	}
	switch s := p.Src; {
	case s[0] == 0, s[0] == 127, s[0] >= 224 && s[0] < 240, s == [4]byte{255, 255, 255, 255}:
		return MartianSource
	}
	if frame[6]&1 != 0 {
		return MartianMAC
	}
	return ReasonNone
}

// ownSource reports a unicast packet (decoded into p) whose source is one
// of the director's own addresses (its link addresses, the VIPs) or a
// connected subnet's broadcast address: a martian source to the kernel
// (fib_validate_source: the source's route is not unicast). The pipeline
// asks before its first connection lookup; a packet of a cached flow
// passed it when the flow was found.
func (w *Worker) ownSource(p *rewrite.Parsed) bool {
	if p.Dst[0] >= 224 {
		return false
	}
	s := p.Src
	links := w.p.env.Links()
	for i := range links {
		if pf := links[i].Prefix; pf.IsValid() && (pf.Addr().As4() == s || isBroadcast(pf, s)) {
			return true
		}
	}
	return w.p.svcs.IsVIP(netip.AddrFrom4(s))
}

// isBroadcast reports the directed broadcast address of prefix pf (the
// kernel adds a broadcast route for it when the prefix is shorter than
// /31).
func isBroadcast(pf netip.Prefix, a [4]byte) bool {
	bits := pf.Bits()
	if bits >= 31 || bits < 0 {
		return false
	}
	b := pf.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	x := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	host := uint32(1)<<(32-bits) - 1
	return x == v|host
}
