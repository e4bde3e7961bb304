package rewrite

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestTUN(t *testing.T) {
	tcp := spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 40000, dport: 80, payload: 100}
	with := func(s spec, fn func(*spec)) spec { fn(&s); return s }
	tests := []struct {
		name     string
		s        spec
		headroom int
		wantTOS  uint8
	}{
		{"tcp", tcp, 20, 0},
		{"tcp more headroom", tcp, 64, 0},
		{"df and dscp copied", with(tcp, func(s *spec) { s.df = true; s.tos = 0xb8 | 0x01 }), 20, 0xb9},
		{"ecn ce becomes ect0", with(tcp, func(s *spec) { s.tos = 0x28 | 0x03 }), 20, 0x2a},
		{"vlan kept", with(tcp, func(s *spec) { s.vlan = 77 }), 20, 0},
		{"ip options", with(tcp, func(s *spec) { s.ipOpts = true }), 20, 0},
		{"partial", with(tcp, func(s *spec) { s.partial = true; s.vlan = 5 }), 24, 0},
		{"udp padded", spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 7000, payload: 2, pad: 14}, 20, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := build(t, tt.s)
			p := decode(t, f)
			buf := make([]byte, tt.headroom+len(f))
			copy(buf[tt.headroom:], f)
			id := uint16(0xbe00 + i)
			out, ok := TUN(buf, tt.headroom, p, dip, rip, id, toRS, tt.s.partial)
			if !ok {
				t.Fatal("TUN refused")
			}
			if &out[0] != &buf[tt.headroom-20] || len(out) != p.End+20 {
				t.Fatalf("out is buf[%d:+%d], want buf[%d:+%d]", len(buf)-cap(out), len(out), tt.headroom-20, p.End+20)
			}
			pkt := gp(t, out)
			var ips []*layers.IPv4
			for _, l := range pkt.Layers() {
				if ip, ok := l.(*layers.IPv4); ok {
					ips = append(ips, ip)
				}
			}
			if len(ips) != 2 || pkt.TransportLayer() == nil {
				t.Fatalf("want Ethernet/IPv4/IPv4/L4, got %v", pkt)
			}
			o, in := ips[0], ips[1]
			if o.Version != 4 || o.IHL != 5 || o.Protocol != layers.IPProtocolIPv4 || o.TOS != tt.wantTOS ||
				o.Id != id || o.TTL != p.TTL-1 || in.TTL != p.TTL-1 || int(o.Length) != p.End-p.L3+20 ||
				(o.Flags&layers.IPv4DontFragment != 0) != tt.s.df || o.FragOffset != 0 ||
				[4]byte(o.SrcIP) != dip || [4]byte(o.DstIP) != rip {
				t.Errorf("outer header %+v", o)
			}
			if [4]byte(in.SrcIP) != clientIP || [4]byte(in.DstIP) != vip || in.TOS != tt.s.tos {
				t.Errorf("inner header %+v", in)
			}
			if tt.s.vlan != 0 {
				if q, ok := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); !ok || q.VLANIdentifier != tt.s.vlan {
					t.Error("VLAN tag lost")
				}
			}
			if e := Ethernet(out); e.Dst() != toRS.Dst || e.Src() != toRS.Src {
				t.Error("MACs not set")
			}
			// The inner packet stayed where it was; only its TTL, header
			// checksum and (when partial) L4 checksum changed.
			ranges := [][2]int{{ipTTL, ipTTL + 1}, {ipCsum, ipCsum + 2}}
			if tt.s.partial {
				ranges = append(ranges, [2]int{p.L4Csum - p.L3, p.L4Csum - p.L3 + 2})
			}
			sameExcept(t, f[p.L3:p.End], buf[tt.headroom+p.L3:tt.headroom+p.End], ranges...)
		})
	}
}

func TestTUNLimits(t *testing.T) {
	t.Run("too long", func(t *testing.T) {
		f := make([]byte, EthernetLen+0xffff)
		binary.BigEndian.PutUint16(f[ethType:], EtherTypeIPv4)
		ip := IPv4(f[EthernetLen:])
		ip[0], ip[ipTTL], ip[ipProto] = 0x45, 64, 47
		binary.BigEndian.PutUint16(ip[ipTotalLen:], 0xffff-IPv4MinLen+1)
		ip.FixChecksum()
		p := decode(t, f)
		buf := append(make([]byte, 20), f...)
		if out, ok := TUN(buf, 20, p, dip, rip, 1, toRS, false); ok || out != nil {
			t.Error("TUN encapsulated a packet beyond 65535 bytes")
		}
		if !bytes.Equal(buf[20:], f) {
			t.Error("refused TUN changed the frame")
		}
	})
	t.Run("no headroom panics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("no panic")
			}
		}()
		f := build(t, tcpSYN)
		TUN(append(make([]byte, 19), f...), 19, decode(t, f), dip, rip, 1, toRS, false)
	})
}

