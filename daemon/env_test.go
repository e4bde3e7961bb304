package daemon

import (
	"net/netip"
	"testing"

	"gvs/forwarder"
	"gvs/forwarder/kernel"
)

// fakeResolver answers from two maps, as kernel.Resolver answers from its
// snapshot: wanted destinations (Lookup) and routes (Gateway).
type fakeResolver struct {
	wanted map[netip.Addr]kernel.Neighbor
	routed map[netip.Addr]kernel.Neighbor
}

func (f *fakeResolver) Lookup(a netip.Addr) (kernel.Neighbor, bool) {
	n, ok := f.wanted[a]
	return n, ok
}

func (f *fakeResolver) Gateway(a netip.Addr) (kernel.Neighbor, bool) {
	n, ok := f.routed[a]
	return n, ok
}

var (
	vipLink = LinkInfo{Index: 2, Link: forwarder.Link{Name: "vip0", MAC: [6]byte{2, 0, 198, 18, 1, 1},
		Prefix: netip.MustParsePrefix("198.18.1.1/24"), MTU: 1500}}
	dipLink = LinkInfo{Index: 3, Link: forwarder.Link{Name: "dip0", MAC: [6]byte{2, 0, 198, 18, 2, 1},
		Prefix: netip.MustParsePrefix("198.18.2.1/24"), MTU: 9000}}
	macRS    = [6]byte{2, 0, 198, 18, 2, 11}
	macGW    = [6]byte{2, 0, 198, 18, 1, 254}
	addrRS   = netip.MustParseAddr("198.18.2.11")
	addrCli  = netip.MustParseAddr("203.0.113.7")
	addrOdd  = netip.MustParseAddr("10.9.9.9")
	addrNoM  = netip.MustParseAddr("198.18.2.99")
	addrSrc2 = netip.MustParseAddr("198.18.2.2")
)

func newFakeEnv(t testing.TB, vip, dip LinkInfo) *Env {
	t.Helper()
	res := &fakeResolver{
		wanted: map[netip.Addr]kernel.Neighbor{
			addrRS:  {IfIndex: dip.Index, MAC: macRS, NextHop: addrRS, Src: addrSrc2, MTU: 1400},
			addrNoM: {IfIndex: dip.Index, NextHop: addrNoM}, // resolved route, zero MAC: never usable
		},
		routed: map[netip.Addr]kernel.Neighbor{
			addrCli: {IfIndex: vip.Index, MAC: macGW, NextHop: netip.MustParseAddr("198.18.1.254")},
			addrOdd: {IfIndex: 7, MAC: macGW}, // via a third interface
		},
	}
	e, err := NewEnv(res, vip, dip)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEnvRoute(t *testing.T) {
	e := newFakeEnv(t, vipLink, dipLink)
	tests := []struct {
		name string
		dst  netip.Addr
		ok   bool
		want forwarder.Hop
	}{
		{"real server: resolver entry, route MTU and source", addrRS, true,
			forwarder.Hop{Link: forwarder.DIPSide, MAC: macRS, Src: addrSrc2, MTU: 1400}},
		{"client via gateway on the VIP side, link defaults", addrCli, true,
			forwarder.Hop{Link: forwarder.VIPSide, MAC: macGW, Src: vipLink.Prefix.Addr(), MTU: 1500}},
		{"next hop via another interface", addrOdd, false, forwarder.Hop{}},
		{"unknown destination", netip.MustParseAddr("192.0.2.1"), false, forwarder.Hop{}},
		{"zero MAC is never used", addrNoM, false, forwarder.Hop{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := e.Route(tc.dst)
			if ok != tc.ok || h != tc.want {
				t.Errorf("Route(%v) = %+v, %v; want %+v, %v", tc.dst, h, ok, tc.want, tc.ok)
			}
		})
	}
	if got := e.Links(); got[0].Name != "vip0" || got[1].Name != "dip0" || e.OneArm() {
		t.Errorf("links %v %v one-arm %v", got[0].Name, got[1].Name, e.OneArm())
	}
	if e.Ifindex(forwarder.VIPSide) != 2 || e.Ifindex(forwarder.DIPSide) != 3 {
		t.Errorf("ifindex %d %d", e.Ifindex(0), e.Ifindex(1))
	}
}

func TestEnvOneArm(t *testing.T) {
	e := newFakeEnv(t, vipLink, vipLink)
	if !e.OneArm() {
		t.Fatal("same interface twice is one-arm")
	}
	// The client's hop leaves by the (only) interface: the DIP side, which
	// is the same wire and the same TX ring.
	h, ok := e.Route(addrCli)
	if !ok || h.Link != forwarder.DIPSide || h.MAC != macGW {
		t.Errorf("one-arm Route = %+v, %v", h, ok)
	}
	if h, ok := e.Route(addrRS); !ok || h.Link != forwarder.DIPSide || h.MAC != macRS {
		t.Errorf("one-arm real server Route = %+v, %v", h, ok)
	}
	if _, ok := e.Route(addrOdd); ok {
		t.Error("a next hop on a foreign interface must not be routable")
	}
}

func TestEnvSetLinksErrors(t *testing.T) {
	noAddr := dipLink
	noAddr.Prefix = netip.Prefix{}
	v6 := dipLink
	v6.Prefix = netip.MustParsePrefix("2001:db8::1/64")
	noIdx := dipLink
	noIdx.Index = 0
	tiny := dipLink
	tiny.MTU = 10
	for name, l := range map[string]LinkInfo{"no address": noAddr, "IPv6 only": v6, "no index": noIdx, "tiny MTU": tiny} {
		if _, err := NewEnv(&fakeResolver{}, vipLink, l); err == nil {
			t.Errorf("%s: NewEnv accepted %+v", name, l)
		}
	}
	e := newFakeEnv(t, vipLink, dipLink)
	if err := e.SetLinks(vipLink, noAddr); err == nil {
		t.Error("SetLinks accepted a link without address")
	}
	if e.Links()[1].MTU != 9000 {
		t.Error("a refused SetLinks changed the links")
	}
}

func TestEnvRouteNoAllocs(t *testing.T) {
	e := newFakeEnv(t, vipLink, dipLink)
	var env forwarder.Env = e
	allocs := testing.AllocsPerRun(1000, func() {
		_, _ = env.Route(addrRS)
		_, _ = env.Route(addrCli)
		_, _ = env.Route(addrOdd)
		_ = env.Links()
	})
	if allocs != 0 {
		t.Errorf("Route allocates %v times", allocs)
	}
}

func BenchmarkEnvRoute(b *testing.B) {
	e := newFakeEnv(b, vipLink, dipLink)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = e.Route(addrRS)
	}
}

