package rewrite

import (
	"encoding/binary"
	"net"
	"regexp"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// quote serializes an IPv4 packet (no Ethernet) and keeps its first n bytes
// (all when n <= 0), as an ICMP error quotes it.
func quote(t testing.TB, s spec, n int) []byte {
	t.Helper()
	b := serialize(t, ipLayers(s)...)
	if s.udpZero {
		binary.BigEndian.PutUint16(b[IPv4(b).HeaderLen()+udpCsum:], 0)
	}
	if n > 0 && n < len(b) {
		b = b[:n]
	}
	return b
}

// mutIP edits the IPv4 header of an untagged frame and fixes its checksum.
func mutIP(f []byte, fn func(ip IPv4)) []byte {
	ip := IPv4(f[EthernetLen:])
	fn(ip)
	ip.FixChecksum()
	return f
}

// truncIP cuts an untagged frame's IP packet to total bytes.
func truncIP(f []byte, total int) []byte {
	f = f[:EthernetLen+total]
	return mutIP(f, func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipTotalLen:], uint16(total)) })
}

func ethFrame(t testing.TB, et layers.EthernetType, pay []byte) []byte {
	return serialize(t, &layers.Ethernet{SrcMAC: macClient[:], DstMAC: macDirIn[:], EthernetType: et}, gopacket.Payload(pay))
}

var (
	tcpSYN  = spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 40000, dport: 80, df: true}
	udpReq  = spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 40001, dport: 7000, payload: 30}
	replyTC = spec{proto: ProtoTCP, src: vip, dst: clientIP, sport: 80, dport: 40000, tcpFlags: TCPSyn | TCPAck}
)

