package daemon

import (
	"net/netip"
	"testing"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/forwarder/xdp"
	"gvs/ipvs"
)

// routeEnv routes every destination out of the DIP side with MTU 1500.
type routeEnv struct{}

func (routeEnv) Links() *[2]forwarder.Link { return &[2]forwarder.Link{} }
func (routeEnv) Route(netip.Addr) (forwarder.Hop, bool) {
	return forwarder.Hop{Link: forwarder.DIPSide, MTU: 1500}, true
}

// natInFrame is what the pipeline transmits for k towards real server
// 198.19.0.2:53 (NAT, inbound): Ethernet, IPv4, UDP.
func natInFrame(k *xdp.FlowKey) []byte {
	b := make([]byte, 14+20+8+4)
	b[12], b[13] = 0x08, 0
	b[14], b[23] = 0x45, k.Proto
	copy(b[26:30], k.Src[:])
	copy(b[30:34], []byte{198, 19, 0, 2})
	copy(b[34:36], k.SrcPort[:])
	b[36], b[37] = 0, 53
	return b
}

// TestFastPathInstallsFirstUDPDatagram: a new UDP connection's flow is
// installed at its first datagram (the pipeline sees one datagram of the
// flow, not two); a new TCP connection (its SYN is not steady anyway) and
// a new connection of a one-packet-scheduling service are not.
func TestFastPathInstallsFirstUDPDatagram(t *testing.T) {
	flows, err := xdp.NewFlowMap()
	if err != nil {
		t.Fatalf("flow map: %v", err)
	}
	defer flows.Close()
	f := &fastPath{flows: flows, env: routeEnv{}, conns: conntrack.New(conntrack.Config{Capacity: 16}), ifindex: [2]int{1, 1}}
	for i := range f.shards {
		f.shards[i].m = map[xdp.FlowKey]*fastEntry{}
		f.shards[i].base = uint32(i * fastSlots)
	}
	f.redirect[forwarder.VIPSide].Store(true)
	f.redirect[forwarder.DIPSide].Store(true)
	mk := func(ops bool) *ipvs.Dest {
		cfg := ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: netip.MustParseAddr("198.18.0.10"), Port: 53}}
		if ops {
			cfg.Flags |= ipvs.SvcOnePacket
		}
		return ipvs.NewDest(ipvs.NewService(cfg), ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.2"), Port: 53, Method: ipvs.Masq, Weight: 1})
	}
	key := func(port byte) xdp.FlowKey {
		return xdp.FlowKey{Src: [4]byte{198, 18, 1, 1}, Dst: [4]byte{198, 18, 0, 10}, SrcPort: [2]byte{4, port}, DstPort: [2]byte{0, 53}, Proto: 17}
	}
	var recent fastRecent
	for _, c := range []struct {
		name  string
		k     xdp.FlowKey
		dest  *ipvs.Dest
		state conntrack.State
		want  bool
	}{
		{"UDP, new connection", key(1), mk(false), conntrack.StateUDP, true},
		{"UDP, one-packet scheduling", key(2), mk(true), conntrack.StateUDP, false},
		{"TCP, new connection (SYN_RECV)", xdp.FlowKey{Src: [4]byte{198, 18, 1, 1}, Dst: [4]byte{198, 18, 0, 10}, SrcPort: [2]byte{4, 3}, DstPort: [2]byte{0, 80}, Proto: 6}, mk(false), conntrack.StateSynRecv, false},
	} {
		r := forwarder.Result{Action: forwarder.Transmit, Link: forwarder.DIPSide, Frame: natInFrame(&c.k), Dest: c.dest,
			State: c.state, Method: ipvs.Masq, New: true}
		f.after(&c.k, true, &r, 1e9, &recent)
		if got := f.has(&c.k); got != c.want {
			t.Errorf("%s: installed %v after the first packet, want %v", c.name, got, c.want)
		}
	}
}
