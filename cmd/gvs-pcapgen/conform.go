package main

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/internal/frames"
)

// Golden cases for the divergences from IPVS fixed in gvs (the
// conformance issue): each one's output differs on the code before its fix.

// twoNAT is a NAT TCP service on port 80 with two real servers on 8080;
// rr's first pick is the newest one, rs2.
const twoNAT = "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 1\n"

// established runs the handshake of v (NAT: both halves, else the
// client's) and a request.
func established(v *conversation) {
	v.fromClient(true, false, false, false, nil)
	if v.nat {
		v.fromServer(true, true, false, false, nil)
	}
	v.fromClient(false, true, false, false, nil)
	v.fromClient(false, true, false, true, []byte("GET / HTTP/1.0\r\n\r\n"))
}

// toTimeWait closes a NAT connection: client FIN, server ACK and FIN,
// client's last ACK.
func toTimeWait(v *conversation) {
	v.fromClient(false, true, true, false, nil)
	v.fromServer(false, true, false, false, nil)
	v.fromServer(false, true, true, false, nil)
	v.fromClient(false, true, false, false, nil)
}

// ackSeg is a client segment with the given flags on (c, cport) -> VIP:vport.
func clientSeg(c netip.Addr, cport, vport uint16, seg frames.TCPSeg) []byte {
	seg.SrcPort, seg.DstPort = cport, vport
	return frames.TCP(toVIP(c), ip(c, vip), seg)
}

// ipipOf is the IPIP frame the director sends to real server rs for the
// client frame f (as a router between them would quote it): outer
// DIP -> rs, DF and TTL copied from the inner header, whose TTL is one
// less.
func ipipOf(f []byte, rs netip.Addr) []byte {
	inner := append([]byte(nil), f[14:]...)
	inner[8]--
	inner[10], inner[11] = 0, 0
	h := inner[:20]
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	h[10], h[11] = byte(c>>8), byte(c)
	eth := &layers.Ethernet{SrcMAC: dip0MAC.HW(), DstMAC: mac(rs).HW(), EthernetType: layers.EthernetTypeIPv4}
	outer := &layers.IPv4{Version: 4, TTL: inner[8], Protocol: layers.IPProtocolIPv4, SrcIP: dip0.AsSlice(), DstIP: rs.AsSlice()}
	if inner[6]&0x40 != 0 {
		outer.Flags = layers.IPv4DontFragment
	}
	return serializeFrame(eth, outer, gopacket.Payload(inner))
}

// routerError is an ICMP error from a router on the DIP side to the
// director about frame f, quoting as much of it as fits in 576 bytes
// (RFC 1812, as Linux's icmp_send does).
func routerError(r netip.Addr, typ, code uint8, mtu uint16, f []byte) []byte {
	quote := f[14:]
	if len(quote) > 576-28 {
		quote = quote[:576-28]
	}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	if typ == layers.ICMPv4TypeDestinationUnreachable && code == layers.ICMPv4CodeFragmentationNeeded {
		icmp.Seq = mtu
	}
	eth := &layers.Ethernet{SrcMAC: mac(r).HW(), DstMAC: dip0MAC.HW(), EthernetType: layers.EthernetTypeIPv4}
	ipl := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: r.AsSlice(), DstIP: dip0.AsSlice()}
	return serializeFrame(eth, ipl, icmp, gopacket.Payload(append([]byte(nil), quote...)))
}

