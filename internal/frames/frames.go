// Package frames builds Ethernet frames for tests and for the replay-input
// generator, with gopacket as an independent encoder: lengths and checksums are
// computed by gopacket, never by gvs's own checksum code.
package frames

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/forwarder/staticenv"
)

// MAC is an Ethernet address.
type MAC [6]byte

// HW converts to net.HardwareAddr.
func (m MAC) HW() net.HardwareAddr { return net.HardwareAddr(m[:]) }

// DerivedMAC is the locally administered MAC 02:00:a:b:c:d the lab and the
// replay defaults give the host with IPv4 address a.b.c.d
// (staticenv.DerivedMAC).
func DerivedMAC(a netip.Addr) MAC { return MAC(staticenv.DerivedMAC(a)) }

// L2 is the link-layer part of a frame.
type L2 struct {
	Src, Dst MAC
	// VLAN, when non-zero, adds one 802.1Q tag with this VLAN ID.
	VLAN uint16
}

// IP is the IPv4 header's variable part.
type IP struct {
	Src, Dst netip.Addr
	TTL      uint8 // 64 when 0
	TOS      uint8
	ID       uint16
	DF       bool
	Options  []layers.IPv4Option
}

// TCPSeg describes a TCP segment.
type TCPSeg struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	SYN, ACK, FIN    bool
	RST, PSH         bool
	Window           uint16 // 64240 when 0
	Payload          []byte
}

// UDPDgram describes a UDP datagram. NoChecksum sends checksum 0 ("none").
type UDPDgram struct {
	SrcPort, DstPort uint16
	Payload          []byte
	NoChecksum       bool
}

var opts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

func ethLayers(l2 L2) []gopacket.SerializableLayer {
	eth := &layers.Ethernet{SrcMAC: l2.Src.HW(), DstMAC: l2.Dst.HW(), EthernetType: layers.EthernetTypeIPv4}
	if l2.VLAN == 0 {
		return []gopacket.SerializableLayer{eth}
	}
	eth.EthernetType = layers.EthernetTypeDot1Q
	return []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: l2.VLAN, Type: layers.EthernetTypeIPv4}}
}

func ipLayer(ip IP, proto layers.IPProtocol) *layers.IPv4 {
	ttl := ip.TTL
	if ttl == 0 {
		ttl = 64
	}
	l := &layers.IPv4{
		Version: 4, TTL: ttl, TOS: ip.TOS, Id: ip.ID, Protocol: proto,
		SrcIP: ip.Src.AsSlice(), DstIP: ip.Dst.AsSlice(), Options: ip.Options,
	}
	if ip.DF {
		l.Flags = layers.IPv4DontFragment
	}
	return l
}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic("frames: " + err.Error()) // programmer error in a test or generator
	}
	return append([]byte(nil), buf.Bytes()...)
}

// TCP builds Ethernet[/802.1Q]/IPv4/TCP.
func TCP(l2 L2, ip IP, s TCPSeg) []byte {
	ipl := ipLayer(ip, layers.IPProtocolTCP)
	win := s.Window
	if win == 0 {
		win = 64240
	}
	t := &layers.TCP{
		SrcPort: layers.TCPPort(s.SrcPort), DstPort: layers.TCPPort(s.DstPort),
		Seq: s.Seq, Ack: s.Ack, SYN: s.SYN, ACK: s.ACK, FIN: s.FIN, RST: s.RST, PSH: s.PSH,
		Window: win,
	}
	if err := t.SetNetworkLayerForChecksum(ipl); err != nil {
		panic(err)
	}
	ls := append(ethLayers(l2), ipl, t, gopacket.Payload(s.Payload))
	return serialize(ls...)
}

// UDP builds Ethernet[/802.1Q]/IPv4/UDP.
func UDP(l2 L2, ip IP, d UDPDgram) []byte {
	ipl := ipLayer(ip, layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: layers.UDPPort(d.SrcPort), DstPort: layers.UDPPort(d.DstPort)}
	if err := u.SetNetworkLayerForChecksum(ipl); err != nil {
		panic(err)
	}
	ls := append(ethLayers(l2), ipl, u, gopacket.Payload(d.Payload))
	f := serialize(ls...)
	if d.NoChecksum {
		off := 14 + 4*int(f[14]&0x0f)
		if l2.VLAN != 0 {
			off = 18 + 4*int(f[18]&0x0f)
		}
		binary.BigEndian.PutUint16(f[off+6:], 0)
	}
	return f
}

// ICMPError builds an ICMP error (type, code) from ip.Src to ip.Dst quoting
// the IPv4 packet inside the frame `about` (its IP header and first 8 bytes of
// payload, as routers do). nextHopMTU fills bytes 6-7 for fragmentation needed.
func ICMPError(l2 L2, ip IP, typ, code uint8, nextHopMTU uint16, about []byte) []byte {
	ipl := ipLayer(ip, layers.IPProtocolICMPv4)
	off := 14
	if binary.BigEndian.Uint16(about[12:]) == 0x8100 {
		off = 18
	}
	inner := about[off:]
	ihl := 4 * int(inner[0]&0x0f)
	n := ihl + 8
	if n > len(inner) {
		n = len(inner)
	}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	if typ == layers.ICMPv4TypeDestinationUnreachable && code == layers.ICMPv4CodeFragmentationNeeded {
		icmp.Seq = nextHopMTU
	}
	ls := append(ethLayers(l2), ipl, icmp, gopacket.Payload(append([]byte(nil), inner[:n]...)))
	return serialize(ls...)
}

// ICMPEcho builds an ICMP echo request (not related to any connection).
func ICMPEcho(l2 L2, ip IP, id, seq uint16) []byte {
	ipl := ipLayer(ip, layers.IPProtocolICMPv4)
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq}
	ls := append(ethLayers(l2), ipl, icmp, gopacket.Payload([]byte("gvs-ping")))
	return serialize(ls...)
}

// ARPRequest builds a broadcast ARP who-has for target from (sha, spa).
func ARPRequest(sha MAC, spa, target netip.Addr) []byte {
	eth := &layers.Ethernet{SrcMAC: sha.HW(), DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: sha.HW(), SourceProtAddress: spa.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: target.AsSlice(),
	}
	return serialize(eth, arp)
}
