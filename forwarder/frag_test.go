package forwarder_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/forwarder/replay"
	"gvs/forwarder/staticenv"
	"gvs/internal/frames"
	"gvs/ipvs"
)

// mtuEnv lowers the MTU of the hops on one side.
type mtuEnv struct {
	forwarder.Env
	side, mtu int
}

func (e mtuEnv) Route(dst netip.Addr) (forwarder.Hop, bool) {
	h, ok := e.Env.Route(dst)
	if ok && h.Link == e.side {
		h.MTU = e.mtu
	}
	return h, ok
}

// newMTUHarness is newHarness with the hops on side limited to mtu.
func newMTUHarness(t *testing.T, rules string, side, mtu int) *harness {
	t.Helper()
	table, err := replay.ParseRules(strings.NewReader(rules), "rules")
	if err != nil {
		t.Fatal(err)
	}
	env, err := staticenv.New(staticenv.DefaultFacts())
	if err != nil {
		t.Fatal(err)
	}
	conns := conntrack.New(conntrack.Config{Seed: 1, Capacity: 1 << 16})
	set := ipvs.NewSettings()
	pl := forwarder.New(forwarder.Config{Env: mtuEnv{env, side, mtu}, Services: table, Conns: conns, Settings: set})
	return &harness{t: t, table: table, conns: conns, pl: pl, set: set, w: pl.NewWorker(), buf: make([]byte, 1<<17), now: 1 << 40}
}

func udpDF(c netip.Addr, cport uint16, df bool, payload int) []byte {
	return frames.UDP(frames.L2{Src: frames.DerivedMAC(c), Dst: vipMAC}, frames.IP{Src: c, Dst: vip, DF: df, ID: 0x77},
		frames.UDPDgram{SrcPort: cport, DstPort: 53, Payload: bytes.Repeat([]byte{0xa5}, payload)})
}

// reassemble checks fragments as the receiver's reassembly sees them (at
// most mtu bytes each, contiguous offsets, MF on all but the last, one
// ID, DF clear) and returns the packet they make (the first fragment's
// header with the whole payload).
func reassemble(t *testing.T, frags [][]byte, mtu int) (*layers.IPv4, []byte) {
	t.Helper()
	var first *layers.IPv4
	var data []byte
	for i, f := range frags {
		ip := ipv4Of(t, f)
		if int(ip.Length) > mtu || int(ip.FragOffset)*8 != len(data) || ip.Flags&layers.IPv4DontFragment != 0 ||
			(ip.Flags&layers.IPv4MoreFragments != 0) != (i < len(frags)-1) {
			t.Errorf("fragment %d: length %d offset %d flags %v", i, ip.Length, ip.FragOffset, ip.Flags)
		}
		if first == nil {
			first = ip
		} else if ip.Id != first.Id || !ip.SrcIP.Equal(first.SrcIP) || !ip.DstIP.Equal(first.DstIP) {
			t.Errorf("fragment %d: id %d %v -> %v", i, ip.Id, ip.SrcIP, ip.DstIP)
		}
		data = append(data, ip.Payload...)
	}
	return first, data
}

// udpOK decodes a reassembled UDP datagram and checks its checksum.
func udpOK(t *testing.T, ip *layers.IPv4, data []byte) *layers.UDP {
	t.Helper()
	h := *ip
	h.Flags, h.FragOffset, h.Options = 0, 0, nil
	buf := gopacket.NewSerializeBuffer()
	u := &layers.UDP{}
	if err := u.DecodeFromBytes(data, gopacket.NilDecodeFeedback); err != nil {
		t.Fatal(err)
	}
	sum := u.Checksum
	_ = u.SetNetworkLayerForChecksum(&h)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, u, gopacket.Payload(u.Payload)); err != nil {
		t.Fatal(err)
	}
	if got := uint16(buf.Bytes()[6])<<8 | uint16(buf.Bytes()[7]); got != sum {
		t.Errorf("UDP checksum %#x, want %#x", sum, got)
	}
	return u
}