// icmpErr builds an ICMP error frame from src to dst quoting the first n
// bytes (0: all) of the packet q.
func icmpErr(t testing.TB, typ uint8, src, dst [4]byte, q spec, n int, vlan uint16, opts bool) []byte {
	return build(t, spec{proto: ProtoICMP, icmpType: typ, src: src, dst: dst, vlan: vlan, ipOpts: opts, inner: quote(t, q, n)})
}

// checkQuoted decodes the packet quoted by the ICMP error in f with
// gopacket and checks its addresses, ports and IPv4 checksum; when whole
// is set the quote is a complete datagram and its transport checksum must
// verify too.
func checkQuoted(t *testing.T, f []byte, p *Parsed, src, dst [4]byte, sport, dport uint16, whole bool) {
	t.Helper()
	q := f[p.Inner.L3:p.End]
	pkt := gopacket.NewPacket(q, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		t.Fatalf("quote does not decode: %v", pkt)
	}
	if _, r := ip.VerifyChecksum(); !r.Valid {
		t.Errorf("quoted IPv4 checksum %#04x, want %#04x", r.Actual, r.Correct)
	}
	if [4]byte(ip.SrcIP) != src || [4]byte(ip.DstIP) != dst {
		t.Errorf("quoted %v -> %v", ip.SrcIP, ip.DstIP)
	}
	if p.Inner.Ports {
		if s, d := binary.BigEndian.Uint16(q[p.Inner.IHL:]), binary.BigEndian.Uint16(q[p.Inner.IHL+2:]); s != sport || d != dport {
			t.Errorf("quoted ports %d -> %d, want %d -> %d", s, d, sport, dport)
		}
	}
	if !whole {
		return
	}
	var res gopacket.ChecksumVerificationResult
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		_ = l.SetNetworkLayerForChecksum(ip)
		_, res = l.VerifyChecksum()
	case *layers.UDP:
		_ = l.SetNetworkLayerForChecksum(ip)
		_, res = l.VerifyChecksum()
	default:
		return
	}
	if !res.Valid {
		t.Errorf("quoted transport checksum %#04x, want %#04x", res.Actual, res.Correct)
	}
}

func TestICMPIn(t *testing.T) {
	// The reply the client (or a router) complains about: VIP:80 -> CIP.
	udpReply := spec{proto: ProtoUDP, src: vip, dst: clientIP, sport: 80, dport: 40001, payload: 12}
	udpNoCsum := udpReply
	udpNoCsum.udpZero = true
	echo := spec{proto: ProtoICMP, icmpType: ICMPEchoReply, src: vip, dst: clientIP, inner: []byte("abcdefgh")}
	tests := []struct {
		name  string
		frame []byte
		whole bool
	}{
		{"port unreachable, whole udp quoted", icmpErr(t, ICMPDestUnreach, clientIP, vip, udpReply, 0, 0, false), true},
		{"udp without checksum", icmpErr(t, ICMPDestUnreach, clientIP, vip, udpNoCsum, 0, 0, false), true},
		{"time exceeded, whole tcp quoted", icmpErr(t, ICMPTimeExceeded, routerIP, vip, replyTC, 0, 0, false), true},
		{"tcp, 8 bytes quoted", icmpErr(t, ICMPDestUnreach, routerIP, vip, replyTC, 28, 0, false), false},
		{"tcp, 18 bytes quoted", icmpErr(t, ICMPDestUnreach, routerIP, vip, replyTC, 38, 0, false), false},
		{"vlan and outer options", icmpErr(t, ICMPSourceQuench, clientIP, vip, replyTC, 0, 12, true), true},
		{"quoted icmp has no ports", icmpErr(t, ICMPDestUnreach, clientIP, vip, echo, 0, 0, false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.frame
			p := decode(t, f)
			if !p.Embedded {
				t.Fatal("not an embedded ICMP error")
			}
			before := clone(f)
			if !ICMPIn(f, p, rip, 8080, toRS) {
				t.Fatal("ICMPIn refused")
			}
			pkt := gp(t, f) // outer IPv4 and ICMP checksums
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if [4]byte(ip.DstIP) != rip || [4]byte(ip.SrcIP) != p.Src || ip.TTL != p.TTL-1 {
				t.Errorf("outer %v -> %v ttl %d", ip.SrcIP, ip.DstIP, ip.TTL)
			}
			checkQuoted(t, f, p, rip, clientIP, 8080, p.Inner.DstPort, tt.whole)
			if tt.name == "udp without checksum" && binary.BigEndian.Uint16(f[p.Inner.L4+udpCsum:]) != 0 {
				t.Error("quoted UDP checksum 0 changed")
			}
			in := p.Inner
			ranges := [][2]int{{0, 12}, {p.L3 + ipTTL, p.L3 + ipTTL + 1}, {p.L3 + ipCsum, p.L3 + ipCsum + 2},
				{p.L3 + ipDst, p.L3 + ipDst + 4}, {p.L4Csum, p.L4Csum + 2},
				{in.L3 + ipCsum, in.L3 + ipCsum + 2}, {in.L3 + ipSrc, in.L3 + ipSrc + 4}}
			if in.Ports {
				ranges = append(ranges, [2]int{in.L4, in.L4 + 2}, [2]int{in.L4 + udpCsum, in.L4 + udpCsum + 2}, [2]int{in.L4 + tcpCsum, min(in.L4+tcpCsum+2, p.End)})
			}
			sameExcept(t, before[:p.End], f[:p.End], ranges...)
		})
	}
}

