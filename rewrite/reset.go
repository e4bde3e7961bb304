package rewrite

import (
	"encoding/binary"

	"gvs/checksum"
)

// ResetLen is the length of the IP datagram TCPReset builds: an IPv4 and a
// TCP header, no options. ResetMaxFrame bounds its frame (tagged Ethernet).
const (
	ResetLen      = IPv4MinLen + TCPMinLen
	ResetMaxFrame = EthernetLen + VLANLen + ResetLen
)

// ResetTTL is the TTL of a generated RST: the kernel's control socket has
// no TTL of its own and uses the default (net.ipv4.ip_default_ttl, 64).
const ResetTTL = 64

// TCPReset builds into dst the RST the host's TCP would send for the TCP
// segment in frame (decoded into p, verdict IP, Ports true) when no socket
// wants it, as Linux's tcp_v4_send_reset does: from the segment's
// destination address and port to its source; with ACK in the segment, seq
// is its ack number and the only flag is RST; without, seq is 0, flags
// RST|ACK and ack covers the segment (seq + SYN + FIN + payload length). The
// header has no options and window 0. The IP header is that of
// ip_send_unicast_reply on the kernel's TCP control socket: TOS of the
// segment without the ECN bits, TTL 64, DF set and ID 0 (the socket's
// IP_PMTUDISC_DO). A VLAN tag of the frame is repeated; m gives the MAC
// addresses.
//
// It returns the frame, a prefix of dst, and true; nil and false for a
// segment that gets no RST: a RST itself, a fragment, a segment to a
// broadcast or multicast IP or MAC address or from a non-unicast source
// (tcp_v4_send_reset's "never send a reset in response to a reset" and
// the checks of tcp_v4_rcv, which drops non-PACKET_HOST frames, and of the
// route lookup), or a dst shorter than ResetMaxFrame.
func TCPReset(dst, frame []byte, p *Parsed, m MACs) ([]byte, bool) {
	if p.Proto != ProtoTCP || !p.Ports || p.TCPFlags&TCPRst != 0 || p.IsFragment() ||
		len(dst) < ResetMaxFrame || !mayReply(frame, p) {
		return nil, false
	}
	th := TCP(frame[p.L4:])
	l2 := writeL2(dst, p, m)
	out := dst[:l2+ResetLen]

	ip := IPv4(out[l2 : l2+IPv4MinLen])
	ip[ipVerIHL] = 0x45
	ip[ipTOS] = p.TOS &^ ipECNMask
	binary.BigEndian.PutUint16(ip[ipTotalLen:], ResetLen)
	binary.BigEndian.PutUint16(ip[ipID:], 0)
	binary.BigEndian.PutUint16(ip[ipFrag:], ipFlagDF)
	ip[ipTTL] = ResetTTL
	ip[ipProto] = ProtoTCP
	ip.SetSrc(p.Dst)
	ip.SetDst(p.Src)
	ip.FixChecksum()

	t := out[l2+IPv4MinLen:]
	clear(t[:TCPMinLen])
	binary.BigEndian.PutUint16(t[l4SrcPort:], p.DstPort)
	binary.BigEndian.PutUint16(t[l4DstPort:], p.SrcPort)
	t[tcpDataOff] = (TCPMinLen / 4) << 4
	if p.TCPFlags&TCPAck != 0 {
		copy(t[tcpSeq:tcpSeq+4], th[tcpAck:tcpAck+4])
		t[tcpFlags] = TCPRst
	} else {
		seq := binary.BigEndian.Uint32(th[tcpSeq:])
		payload := p.End - p.L4 - th.HeaderLen()
		seq += uint32(payload)
		if p.TCPFlags&TCPSyn != 0 {
			seq++
		}
		if p.TCPFlags&TCPFin != 0 {
			seq++
		}
		binary.BigEndian.PutUint32(t[tcpAck:], seq)
		t[tcpFlags] = TCPRst | TCPAck
	}
	sum := checksum.Sum(t[:TCPMinLen], checksum.PseudoHeaderV4(p.Dst, p.Src, ProtoTCP, TCPMinLen))
	TCP(t).SetChecksum(^checksum.Fold(sum))
	return out, true
}

// writeL2 writes the Ethernet header of a reply to the frame decoded into p
// (repeating its VLAN tag) and returns its length.
func writeL2(out []byte, p *Parsed, m MACs) int {
	m.apply(out)
	if p.VLAN {
		binary.BigEndian.PutUint16(out[ethType:], EtherTypeVLAN)
		binary.BigEndian.PutUint16(out[vlanTCI:], p.TCI)
		binary.BigEndian.PutUint16(out[vlanTyp:], EtherTypeIPv4)
		return EthernetLen + VLANLen
	}
	binary.BigEndian.PutUint16(out[ethType:], EtherTypeIPv4)
	return EthernetLen
}

// L4ChecksumOK verifies the TCP or UDP checksum of an unfragmented packet
// decoded into p (a UDP checksum of 0 means none), as the host's stack does
// before answering a segment no socket wants.
func L4ChecksumOK(frame []byte, p *Parsed) bool {
	seg := frame[p.L4:p.End]
	if p.Proto == ProtoUDP {
		if len(seg) < 8 {
			return false
		}
		if seg[6] == 0 && seg[7] == 0 {
			return true
		}
		seg = seg[:UDP(seg).Length()]
	}
	sum := checksum.Sum(seg, checksum.PseudoHeaderV4(p.Src, p.Dst, p.Proto, uint16(len(seg))))
	return checksum.Fold(sum) == 0xffff
}
