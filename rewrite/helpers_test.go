package rewrite

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/checksum"
)

// Test addresses: 198.18.0.0/15 networks, a documentation VIP.
var (
	clientIP = [4]byte{198, 18, 0, 10}
	vip      = [4]byte{203, 0, 113, 1}
	rip      = [4]byte{198, 19, 0, 2}
	dip      = [4]byte{198, 19, 0, 1}
	routerIP = [4]byte{198, 18, 0, 254}

	macClient = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macDirIn  = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	macDirOut = [6]byte{0x02, 0, 0, 0, 0, 0x03}
	macRS     = [6]byte{0x02, 0, 0, 0, 0, 0x04}

	toRS = MACs{Dst: macRS, Src: macDirOut}
)

// spec describes a test frame.
type spec struct {
	vlan     uint16 // VLAN ID; 0 = untagged
	proto    uint8  // ProtoTCP, ProtoUDP, ProtoICMP
	src, dst [4]byte
	sport    uint16
	dport    uint16
	ttl      uint8
	tos      uint8
	df       bool
	ipOpts   bool   // add 8 bytes of IPv4 options (NOP, record route)
	payload  int    // payload bytes
	pad      int    // Ethernet padding bytes after the IP packet
	udpZero  bool   // UDP without checksum
	partial  bool   // L4 checksum field = folded pseudo-header sum
	tcpFlags uint8  // default SYN
	icmpType uint8  // for ProtoICMP
	inner    []byte // ICMP payload for ProtoICMP
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ipLayers returns the IPv4 layer and what follows it.
func ipLayers(s spec) []gopacket.SerializableLayer {
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	ip := &layers.IPv4{
		Version: 4, TTL: ttl, TOS: s.tos, Id: 0x1234,
		Protocol: layers.IPProtocol(s.proto),
		SrcIP:    net.IP(s.src[:]), DstIP: net.IP(s.dst[:]),
	}
	if s.df {
		ip.Flags = layers.IPv4DontFragment
	}
	if s.ipOpts {
		ip.Options = []layers.IPv4Option{
			{OptionType: 1}, // NOP
			{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, // record route, one slot
		}
	}
	pay := make([]byte, s.payload)
	for i := range pay {
		pay[i] = byte(i*7 + 3)
	}
	out := []gopacket.SerializableLayer{ip}
	switch s.proto {
	case ProtoTCP:
		flags := s.tcpFlags
		if flags == 0 {
			flags = TCPSyn
		}
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport),
			Seq: 1000, Window: 64240, DataOffset: 5,
			SYN: flags&TCPSyn != 0, ACK: flags&TCPAck != 0, FIN: flags&TCPFin != 0,
			RST: flags&TCPRst != 0, PSH: flags&TCPPsh != 0,
		}
		if flags&TCPSyn != 0 {
			tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		out = append(out, tcp)
	case ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
		_ = udp.SetNetworkLayerForChecksum(ip)
		out = append(out, udp)
	case ProtoICMP:
		out = append(out, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(s.icmpType, 0)})
		pay = s.inner
	}
	return append(out, gopacket.Payload(pay))
}

// build makes an Ethernet frame (client -> director) from s.
func build(t testing.TB, s spec) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macClient[:], DstMAC: macDirIn[:], EthernetType: layers.EthernetTypeIPv4}
	ls := []gopacket.SerializableLayer{eth}
	if s.vlan != 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{Priority: 5, VLANIdentifier: s.vlan, Type: layers.EthernetTypeIPv4})
	}
	f := serialize(t, append(ls, ipLayers(s)...)...)
	l3 := EthernetLen
	if s.vlan != 0 {
		l3 += VLANLen
	}
	ihl := int(f[l3]&0xf) * 4
	l4 := l3 + ihl
	if s.udpZero {
		binary.BigEndian.PutUint16(f[l4+udpCsum:], 0)
	}
	if s.partial {
		off := l4 + tcpCsum
		if s.proto == ProtoUDP {
			off = l4 + udpCsum
		}
		ln := uint16(len(f) - l4)
		binary.BigEndian.PutUint16(f[off:], checksum.Fold(checksum.PseudoHeaderV4(s.src, s.dst, s.proto, ln)))
	}
	for i := 0; i < s.pad; i++ {
		f = append(f, 0xee)
	}
	return f
}

// decode checks that Decode accepts f as IP.
func decode(t testing.TB, f []byte) *Parsed {
	t.Helper()
	var p Parsed
	if v := p.Decode(f); v != IP {
		t.Fatalf("Decode = %v (%v), want ip", v, p.Reason)
	}
	return &p
}

// gp decodes f with gopacket and fails on decoding errors and on any
// checksum gopacket finds wrong.
func gp(t testing.TB, f []byte) gopacket.Packet {
	t.Helper()
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v\n%s", el.Error(), pkt.Dump())
	}
	// gopacket's decoder does not link TCP/UDP to their IPv4 layer for the
	// pseudo-header; link each to the IPv4 layer just before it.
	var last *layers.IPv4
	for _, l := range pkt.Layers() {
		switch l := l.(type) {
		case *layers.IPv4:
			last = l
		case *layers.TCP:
			_ = l.SetNetworkLayerForChecksum(last)
		case *layers.UDP:
			_ = l.SetNetworkLayerForChecksum(last)
		}
	}
	err, bad := pkt.VerifyChecksums()
	if err != nil {
		t.Fatalf("VerifyChecksums: %v", err)
	}
	for _, m := range bad {
		t.Errorf("bad %v checksum: have %#04x, want %#04x", m.Layer.LayerType(), m.Actual, m.Correct)
	}
	return pkt
}

// refL4 is the full TCP/UDP checksum of frame recomputed independently with
// gopacket's serializer over the decoded layers.
func refL4(t testing.TB, f []byte, p *Parsed) uint16 {
	t.Helper()
	pkt := gopacket.NewPacket(f[:p.End], layers.LayerTypeEthernet, gopacket.Default)
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	var l gopacket.SerializableLayer
	switch p.Proto {
	case ProtoTCP:
		tcp := *pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		_ = tcp.SetNetworkLayerForChecksum(ip)
		l = &tcp
	case ProtoUDP:
		udp := *pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		_ = udp.SetNetworkLayerForChecksum(ip)
		l = &udp
	default:
		t.Fatalf("refL4: proto %d", p.Proto)
	}
	buf := gopacket.NewSerializeBuffer()
	pay := gopacket.Payload(f[p.L4+hdrLen(f, p) : p.End])
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, l, pay); err != nil {
		t.Fatal(err)
	}
	off := tcpCsum
	if p.Proto == ProtoUDP {
		off = udpCsum
	}
	return binary.BigEndian.Uint16(buf.Bytes()[off:])
}

func hdrLen(f []byte, p *Parsed) int {
	if p.Proto == ProtoTCP {
		return TCP(f[p.L4:]).HeaderLen()
	}
	return UDPLen
}

// ipValid reports whether the IPv4 header at b has a valid checksum.
func ipValid(b []byte) bool {
	return checksum.Checksum(b[:IPv4(b).HeaderLen()], 0) == 0
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// sameExcept fails unless a and b differ only at the given byte ranges.
func sameExcept(t *testing.T, a, b []byte, ranges ...[2]int) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("length %d != %d", len(a), len(b))
	}
	a, b = clone(a), clone(b)
	for _, r := range ranges {
		for i := r[0]; i < r[1]; i++ {
			a[i], b[i] = 0, 0
		}
	}
	if !bytes.Equal(a, b) {
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("unexpected change at byte %d: %#02x -> %#02x", i, a[i], b[i])
			}
		}
	}
}