func TestICMPOut(t *testing.T) {
	// The client packet the real server complains about: CIP -> RIP:8080.
	udpReq := spec{proto: ProtoUDP, src: clientIP, dst: rip, sport: 40001, dport: 8080, payload: 20}
	tcpReq := spec{proto: ProtoTCP, src: clientIP, dst: rip, sport: 40000, dport: 8080, payload: 9}
	for _, tt := range []struct {
		name  string
		frame []byte
	}{
		{"udp port unreachable", icmpErr(t, ICMPDestUnreach, rip, clientIP, udpReq, 0, 0, false)},
		{"tcp frag needed", icmpErr(t, ICMPDestUnreach, rip, clientIP, tcpReq, 0, 300, false)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.frame
			p := decode(t, f)
			if !ICMPOut(f, p, vip, 80, toRS) {
				t.Fatal("ICMPOut refused")
			}
			pkt := gp(t, f)
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if [4]byte(ip.SrcIP) != vip || [4]byte(ip.DstIP) != clientIP || ip.TTL != p.TTL-1 {
				t.Errorf("outer %v -> %v ttl %d", ip.SrcIP, ip.DstIP, ip.TTL)
			}
			checkQuoted(t, f, p, clientIP, vip, p.Inner.SrcPort, 80, true)
		})
	}
	t.Run("not embedded", func(t *testing.T) {
		f := build(t, tcpSYN)
		before := clone(f)
		if ICMPOut(f, decode(t, f), vip, 80, toRS) || ICMPIn(f, decode(t, f), rip, 80, toRS) {
			t.Error("ICMP rewrite of a non-ICMP packet")
		}
		sameExcept(t, before, f)
	})
}

func TestICMPBuilders(t *testing.T) {
	back := MACs{Dst: macClient, Src: macDirIn}
	big := spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 40000, dport: 80, payload: 1460, df: true, tcpFlags: TCPAck}
	small := spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 40001, dport: 7000, payload: 3, pad: 15, vlan: 33}
	tests := []struct {
		name      string
		s         spec
		build     func(dst, frame []byte, p *Parsed) ([]byte, bool)
		typ, code uint8
		mtu       uint16
	}{
		{"time exceeded, tos kept but ECN and precedence", spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, ttl: 1, tos: 0xb9}, func(d, f []byte, p *Parsed) ([]byte, bool) {
			return TimeExceeded(d, f, p, dip, back, 0x4242)
		}, ICMPTimeExceeded, 0, 0},
		{"frag needed, quote cut at 576", big, func(d, f []byte, p *Parsed) ([]byte, bool) {
			return FragNeeded(d, f, p, dip, 1400, back, 0x4242)
		}, ICMPDestUnreach, ICMPCodeFragNeeded, 1400},
		{"port unreachable, vlan, padding not quoted", small, func(d, f []byte, p *Parsed) ([]byte, bool) {
			return PortUnreachable(d, f, p, dip, back, 0x4242)
		}, ICMPDestUnreach, ICMPCodePortUnreach, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := build(t, tt.s)
			p := decode(t, f)
			var dst [ICMPErrorMaxFrame]byte
			out, ok := tt.build(dst[:], f, p)
			if !ok {
				t.Fatal("refused")
			}
			orig := f[p.L3:p.End]
			quoted := min(len(orig), ICMPErrorMaxLen-28)
			if len(out) != p.L3+28+quoted {
				t.Fatalf("frame length %d, want %d", len(out), p.L3+28+quoted)
			}
			pkt := gp(t, out)
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if [6]byte(eth.DstMAC) != macClient || [6]byte(eth.SrcMAC) != macDirIn {
				t.Errorf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if tt.s.vlan != 0 {
				if q, ok := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); !ok || q.VLANIdentifier != tt.s.vlan || q.Priority != 5 {
					t.Errorf("VLAN tag not repeated")
				}
			}
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if [4]byte(ip.SrcIP) != dip || [4]byte(ip.DstIP) != clientIP || ip.TTL != 64 || ip.Protocol != layers.IPProtocolICMPv4 ||
				ip.TOS != tt.s.tos&0x1e|0xc0 || int(ip.Length) != 28+quoted || ip.Length > 576 ||
				ip.Flags != 0 || ip.Id != 0x4242 { // icmp_send: IP_PMTUDISC_DONT, ip_select_ident
				t.Errorf("IP header %+v", ip)
			}
			ic := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ic.TypeCode.Type() != tt.typ || ic.TypeCode.Code() != tt.code || ic.Seq != tt.mtu || ic.Id != 0 {
				t.Errorf("ICMP %v id %d seq %d", ic.TypeCode, ic.Id, ic.Seq)
			}
			if !bytes.Equal(ic.Payload, orig[:quoted]) {
				t.Error("quote is not the original packet")
			}
			var q Parsed
			if q.Decode(out) != IP || !q.Embedded || q.Inner.Src != clientIP || q.Inner.Dst != vip || q.Inner.DstPort != tt.s.dport {
				t.Errorf("own Decode of the error: %+v", q)
			}
		})
	}
}

