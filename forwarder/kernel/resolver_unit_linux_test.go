//go:build linux

package kernel

import (
	"fmt"
	"net/netip"
	"testing"

	"gvs/ipvs"
)

// fakeResolver publishes a hand-built snapshot: one wanted real server
// (resolved), one wanted but unresolved, a connected /24 and a default
// route via 198.18.0.254.
func fakeResolver(tb testing.TB, extraRoutes int) *Resolver {
	tb.Helper()
	linkMAC := [6]byte{2, 0, 0, 0, 0, 1}
	gwMAC := [6]byte{2, 0, 0, 0, 0, 0xfe}
	rsMAC := [6]byte{2, 0, 0, 0, 0, 2}
	rs := netip.MustParseAddr("198.18.0.2")
	gw := netip.MustParseAddr("198.18.0.254")
	src := netip.MustParseAddr("198.18.0.1")
	s := &resolverSnapshot{
		dests: map[[16]byte]destEntry{
			rs.As16(): {ok: true, nh: nhKey{2, rs.As16()},
				n: Neighbor{IfIndex: 2, LinkMAC: linkMAC, NextHop: rs, MAC: rsMAC, Src: src, MTU: 1500}},
			netip.MustParseAddr("198.18.0.3").As16(): {nh: nhKey{2, netip.MustParseAddr("198.18.0.3").As16()}},
		},
		neigh: map[nhKey][6]byte{
			{2, rs.As16()}: rsMAC,
			{2, gw.As16()}: gwMAC,
		},
	}
	var routes []routeEntry
	for i := range extraRoutes { // routes of other lengths that do not match the test clients
		routes = append(routes, routeEntry{prefix: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/%d", i/256, i%256, 25+i%8)).Masked(), ifindex: 3, mtu: 1500})
	}
	routes = append(routes,
		routeEntry{prefix: netip.MustParsePrefix("198.18.0.0/24"), ifindex: 2, src: src, mtu: 1500, linkMAC: linkMAC},
		routeEntry{prefix: netip.MustParsePrefix("0.0.0.0/0"), ifindex: 2, gw: gw, src: src, mtu: 1500, linkMAC: linkMAC},
		routeEntry{prefix: netip.MustParsePrefix("0.0.0.0/0"), metric: 10, ifindex: 9, gw: gw, mtu: 9000}, // worse metric: ignored
	)
	sortRoutes(routes)
	s.routes = routeLevels(routes)
	r := &Resolver{kick: make(chan nhKey, 4)}
	r.snap.Store(s)
	return r
}

func TestResolverLookupSnapshot(t *testing.T) {
	r := fakeResolver(t, 0)
	gwMAC := [6]byte{2, 0, 0, 0, 0, 0xfe}
	tests := []struct {
		name    string
		f       func(netip.Addr) (Neighbor, bool)
		addr    string
		ok      bool
		nexthop string
		mac     [6]byte
		kicked  bool
	}{
		{"wanted resolved", r.Lookup, "198.18.0.2", true, "198.18.0.2", [6]byte{2, 0, 0, 0, 0, 2}, false},
		{"wanted unresolved", r.Lookup, "198.18.0.3", false, "", [6]byte{}, true},
		{"not wanted", r.Lookup, "198.18.0.9", false, "", [6]byte{}, false},
		{"client via default", r.Gateway, "198.19.1.1", true, "198.18.0.254", gwMAC, false},
		{"client on-link known", r.Gateway, "198.18.0.2", true, "198.18.0.2", [6]byte{2, 0, 0, 0, 0, 2}, false},
		{"client on-link unknown", r.Gateway, "198.18.0.77", false, "", [6]byte{}, true},
		{"v4-mapped client", r.Gateway, "::ffff:198.19.1.1", true, "198.18.0.254", gwMAC, false},
	}
	for _, tt := range tests {
		n, ok := tt.f(netip.MustParseAddr(tt.addr))
		kicked := false
		select {
		case <-r.kick:
			kicked = true
		default:
		}
		if ok != tt.ok || kicked != tt.kicked {
			t.Errorf("%s: ok=%v kicked=%v, want %v %v", tt.name, ok, kicked, tt.ok, tt.kicked)
			continue
		}
		if ok && (n.NextHop != netip.MustParseAddr(tt.nexthop) || n.MAC != tt.mac || n.IfIndex != 2 || n.MTU != 1500) {
			t.Errorf("%s: got %+v", tt.name, n)
		}
	}
}

// The data path calls Lookup and Gateway per packet: no allocations, also
// on misses (which queue a resolution request).
func TestResolverNoAllocs(t *testing.T) {
	r := fakeResolver(t, 0)
	addrs := map[string]netip.Addr{
		"Lookup hit":   netip.MustParseAddr("198.18.0.2"),
		"Lookup miss":  netip.MustParseAddr("198.18.0.3"),
		"Gateway hit":  netip.MustParseAddr("198.19.1.1"),
		"Gateway miss": netip.MustParseAddr("198.18.0.77"),
	}
	for name, a := range addrs {
		f := r.Lookup
		if name[0] == 'G' {
			f = r.Gateway
		}
		if n := testing.AllocsPerRun(1000, func() { f(a) }); n != 0 {
			t.Errorf("%s: %v allocations per call", name, n)
		}
	}
}

func BenchmarkResolverLookup(b *testing.B) {
	r := fakeResolver(b, 0)
	a := netip.MustParseAddr("198.18.0.2")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.Lookup(a); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkResolverGateway(b *testing.B) {
	for _, routes := range []int{0, 16, 256} {
		b.Run(fmt.Sprintf("routes=%d", routes+2), func(b *testing.B) {
			r := fakeResolver(b, routes)
			a := netip.MustParseAddr("198.19.1.1")
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := r.Gateway(a); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

func TestSetKey(t *testing.T) {
	v := netip.MustParseAddr("198.51.100.10")
	tests := []struct {
		r    IngressRule
		want string
	}{
		{IngressRule{Addr: v}, "c633640a"},
		{IngressRule{Addr: netip.AddrFrom16(v.As16())}, "c633640a"},
		{IngressRule{Addr: v, Proto: ipvs.ProtoTCP}, "c633640a06000000"},
		{IngressRule{Addr: v, Proto: ipvs.ProtoUDP, Port: 0x1234}, "c633640a1100000012340000"},
	}
	for _, tt := range tests {
		if got := fmt.Sprintf("%x", setKey(tt.r)); got != tt.want {
			t.Errorf("setKey(%+v) = %s, want %s", tt.r, got, tt.want)
		}
		if got := len(setKey(tt.r)); uint32(got) != setKeyType[shapeOf(tt.r)].Bytes {
			t.Errorf("key length %d does not match set type %s (%d)", got, setKeyType[shapeOf(tt.r)].Name, setKeyType[shapeOf(tt.r)].Bytes)
		}
	}
}
