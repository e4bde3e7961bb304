package staticenv

import (
	"net/netip"
	"testing"

	"gvs/forwarder"
)

// The defaults are the ones the README documents for gvs-replay: vip0
// 198.18.1.1/24 MAC 02:00:c6:12:01:01, dip0 198.18.2.1/24 MAC
// 02:00:c6:12:02:01, MTU 1500, neighbour a.b.c.d at 02:00:a:b:c:d.
func TestDefaults(t *testing.T) {
	e, err := New(DefaultFacts())
	if err != nil {
		t.Fatal(err)
	}
	links := e.Links()
	for side, want := range [2]struct {
		name, addr string
		mac        [6]byte
	}{
		{"vip0", "198.18.1.1/24", [6]byte{2, 0, 0xc6, 0x12, 1, 1}},
		{"dip0", "198.18.2.1/24", [6]byte{2, 0, 0xc6, 0x12, 2, 1}},
	} {
		l := links[side]
		if l.Name != want.name || l.Prefix.String() != want.addr || l.MAC != want.mac || l.MTU != 1500 {
			t.Errorf("link %d = %+v, want %+v MTU 1500", side, l, want)
		}
	}
	for _, c := range []struct {
		dst  string
		hop  forwarder.Hop
		note string
	}{
		{"198.18.2.11", forwarder.Hop{Link: forwarder.DIPSide, MAC: [6]byte{2, 0, 198, 18, 2, 11},
			Src: netip.MustParseAddr("198.18.2.1"), MTU: 1500}, "on the DIP link"},
		{"203.0.113.9", forwarder.Hop{Link: forwarder.VIPSide, MAC: [6]byte{2, 0, 203, 0, 113, 9},
			Src: netip.MustParseAddr("198.18.1.1"), MTU: 1500}, "off-link, no gateway: as if on the VIP link"},
	} {
		if got, ok := e.Route(netip.MustParseAddr(c.dst)); !ok || got != c.hop {
			t.Errorf("Route(%s) (%s) = %+v %v, want %+v", c.dst, c.note, got, ok, c.hop)
		}
	}
}

// A neighbour given in the facts overrides the derived MAC; a gateway
// carries off-link destinations.
func TestNeighborsAndGateway(t *testing.T) {
	f := DefaultFacts()
	f.Neighbors = map[string]string{"198.18.1.254": "02:aa:bb:cc:dd:ee"}
	f.Gateway = "198.18.1.254"
	e, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	hop, ok := e.Route(netip.MustParseAddr("203.0.113.9"))
	if want := [6]byte{2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}; !ok || hop.Link != forwarder.VIPSide || hop.MAC != want {
		t.Errorf("Route via gateway = %+v %v, want VIP side, MAC %x", hop, ok, want)
	}
}