func TestDecode(t *testing.T) {
	arp := serialize(t, &layers.Ethernet{SrcMAC: macClient[:], DstMAC: net.HardwareAddr{255, 255, 255, 255, 255, 255}, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: macClient[:], SourceProtAddress: clientIP[:],
			DstHwAddress: make([]byte, 6), DstProtAddress: vip[:]})
	ipv6 := ethFrame(t, layers.EthernetTypeIPv6, make([]byte, 40))
	qinq := serialize(t, &layers.Ethernet{SrcMAC: macClient[:], DstMAC: macDirIn[:], EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 20, Type: layers.EthernetTypeIPv4},
		gopacket.Payload(make([]byte, 40)))
	llc := clone(ipv6)
	binary.BigEndian.PutUint16(llc[ethType:], 46) // 802.3 length field

	firstFrag := mutIP(build(t, udpReq), func(ip IPv4) {
		binary.BigEndian.PutUint16(ip[ipFrag:], ipFlagMF)
		binary.BigEndian.PutUint16(ip[IPv4MinLen+udpLen:], 1000) // UDP length beyond the fragment
	})
	laterFrag := mutIP(build(t, udpReq), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipFrag:], 185) })
	gre := mutIP(build(t, udpReq), func(ip IPv4) { ip[ipProto] = 47 })

	portUnreach := build(t, spec{proto: ProtoICMP, icmpType: ICMPDestUnreach, src: clientIP, dst: vip,
		inner: quote(t, spec{proto: ProtoUDP, src: vip, dst: clientIP, sport: 7000, dport: 40001, payload: 100}, 0)})
	timeExc := build(t, spec{proto: ProtoICMP, icmpType: ICMPTimeExceeded, src: routerIP, dst: vip,
		inner: quote(t, replyTC, IPv4MinLen+8)})
	echo := build(t, spec{proto: ProtoICMP, icmpType: ICMPEcho, src: clientIP, dst: vip, inner: []byte("ping")})
	greQuote := quote(t, udpReq, IPv4MinLen+2)
	greQuote[ipProto] = 47
	IPv4(greQuote).FixChecksum()
	shortQuote := build(t, spec{proto: ProtoICMP, icmpType: ICMPDestUnreach, src: clientIP, dst: vip, inner: greQuote})
	fragICMPErr := mutIP(clone(portUnreach), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipFrag:], ipFlagMF) })

	tests := []struct {
		name  string
		frame []byte
		want  Verdict
		check func(t *testing.T, p *Parsed)
	}{
		{"tcp syn", build(t, tcpSYN), IP, func(t *testing.T, p *Parsed) {
			want := Parsed{L3: 14, EtherType: EtherTypeIPv4, IHL: 20, End: 14 + 20 + 24, TTL: 64, Proto: ProtoTCP, DF: true,
				Src: clientIP, Dst: vip, L4: 34, Ports: true, SrcPort: 40000, DstPort: 80, TCPFlags: TCPSyn, L4Csum: 50, L4Len: 24}
			if *p != want {
				t.Errorf("got  %+v\nwant %+v", *p, want)
			}
		}},
		{"vlan tagged", build(t, spec{vlan: 100, proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, tcpFlags: TCPAck | TCPFin}), IP, func(t *testing.T, p *Parsed) {
			if !p.VLAN || p.TCI != 5<<13|100 || p.L3 != 18 || p.L4 != 38 || p.TCPFlags != TCPAck|TCPFin || p.End != 18+40 {
				t.Errorf("got %+v", *p)
			}
		}},
		{"ip options", build(t, spec{ipOpts: true, proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, payload: 5}), IP, func(t *testing.T, p *Parsed) {
			if p.IHL != 28 || p.L4 != 42 || p.DstPort != 80 || p.L4Csum != 42+16 || p.L4Len != 24+5 {
				t.Errorf("got %+v", *p)
			}
		}},
		{"udp with ethernet padding", build(t, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 5, dport: 7000, payload: 2, pad: 16}), IP, func(t *testing.T, p *Parsed) {
			if p.End != 44 || p.L4Len != 10 || p.L4Csum != 34+6 || p.SrcPort != 5 || !p.Ports {
				t.Errorf("got %+v", *p)
			}
		}},
		{"first fragment", firstFrag, IP, func(t *testing.T, p *Parsed) {
			if !p.MF || !p.IsFragment() || !p.IsFirstFragment() || !p.Ports || p.DstPort != 7000 || p.L4Len != 0 {
				t.Errorf("got %+v", *p)
			}
		}},
		{"later fragment", laterFrag, IP, func(t *testing.T, p *Parsed) {
			if p.FragOff != 185 || !p.IsFragment() || p.IsFirstFragment() || p.Ports || p.L4Csum != 0 || p.L4 != 34 {
				t.Errorf("got %+v", *p)
			}
		}},
		{"other protocol", gre, IP, func(t *testing.T, p *Parsed) {
			if p.Proto != 47 || p.Ports || p.L4 != 34 || p.L4Csum != 0 {
				t.Errorf("got %+v", *p)
			}
		}},
		{"icmp echo", echo, IP, func(t *testing.T, p *Parsed) {
			if p.ICMPType != ICMPEcho || p.Embedded || p.L4Csum != 36 || p.Ports {
				t.Errorf("got %+v", *p)
			}
		}},
		{"icmp port unreachable", portUnreach, IP, func(t *testing.T, p *Parsed) {
			want := Inner{L3: 42, IHL: 20, Proto: ProtoUDP, Src: vip, Dst: clientIP, L4: 62, Ports: true, SrcPort: 7000, DstPort: 40001}
			if !p.Embedded || p.ICMPType != ICMPDestUnreach || p.Inner != want {
				t.Errorf("got %+v", *p)
			}
		}},
		{"icmp time exceeded, 8 bytes quoted", timeExc, IP, func(t *testing.T, p *Parsed) {
			if !p.Embedded || p.Inner.Proto != ProtoTCP || p.Inner.SrcPort != 80 || p.Inner.DstPort != 40000 || p.Inner.Dst != clientIP {
				t.Errorf("got %+v", *p)
			}
		}},
		{"icmp error quoting a short non-tcp/udp packet", shortQuote, IP, func(t *testing.T, p *Parsed) {
			if !p.Embedded || p.Inner.Proto != 47 || p.Inner.Ports || p.Inner.L4 != p.End-2 {
				t.Errorf("got %+v", *p)
			}
		}},
		{"fragmented icmp error is not related", fragICMPErr, IP, func(t *testing.T, p *Parsed) {
			if p.Embedded || p.ICMPType != ICMPDestUnreach {
				t.Errorf("got %+v", *p)
			}
		}},
		{"arp", arp, ARP, func(t *testing.T, p *Parsed) {
			if p.L3 != 14 || p.EtherType != EtherTypeARP {
				t.Errorf("got %+v", *p)
			}
		}},
		{"ipv6", ipv6, NotIP, nil},
		{"second vlan tag", qinq, NotIP, nil},
		{"802.3 length field", llc, NotIP, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Parsed
			p.Reason = BadIHL // Decode must reset it
			if v := p.Decode(tt.frame); v != tt.want {
				t.Fatalf("Decode = %v (%v), want %v", v, p.Reason, tt.want)
			}
			if p.Reason != ReasonNone {
				t.Errorf("Reason = %v on a good frame", p.Reason)
			}
			if tt.check != nil {
				tt.check(t, &p)
			}
		})
	}
}

func TestParsedAddrs(t *testing.T) {
	p := decode(t, build(t, tcpSYN))
	if got := p.SrcAddr().String(); got != "198.18.0.10" {
		t.Errorf("SrcAddr = %s", got)
	}
	if got := p.DstAddr(); got.As4() != vip || !got.Is4() {
		t.Errorf("DstAddr = %s", got)
	}
}

