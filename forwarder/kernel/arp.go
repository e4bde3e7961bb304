package kernel

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ARP operation codes (RFC 826).
const (
	arpRequest = 1
	arpReply   = 2
)

// Ethernet + ARP-for-IPv4 sizes.
const (
	ethHeaderLen  = 14
	arpIPv4Len    = 28
	minFrameLen   = 60 // shortest Ethernet frame without FCS; shorter frames are padded
	arpFrameLen   = ethHeaderLen + arpIPv4Len
	arpHwEthernet = 1
)

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpPacket is an Ethernet/IPv4 ARP message in fixed-size form.
type arpPacket struct {
	EthSrc    [6]byte // Ethernet source of the frame (where a reply goes)
	Op        uint16
	SenderMAC [6]byte
	SenderIP  [4]byte
	TargetMAC [6]byte
	TargetIP  [4]byte
}

// parseARP decodes an Ethernet frame carrying an Ethernet/IPv4 ARP message
// with gopacket's layers. It reports false for anything else (other
// EtherTypes, other hardware or protocol types, truncated frames); it never
// panics. Lengths are checked before gopacket sees the bytes, so malformed
// frames do not allocate an error.
func parseARP(frame []byte) (arpPacket, bool) {
	var p arpPacket
	if len(frame) < arpFrameLen ||
		binary.BigEndian.Uint16(frame[12:14]) != uint16(layers.EthernetTypeARP) {
		return p, false
	}
	a := frame[ethHeaderLen:]
	if binary.BigEndian.Uint16(a[0:2]) != arpHwEthernet ||
		binary.BigEndian.Uint16(a[2:4]) != uint16(layers.EthernetTypeIPv4) ||
		a[4] != 6 || a[5] != 4 {
		return p, false
	}
	var eth layers.Ethernet
	var arp layers.ARP
	if eth.DecodeFromBytes(frame, gopacket.NilDecodeFeedback) != nil ||
		arp.DecodeFromBytes(eth.Payload, gopacket.NilDecodeFeedback) != nil {
		return p, false
	}
	copy(p.EthSrc[:], eth.SrcMAC)
	p.Op = arp.Operation
	copy(p.SenderMAC[:], arp.SourceHwAddress)
	copy(p.SenderIP[:], arp.SourceProtAddress)
	copy(p.TargetMAC[:], arp.DstHwAddress)
	copy(p.TargetIP[:], arp.DstProtAddress)
	return p, true
}

// marshalARP encodes p in an Ethernet frame to dst, padded to the 60-byte
// Ethernet minimum, with gopacket's layers.
func marshalARP(dst [6]byte, p arpPacket) ([]byte, error) {
	eth := layers.Ethernet{
		SrcMAC:       p.EthSrc[:],
		DstMAC:       dst[:],
		EthernetType: layers.EthernetTypeARP,
	}
	arp := layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         p.Op,
		SourceHwAddress:   p.SenderMAC[:],
		SourceProtAddress: p.SenderIP[:],
		DstHwAddress:      p.TargetMAC[:],
		DstProtAddress:    p.TargetIP[:],
	}
	buf := gopacket.NewSerializeBufferExpectedSize(ethHeaderLen, minFrameLen)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, &eth, &arp); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if len(b) < minFrameLen {
		b = append(b, make([]byte, minFrameLen-len(b))...)
	}
	return b, nil
}

// arpAnswer decides how the responder answers a received ARP frame for the
// addresses in owned, with our interface MAC mine. It returns the reply
// frame's Ethernet destination and message, and false when the frame must
// be ignored: not a request, sent by ourselves, asking for an address we do
// not own, or a gratuitous announcement (sender == target), which another
// host makes for its own address and which we count as a conflict when the
// address is one of ours.
//
// An RFC 5227 probe (sender 0.0.0.0) is answered, as the kernel does, so
// the prober learns the address is taken.
func arpAnswer(req arpPacket, mine [6]byte, owned func([4]byte) bool) (dst [6]byte, reply arpPacket, conflict, ok bool) {
	if req.Op != arpRequest || req.EthSrc == mine || req.SenderMAC == mine {
		return dst, reply, false, false
	}
	if !owned(req.TargetIP) {
		return dst, reply, false, false
	}
	if req.SenderIP == req.TargetIP {
		return dst, reply, true, false
	}
	reply = arpPacket{
		EthSrc:    mine,
		Op:        arpReply,
		SenderMAC: mine,
		SenderIP:  req.TargetIP,
		TargetMAC: req.SenderMAC,
		TargetIP:  req.SenderIP,
	}
	return req.EthSrc, reply, false, true
}

// gratuitousARP is the announcement for addr: an ARP request from mine with
// sender and target address both addr, broadcast (RFC 5227 §3 form).
func gratuitousARP(mine [6]byte, addr [4]byte) arpPacket {
	return arpPacket{
		EthSrc:    mine,
		Op:        arpRequest,
		SenderMAC: mine,
		SenderIP:  addr,
		TargetIP:  addr,
	}
}

// addrSet is an immutable set of IPv4 addresses.
type addrSet map[[4]byte]struct{}

// newAddrSet keeps the IPv4 (or v4-mapped) addresses of addrs and reports
// the ones it had to skip.
func newAddrSet(addrs []netip.Addr) (addrSet, []netip.Addr) {
	s := make(addrSet, len(addrs))
	var bad []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
			bad = append(bad, a)
			continue
		}
		s[a.As4()] = struct{}{}
	}
	return s, bad
}

// sorted lists the set in address order.
func (s addrSet) sorted() []netip.Addr {
	out := make([]netip.Addr, 0, len(s))
	for a := range s {
		out = append(out, netip.AddrFrom4(a))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
