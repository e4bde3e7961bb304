package forwarder

import "net/netip"

// Link is one of the director's interfaces as the pipeline sees it.
type Link struct {
	Name string
	MAC  [6]byte
	// Prefix is the director's address on the link with the connected prefix.
	Prefix netip.Prefix
	MTU    int
}

// Link identifiers. The pipeline knows two interfaces: the VIP side, where
// clients' frames arrive, and the DIP side, where real servers are. In a
// one-arm director both are the same interface and the same Link.
const (
	VIPSide = 0
	DIPSide = 1
)

// Hop says how a packet to some address leaves the director.
type Hop struct {
	Link int        // VIPSide or DIPSide
	MAC  [6]byte    // next-hop MAC
	Src  netip.Addr // the director's source address on that link
	MTU  int        // the link MTU
}

// Env is what the pipeline needs to know about the world around the
// director: its links and, per destination, the next hop. The live daemon
// answers from the kernel (routes, neighbours); the replay tool and the tests
// from a fixed description (package staticenv).
//
// Route is called on the packet path: it must be safe for concurrent use
// and must not allocate.
type Env interface {
	Links() *[2]Link
	Route(dst netip.Addr) (Hop, bool)
}

// Unreachabler is an optional interface of an Env that can tell, for a
// destination Route answered "no" for, a definite failure from a pending
// one: Unreachable reports that dst cannot be reached at all — no route,
// or neighbour resolution of its next hop has failed (the kernel's
// NUD_FAILED) — rather than that resolution is still running. The
// pipeline then answers the client with ICMP host unreachable, as IPVS's
// __ip_vs_get_out_rt does (dst_link_failure); while resolution is pending
// it drops the packet silently (no_route). Called only after Route said
// no, on the packet path: safe for concurrent use, no allocation.
type Unreachabler interface {
	Unreachable(dst netip.Addr) bool
}