func serializeFrame(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func init() {
	// A packet for a deleted real server (expire_nodest_conn 0) is
	// dropped before the state machine: the client's FIN leaves the
	// connection ESTABLISHED with its timer; the server added back (from
	// IPVS's trash, the same dest) still counts it as active, and the
	// retransmitted FIN then goes through (CLOSE_WAIT, inactive).
	cases["nodest-drop"] = func() *scenario {
		s := &scenario{rules: twoNAT}
		v := newConv(s, client, 41001, 80, rs2, 8080, true)
		established(v)
		v.fromServer(false, true, false, true, []byte("HTTP/1.0 200 OK\r\n\r\n"))
		s.at(2500 * time.Millisecond)
		fin := v.fromClient(false, true, true, false, nil) // dropped
		s.at(5 * time.Second)
		s.in(fin) // retransmitted
		s.script = `1 -Lnc
1 -Ln
2 -d -t 198.51.100.10:80 -r 198.18.2.12:8080
3 -Lnc
3 -Ln
4 -a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 1
4 -Ln
4 -Lnc
6 -Lnc
6 -Ln
`
		return s
	}
	// expire_nodest_conn 1: the next packet of a connection whose real
	// server was deleted expires it and is treated as a first packet: a
	// UDP datagram is scheduled afresh, a TCP ACK gets the host's RST and
	// the client's new SYN is scheduled to the remaining server.
	cases["nodest-expire"] = func() *scenario {
		s := &scenario{rules: twoNAT + "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n-a -u 198.51.100.10:53 -r 198.18.2.12:5353 -m -w 1\n"}
		v := newConv(s, client, 41101, 80, rs2, 8080, true)
		established(v)
		udpIn(s, client, 33100, 53, "q1")
		udpOut(s, rs2, 5353, client, 33100, "a1")
		s.at(2500 * time.Millisecond)
		udpIn(s, client, 33100, 53, "q2")                      // rescheduled -> rs1
		v.fromClient(false, true, false, true, []byte("more")) // expired: RST
		s.at(3 * time.Second)
		v2 := newConv(s, client, 41101, 80, rs1, 8080, true)
		v2.cseq += 5000
		v2.fromClient(true, false, false, false, nil) // the client reconnects: rs1
		s.script = `0.5 --sysctl expire_nodest_conn=1
1 -Lnc
2 -d -t 198.51.100.10:80 -r 198.18.2.12:8080
2 -d -u 198.51.100.10:53 -r 198.18.2.12:5353
2.2 -Lnc
2.8 -Lnc
3.5 -Lnc
3.5 -Ln
`
		return s
	}
	// conn_reuse_mode: 1 (default) reschedules a SYN that finds a
	// TIME_WAIT connection; 0 reuses it; bit 2 (modes 2 and 3) also
	// reschedules a SYN on a DR connection in FIN_WAIT without output,
	// which mode 1 reuses.
	cases["conn-reuse"] = func() *scenario {
		s := &scenario{rules: twoNAT + "-A -t 198.51.100.10:81 -s rr\n-a -t 198.51.100.10:81 -r 198.18.2.11:81 -g -w 1\n-a -t 198.51.100.10:81 -r 198.18.2.12:81 -g -w 1\n"}
		again := func(v *conversation) { // a new SYN on the same ports
			v.cseq += 100000
			v.fromClient(true, false, false, false, nil)
		}
		a := newConv(s, client, 41201, 80, rs2, 8080, true)
		established(a)
		toTimeWait(a)
		again(a) // mode 1: rescheduled (rr -> rs1)
		s.at(1500 * time.Millisecond)
		b := newConv(s, client, 41202, 80, rs2, 8080, true)
		established(b) // rr -> rs2
		toTimeWait(b)
		again(b) // mode 0: the TIME_WAIT connection is reused (rs2)
		finWait := func(port uint16) *conversation {
			v := newConv(s, client, port, 81, rs1, 81, false)
			established(v)
			v.fromClient(false, true, true, false, nil) // FIN: FIN_WAIT
			return v
		}
		s.at(2500 * time.Millisecond)
		c := finWait(41203) // -> rs2
		again(c)            // mode 1: reused
		s.at(3500 * time.Millisecond)
		d := finWait(41204) // -> rs1
		again(d)            // mode 2: rescheduled
		s.at(4500 * time.Millisecond)
		e := finWait(41205)
		again(e) // mode 3: rescheduled
		s.script = `1 -Lnc
1 --sysctl conn_reuse_mode=0
2 -Lnc
2 --sysctl conn_reuse_mode=1
3 -Lnc
3 --sysctl conn_reuse_mode=2
4 -Lnc
4 --sysctl conn_reuse_mode=3
5 -Lnc
`
		return s
	}
	// A port-21 TCP service: non-persistent, another port of its VIP
	// (found by IPVS's FTP lookup fallback) is left to the host's stack,
	// which answers with a RST; persistent (-E ... -p), the same SYN is
	// forwarded to the real server keeping its port, 2121.
	cases["ftp-port21"] = func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:21 -s rr\n-a -t 198.51.100.10:21 -r 198.18.2.11:21 -m -w 1\n"}
		ctl := newConv(s, client, 41301, 21, rs1, 21, true)
		ctl.fromClient(true, false, false, false, nil) // control connection: rs1:21
		data := newConv(s, client, 41302, 2121, rs1, 2121, true)
		data.fromClient(true, false, false, false, nil) // RST from the VIP
		s.at(1500 * time.Millisecond)
		data2 := newConv(s, client, 41303, 2121, rs1, 2121, true)
		data2.fromClient(true, false, false, false, nil) // persistent: rs1:2121
		data2.fromServer(true, true, false, false, nil)
		s.script = `0.5 -Lnc
1 -E -t 198.51.100.10:21 -s rr -p 300
2 -Lnc
`
		return s
	}
	// IPVS never schedules a first packet from client port 20 (active FTP
	// data): the host's stack answers, a RST to TCP and port unreachable
	// to UDP. The same from another port is scheduled.
	cases["ftp-data-port20"] = func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n" +
			"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n"}
		newConv(s, client, 20, 80, rs1, 8080, true).fromClient(true, false, false, false, nil)
		udpIn(s, client, 20, 53, "from-20")
		newConv(s, client, 41401, 80, rs1, 8080, true).fromClient(true, false, false, false, nil)
		udpIn(s, client, 41401, 53, "from-41401")
		return s
	}
	// A TCP segment with no connection is left to the host's TCP, which
	// answers as tcp_v4_send_reset: to an ACK, a RST with its ack as
	// sequence; to a segment without ACK, RST|ACK acknowledging it. A
	// RST gets nothing. A burst beyond the worker's 64 RSTs is suppressed,
	// one more RST per millisecond after it.
	cases["no-conn-rst"] = func() *scenario {
		s := &scenario{rules: twoNAT}
		s.in(clientSeg(client, 41601, 80, frames.TCPSeg{ACK: true, PSH: true, Seq: 7000, Ack: 0x11223344, Payload: []byte("late data")}))
		s.in(clientSeg(client, 41602, 80, frames.TCPSeg{FIN: true, Seq: 9000, Payload: []byte("bye")}))
		s.in(clientSeg(client, 41603, 80, frames.TCPSeg{RST: true, Seq: 5}))
		s.after(time.Second)
		for i := 0; i < 70; i++ {
			s.inSame(clientSeg(client2, uint16(42000+i), 80, frames.TCPSeg{ACK: true, Seq: 1, Ack: uint32(1000 + i)}))
		}
		s.after(10 * time.Millisecond) // 10 ms after the burst: 10 more
		for i := 0; i < 12; i++ {
			s.inSame(clientSeg(client2, uint16(43000+i), 80, frames.TCPSeg{ACK: true, Seq: 1, Ack: 2}))
		}
		return s
	}
	// ICMP errors from a router on the DIP side about the director's own
	// IPIP packets (ip_vs_in_icmp's IPIP case): fragmentation needed is
	// relayed to the client, from the VIP, with the path MTU less the
	// outer header; another error keeps its type and code; fragmentation
	// needed about a client packet without DF is consumed.
	cases["tun-icmp-relay"] = func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -i -w 1\n"}
		r := netip.MustParseAddr("198.18.2.254")
		v := newConv(s, client, 41501, 80, rs1, 80, false)
		v.fromClient(true, false, false, false, nil)
		v.fromClient(false, true, false, false, nil)
		big := v.fromClient(false, true, false, true, bytes.Repeat([]byte("d"), 1400))
		s.out(routerError(r, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded, 1400, ipipOf(big, rs1)))
		s.out(routerError(r, layers.ICMPv4TypeTimeExceeded, 0, 0, ipipOf(big, rs1)))
		s.out(routerError(r, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, 0, ipipOf(big, rs1)))
		noDF := frames.TCP(toVIP(client), frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 41502, DstPort: 80, Seq: 1, SYN: true})
		s.in(noDF)
		s.out(routerError(r, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded, 1400, ipipOf(noDF, rs1)))
		return s
	}
	// A SYN with TTL 1 is scheduled before the transmitter finds it
	// cannot forward it: the connection exists (SYN_RECV, active,
	// counted) and the client gets time exceeded.
	cases["ttl1-syn"] = func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n"}
		v := newConv(s, client, 41801, 80, rs1, 8080, true)
		v.ttl = 1
		v.fromClient(true, false, false, false, nil)
		s.script = `0.5 -Lnc
0.5 -Ln
0.5 -Ln --stats
`
		return s
	}
	// sloppy_tcp 1: a mid-stream segment with no connection (a director
	// taking over) creates one; without it the host's RST answers. A RST
	// is never scheduled.
	cases["sloppy-tcp"] = func() *scenario {
		s := &scenario{rules: twoNAT}
		mid := clientSeg(client, 41701, 80, frames.TCPSeg{ACK: true, PSH: true, Seq: 7000, Ack: 8000, Payload: []byte("mid-stream")})
		s.in(mid) // RST
		s.at(1500 * time.Millisecond)
		s.in(mid) // scheduled: rs2
		s.out(frames.TCP(toDIP(rs2), ip(rs2, client), frames.TCPSeg{SrcPort: 8080, DstPort: 41701, ACK: true, Seq: 8000, Ack: 7010}))
		s.in(clientSeg(client, 41702, 80, frames.TCPSeg{RST: true, Seq: 5}))
		s.script = `1 -Lnc
1 --sysctl sloppy_tcp=1
2 -Lnc
2 -Ln
`
		return s
	}
	// lblc keeps the cached real server for a destination although it is
	// over its upper threshold (-x): ip_vs_lblc_schedule checks only
	// weight and its own overload test on a cache hit, not the OVERLOAD
	// flag. rs2 (-x 1) takes the first flow; every later one stays on it.
	cases["lblc-overload"] = func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s lblc\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -g -w 1\n-a -u 198.51.100.10:53 -r 198.18.2.12:53 -g -w 1 -x 1\n"}
		for i := 0; i < 4; i++ {
			udpIn(s, netip.AddrFrom4([4]byte{198, 18, 6, byte(10 + i)}), uint16(31000+i), 53, "lblc")
		}
		return s
	}
	// secure_tcp 3: the secure state table (tcp_states_dos); a DR SYN
	// goes to SYNACK (120 s) instead of SYN_RECV (60 s).
	cases["secure-tcp"] = func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g -w 1\n"}
		newConv(s, client, 41901, 80, rs1, 80, false).fromClient(true, false, false, false, nil)
		s.at(1500 * time.Millisecond)
		newConv(s, client, 41902, 80, rs1, 80, false).fromClient(true, false, false, false, nil)
		s.script = `0.5 -Lnc
1 --sysctl secure_tcp=3
2 -Lnc
`
		return s
	}
	// expire_quiescent_template: with 0 a client keeps going to its
	// persistent real server set to weight 0; with 1 its template is
	// invalidated (listed with ports 65535 while it lives) and the client
	// goes to another server under a new template.
	cases["quiescent-template"] = func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr -p 300\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g -w 1\n-a -t 198.51.100.10:80 -r 198.18.2.12:80 -g -w 1\n"}
		v1 := newConv(s, client, 42001, 80, rs2, 80, false)
		v1.fromClient(true, false, false, false, nil)
		v1.fromClient(false, true, false, false, nil)
		s.at(1500 * time.Millisecond)
		newConv(s, client, 42002, 80, rs2, 80, false).fromClient(true, false, false, false, nil) // still rs2
		s.at(2500 * time.Millisecond)
		newConv(s, client, 42003, 80, rs1, 80, false).fromClient(true, false, false, false, nil) // rs1
		s.script = `0.5 -Lnc
1 -e -t 198.51.100.10:80 -r 198.18.2.12:80 -g -w 0
2 -Lnc
2 --sysctl expire_quiescent_template=1
3 -Lnc
`
		return s
	}
}
