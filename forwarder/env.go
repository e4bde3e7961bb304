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
