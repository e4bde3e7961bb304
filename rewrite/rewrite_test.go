package rewrite

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"gvs/checksum"
)

func TestDecTTL(t *testing.T) {
	for _, ttl := range []uint8{0, 1, 2, 3, 64, 128, 255} {
		f := build(t, spec{proto: ProtoTCP, src: clientIP, dst: vip, ttl: ttl})
		if ttl == 0 { // gopacket builds TTL 64 for 0 in spec; force it
			f = mutIP(f, func(ip IPv4) { ip[ipTTL] = 0 })
		}
		before := clone(f)
		ip := IPv4(f[EthernetLen:])
		ok := DecTTL(ip)
		if want := ttl > 1; ok != want {
			t.Fatalf("ttl %d: DecTTL = %v, want %v", ttl, ok, want)
		}
		if !ok {
			sameExcept(t, before, f)
			continue
		}
		if ip.TTL() != ttl-1 || !ipValid(ip) {
			t.Fatalf("ttl %d: now %d, checksum valid %v", ttl, ip.TTL(), ipValid(ip))
		}
		sameExcept(t, before, f, [2]int{EthernetLen + ipTTL, EthernetLen + ipTTL + 1}, [2]int{EthernetLen + ipCsum, EthernetLen + ipCsum + 2})
	}
}

// frameCases are the frames every forwarding rewrite is checked on.
func frameCases(src, dst [4]byte, sport, dport uint16) []struct {
	name string
	s    spec
} {
	tcp := spec{proto: ProtoTCP, src: src, dst: dst, sport: sport, dport: dport, df: true, tos: 0x10}
	udp := spec{proto: ProtoUDP, src: src, dst: dst, sport: sport, dport: dport, payload: 33}
	with := func(s spec, fn func(*spec)) spec { fn(&s); return s }
	return []struct {
		name string
		s    spec
	}{
		{"tcp syn", tcp},
		{"tcp data odd length", with(tcp, func(s *spec) { s.tcpFlags = TCPAck | TCPPsh; s.payload = 1001 })},
		{"tcp vlan", with(tcp, func(s *spec) { s.vlan = 42 })},
		{"tcp ip options", with(tcp, func(s *spec) { s.ipOpts = true; s.payload = 17 })},
		{"tcp padded", with(tcp, func(s *spec) { s.tcpFlags = TCPAck; s.pad = 6 })},
		{"tcp partial", with(tcp, func(s *spec) { s.partial = true; s.payload = 700 })},
		{"tcp partial vlan options", with(tcp, func(s *spec) { s.partial = true; s.vlan = 9; s.ipOpts = true; s.payload = 3 })},
		{"udp", udp},
		{"udp vlan options", with(udp, func(s *spec) { s.vlan = 4094; s.ipOpts = true })},
		{"udp zero checksum", with(udp, func(s *spec) { s.udpZero = true })},
		{"udp partial", with(udp, func(s *spec) { s.partial = true })},
		{"udp padded", with(udp, func(s *spec) { s.payload = 4; s.pad = 14 })},
		{"ttl 2", with(tcp, func(s *spec) { s.ttl = 2 })},
	}
}