// An on-link client the kernel has not resolved (gvs hides its frames from
// the kernel) is reached with the MAC its own first frame came from; other
// addresses are never learned.
func TestEnvLearn(t *testing.T) {
	e := newFakeEnv(t, vipLink, dipLink)
	onLink := netip.MustParseAddr("198.18.1.11")
	macCli := [6]byte{2, 0, 198, 18, 1, 11}
	if _, ok := e.Route(onLink); ok {
		t.Fatal("unknown client routable before learning")
	}
	e.Learn(onLink, [6]byte{1, 0, 94, 0, 0, 1}, forwarder.VIPSide)         // multicast source: ignored
	e.Learn(onLink, macCli, forwarder.DIPSide)                             // wrong side: ignored
	e.Learn(netip.MustParseAddr("203.0.113.9"), macCli, forwarder.VIPSide) // off-link: ignored
	if _, ok := e.Route(onLink); ok {
		t.Fatal("learned from a frame that must be ignored")
	}
	if _, ok := e.Route(netip.MustParseAddr("203.0.113.9")); ok {
		t.Fatal("off-link client learned")
	}
	e.Learn(onLink, macCli, forwarder.VIPSide)
	h, ok := e.Route(onLink)
	if !ok || h.MAC != macCli || h.Link != forwarder.VIPSide || h.Src != vipLink.Prefix.Addr() || h.MTU != 1500 {
		t.Fatalf("learned route = %+v, %v", h, ok)
	}
	// The kernel's answer wins over the learned one.
	if h, _ := e.Route(addrCli); h.MAC != macGW {
		t.Fatalf("kernel route replaced: %+v", h)
	}
}

type genResolver struct {
	fakeResolver
	gen uint64
}

func (g *genResolver) Generation() uint64 { return g.gen }

// Workers may cache routes only while Generation stays the same: it must
// change with the resolver's answers, the links and learned MACs, and a
// resolver that cannot tell makes every call differ.
func TestEnvGeneration(t *testing.T) {
	e := newFakeEnv(t, vipLink, dipLink) // fakeResolver has no Generation
	if a, b := e.Generation(), e.Generation(); a == b {
		t.Fatal("without a resolver generation, Generation must change on every call")
	}
	res := &genResolver{fakeResolver: fakeResolver{}, gen: 7}
	e, err := NewEnv(res, vipLink, dipLink)
	if err != nil {
		t.Fatal(err)
	}
	g := e.Generation()
	if e.Generation() != g {
		t.Fatal("Generation changed with nothing changed")
	}
	res.gen++
	if e.Generation() == g {
		t.Fatal("resolver change not seen")
	}
	g = e.Generation()
	e.Learn(netip.MustParseAddr("198.18.1.11"), [6]byte{2, 0, 198, 18, 1, 11}, forwarder.VIPSide)
	if e.Generation() == g {
		t.Fatal("learned MAC not seen")
	}
	g = e.Generation()
	e.Learn(netip.MustParseAddr("198.18.1.11"), [6]byte{2, 0, 198, 18, 1, 11}, forwarder.VIPSide)
	if e.Generation() != g {
		t.Fatal("learning the same MAC again must not invalidate caches")
	}
	if err := e.SetLinks(vipLink, dipLink); err != nil || e.Generation() == g {
		t.Fatalf("SetLinks not seen (%v)", err)
	}
}
