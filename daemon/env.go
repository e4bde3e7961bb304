package daemon

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvs/forwarder"
	"gvs/forwarder/kernel"
)

// Resolver is what Env needs from kernel.Resolver: the next hop towards a
// registered destination (a real server) and towards any other address (a
// client, through the routing table). Both must be safe for concurrent use
// and must not allocate.
type Resolver interface {
	Lookup(addr netip.Addr) (kernel.Neighbor, bool)
	Gateway(client netip.Addr) (kernel.Neighbor, bool)
}

// LinkInfo is one of the director's interfaces as read from the kernel.
type LinkInfo struct {
	Index int
	forwarder.Link
}

// Env is the live forwarder.Env: links read from the kernel and next hops
// from a Resolver. Links may be replaced (SetLinks) while workers run; the
// data path always sees a consistent pair.
type Env struct {
	res     Resolver
	resGen  interface{ Generation() uint64 } // nil: the resolver cannot say
	gen     atomic.Uint64                    // bumped by SetLinks and Learn
	links   atomic.Pointer[envLinks]
	learned [learnShards]learnShard
}

// The learned-neighbour table: source MACs of on-link clients, taken from
// the first frame of each of their connections (forwarder.Learner). The
// kernel would learn them from the traffic itself, but gvs hides that
// traffic from it, so without this the first reply to a new client would be
// dropped (no_route) until ARP resolution completed. The kernel's own entry
// always wins; this is only the fallback. Sharded, touched only by new
// connections and by route misses.
const (
	learnShards   = 64
	learnPerShard = 1024
)

type learnShard struct {
	mu sync.Mutex
	m  map[netip.Addr][6]byte
}

// Learn records the source MAC of an on-link client on the VIP side.
func (e *Env) Learn(src netip.Addr, mac [6]byte, link int) {
	if link != forwarder.VIPSide || mac[0]&1 != 0 || mac == ([6]byte{}) {
		return
	}
	l := e.links.Load()
	if !l.links[forwarder.VIPSide].Prefix.Contains(src) {
		return // off-link: the frame's source is a router, resolved by the kernel
	}
	sh := &e.learned[learnIndex(src)]
	sh.mu.Lock()
	if old, ok := sh.m[src]; !ok || old != mac {
		if sh.m == nil || len(sh.m) >= learnPerShard {
			sh.m = make(map[netip.Addr][6]byte)
		}
		sh.m[src] = mac
		e.gen.Add(1) // cached misses for src are stale now
	}
	sh.mu.Unlock()
}

func (e *Env) learnedMAC(dst netip.Addr) ([6]byte, bool) {
	sh := &e.learned[learnIndex(dst)]
	sh.mu.Lock()
	mac, ok := sh.m[dst]
	sh.mu.Unlock()
	return mac, ok
}

func learnIndex(a netip.Addr) int {
	b := a.As4()
	return int(b[3]^b[2]*7) % learnShards
}

// envLinks is immutable once published.
type envLinks struct {
	links   [2]forwarder.Link
	ifindex [2]int
}

// NewEnv makes an Env over res with the VIP-side and DIP-side links. In a
// one-arm director both are the same interface.
func NewEnv(res Resolver, vip, dip LinkInfo) (*Env, error) {
	e := &Env{res: res}
	e.resGen, _ = res.(interface{ Generation() uint64 })
	if err := e.SetLinks(vip, dip); err != nil {
		return nil, err
	}
	return e, nil
}

// SetLinks replaces the two links (after an MTU or address change).
func (e *Env) SetLinks(vip, dip LinkInfo) error {
	for _, l := range [2]LinkInfo{vip, dip} {
		switch {
		case l.Index <= 0:
			return fmt.Errorf("link %q: invalid interface index %d", l.Name, l.Index)
		case !l.Prefix.IsValid() || !l.Prefix.Addr().Is4():
			return fmt.Errorf("link %q: no IPv4 address", l.Name)
		case l.MTU < 68:
			return fmt.Errorf("link %q: MTU %d too small", l.Name, l.MTU)
		}
	}
	e.links.Store(&envLinks{
		links:   [2]forwarder.Link{vip.Link, dip.Link},
		ifindex: [2]int{vip.Index, dip.Index},
	})
	e.gen.Add(1)
	return nil
}

// Generation implements forwarder.Generationer so that workers may cache
// routes: it changes whenever the resolver publishes new answers, the links
// change or a client's MAC is learned. Without a resolver generation the
// Env claims to change all the time (every call differs), so nothing is
// cached.
func (e *Env) Generation() uint64 {
	if e.resGen == nil {
		return e.gen.Add(1)
	}
	return e.resGen.Generation() + e.gen.Load()
}

// OneArm reports whether both sides are the same interface.
func (e *Env) OneArm() bool {
	l := e.links.Load()
	return l.ifindex[forwarder.VIPSide] == l.ifindex[forwarder.DIPSide]
}

// Ifindex returns the interface index of a side (forwarder.VIPSide or
// forwarder.DIPSide).
func (e *Env) Ifindex(side int) int { return e.links.Load().ifindex[side] }

// Links returns the two links (forwarder.Env).
func (e *Env) Links() *[2]forwarder.Link { return &e.links.Load().links }

// Route finds how to reach dst (forwarder.Env): through the resolver's
// entry for a registered real server, else through the routing table (a
// client). A next hop whose MAC is unknown, or which leaves by an interface
// other than the director's two, is not routable: the pipeline then drops
// the frame and counts no_route (the resolver has already asked the kernel
// to resolve the neighbour). It does not allocate.
func (e *Env) Route(dst netip.Addr) (forwarder.Hop, bool) {
	n, ok := e.res.Lookup(dst)
	if !ok {
		if n, ok = e.res.Gateway(dst); !ok {
			return e.routeLearned(dst)
		}
	}
	l := e.links.Load()
	side := -1
	switch n.IfIndex {
	case l.ifindex[forwarder.DIPSide]: // checked first: one-arm routes to the DIP side
		side = forwarder.DIPSide
	case l.ifindex[forwarder.VIPSide]:
		side = forwarder.VIPSide
	default:
		return forwarder.Hop{}, false
	}
	if n.MAC == ([6]byte{}) {
		return e.routeLearned(dst)
	}
	link := &l.links[side]
	h := forwarder.Hop{Link: side, MAC: n.MAC, Src: n.Src, MTU: n.MTU}
	if !h.Src.Is4() {
		h.Src = link.Prefix.Addr()
	}
	if h.MTU <= 0 || h.MTU > link.MTU {
		h.MTU = link.MTU
	}
	return h, true
}

// Unreachable implements forwarder.Unreachabler: a real server the
// resolver knows is unreachable (no route, or neighbour resolution
// failed), when the resolver can tell; while resolution is pending it is
// not. It does not allocate.
func (e *Env) Unreachable(dst netip.Addr) bool {
	u, ok := e.res.(interface{ Unreachable(netip.Addr) bool })
	return ok && u.Unreachable(dst)
}

// routeLearned is the fallback for an on-link client the kernel does not
// know yet: the MAC its own frames came from.
func (e *Env) routeLearned(dst netip.Addr) (forwarder.Hop, bool) {
	if !dst.Is4() {
		return forwarder.Hop{}, false
	}
	mac, ok := e.learnedMAC(dst)
	if !ok {
		return forwarder.Hop{}, false
	}
	link := &e.links.Load().links[forwarder.VIPSide]
	return forwarder.Hop{Link: forwarder.VIPSide, MAC: mac, Src: link.Prefix.Addr(), MTU: link.MTU}, true
}
