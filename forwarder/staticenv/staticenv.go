// Package staticenv is a fixed forwarder.Env for gvs-replay and the tests:
// the director's two links, a neighbour table and an optional gateway,
// described by Facts (the --facts file of gvs-replay). Its defaults are the
// lab's director (DefaultFacts) and the lab's MAC convention (DerivedMAC);
// the forwarder itself knows neither.
package staticenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"gvs/forwarder"
)

// Facts describe a director for replays and tests: two links, a neighbour
// table and an optional gateway. The zero-configuration defaults are those of
// the lab (DefaultFacts). The JSON form is the --facts file of gvs-replay:
//
//	{
//	  "vip_if":  {"name": "vip0", "mac": "02:00:c6:12:01:01", "addr": "198.18.1.1/24", "mtu": 1500},
//	  "dip_if":  {"name": "dip0", "mac": "02:00:c6:12:02:01", "addr": "198.18.2.1/24", "mtu": 1500},
//	  "neighbors": {"198.18.2.11": "02:00:c6:12:02:0b"},
//	  "gateway": "198.18.1.254",
//	  "pending": ["198.18.2.14"],
//	  "unreachable": ["198.18.2.15"]
//	}
//
// A destination inside a link's prefix is reached on that link; any other
// destination through the gateway on the VIP side (or, with no gateway, as if
// on-link there). A neighbour missing from the table gets the derived MAC
// 02:00:a:b:c:d for IPv4 address a.b.c.d — the convention of the lab.
type Facts struct {
	VIPIf     LinkFacts         `json:"vip_if"`
	DIPIf     LinkFacts         `json:"dip_if"`
	Neighbors map[string]string `json:"neighbors,omitempty"`
	Gateway   string            `json:"gateway,omitempty"`
	// Pending lists destinations whose next hop is still being resolved:
	// Route answers no (the pipeline drops, no_route).
	Pending []string `json:"pending,omitempty"`
	// Unreachable lists destinations that cannot be reached (no route, or
	// neighbour resolution failed): Route answers no and Unreachable yes
	// (the pipeline answers ICMP host unreachable).
	Unreachable []string `json:"unreachable,omitempty"`
}

// LinkFacts describe one interface.
type LinkFacts struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
	Addr string `json:"addr"` // address/prefix-length
	MTU  int    `json:"mtu"`
}

// DefaultFacts are the lab's director: vip0 198.18.1.1/24, dip0 198.18.2.1/24,
// MTU 1500, MACs derived from the addresses, no gateway.
func DefaultFacts() Facts {
	return Facts{
		VIPIf: LinkFacts{Name: "vip0", MAC: "02:00:c6:12:01:01", Addr: "198.18.1.1/24", MTU: 1500},
		DIPIf: LinkFacts{Name: "dip0", MAC: "02:00:c6:12:02:01", Addr: "198.18.2.1/24", MTU: 1500},
	}
}

// LoadFacts reads a facts file; fields it leaves out keep their defaults.
func LoadFacts(path string) (Facts, error) {
	f := DefaultFacts()
	fh, err := os.Open(path)
	if err != nil {
		return f, err
	}
	defer fh.Close()
	return f, decodeFacts(fh, &f)
}

func decodeFacts(r io.Reader, f *Facts) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(f); err != nil {
		return fmt.Errorf("facts: %w", err)
	}
	return nil
}

// DerivedMAC is the lab's MAC convention: 02:00 followed by the IPv4 address.
func DerivedMAC(a netip.Addr) [6]byte {
	b := a.As4()
	return [6]byte{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

// Env is a forwarder.Env built from Facts. It never changes after creation.
type Env struct {
	links   [2]forwarder.Link
	neigh   map[netip.Addr][6]byte
	gateway netip.Addr
	down    map[netip.Addr]bool // no route: true unreachable, false pending
}

// New validates facts and builds the environment.
func New(f Facts) (*Env, error) {
	e := &Env{neigh: make(map[netip.Addr][6]byte)}
	for i, lf := range []LinkFacts{f.VIPIf, f.DIPIf} {
		side := [...]string{"vip_if", "dip_if"}[i]
		mac, err := net.ParseMAC(lf.MAC)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("facts: %s: bad mac %q", side, lf.MAC)
		}
		p, err := netip.ParsePrefix(lf.Addr)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("facts: %s: bad IPv4 address/prefix %q", side, lf.Addr)
		}
		if lf.MTU < 576 || lf.MTU > 65535 {
			return nil, fmt.Errorf("facts: %s: mtu %d out of range 576..65535", side, lf.MTU)
		}
		l := forwarder.Link{Name: lf.Name, Prefix: p, MTU: lf.MTU}
		copy(l.MAC[:], mac)
		e.links[i] = l
	}
	for ip, m := range f.Neighbors {
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("facts: neighbors: bad IPv4 address %q", ip)
		}
		mac, err := net.ParseMAC(m)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("facts: neighbors: %s: bad mac %q", ip, m)
		}
		var hw [6]byte
		copy(hw[:], mac)
		e.neigh[a] = hw
	}
	for i, l := range [2][]string{f.Pending, f.Unreachable} {
		for _, a := range l {
			ip, err := netip.ParseAddr(strings.TrimSpace(a))
			if err != nil || !ip.Is4() {
				return nil, fmt.Errorf("facts: %s: bad IPv4 address %q", [...]string{"pending", "unreachable"}[i], a)
			}
			if e.down == nil {
				e.down = make(map[netip.Addr]bool)
			}
			e.down[ip] = i == 1
		}
	}
	if f.Gateway != "" {
		g, err := netip.ParseAddr(f.Gateway)
		if err != nil || !g.Is4() {
			return nil, fmt.Errorf("facts: bad gateway %q", f.Gateway)
		}
		e.gateway = g
	}
	return e, nil
}

// Generation is constant: an Env never changes, so routes may be cached.
func (e *Env) Generation() uint64 { return 0 }

// Links returns the two links (VIPSide, DIPSide).
func (e *Env) Links() *[2]forwarder.Link { return &e.links }

// Route finds the link and next hop for dst. Prefixes are checked DIP side
// first, so a one-arm facts file (both links with the same prefix) routes to
// the DIP side, which is then the same wire.
func (e *Env) Route(dst netip.Addr) (forwarder.Hop, bool) {
	if !dst.Is4() {
		return forwarder.Hop{}, false
	}
	if _, down := e.down[dst]; down {
		return forwarder.Hop{}, false
	}
	for _, side := range [2]int{forwarder.DIPSide, forwarder.VIPSide} {
		l := &e.links[side]
		if l.Prefix.Contains(dst) {
			return forwarder.Hop{Link: side, MAC: e.mac(dst), Src: l.Prefix.Addr(), MTU: l.MTU}, true
		}
	}
	l := &e.links[forwarder.VIPSide]
	nh := dst
	if e.gateway.IsValid() {
		nh = e.gateway
	}
	return forwarder.Hop{Link: forwarder.VIPSide, MAC: e.mac(nh), Src: l.Prefix.Addr(), MTU: l.MTU}, true
}

// Unreachable reports a destination listed as unreachable in the facts
// (forwarder.Unreachabler); a pending one is not.
func (e *Env) Unreachable(dst netip.Addr) bool { return e.down[dst] }

func (e *Env) mac(a netip.Addr) [6]byte {
	if m, ok := e.neigh[a]; ok {
		return m
	}
	return DerivedMAC(a)
}
