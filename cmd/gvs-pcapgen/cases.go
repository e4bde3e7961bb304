package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/internal/frames"
)

// The lab's addresses (DESIGN.md "The lab"): clients on 198.18.1.0/24 behind
// vip0, real servers on 198.18.2.0/24 behind dip0, the VIP from 198.51.100.0/24.
var (
	vip     = netip.MustParseAddr("198.51.100.10")
	vip0    = netip.MustParseAddr("198.18.1.1")
	dip0    = netip.MustParseAddr("198.18.2.1")
	client  = netip.MustParseAddr("198.18.1.11")
	client2 = netip.MustParseAddr("198.18.1.12")
	router  = netip.MustParseAddr("198.18.1.254")
	rs1     = netip.MustParseAddr("198.18.2.11")
	rs2     = netip.MustParseAddr("198.18.2.12")
	rs3     = netip.MustParseAddr("198.18.2.13")

	vip0MAC = frames.DerivedMAC(vip0)
	dip0MAC = frames.DerivedMAC(dip0)
)

func mac(a netip.Addr) frames.MAC { return frames.DerivedMAC(a) }

// toVIP is the link layer of a frame arriving from host a on the VIP side.
func toVIP(a netip.Addr) frames.L2 { return frames.L2{Src: mac(a), Dst: vip0MAC} }

// toDIP is the link layer of a frame arriving from real server a on the DIP side.
func toDIP(a netip.Addr) frames.L2 { return frames.L2{Src: mac(a), Dst: dip0MAC} }

func ip(src, dst netip.Addr) frames.IP { return frames.IP{Src: src, Dst: dst, DF: true} }

// conversation is one TCP connection between a client and a real server
// through the VIP, with sequence numbers tracked for realism.
type conversation struct {
	s            *scenario
	c            netip.Addr
	cport        uint16
	vport, rport uint16
	rs           netip.Addr
	nat          bool // replies come back through the director (dip0)
	cseq, sseq   uint32
	ttl          uint8
}

func (v *conversation) fromClient(syn, ack, fin, psh bool, payload []byte) []byte {
	f := frames.TCP(toVIP(v.c), frames.IP{Src: v.c, Dst: vip, DF: true, TTL: v.ttl}, frames.TCPSeg{
		SrcPort: v.cport, DstPort: v.vport, Seq: v.cseq, Ack: v.sseq, SYN: syn, ACK: ack, FIN: fin, PSH: psh, Payload: payload,
	})
	v.cseq += uint32(len(payload))
	if syn || fin {
		v.cseq++
	}
	v.s.in(f)
	return f
}

// fromServer is a NAT reply as the real server sends it (RIP:rport -> client).
func (v *conversation) fromServer(syn, ack, fin, psh bool, payload []byte) []byte {
	f := frames.TCP(toDIP(v.rs), ip(v.rs, v.c), frames.TCPSeg{
		SrcPort: v.rport, DstPort: v.cport, Seq: v.sseq, Ack: v.cseq, SYN: syn, ACK: ack, FIN: fin, PSH: psh, Payload: payload,
	})
	v.sseq += uint32(len(payload))
	if syn || fin {
		v.sseq++
	}
	v.s.out(f)
	return f
}

// serverSeesFromDirector is the reply as the client receives it after SNAT
// (VIP:vport -> client): what an ICMP error from the client side quotes.
func (v *conversation) asSentToClient(flagsSynAck bool) []byte {
	return frames.TCP(frames.L2{Src: vip0MAC, Dst: mac(v.c)}, ip(vip, v.c), frames.TCPSeg{
		SrcPort: v.vport, DstPort: v.cport, Seq: v.sseq - 1, Ack: v.cseq, SYN: flagsSynAck, ACK: true,
	})
}

func newConv(s *scenario, c netip.Addr, cport, vport uint16, rs netip.Addr, rport uint16, nat bool) *conversation {
	return &conversation{s: s, c: c, cport: cport, vport: vport, rs: rs, rport: rport, nat: nat,
		cseq: 1000 + uint32(cport)*7, sseq: 50000 + uint32(cport)*13}
}

func udpIn(s *scenario, c netip.Addr, cport, vport uint16, payload string) []byte {
	f := frames.UDP(toVIP(c), frames.IP{Src: c, Dst: vip}, frames.UDPDgram{SrcPort: cport, DstPort: vport, Payload: []byte(payload)})
	s.in(f)
	return f
}

func udpOut(s *scenario, rs netip.Addr, rport uint16, c netip.Addr, cport uint16, payload string) []byte {
	f := frames.UDP(toDIP(rs), frames.IP{Src: rs, Dst: c}, frames.UDPDgram{SrcPort: rport, DstPort: cport, Payload: []byte(payload)})
	s.out(f)
	return f
}