// checkForwarded verifies a rewritten frame with gopacket: every checksum
// valid, the L4 checksum equal to a full recomputation (for UDP without one:
// still 0 unless nat, which computes it as IPVS does), the given addresses,
// ports, TTL and MACs, and no other byte changed.
func checkForwarded(t *testing.T, s spec, nat bool, before, after []byte, p *Parsed, src, dst [4]byte, sport, dport uint16, changed ...[2]int) {
	t.Helper()
	pkt := gp(t, after)
	eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if [6]byte(eth.DstMAC) != toRS.Dst || [6]byte(eth.SrcMAC) != toRS.Src {
		t.Errorf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
	}
	if s.vlan != 0 {
		if q, ok := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); !ok || q.VLANIdentifier != s.vlan {
			t.Errorf("VLAN tag lost")
		}
	}
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if [4]byte(ip.SrcIP.To4()) != src || [4]byte(ip.DstIP.To4()) != dst {
		t.Errorf("addresses %v -> %v, want %v -> %v", ip.SrcIP, ip.DstIP, net.IP(src[:]), net.IP(dst[:]))
	}
	if ip.TTL != p.TTL-1 || ip.TOS != s.tos || int(ip.Length) != p.End-p.L3 {
		t.Errorf("TTL %d TOS %#x len %d", ip.TTL, ip.TOS, ip.Length)
	}
	var gotS, gotD uint16
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		gotS, gotD = uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.UDP:
		gotS, gotD = uint16(l.SrcPort), uint16(l.DstPort)
	}
	if gotS != sport || gotD != dport {
		t.Errorf("ports %d -> %d, want %d -> %d", gotS, gotD, sport, dport)
	}
	have := binary.BigEndian.Uint16(after[p.L4Csum:])
	if s.udpZero && !nat {
		if have != 0 {
			t.Errorf("UDP checksum 0 became %#04x", have)
		}
	} else if want := refL4(t, after, p); have != want {
		t.Errorf("L4 checksum %#04x, full recompute %#04x", have, want)
	}
	ranges := append([][2]int{{0, 12}, {p.L3 + ipTTL, p.L3 + ipTTL + 1}, {p.L3 + ipCsum, p.L3 + ipCsum + 2}, {p.L4Csum, p.L4Csum + 2}}, changed...)
	sameExcept(t, before, after, ranges...)
}

func TestNATIn(t *testing.T) {
	const rport = 8080
	for _, c := range frameCases(clientIP, vip, 40000, 80) {
		t.Run(c.name, func(t *testing.T) {
			f := build(t, c.s)
			p := decode(t, f)
			before := clone(f)
			if !NATIn(f, p, rip, rport, toRS, c.s.partial) {
				t.Fatal("NATIn refused")
			}
			checkForwarded(t, c.s, true, before, f, p, clientIP, rip, 40000, rport,
				[2]int{p.L3 + ipDst, p.L3 + ipDst + 4}, [2]int{p.L4 + 2, p.L4 + 4})
		})
	}
}

func TestNATOut(t *testing.T) {
	for _, c := range frameCases(rip, clientIP, 8080, 40000) {
		t.Run(c.name, func(t *testing.T) {
			f := build(t, c.s)
			p := decode(t, f)
			before := clone(f)
			if !NATOut(f, p, vip, 80, toRS, c.s.partial) {
				t.Fatal("NATOut refused")
			}
			checkForwarded(t, c.s, true, before, f, p, vip, clientIP, 80, 40000,
				[2]int{p.L3 + ipSrc, p.L3 + ipSrc + 4}, [2]int{p.L4, p.L4 + 2})
		})
	}
}

func TestDR(t *testing.T) {
	for _, c := range frameCases(clientIP, vip, 40000, 80) {
		t.Run(c.name, func(t *testing.T) {
			f := build(t, c.s)
			p := decode(t, f)
			before := clone(f)
			if !DR(f, p, toRS, c.s.partial) {
				t.Fatal("DR refused")
			}
			checkForwarded(t, c.s, false, before, f, p, clientIP, vip, 40000, 80)
			if !c.s.partial && binary.BigEndian.Uint16(f[p.L4Csum:]) != binary.BigEndian.Uint16(before[p.L4Csum:]) {
				t.Error("DR changed a complete L4 checksum")
			}
		})
	}
}

// TestNATUDPMangledZero finds a port for which the rewritten UDP checksum
// computes to 0 and checks that 0xFFFF is sent instead.
func TestNATUDPMangledZero(t *testing.T) {
	s := spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 40001, dport: 7000, payload: 20}
	orig := build(t, s)
	for _, partial := range []bool{false, true} {
		found := false
		for port := 1; port <= 0xffff && !found; port++ {
			f := clone(orig)
			p := decode(t, f)
			NATIn(f, p, rip, uint16(port), toRS, false)
			// Sum of the rewritten datagram with a zero checksum field.
			u := clone(f[p.L4:p.End])
			binary.BigEndian.PutUint16(u[udpCsum:], 0)
			if checksum.Checksum(u, checksum.Fold(checksum.PseudoHeaderV4(clientIP, rip, ProtoUDP, uint16(len(u))))) != 0 {
				continue
			}
			found = true
			g := build(t, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 40001, dport: 7000, payload: 20, partial: partial})
			q := decode(t, g)
			NATIn(g, q, rip, uint16(port), toRS, partial)
			if got := binary.BigEndian.Uint16(g[q.L4Csum:]); got != 0xffff {
				t.Errorf("partial=%v port %d: computed-zero checksum sent as %#04x, want 0xffff", partial, port, got)
			}
			gp(t, g)
		}
		if !found {
			t.Fatal("no port gives a zero checksum")
		}
	}
}