// malformedCorpus returns one frame per way Decode can reject a frame.
func malformedCorpus(t testing.TB) []struct {
	name  string
	frame []byte
	want  Reason
} {
	tcp := build(t, tcpSYN)
	udp := build(t, udpReq)
	unreach := func(inner []byte) []byte {
		return build(t, spec{proto: ProtoICMP, icmpType: ICMPDestUnreach, src: clientIP, dst: vip, inner: inner})
	}
	badCsum := unreach(quote(t, udpReq, 0))
	badCsum[EthernetLen+IPv4MinLen+icmpCsum] ^= 0x40
	v6 := quote(t, udpReq, 0)
	v6[0] = 0x65
	ihl4 := quote(t, udpReq, 0)
	ihl4[0] = 0x44
	vlanShort := build(t, spec{vlan: 7, proto: ProtoTCP, src: clientIP, dst: vip})[:16]

	return []struct {
		name  string
		frame []byte
		want  Reason
	}{
		{"empty", nil, TruncatedEthernet},
		{"13 bytes", tcp[:13], TruncatedEthernet},
		{"vlan tag cut", vlanShort, TruncatedVLAN},
		{"no ip header", tcp[:EthernetLen], TruncatedIP},
		{"19 bytes of ip", tcp[:EthernetLen+19], TruncatedIP},
		{"version 6 in ipv4 ethertype", mutIP(clone(tcp), func(ip IPv4) { ip[0] = 0x65 }), BadIPVersion},
		{"ihl 4", mutIP(clone(tcp), func(ip IPv4) { ip[0] = 0x44 }), BadIHL},
		{"ihl beyond total length", mutIP(clone(udp), func(ip IPv4) { ip[0] = 0x4f }), BadIHL},
		{"total length 19", mutIP(clone(tcp), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipTotalLen:], 19) }), BadTotalLength},
		{"total length beyond frame", mutIP(clone(tcp), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipTotalLen:], 100) }), BadTotalLength},
		{"frame cut short", udp[:len(udp)-1], BadTotalLength},
		{"bad ip checksum", func() []byte { f := clone(tcp); f[EthernetLen+ipCsum] ^= 1; return f }(), BadIPChecksum},
		{"tcp header cut", truncIP(clone(tcp), IPv4MinLen+19), TruncatedTCP},
		{"tcp data offset 4", func() []byte { f := clone(tcp); f[34+tcpDataOff] = 0x40; return f }(), BadTCPOffset},
		{"tcp data offset beyond packet", func() []byte { f := clone(tcp); f[34+tcpDataOff] = 0xf0; return f }(), BadTCPOffset},
		{"udp header cut", truncIP(clone(udp), IPv4MinLen+7), TruncatedUDP},
		{"udp length 7", func() []byte { f := clone(udp); binary.BigEndian.PutUint16(f[34+udpLen:], 7); return f }(), BadUDPLength},
		{"udp length beyond packet", func() []byte { f := clone(udp); binary.BigEndian.PutUint16(f[34+udpLen:], 39); return f }(), BadUDPLength},
		{"icmp header cut", truncIP(unreach(nil), IPv4MinLen+7), TruncatedICMP},
		{"icmp error checksum", badCsum, BadICMPChecksum},
		{"icmp error quotes nothing", unreach(nil), TruncatedICMPEmbedded},
		{"icmp error quotes 19 bytes", unreach(quote(t, udpReq, 19)), TruncatedICMPEmbedded},
		{"icmp error quotes header + 7", unreach(quote(t, udpReq, 27)), TruncatedICMPEmbedded},
		{"icmp error quotes ipv6", unreach(v6), BadICMPEmbedded},
		{"icmp error quotes ihl 4", unreach(ihl4), BadICMPEmbedded},
		{"ip option beyond the header", withIPOpts(tcp, []byte{7, 11, 4, 0}), BadIPOptions},
		{"loose source route", withIPOpts(tcp, []byte{131, 7, 4, 198, 18, 2, 11, 0}), SourceRoute},
	}
}

func TestDecodeMalformed(t *testing.T) {
	seen := make(map[Reason]bool)
	for _, tt := range malformedCorpus(t) {
		t.Run(tt.name, func(t *testing.T) {
			var p Parsed
			if v := p.Decode(tt.frame); v != Malformed || p.Reason != tt.want {
				t.Fatalf("Decode = %v, %v; want malformed, %v", v, p.Reason, tt.want)
			}
			seen[tt.want] = true
		})
	}
	for r := ReasonNone + 1; r < NumReasons; r++ {
		if !seen[r] {
			t.Errorf("reason %v not reached by the corpus", r)
		}
	}
}