func TestICMPBuilderRefusals(t *testing.T) {
	tcp := build(t, tcpSYN)
	setDst := func(a [4]byte) []byte { return mutIP(clone(tcp), func(ip IPv4) { ip.SetDst(a) }) }
	setSrc := func(a [4]byte) []byte { return mutIP(clone(tcp), func(ip IPv4) { ip.SetSrc(a) }) }
	bcastMAC := clone(tcp)
	copy(bcastMAC, []byte{255, 255, 255, 255, 255, 255})
	mcastMAC := clone(tcp)
	copy(mcastMAC, []byte{0x01, 0x00, 0x5e, 0, 0, 1})
	tests := []struct {
		name  string
		frame []byte
		dst   int // buffer size, 0 = ICMPErrorMaxFrame
		ok    bool
	}{
		{"plain tcp", tcp, 0, true},
		{"echo request", build(t, spec{proto: ProtoICMP, icmpType: ICMPEcho, src: clientIP, dst: vip}), 0, true},
		{"first fragment", mutIP(clone(tcp), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipFrag:], ipFlagMF) }), 0, true},
		{"exact minimum buffer", build(t, spec{proto: ProtoTCP, src: clientIP, dst: vip, payload: 100}), EthernetLen + 28 + 28, true},
		{"buffer below minimum", build(t, spec{proto: ProtoTCP, src: clientIP, dst: vip, payload: 100}), EthernetLen + 28 + 27, false},
		{"icmp error", icmpErr(t, ICMPDestUnreach, clientIP, vip, replyTC, 0, 0, false), 0, false},
		{"icmp redirect", icmpErr(t, ICMPRedirect, clientIP, vip, replyTC, 0, 0, false), 0, false},
		{"later fragment", mutIP(clone(tcp), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipFrag:], 3) }), 0, false},
		{"broadcast MAC", bcastMAC, 0, false},
		{"multicast MAC", mcastMAC, 0, false},
		{"limited broadcast", setDst([4]byte{255, 255, 255, 255}), 0, false},
		{"multicast IP", setDst([4]byte{224, 0, 0, 5}), 0, false},
		{"source 0.0.0.0", setSrc([4]byte{}), 0, false},
		{"source loopback", setSrc([4]byte{127, 0, 0, 1}), 0, false},
		{"source multicast", setSrc([4]byte{239, 1, 1, 1}), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decode(t, tt.frame)
			n := tt.dst
			if n == 0 {
				n = ICMPErrorMaxFrame
			}
			out, ok := PortUnreachable(make([]byte, n), tt.frame, p, dip, MACs{}, 1)
			if ok != tt.ok || (out == nil) == ok {
				t.Fatalf("ok = %v (out %d bytes), want %v", ok, len(out), tt.ok)
			}
			if ok {
				gp(t, out)
			}
		})
	}
	var p Parsed
	p.Decode([]byte("short"))
	if _, ok := TimeExceeded(make([]byte, 100), []byte("short"), &p, dip, MACs{}, 1); ok {
		t.Error("ICMP error about a malformed frame")
	}
}