var cases = map[string]func() *scenario{
	// A full TCP connection through NAT, port 80 -> 8080: handshake, data
	// both ways, client closes first, then the server.
	"nat-tcp": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n"}
		v := newConv(s, client, 40001, 80, rs1, 8080, true)
		v.fromClient(true, false, false, false, nil) // SYN          -> SYN_RECV (active)
		v.fromServer(true, true, false, false, nil)  // SYN/ACK      -> SYN_RECV
		v.fromClient(false, true, false, false, nil) // ACK          -> ESTABLISHED
		v.fromClient(false, true, false, true, []byte("GET / HTTP/1.0\r\n\r\n"))
		v.fromServer(false, true, false, true, bytes.Repeat([]byte("x"), 600))
		v.fromClient(false, true, true, false, nil)  // FIN in       -> CLOSE_WAIT (inactive)
		v.fromServer(false, true, false, false, nil) // ACK out
		v.fromServer(false, true, true, false, nil)  // FIN out      -> TIME_WAIT
		v.fromClient(false, true, false, false, nil) // last ACK
		s.after(121 * time.Second)                   // TIME_WAIT (120 s) runs out
		v2 := newConv(s, client, 40002, 80, rs1, 8080, true)
		v2.fromClient(true, false, false, false, nil) // a new connection
		return s
	},
	// Direct routing: the director only sees the client's half.
	"dr-tcp": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g -w 1\n"}
		v := newConv(s, client, 40101, 80, rs1, 80, false)
		v.fromClient(true, false, false, false, nil) // SYN -> SYN_RECV
		v.fromClient(false, true, false, false, nil) // ACK -> ESTABLISHED
		v.fromClient(false, true, false, true, []byte("GET / HTTP/1.0\r\n\r\n"))
		v.fromClient(false, true, true, false, nil)  // FIN -> FIN_WAIT (INPUT_ONLY table)
		v.fromClient(false, true, false, false, nil) // ACK -> FIN_WAIT
		s.after(119 * time.Second)
		v.fromClient(false, true, false, false, nil) // still there: re-armed
		s.after(121 * time.Second)
		v.fromClient(false, true, false, false, nil) // expired: not a SYN, dropped
		return s
	},
	// IPIP tunnel, and path-MTU: a DF packet that does not fit after 20 bytes
	// of encapsulation gets "fragmentation needed" with MTU 1480.
	"tun-tcp": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -i -w 1\n"}
		v := newConv(s, client, 40201, 80, rs1, 80, false)
		v.fromClient(true, false, false, false, nil)
		v.fromClient(false, true, false, false, nil)
		v.fromClient(false, true, false, true, bytes.Repeat([]byte("a"), 1000)) // fits: 1040+20
		v.fromClient(false, true, false, true, bytes.Repeat([]byte("b"), 1460)) // 1500 + 20 > 1500, DF
		v.fromClient(false, true, false, true, bytes.Repeat([]byte("c"), 1440)) // 1480 + 20 = 1500: fits
		return s
	},
	// UDP through NAT, 53 -> 5353, including a datagram without checksum.
	"nat-udp": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n-a -u 198.51.100.10:53 -r 198.18.2.12:5353 -m -w 1\n"}
		// rr's first pick is the newest destination (IPVS lists new ones first): rs2.
		udpIn(s, client, 33000, 53, "query-1")
		udpOut(s, rs2, 5353, client, 33000, "answer-1")
		nc := frames.UDP(toVIP(client), frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 33001, DstPort: 53, Payload: []byte("no-checksum"), NoChecksum: true})
		s.in(nc)
		nr := frames.UDP(toDIP(rs1), frames.IP{Src: rs1, Dst: client}, frames.UDPDgram{SrcPort: 5353, DstPort: 33001, Payload: []byte("no-checksum-reply"), NoChecksum: true})
		s.out(nr)
		udpIn(s, client2, 33000, 53, "query-2")
		udpOut(s, rs2, 5353, client2, 33000, "answer-2")
		// A reply from a real server with no connection behind it is not ours.
		udpOut(s, rs1, 5353, client2, 39999, "stray")
		return s
	},
	// Persistence: -p 360 with a /24 netmask over rr.
	"persistence": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr -p 360 -M 255.255.255.0\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -g -w 1\n-a -u 198.51.100.10:53 -r 198.18.2.12:53 -g -w 1\n"}
		udpIn(s, client, 34000, 53, "a1")                            // template -> rs2 (rr's first pick)
		udpIn(s, client, 34001, 53, "a2")                            // same client, new port: template
		udpIn(s, client2, 34000, 53, "b1")                           // same /24: same real server
		udpIn(s, netip.MustParseAddr("198.18.3.7"), 34000, 53, "c1") // other /24: rr -> rs1
		s.after(200 * time.Second)
		udpIn(s, client, 34002, 53, "a3") // template re-armed by use
		s.after(661 * time.Second)        // connections (300 s) and template (360 s) gone
		udpIn(s, client, 34003, 53, "a4") // scheduled afresh: rr moves on -> rs2
		return s
	},
	// Persistence templates as the kernel keeps them, seen through -Lnc:
	// ASSURED once a connection under the template is ESTABLISHED; 60 s
	// more (and 60 s per later use) when the template's time runs out
	// while it controls a connection; invalidated (vport and dport 65535)
	// rather than freed when its real server is deleted, next to the
	// client's new template, and kept while it controls a connection.
	"persist-templates": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr -p 120\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 1\n"}
		rst := func(v *conversation) {
			v.s.in(frames.TCP(toVIP(v.c), ip(v.c, vip), frames.TCPSeg{SrcPort: v.cport, DstPort: v.vport, Seq: v.cseq, RST: true}))
		}
		// t=0: template T1 (120 s) -> rs2 (rr's first pick); ESTABLISHED at 1 s.
		v1 := newConv(s, client, 40901, 80, rs2, 8080, true)
		v1.fromClient(true, false, false, false, nil)
		s.at(500 * time.Millisecond)
		v1.fromServer(true, true, false, false, nil)
		s.at(time.Second)
		v1.fromClient(false, true, false, false, nil)
		// At 120 s T1 still controls v1: 60 s more, to 180 s. At 150 s a
		// second connection under it re-arms it to 150+60 s, not +120.
		s.at(150 * time.Second)
		v2 := newConv(s, client, 40902, 80, rs2, 8080, true)
		v2.fromClient(true, false, false, false, nil)
		v2.fromServer(true, true, false, false, nil)
		v2.fromClient(false, true, false, false, nil)
		// Both end at 160 s (RST: CLOSE, 10 s); T1 goes at 210 s.
		s.at(160 * time.Second)
		rst(v1)
		rst(v2)
		// 220 s: client2's template T2 -> rs1 (rr's next), ESTABLISHED at 230 s.
		s.at(220 * time.Second)
		w1 := newConv(s, client2, 41901, 80, rs1, 8080, true)
		w1.fromClient(true, false, false, false, nil)
		w1.fromServer(true, true, false, false, nil)
		s.at(230 * time.Second)
		w1.fromClient(false, true, false, false, nil)
		// The script deletes rs1 at 231 s; client2's next SYN invalidates T2
		// and makes T3 -> rs2.
		s.at(232 * time.Second)
		w2 := newConv(s, client2, 41902, 80, rs2, 8080, true)
		w2.fromClient(true, false, false, false, nil)
		s.script = `# templates: NONE/ASSURED, the 60 s re-arm, invalidation
0.7 -Lnc
1.5 -Lnc
100 -Lnc
121 -Lnc
150.5 -Lnc
175 -Lnc
211 -Lnc
230.5 -Lnc
231 -d -t 198.51.100.10:80 -r 198.18.2.11:8080
232.5 -Lnc
341 -Lnc
353 -Lnc
1121 -Lnc
1131 -Lnc
1181 -Lnc
`
		return s
	},
	// Weight 0 quiesces a real server: no new connections.
	"weight0": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -g -w 1\n-a -u 198.51.100.10:53 -r 198.18.2.12:53 -g -w 0\n"}
		for i := 0; i < 6; i++ {
			udpIn(s, client, uint16(35000+i), 53, fmt.Sprintf("q%d", i))
		}
		return s
	},
	// Timeouts expire between packets: UDP after 300 s, TCP SYN_RECV after 60 s.
	"timeouts": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m -w 1\n-a -u 198.51.100.10:53 -r 198.18.2.12:53 -m -w 1\n" +
			"-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -m -w 1\n"}
		udpIn(s, client, 36000, 53, "t0") // -> rs2
		s.after(299 * time.Second)
		udpIn(s, client, 36000, 53, "t299") // same connection, re-armed
		s.after(301 * time.Second)
		udpIn(s, client, 36000, 53, "t600") // expired: rescheduled -> rs1
		v := newConv(s, client, 40301, 80, rs1, 80, true)
		v.fromClient(true, false, false, false, nil) // SYN_RECV, 60 s
		s.after(61 * time.Second)
		v.fromClient(false, true, false, false, nil) // too late: no connection
		return s
	},
	// ICMP errors related to NAT connections, both directions.
	"icmp-nat": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n" +
			"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.12:5353 -m -w 1\n"}
		v := newConv(s, client, 40401, 80, rs1, 8080, true)
		v.fromClient(true, false, false, false, nil)
		v.fromServer(true, true, false, false, nil)
		// A router on the client side cannot deliver the SYN/ACK: host unreachable
		// about VIP:80 -> client, sent to the VIP.
		about := v.asSentToClient(true)
		s.in(frames.ICMPError(toVIP(router), ip(router, vip), layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, 0, about))
		// The real server has no listener on 5353: port unreachable about
		// client -> RIP:5353, sent to the client.
		q := udpIn(s, client, 37000, 53, "q")
		_ = q
		dnated := frames.UDP(frames.L2{Src: dip0MAC, Dst: mac(rs2)}, frames.IP{Src: client, Dst: rs2, TTL: 63}, frames.UDPDgram{SrcPort: 37000, DstPort: 5353, Payload: []byte("q")})
		s.out(frames.ICMPError(toDIP(rs2), ip(rs2, client), layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, 0, dnated))
		// An echo request to the VIP is not related to anything: not ours.
		s.in(frames.ICMPEcho(toVIP(client), ip(client, vip), 7, 1))
		return s
	},
	// ICMP errors related to DR and TUN connections go to the connection's real server.
	"icmp-dr-tun": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g -w 1\n" +
			"-A -t 198.51.100.10:443 -s rr\n-a -t 198.51.100.10:443 -r 198.18.2.12:443 -i -w 1\n"}
		v := newConv(s, client, 40501, 80, rs1, 80, false)
		v.fromClient(true, false, false, false, nil)
		about := frames.TCP(frames.L2{Src: mac(rs1), Dst: mac(client)}, ip(vip, client), frames.TCPSeg{SrcPort: 80, DstPort: 40501, SYN: true, ACK: true, Seq: 1, Ack: 2})
		s.in(frames.ICMPError(toVIP(router), ip(router, vip), layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, 0, about))
		t := newConv(s, client, 40502, 443, rs2, 443, false)
		t.fromClient(true, false, false, false, nil)
		about2 := frames.TCP(frames.L2{Src: mac(rs2), Dst: mac(client)}, ip(vip, client), frames.TCPSeg{SrcPort: 443, DstPort: 40502, SYN: true, ACK: true, Seq: 1, Ack: 2})
		s.in(frames.ICMPError(toVIP(router), ip(router, vip), layers.ICMPv4TypeTimeExceeded, 0, 0, about2))
		return s
	},
	// TTL: 1 cannot be forwarded (time exceeded back to the client), 2 leaves with 1.
	"ttl": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n"}
		v := newConv(s, client, 40601, 80, rs1, 8080, true)
		v.ttl = 1
		v.fromClient(true, false, false, false, nil)
		v2 := newConv(s, client, 40602, 80, rs1, 8080, true)
		v2.ttl = 2
		v2.fromClient(true, false, false, false, nil)
		return s
	},
	// A service whose only real server is quiesced answers port unreachable.
	"no-dest": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g -w 0\n" +
			"-A -u 198.51.100.10:53 -s rr\n"}
		v := newConv(s, client, 40701, 80, rs1, 80, false)
		v.fromClient(true, false, false, false, nil)
		udpIn(s, client, 38000, 53, "nobody")
		return s
	},
	// 802.1Q-tagged frames keep their tag.
	"vlan": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n"}
		l2 := toVIP(client)
		l2.VLAN = 100
		s.in(frames.UDP(l2, frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 39000, DstPort: 53, Payload: []byte("tagged")}))
		l2r := toDIP(rs1)
		l2r.VLAN = 200
		s.out(frames.UDP(l2r, frames.IP{Src: rs1, Dst: client}, frames.UDPDgram{SrcPort: 5353, DstPort: 39000, Payload: []byte("tagged-reply")}))
		return s
	},
	"malformed": malformed,
	// mh as the kernel picks (ip_vs_mh.c): four DR real servers with
	// weights 1, 2, 3 and one added with 2 then quiesced (it keeps its
	// slots), added in descending order so that the kernel's list (newest
	// first) is gvs's sorted build order. Port 53 is plain mh, port 54
	// mh-fallback,mh-port. Twelve clients each; the picks are checked
	// against a transcription of the kernel in package scheduler.
	"mh-kernel": func() *scenario {
		rules := ""
		for _, p := range []struct {
			port  int
			flags string
		}{{53, ""}, {54, " -b mh-fallback,mh-port"}} {
			rules += fmt.Sprintf("-A -u 198.51.100.10:%d -s mh%s\n", p.port, p.flags)
			for _, rs := range []struct {
				addr string
				w    int
			}{{"198.18.2.14", 2}, {"198.18.2.13", 3}, {"198.18.2.12", 2}, {"198.18.2.11", 1}} {
				rules += fmt.Sprintf("-a -u 198.51.100.10:%d -r %s:%d -g -w %d\n", p.port, rs.addr, p.port, rs.w)
			}
			rules += fmt.Sprintf("-e -u 198.51.100.10:%d -r 198.18.2.14:%d -g -w 0\n", p.port, p.port)
		}
		s := &scenario{rules: rules}
		for _, vport := range []uint16{53, 54} {
			for i := 0; i < 12; i++ {
				udpIn(s, netip.AddrFrom4([4]byte{198, 18, 5, byte(1 + i)}), uint16(30000+i), vport, "mh")
			}
		}
		return s
	},
	// Scripted ipvsadm commands during and after a capture (gvs-replay
	// --script): a NAT connection listed with its expiry, its real server
	// deleted under it, counters and rates, bad commands, and timeouts
	// running out after the last frame.
	"script-nat": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 1\n"}
		// rr's first pick is the newest destination: rs2.
		v := newConv(s, client, 40801, 80, rs2, 8080, true)
		v.fromClient(true, false, false, false, nil) // t=0: SYN
		v.fromServer(true, true, false, false, nil)
		v.fromClient(false, true, false, false, nil) // ESTABLISHED
		v.fromClient(false, true, false, true, []byte("GET / HTTP/1.0\r\n\r\n"))
		v.fromServer(false, true, false, true, bytes.Repeat([]byte("x"), 600))
		// At 2 s the script deletes rs2: the connection stays
		// (expire_nodest_conn is 0), its packets are dropped without
		// restarting the timer, as IPVS does: the -Lnc at 2.5 s and
		// 60 s show 14:57 and 14:00.
		s.at(2400 * time.Millisecond)
		v.fromClient(false, true, false, true, []byte("more"))
		// Exactly at 2.5 s, after the script's -Lnc at 2.5: a new
		// connection, which only rs1 can take.
		s.at(2500 * time.Millisecond)
		v2 := newConv(s, client, 40802, 80, rs1, 8080, true)
		v2.fromClient(true, false, false, false, nil)
		s.script = `# gvs-replay script: SECONDS (after the first frame) then ipvsadm's arguments
1 -Lnc
1 -Ln
2 -d -t 198.51.100.10:80 -r 198.18.2.12:8080
2 -d -t 198.51.100.10:80 -r 198.18.2.12:8080
2.5 -Lnc
3 -Ln --stats
3 -Ln --rate
4 -a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m
4 -Q
60 -Lnc
950 -Lnc
950 -Ln
`
		return s
	},
	// -Z and a service created again, against the counters and the rate
	// estimator (samples at 0, 2, 4, 6 s): -Z moves the counters'
	// baseline and zeroes the averages but not the estimator's last
	// sample, so the sample at 4 s covers 2..4 s, the traffic at 2.5 s
	// before the -Z included (ip_vs_zero_stats). At 5 s the service is
	// deleted and created again and its real server taken back from the
	// trash: both list zero counts (a new IPVS service;
	// __ip_vs_update_dest zeroes a dest whose old service is gone). The
	// service's next sample covers 5..6 s (a new estimator), the real
	// server's 4..6 s (averages zeroed, last sample kept). A real server
	// deleted and added back to a service that lives on keeps its counts
	// (6.5 s). --stats shows live counts minus the baseline (the kernel
	// shows its last estimation's snapshot, up to 2 s old).
	// A SYN flood from spoofed sources fills a 64-entry table (file
	// conn-capacity); a legitimate client still gets a connection, by
	// evicting the oldest half-open entry, and keeps it while the flood
	// goes on. drop_entry's automatic mode reads 2 while the table is short
	// of room (amemthresh 1 page: fewer than 32 free slots) and 1 again once
	// the flood's entries have expired.
	"syn-flood": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n", capacity: 64}
		spoof := func(i int) {
			c := netip.AddrFrom4([4]byte{198, 18, 100 + byte(i/200), byte(1 + i%200)})
			s.in(frames.TCP(toVIP(c), ip(c, vip), frames.TCPSeg{SrcPort: uint16(2000 + i), DstPort: 80, Seq: uint32(i) * 7919, SYN: true}))
		}
		for i := 0; i < 64; i++ { // t=0: the table is full
			spoof(i)
		}
		s.at(200 * time.Millisecond)
		v := newConv(s, client, 41001, 80, rs1, 8080, true)
		v.fromClient(true, false, false, false, nil) // a slot by eviction
		v.fromServer(true, true, false, false, nil)
		v.fromClient(false, true, false, false, nil) // ESTABLISHED
		s.at(300 * time.Millisecond)
		for i := 64; i < 80; i++ { // more flood: evicts spoofed SYNs only
			spoof(i)
		}
		v.fromClient(false, true, false, true, []byte("GET / HTTP/1.0\r\n\r\n"))
		v.fromServer(false, true, false, true, bytes.Repeat([]byte("x"), 600))
		s.at(72 * time.Second) // the flood's entries expired at 60 s
		v.fromClient(false, true, false, true, []byte("GET /again HTTP/1.0\r\n\r\n"))
		s.script = `# drop_entry 1 (automatic) with amemthresh 1 page (32 slots)
0.5 --sysctl amemthresh=1
0.5 --sysctl drop_entry=1
1.5 --sysctl drop_entry
1.5 -Ln
71.5 --sysctl drop_entry
71.5 -Ln
`
		return s
	},
	"script-zero": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n"}
		v := newConv(s, client, 40901, 80, rs1, 8080, true)
		v.fromClient(true, false, false, false, nil) // t=0: SYN
		v.fromServer(true, true, false, false, nil)
		v.fromClient(false, true, false, false, nil) // ESTABLISHED
		v.fromClient(false, true, false, true, []byte("GET / HTTP/1.0\r\n\r\n"))
		v.fromServer(false, true, false, true, bytes.Repeat([]byte("x"), 600))
		exchange := func(at time.Duration, req string, resp int) {
			s.at(at)
			v.fromClient(false, true, false, true, []byte(req))
			v.fromServer(false, true, false, true, bytes.Repeat([]byte("y"), resp))
		}
		exchange(2500*time.Millisecond, "before -Z", 1000) // between the 2 s sample and the -Z
		exchange(3500*time.Millisecond, "after -Z", 200)
		exchange(4500*time.Millisecond, "before -D", 300) // counted by the real server's next sample
		exchange(5500*time.Millisecond, "after -A -a", 400)
		s.script = `# gvs-replay script: SECONDS (after the first frame) then ipvsadm's arguments
3 -Ln --stats
3 -Ln --rate
3 -Z
3 -Ln --stats
3 -Ln --rate
3 -Lnc
4 -Ln --stats
4 -Ln --rate
5 -D -t 198.51.100.10:80
5 -A -t 198.51.100.10:80 -s rr
5 -a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m
5 -Ln --stats
5 -Ln --rate
6 -Ln --stats --exact
6 -Ln --rate
6.5 -d -t 198.51.100.10:80 -r 198.18.2.11:8080
6.5 -a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m
6.5 -Ln --stats --exact
`
		return s
	},
	// Martian sources and group source MACs are dropped before any
	// lookup (ip_route_input_slow's martian_source, fib_validate_source's
	// local and broadcast sources); class E sources are not martians to
	// the kernel; a broadcast from 0.0.0.0 (DHCP) is the host's.
	"martians": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n"}
		for i, src := range []string{"0.0.0.1", "127.0.0.1", "224.0.0.5", "255.255.255.255", "198.51.100.10",
			"198.18.1.1", "198.18.2.1", "198.18.1.255", "240.0.0.1", "198.18.1.11"} {
			a := netip.MustParseAddr(src)
			s.in(frames.TCP(toVIP(a), ip(a, vip), frames.TCPSeg{SrcPort: uint16(42000 + i), DstPort: 80, SYN: true, Seq: 1}))
		}
		l2 := toVIP(client2)
		l2.Src[0] |= 1 // a multicast source MAC
		s.in(frames.TCP(l2, ip(client2, vip), frames.TCPSeg{SrcPort: 42100, DstPort: 80, SYN: true, Seq: 1}))
		zero, bcast := netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255")
		s.in(frames.UDP(frames.L2{Src: mac(client2), Dst: frames.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, frames.IP{Src: zero, Dst: bcast},
			frames.UDPDgram{SrcPort: 68, DstPort: 67, Payload: []byte("discover")}))
		return s
	},
	// Fragmentation (ip_fragment after IPVS, which sends with ignore_df):
	// the real servers' link has MTU 1000. A NAT datagram without DF is
	// fragmented, with DF it gets fragmentation needed; through the
	// tunnel the outer header carries the inner DF (pmtu_disc 1: a DF
	// packet gets fragmentation needed for 980) until the script sets
	// pmtu_disc to 0 at 1 s: then the outer DF is 0 and the IPIP packet
	// is fragmented, DF or not. A NAT real server's port unreachable
	// quoting a whole 1400-byte datagram is fragmented towards the client
	// (no MTU check for ICMP), on a VIP side of MTU 1000 too.
	"fragment": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n" +
			"-A -u 198.51.100.10:54 -s rr\n-a -u 198.51.100.10:54 -r 198.18.2.12:54 -i -w 1\n",
			facts: `{"vip_if": {"mtu": 1000}, "dip_if": {"mtu": 1000}}` + "\n"}
		big := func(port uint16, df bool) {
			s.in(frames.UDP(toVIP(client), frames.IP{Src: client, Dst: vip, DF: df, ID: 0x4000 + port},
				frames.UDPDgram{SrcPort: 33000 + port, DstPort: port, Payload: bytes.Repeat([]byte("f"), 1400)}))
		}
		big(53, false) // NAT: 2 fragments
		big(53, true)  // NAT: fragmentation needed, 1000
		big(54, false) // TUN: the IPIP packet in 2 fragments
		big(54, true)  // TUN, pmtu_disc 1: fragmentation needed, 980
		s.at(1500 * time.Millisecond)
		big(54, true) // TUN, pmtu_disc 0: outer DF 0, fragmented
		// The real server's port unreachable about the first datagram
		// (as it got it, DNATed), quoting all of it.
		about := frames.UDP(toDIP(rs1), frames.IP{Src: client, Dst: rs1, TTL: 63, ID: 0x4000 + 53},
			frames.UDPDgram{SrcPort: 33053, DstPort: 5353, Payload: bytes.Repeat([]byte("f"), 1400)})
		s.out(icmpFullQuote(rs1, client, about[14:]))
		s.script = "# gvs-replay script: SECONDS (after the first frame) then ipvsadm's arguments\n1 --sysctl pmtu_disc=0\n"
		return s
	},
	// nat_icmp_send (ip_vs_out): segments from a NAT real server's
	// address and port that match no connection are the host's until the
	// script sets the sysctl at 1 s; then the real server gets ICMP port
	// unreachable from the DIP (not about a RST, not from another port).
	"nat-icmp-send": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n"}
		stray := func(sport uint16, rst bool) {
			s.out(frames.TCP(toDIP(rs1), ip(rs1, client), frames.TCPSeg{SrcPort: sport, DstPort: 40000, ACK: !rst, RST: rst, Seq: 7}))
		}
		stray(8080, false) // nat_icmp_send 0: the host's
		s.at(1500 * time.Millisecond)
		stray(8080, false) // port unreachable to rs1
		stray(8080, true)  // a RST: the host's
		stray(9999, false) // not a real server's port: the host's
		s.script = "# gvs-replay script: SECONDS (after the first frame) then ipvsadm's arguments\n1 --sysctl nat_icmp_send=1\n"
		return s
	},
	// drop_packet 3 with am_droprate 1 drops every first packet, before the
	// scheduler and the persistence template (ip_vs_todrop in
	// tcp_conn_schedule): -Lnc shows no template, and once drop_packet is
	// 0 again rr makes its first pick as if nothing had been scheduled.
	"drop-packet": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr -p 300\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 1\n"}
		newConv(s, client, 40001, 80, rs2, 8080, true).fromClient(true, false, false, false, nil)  // dropped
		newConv(s, client2, 40002, 80, rs2, 8080, true).fromClient(true, false, false, false, nil) // dropped
		s.at(2 * time.Second)
		newConv(s, client2, 40003, 80, rs2, 8080, true).fromClient(true, false, false, false, nil) // rr's first pick
		s.script = "# gvs-replay script: SECONDS (after the first frame) then ipvsadm's arguments\n" +
			"0 --sysctl am_droprate=1\n0 --sysctl drop_packet=3\n1 -Lnc\n1 --sysctl drop_packet=0\n3 -Lnc\n"
		return s
	},
	// schedule_icmp: an ICMP error about VIP:vport -> client that matches no
	// connection is the host's while schedule_icmp is 0; at 1 it is
	// scheduled (rr) and forwarded to the new connection's real server
	// (NAT: rewritten; DR: unchanged), whose entry stays in NONE with a 3 s
	// timer (no state transition). An error about client port 20 (FTP
	// data) is never scheduled, nor one whose service has no real server
	// (dropped: no error about an error).
	"schedule-icmp": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n" +
			"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.12:53 -g -w 1\n" +
			"-A -t 198.51.100.10:443 -s rr\n"}
		unreach := func(from netip.Addr, vport, cport uint16, udp bool) {
			var about []byte
			if udp {
				about = frames.UDP(frames.L2{Src: vip0MAC, Dst: mac(from)}, ip(vip, from), frames.UDPDgram{SrcPort: vport, DstPort: cport, Payload: []byte("r")})
			} else {
				about = frames.TCP(frames.L2{Src: vip0MAC, Dst: mac(from)}, ip(vip, from), frames.TCPSeg{SrcPort: vport, DstPort: cport, Seq: 9, Ack: 7, ACK: true})
			}
			s.in(frames.ICMPError(toVIP(from), ip(from, vip), layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, 0, about))
		}
		unreach(client, 80, 40001, false) // schedule_icmp 0: the host's
		s.at(1500 * time.Millisecond)
		unreach(client, 80, 40001, false)  // scheduled: NAT to rs1
		unreach(client2, 53, 37000, true)  // scheduled: DR to rs2
		unreach(client, 80, 20, false)     // FTP data port: the host's
		unreach(client, 443, 40002, false) // no real server: dropped
		unreach(client, 81, 40003, false)  // no service: the host's
		s.script = "# gvs-replay script: SECONDS (after the first frame) then ipvsadm's arguments\n" +
			"1 --sysctl schedule_icmp=1\n2 -Lnc\n2 -Ln --stats\n5 -Lnc\n"
		s.at(5 * time.Second)
		unreach(client, 80, 40001, false) // the NONE entry is gone: scheduled afresh
		return s
	},
	// A real server the director cannot reach: while its neighbour is
	// being resolved the SYN is dropped silently (no_route); once it is
	// definitely unreachable (no route, resolution failed) the client gets
	// ICMP host unreachable from the VIP, as IPVS's dst_link_failure.
	"host-unreach": func() *scenario {
		s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.14:8080 -m -w 1\n" +
			"-A -t 198.51.100.10:81 -s rr\n-a -t 198.51.100.10:81 -r 198.18.2.15:8080 -g -w 1\n",
			facts: `{"pending": ["198.18.2.14"], "unreachable": ["198.18.2.15"]}` + "\n"}
		newConv(s, client, 40001, 80, rs1, 8080, true).fromClient(true, false, false, false, nil) // pending: no_route
		newConv(s, client, 40002, 81, rs1, 81, false).fromClient(true, false, false, false, nil)  // host unreachable
		return s
	},
	// run_estimation: rates after two samples (0..4 s), then the script
	// stops the estimator at 5 s: traffic goes on, the rates listed at 9 s
	// are those of 4 s; set again at 9 s, the sample at 10 s takes all the
	// traffic since 4 s as one interval.
	"run-estimation": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -g -w 1\n"}
		for i := 0; i < 10; i++ {
			if i > 0 {
				s.at(time.Duration(i) * time.Second)
			}
			for j := 0; j < 5; j++ {
				udpIn(s, client, 36000, 53, "est")
			}
		}
		s.script = `# gvs-replay script: SECONDS (after the first frame) then ipvsadm's arguments
4.5 -Ln --rate
5 --sysctl run_estimation=0
9 -Ln --rate
9 --sysctl run_estimation=1
10.5 -Ln --rate
`
		return s
	},
	// Reassembly (ip_defrag before IPVS, ip_do_fragment after): an
	// EDNS-sized query to a NAT DNS service, 3000 bytes of UDP in three
	// fragments from a 1500-MTU client, the last one before the middle
	// one, leaves as one DNATed datagram in four fragments over the real
	// servers' 1000-MTU link; the real server's 4000-byte answer, in five
	// fragments, leaves SNATed in five (at most its largest fragment,
	// 996 bytes). A second query loses its last fragment: the next frame,
	// 31 s later, finds its reassembly timed out (ipfrag_time 30 s) and
	// the client gets time exceeded, fragment reassembly, from the VIP
	// before that frame is forwarded.
	"fragments-nat-udp": func() *scenario {
		s := &scenario{rules: "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n",
			facts: `{"vip_if": {"mtu": 1500}, "dip_if": {"mtu": 1000}}` + "\n"}
		q := frames.UDP(toVIP(client), frames.IP{Src: client, Dst: vip, ID: 0x5101},
			frames.UDPDgram{SrcPort: 33100, DstPort: 53, Payload: pattern(3000-8, 1)})
		qf := fragment(q, 0, 1480, 2960, 3000) // as a 1500-MTU sender cuts it
		s.in(qf[0])
		s.in(qf[2]) // out of order: the last before the middle
		s.in(qf[1])
		a := frames.UDP(toDIP(rs1), frames.IP{Src: rs1, Dst: client, ID: 0x7202},
			frames.UDPDgram{SrcPort: 5353, DstPort: 33100, Payload: pattern(4000-8, 2)})
		for _, f := range fragment(a, 0, 976, 1952, 2928, 3904, 4000) { // cut for MTU 1000
			s.out(f)
		}
		lost := frames.UDP(toVIP(client), frames.IP{Src: client, Dst: vip, ID: 0x5102},
			frames.UDPDgram{SrcPort: 33101, DstPort: 53, Payload: pattern(3000-8, 3)})
		lf := fragment(lost, 0, 1480, 2960, 3000)
		s.in(lf[0])
		s.in(lf[1]) // lf[2] never arrives
		s.after(31 * time.Second)
		udpIn(s, client, 33102, 53, "retry")
		return s
	},
}