func TestReasonNames(t *testing.T) {
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	names := make(map[string]Reason)
	for r := Reason(0); r < NumReasons; r++ {
		n := r.String()
		if !snake.MatchString(n) || n == "unknown" {
			t.Errorf("Reason(%d) name %q is not a snake_case counter name", r, n)
		}
		if prev, dup := names[n]; dup {
			t.Errorf("Reason(%d) and Reason(%d) share name %q", prev, r, n)
		}
		names[n] = r
	}
	if NumReasons.String() != "unknown" || Verdict(9).String() != "unknown" {
		t.Error("out-of-range values must print as unknown")
	}
	for v, want := range map[Verdict]string{Malformed: "malformed", NotIP: "not_ip", ARP: "arp", IP: "ip"} {
		if v.String() != want {
			t.Errorf("Verdict(%d) = %q, want %q", v, v.String(), want)
		}
	}
}

// checkBounds verifies the promise of Decode: for IP, every offset lies in
// the frame and the views can be read without panicking.
func checkBounds(t *testing.T, f []byte, p *Parsed) {
	t.Helper()
	if !(p.L3 == 14 || p.L3 == 18) || p.L3+p.IHL > p.End || p.End > len(f) || p.IHL < 20 || p.IHL > 60 || p.L4 != p.L3+p.IHL {
		t.Fatalf("bad offsets %+v len %d", *p, len(f))
	}
	ip := IPv4(f[p.L3:p.End])
	_, _, _ = ip.Src(), ip.Dst(), ip.TotalLen()
	if p.L4Csum != 0 && (p.L4Csum < p.L4 || p.L4Csum+2 > p.End) {
		t.Fatalf("L4Csum %d outside [%d,%d)", p.L4Csum, p.L4, p.End)
	}
	if p.Ports && p.L4+4 > p.End {
		t.Fatalf("ports beyond end")
	}
	if p.L4Len != 0 && p.L4+p.L4Len > p.End {
		t.Fatalf("L4Len %d beyond end", p.L4Len)
	}
	if p.Embedded {
		in := p.Inner
		if in.L3 != p.L4+8 || in.L4 != in.L3+in.IHL || in.L4 > p.End || (in.Ports && in.L4+8 > p.End) {
			t.Fatalf("bad inner offsets %+v", in)
		}
	}
}

// FuzzDecode: Decode never panics, and when it accepts a frame its offsets
// stay within the frame; the rewrites on an accepted frame do not panic and
// keep the IPv4 header checksum valid.
func FuzzDecode(f *testing.F) {
	f.Add(build(f, tcpSYN))
	f.Add(build(f, spec{vlan: 3, ipOpts: true, proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 2, payload: 3, pad: 10}))
	f.Add(build(f, spec{proto: ProtoICMP, icmpType: ICMPDestUnreach, src: clientIP, dst: vip, inner: quote(f, replyTC, 28)}))
	f.Add(build(f, spec{proto: ProtoICMP, icmpType: ICMPEcho, src: clientIP, dst: vip}))
	for _, c := range malformedCorpus(f) {
		f.Add(c.frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var p Parsed
		v := p.Decode(frame)
		if v == Malformed {
			if p.Reason == ReasonNone || p.Reason >= NumReasons {
				t.Fatalf("malformed without a reason: %d", p.Reason)
			}
			return
		}
		if p.Reason != ReasonNone {
			t.Fatalf("verdict %v with reason %v", v, p.Reason)
		}
		if v != IP {
			return
		}
		checkBounds(t, frame, &p)
		buf := make([]byte, TUNHeadroom+len(frame))
		copy(buf[TUNHeadroom:], frame)
		if out, ok := TUN(buf, TUNHeadroom, &p, dip, rip, 7, toRS, true); ok && !ipValid(out[p.L3:]) {
			t.Fatal("TUN: invalid outer checksum")
		}
		for i, fn := range []func(g []byte) bool{
			func(g []byte) bool { return DR(g, &p, toRS, false) },
			func(g []byte) bool { return NATIn(g, &p, rip, 8080, toRS, false) },
			func(g []byte) bool { return NATOut(g, &p, vip, 80, toRS, true) },
			func(g []byte) bool { return ICMPIn(g, &p, rip, 8080, toRS) },
			func(g []byte) bool { return ICMPOut(g, &p, vip, 80, toRS) },
		} {
			g := clone(frame)
			if fn(g) && !ipValid(g[p.L3:]) {
				t.Fatalf("rewrite %d: invalid IPv4 checksum", i)
			}
		}
		var out [ICMPErrorMaxFrame]byte
		if r, ok := PortUnreachable(out[:], frame, &p, dip, MACs{}, 1); ok {
			var q Parsed
			if q.Decode(r) != IP || !q.Embedded {
				t.Fatalf("generated ICMP error does not decode as one: %v", q.Reason)
			}
		}
	})
}