// B6: a packet without DF larger than the egress MTU is fragmented (NAT,
// DR, and a NAT reply); with DF it gets fragmentation needed, exempt
// from the ICMP rate limit.
func TestFragmentNATDR(t *testing.T) {
	for _, m := range []struct{ name, flag string }{{"nat", "-m"}, {"dr", "-g"}} {
		t.Run(m.name, func(t *testing.T) {
			h := newMTUHarness(t, "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 "+m.flag+" -w 1\n", forwarder.DIPSide, 1000)
			r := h.send(udpDF(client, 4000, false, 2400), forwarder.VIPSide)
			if r.Action != forwarder.Transmit || r.Frags != 3 || &r.Frame[0] != &h.w.Fragment(0)[0] || r.Link != forwarder.DIPSide {
				t.Fatalf("2428-byte datagram over MTU 1000: %v %v, %d fragments", r.Action, r.Reason, int(r.Frags))
			}
			ip, data := reassemble(t, h.fragments(r), 1000)
			if ip.Id != 0x77 || len(data) != 2408 {
				t.Errorf("id %#x, %d payload bytes", ip.Id, len(data))
			}
			u := udpOK(t, ip, data)
			if m.name == "nat" && (u.DstPort != 5353 || [4]byte(ip.DstIP) != [4]byte{198, 18, 2, 11}) {
				t.Errorf("not DNATed: %v:%d", ip.DstIP, u.DstPort)
			}
			for i := 0; i < 20; i++ {
				r = h.send(udpDF(client, 4000, true, 2400), forwarder.VIPSide)
				if r.Action != forwarder.Reply || r.Reason != forwarder.FragNeeded {
					t.Fatalf("DF datagram %d: %v %v, want frag-needed (not rate-limited)", i, r.Action, r.Reason)
				}
			}
			if icmp := icmpOf4(t, r.Frame); icmp.Seq != 1000 {
				t.Errorf("frag-needed MTU %d", icmp.Seq)
			}
		})
	}
	// A NAT reply to the client over a small VIP-side MTU.
	h := newMTUHarness(t, "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n", forwarder.VIPSide, 600)
	h.send(udpDF(client, 4001, false, 10), forwarder.VIPSide)
	rs := netip.MustParseAddr("198.18.2.11")
	reply := frames.UDP(frames.L2{Src: frames.DerivedMAC(rs), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.2.1"))},
		frames.IP{Src: rs, Dst: client}, frames.UDPDgram{SrcPort: 5353, DstPort: 4001, Payload: make([]byte, 1000)})
	r := h.send(reply, forwarder.DIPSide)
	if r.Action != forwarder.Transmit || int(r.Frags) != 2 || !r.Out {
		t.Fatalf("NAT reply over MTU 600: %v %v, %d fragments", r.Action, r.Reason, int(r.Frags))
	}
	ip, data := reassemble(t, h.fragments(r), 600)
	if u := udpOK(t, ip, data); u.SrcPort != 53 || [4]byte(ip.SrcIP) != vip.As4() {
		t.Errorf("not SNATed: %v:%d", ip.SrcIP, u.SrcPort)
	}
}

func icmpOf4(t *testing.T, f []byte) *layers.ICMPv4 {
	t.Helper()
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	ic, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok {
		t.Fatalf("no ICMP in %x", f)
	}
	return ic
}

// B7: through a tunnel the outer header's DF is the inner's while
// pmtu_disc is 1 (a DF packet too big gets fragmentation needed for the
// MTU less 20); with pmtu_disc 0 the outer DF is 0, no frag-needed is
// sent and the IPIP packet is fragmented; a tunnel MTU below 68 drops.
func TestFragmentTUN(t *testing.T) {
	rules := "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -i -w 1\n"
	h := newMTUHarness(t, rules, forwarder.DIPSide, 1000)
	small := udpDF(client, 4000, true, 100)
	r := h.send(small, forwarder.VIPSide)
	if r.Action != forwarder.Transmit || r.Frags != 0 || ipv4Of(t, r.Frame).Flags != layers.IPv4DontFragment {
		t.Fatalf("small DF packet, pmtu_disc 1: %v, outer flags %v", r.Action, ipv4Of(t, r.Frame).Flags)
	}
	r = h.send(udpDF(client, 4000, true, 1000), forwarder.VIPSide)
	if r.Action != forwarder.Reply || r.Reason != forwarder.FragNeeded || icmpOf4(t, r.Frame).Seq != 980 {
		t.Fatalf("big DF packet, pmtu_disc 1: %v %v", r.Action, r.Reason)
	}
	r = h.send(udpDF(client, 4000, false, 1000), forwarder.VIPSide)
	if r.Action != forwarder.Transmit || int(r.Frags) != 2 {
		t.Fatalf("big packet without DF: %v %v, %d fragments", r.Action, r.Reason, int(r.Frags))
	}
	ip, data := reassemble(t, h.fragments(r), 1000)
	if ip.Protocol != layers.IPProtocolIPv4 || len(data) != 1028 {
		t.Errorf("outer protocol %v, %d bytes", ip.Protocol, len(data))
	}
	if err := h.set.Set(ipvs.SysPmtuDisc, [2]int64{0}); err != nil {
		t.Fatal(err)
	}
	r = h.send(small, forwarder.VIPSide)
	if r.Action != forwarder.Transmit || ipv4Of(t, r.Frame).Flags != 0 {
		t.Fatalf("small DF packet, pmtu_disc 0: %v, outer flags %v", r.Action, ipv4Of(t, r.Frame).Flags)
	}
	if in := gopacket.NewPacket(r.Frame[34:], layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4); in.Flags != layers.IPv4DontFragment {
		t.Errorf("inner DF lost: %v", in.Flags)
	}
	r = h.send(udpDF(client, 4000, true, 1000), forwarder.VIPSide)
	if r.Action != forwarder.Transmit || int(r.Frags) != 2 {
		t.Fatalf("big DF packet, pmtu_disc 0: %v %v, %d fragments, want fragmented", r.Action, r.Reason, int(r.Frags))
	}
	reassemble(t, h.fragments(r), 1000)

	h = newMTUHarness(t, rules, forwarder.DIPSide, 87)
	if r := h.send(udpDF(client, 4000, false, 10), forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.TooBig {
		t.Errorf("tunnel MTU 67: %v %v, want drop too_big", r.Action, r.Reason)
	}
	h = newMTUHarness(t, rules, forwarder.DIPSide, 88)
	if r := h.send(udpDF(client, 4000, false, 10), forwarder.VIPSide); r.Action != forwarder.Transmit {
		t.Errorf("tunnel MTU 68: %v %v, want transmit", r.Action, r.Reason)
	}
}

// B8: an ICMP error forwarded for a NAT connection has no MTU check: too
// big for the egress MTU it is fragmented, DF or not.
func TestFragmentICMPNAT(t *testing.T) {
	h := newMTUHarness(t, "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n", forwarder.VIPSide, 600)
	h.send(udpDF(client, 4002, false, 10), forwarder.VIPSide)
	rs := netip.MustParseAddr("198.18.2.11")
	// The real server's port unreachable quoting the whole (DNATed)
	// 1000-byte datagram, with DF.
	about := frames.UDP(frames.L2{}, frames.IP{Src: client, Dst: rs, TTL: 63}, frames.UDPDgram{SrcPort: 4002, DstPort: 5353, Payload: make([]byte, 972)})
	err := buildICMP(rs, client, about[14:])
	r := h.send(err, forwarder.DIPSide)
	if r.Action != forwarder.Transmit || int(r.Frags) != 2 || !r.Out {
		t.Fatalf("1028-byte ICMP error over MTU 600: %v %v, %d fragments", r.Action, r.Reason, int(r.Frags))
	}
	ip, data := reassemble(t, h.fragments(r), 600)
	if [4]byte(ip.SrcIP) != vip.As4() || ip.Protocol != layers.IPProtocolICMPv4 || len(data) != 8+1000 {
		t.Errorf("ICMP error: %v proto %v, %d bytes", ip.SrcIP, ip.Protocol, len(data))
	}
}

func buildICMP(src, dst netip.Addr, quote []byte) []byte {
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: frames.DerivedMAC(src).HW(), DstMAC: frames.DerivedMAC(netip.MustParseAddr("198.18.2.1")).HW(), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, ic, gopacket.Payload(quote)); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// fragments are the frames of a fragmented Result.
func (h *harness) fragments(r forwarder.Result) [][]byte {
	var out [][]byte
	for i := range int(r.Frags) {
		out = append(out, h.w.Fragment(i))
	}
	return out
}

// linkMTUEnv gives the VIP-side link a small MTU.
type linkMTUEnv struct {
	forwarder.Env
	links [2]forwarder.Link
}

func (e *linkMTUEnv) Links() *[2]forwarder.Link { return &e.links }

// icmp_send quotes as much as fits min(the route's MTU, 576).
func TestICMPQuoteRoom(t *testing.T) {
	table, err := replay.ParseRules(strings.NewReader("-A -u 198.51.100.10:53 -s rr\n"), "rules")
	if err != nil {
		t.Fatal(err)
	}
	env, err := staticenv.New(staticenv.DefaultFacts())
	if err != nil {
		t.Fatal(err)
	}
	le := &linkMTUEnv{Env: env, links: *env.Links()}
	le.links[forwarder.VIPSide].MTU = 300
	pl := forwarder.New(forwarder.Config{Env: le, Services: table, Conns: conntrack.New(conntrack.Config{Seed: 1, Capacity: 1 << 10})})
	h := &harness{t: t, table: table, pl: pl, w: pl.NewWorker(), buf: make([]byte, 4096), now: 1 << 40}
	r := h.send(udpDF(client, 4000, false, 500), forwarder.VIPSide)
	if r.Action != forwarder.Reply {
		t.Fatalf("%v %v, want reply", r.Action, r.Reason)
	}
	if ip := ipv4Of(t, r.Frame); ip.Length != 300 {
		t.Errorf("port unreachable of %d bytes over a 300-byte MTU, want 300", ip.Length)
	}
	le.links[forwarder.VIPSide].MTU = 1500
	r = h.send(udpDF(client, 4001, false, 500), forwarder.VIPSide)
	if ip := ipv4Of(t, r.Frame); ip.Length != 556 {
		t.Errorf("port unreachable of %d bytes, want 556 (the whole 528-byte datagram quoted)", ip.Length)
	}
}