func TestNATFragments(t *testing.T) {
	t.Run("first fragment: ports and checksum updated incrementally", func(t *testing.T) {
		f := build(t, udpReq)
		f = mutIP(f, func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipFrag:], ipFlagMF) })
		p := decode(t, f)
		want := build(t, udpReq)
		wp := decode(t, want)
		NATIn(f, p, rip, 7001, toRS, true) // partial is ignored for fragments
		NATIn(want, wp, rip, 7001, toRS, false)
		if got, w := binary.BigEndian.Uint16(f[p.L4Csum:]), binary.BigEndian.Uint16(want[wp.L4Csum:]); got != w || UDP(f[p.L4:]).DstPort() != 7001 {
			t.Errorf("first fragment checksum %#04x, unfragmented %#04x", got, w)
		}
	})
	t.Run("later fragment: address only", func(t *testing.T) {
		f := mutIP(build(t, udpReq), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipFrag:], 100) })
		p := decode(t, f)
		before := clone(f)
		NATIn(f, p, rip, 7001, toRS, false)
		ip := IPv4(f[p.L3:])
		if ip.Dst() != rip || !ipValid(ip) {
			t.Errorf("dst %v valid %v", ip.Dst(), ipValid(ip))
		}
		sameExcept(t, before, f, [2]int{0, 12}, [2]int{22, 26}, [2]int{30, 34})
	})
}

func TestTTLExpiredLeavesFrameAlone(t *testing.T) {
	f := build(t, spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, ttl: 1})
	icmp := build(t, spec{proto: ProtoICMP, icmpType: ICMPDestUnreach, src: clientIP, dst: vip, ttl: 1, inner: quote(t, replyTC, 0)})
	p, ip := decode(t, f), decode(t, icmp)
	for name, fn := range map[string]func(g []byte) bool{
		"DR":      func(g []byte) bool { return DR(g, p, toRS, true) },
		"NATIn":   func(g []byte) bool { return NATIn(g, p, rip, 1, toRS, true) },
		"NATOut":  func(g []byte) bool { return NATOut(g, p, rip, 1, toRS, false) },
		"ICMPIn":  func(g []byte) bool { return ICMPIn(g, ip, rip, 1, toRS) },
		"ICMPOut": func(g []byte) bool { return ICMPOut(g, ip, vip, 1, toRS) },
		"TUN": func(g []byte) bool {
			buf := append(make([]byte, 20), g...)
			out, ok := TUN(buf, 20, p, dip, rip, 1, toRS, true)
			copy(g, buf[20:])
			return ok || out != nil
		},
	} {
		src := f
		if strings.HasPrefix(name, "ICMP") {
			src = icmp
		}
		g := clone(src)
		if fn(g) {
			t.Errorf("%s forwarded a TTL 1 packet", name)
		}
		sameExcept(t, src, g)
	}
}

func TestCompleteL4(t *testing.T) {
	for _, s := range []spec{
		{proto: ProtoTCP, src: clientIP, dst: vip, sport: 9, dport: 80, payload: 99, partial: true},
		{proto: ProtoUDP, src: clientIP, dst: vip, sport: 9, dport: 7000, payload: 1, partial: true, pad: 11},
	} {
		f := build(t, s)
		p := decode(t, f)
		CompleteL4(f, p)
		if got, want := binary.BigEndian.Uint16(f[p.L4Csum:]), refL4(t, f, p); got != want {
			t.Errorf("proto %d: %#04x, want %#04x", s.proto, got, want)
		}
		gp(t, f)
	}
	// ICMP is left alone.
	f := build(t, spec{proto: ProtoICMP, icmpType: ICMPEcho, src: clientIP, dst: vip})
	before := clone(f)
	CompleteL4(f, decode(t, f))
	sameExcept(t, before, f)
}