func init() {
	// One case per scheduler: 120 UDP flows from different clients over three
	// DR real servers with weights 3, 2, 1 (added in that order).
	for _, name := range []string{"rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "lblc", "lblcr", "dh", "sh", "mh", "twos"} {
		name := name
		cases["sched-"+name] = func() *scenario {
			rules := fmt.Sprintf("-A -u 198.51.100.10:53 -s %s\n", name)
			for i, rs := range []netip.Addr{rs1, rs2, rs3} {
				rules += fmt.Sprintf("-a -u 198.51.100.10:53 -r %s:53 -g -w %d\n", rs, 3-i)
			}
			s := &scenario{rules: rules}
			for i := 0; i < 120; i++ {
				c := netip.AddrFrom4([4]byte{198, 18, byte(4 + i/100), byte(10 + i%100)})
				udpIn(s, c, uint16(20000+i), 53, "flow")
			}
			return s
		}
	}
}

// malformed is a corpus of frames the parser must drop with a named reason,
// and frames that are simply not the director's business.
func malformed() *scenario {
	s := &scenario{rules: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -m -w 1\n"}
	good := frames.TCP(toVIP(client), ip(client, vip), frames.TCPSeg{SrcPort: 41000, DstPort: 80, SYN: true, Seq: 1})
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	s.in(good[:10])                                                          // truncated Ethernet header
	s.in(good[:14+12])                                                       // truncated IPv4 header
	s.in(mut(func(b []byte) []byte { b[14] = 0x65; return b }))              // version 6 in an IPv4 ethertype
	s.in(mut(func(b []byte) []byte { b[14] = 0x44; return b }))              // IHL 4
	s.in(mut(func(b []byte) []byte { b[16], b[17] = 0x05, 0xdc; return b })) // total length beyond the frame
	s.in(mut(func(b []byte) []byte { b[24] ^= 0xff; return b }))             // bad header checksum
	s.in(mut(func(b []byte) []byte { b[14+20+12] = 0x20; return b }))        // TCP data offset 2
	s.in(mut(func(b []byte) []byte { return b[:14+20+10] }))                 // truncated TCP (and IP length)
	u := frames.UDP(toVIP(client), ip(client, vip), frames.UDPDgram{SrcPort: 41001, DstPort: 53, Payload: []byte("u")})
	u[14+20+4], u[14+20+5] = 0x00, 0x03 // UDP length 3
	s.in(u)
	e := frames.ICMPEcho(toVIP(client), ip(client, vip), 1, 1)
	e[14+20+2] ^= 0x55 // bad ICMP checksum: not an error type, still not ours
	s.in(e)
	ie := frames.ICMPError(toVIP(router), ip(router, vip), layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, 0, good)
	ie[14+20+2] ^= 0x55 // bad ICMP checksum on an error
	s.in(ie)
	s.in(frames.ARPRequest(mac(client), client, vip))                                                        // ARP for the VIP: control path
	s.in(frames.TCP(toVIP(client), ip(client, vip0), frames.TCPSeg{SrcPort: 41002, DstPort: 22, SYN: true})) // to the director itself
	s.in(frames.TCP(toVIP(client), ip(client, vip), frames.TCPSeg{SrcPort: 41003, DstPort: 80, ACK: true}))  // no connection, not a SYN
	s.in(frames.TCP(toVIP(client), ip(client, vip), frames.TCPSeg{SrcPort: 41004, DstPort: 81, SYN: true}))  // no such service
	frag := frames.UDP(toVIP(client), frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 41005, DstPort: 53, Payload: []byte("fragment")})
	frag[14+6] = 0x20 // MF: a first fragment of a datagram
	frag[24], frag[25] = 0, 0
	s.in(fixIPChecksum(frag))
	return s
}

