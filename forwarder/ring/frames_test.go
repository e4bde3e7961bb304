package ring

import (
	"encoding/binary"
	"net/netip"
)

// Test frames carry a marker and a sequence number 28 bytes after the
// Ethernet header (after IPv4+UDP, or after an ARP body), so receivers can
// tell them from background traffic.
var marker = [8]byte{'G', 'V', 'S', 'R', 'I', 'N', 'G', '!'}

// markOff is where the marker sits in an untagged frame.
const markOff = 14 + 28

// frameSpec describes a test frame.
type frameSpec struct {
	dstMAC, srcMAC [6]byte
	vlanTCI        uint16 // 0: untagged
	vlanTPID       uint16 // 0: 0x8100
	etherType      uint16 // 0: IPv4
	ipProto        uint8  // 0: UDP
	src, dst       netip.Addr
	sport, dport   uint16
	size           int // total length; at least the headers plus marker
	seq            uint32
	// tcpFlags are written at the TCP flags' offset when ipProto is 6
	// (over a marker byte); fragOff is the IPv4 fragment offset field.
	// An ICMP frame (ipProto 1) is a destination unreachable, or of the
	// type and code in sport's two bytes when sport is not 0.
	tcpFlags uint8
	fragOff  uint16
}

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
)

// buildFrame returns the frame described by s.
func buildFrame(s frameSpec) []byte {
	l2 := 14
	if s.vlanTCI != 0 {
		l2 = 18
	}
	minSize := l2 + 28 + len(marker) + 4
	size := max(s.size, minSize)
	b := make([]byte, size)
	copy(b[0:6], s.dstMAC[:])
	copy(b[6:12], s.srcMAC[:])
	et := s.etherType
	if et == 0 {
		et = etherTypeIPv4
	}
	if s.vlanTCI != 0 {
		tpid := s.vlanTPID
		if tpid == 0 {
			tpid = etherTypeVLAN
		}
		binary.BigEndian.PutUint16(b[12:], tpid)
		binary.BigEndian.PutUint16(b[14:], s.vlanTCI)
	}
	binary.BigEndian.PutUint16(b[l2-2:], et)
	l3 := b[l2:]
	switch et {
	case etherTypeIPv4:
		ipLen := size - l2
		l3[0] = 0x45
		binary.BigEndian.PutUint16(l3[2:], uint16(ipLen))
		binary.BigEndian.PutUint16(l3[4:], uint16(s.seq))
		l3[8] = 64
		l3[9] = 17 // UDP
		if s.ipProto != 0 {
			l3[9] = s.ipProto
		}
		src, dst := s.src.As4(), s.dst.As4()
		copy(l3[12:16], src[:])
		copy(l3[16:20], dst[:])
		binary.BigEndian.PutUint16(l3[10:], ipChecksum(l3[:20]))
		binary.BigEndian.PutUint16(l3[20:], s.sport)
		binary.BigEndian.PutUint16(l3[22:], s.dport)
		binary.BigEndian.PutUint16(l3[24:], uint16(ipLen-20))
	case etherTypeARP:
		binary.BigEndian.PutUint16(l3[0:], 1)      // Ethernet
		binary.BigEndian.PutUint16(l3[2:], 0x0800) // IPv4
		l3[4], l3[5] = 6, 4
		binary.BigEndian.PutUint16(l3[6:], 1) // request
		copy(l3[8:14], s.srcMAC[:])
		src, dst := s.src.As4(), s.dst.As4()
		copy(l3[14:18], src[:])
		copy(l3[24:28], dst[:])
	}
	copy(l3[28:], marker[:])
	binary.BigEndian.PutUint32(l3[28+len(marker):], s.seq)
	for i := 28 + len(marker) + 4; i < len(l3); i++ {
		l3[i] = byte(i + int(s.seq))
	}
	if et == etherTypeIPv4 && s.ipProto == 6 {
		l3[20+13] = s.tcpFlags
	}
	if et == etherTypeIPv4 && s.ipProto == 1 && s.sport == 0 {
		l3[20] = 3 // ICMP: destination unreachable unless sport says otherwise
	}
	if et == etherTypeIPv4 && s.fragOff != 0 {
		binary.BigEndian.PutUint16(l3[6:], s.fragOff)
		binary.BigEndian.PutUint16(l3[10:], 0)
		binary.BigEndian.PutUint16(l3[10:], ipChecksum(l3[:20]))
	}
	return b
}

// parseMark returns the sequence number of an untagged test frame.
func parseMark(b []byte) (uint32, bool) {
	if len(b) < markOff+len(marker)+4 || string(b[markOff:markOff+len(marker)]) != string(marker[:]) {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[markOff+len(marker):]), true
}

// ipChecksum is the RFC 1071 checksum of an IPv4 header.
func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