// icmpFullQuote is a port unreachable from src to dst (arriving on the DIP
// side, DF set) quoting the whole packet quote, as some stacks do.
func icmpFullQuote(src, dst netip.Addr, quote []byte) []byte {
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: mac(src).HW(), DstMAC: dip0MAC.HW(), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, ic, gopacket.Payload(quote)); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func fixIPChecksum(b []byte) []byte {
	h := b[14:34]
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	h[10], h[11] = byte(c>>8), byte(c)
	return b
}

// pattern is n payload bytes that differ from one offset to the next and
// from one seed to another, so that misplaced or mixed bytes show.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i/251) ^ seed*0x55
	}
	return b
}

// fragment cuts the IPv4 datagram in frame (untagged, no IP options) at
// the payload offsets cuts (0, ..., its payload length), as a sender's
// ip_fragment does: every fragment keeps the header and ID, all but the
// last have MF, offsets in 8-byte units.
func fragment(frame []byte, cuts ...int) [][]byte {
	pay := frame[34:]
	if cuts[0] != 0 || cuts[len(cuts)-1] != len(pay) {
		panic("fragment: cuts must span the payload")
	}
	var out [][]byte
	for i := 0; i+1 < len(cuts); i++ {
		lo, hi := cuts[i], cuts[i+1]
		if lo%8 != 0 {
			panic("fragment: offset not a multiple of 8")
		}
		f := append(append([]byte(nil), frame[:34]...), pay[lo:hi]...)
		l := 20 + hi - lo
		f[16], f[17] = byte(l>>8), byte(l)
		fo := lo / 8
		if hi < len(pay) {
			fo |= 0x2000
		}
		if frame[20]&0x40 != 0 {
			fo |= 0x4000
		}
		f[20], f[21] = byte(fo>>8), byte(fo)
		out = append(out, fixIPChecksum(f))
	}
	return out
}
