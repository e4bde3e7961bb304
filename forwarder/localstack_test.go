package forwarder_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/internal/frames"
	"gvs/ipvs"
	"gvs/rewrite"
)

var toDirector = frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}

func seg(sport, dport uint16, s frames.TCPSeg) []byte {
	s.SrcPort, s.DstPort = sport, dport
	return frames.TCP(toDirector, frames.IP{Src: client, Dst: vip, DF: true, TOS: 0x2b}, s)
}

// decodeReply decodes a reply frame and checks its IP and L4 checksums.
func decodeReply(t *testing.T, f []byte) (*rewrite.Parsed, gopacket.Packet) {
	t.Helper()
	var p rewrite.Parsed
	if p.Decode(f) != rewrite.IP {
		t.Fatalf("reply does not decode: %v", p.Reason)
	}
	if p.Proto == rewrite.ProtoTCP && !rewrite.L4ChecksumOK(f, &p) {
		t.Fatal("reply: bad TCP checksum")
	}
	return &p, gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
}

// A segment without SYN and without a connection gets the RST the host's
// TCP sends (tcp_v4_send_reset), back to the client on its link.
func TestResetNoConn(t *testing.T) {
	h := newHarness(t, twoNAT)
	r := h.send(seg(4000, 80, frames.TCPSeg{ACK: true, Seq: 7, Ack: 0x11223344}), forwarder.VIPSide)
	if r.Action != forwarder.Reply || r.Reason != forwarder.NoConn || r.Link != forwarder.VIPSide {
		t.Fatalf("ACK without connection: %v %v link %d, want reply no_conn on the VIP side", r.Action, r.Reason, r.Link)
	}
	p, pkt := decodeReply(t, r.Frame)
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if addrOf(ip.SrcIP) != vip || addrOf(ip.DstIP) != client || tcp.SrcPort != 80 || tcp.DstPort != 4000 {
		t.Errorf("RST %v:%d -> %v:%d", ip.SrcIP, tcp.SrcPort, ip.DstIP, tcp.DstPort)
	}
	if !tcp.RST || tcp.ACK || tcp.SYN || tcp.FIN || tcp.Seq != 0x11223344 || tcp.Window != 0 || len(tcp.Options) != 0 {
		t.Errorf("RST to an ACK: %+v", tcp)
	}
	if ip.TTL != 64 || ip.Flags != layers.IPv4DontFragment || ip.Id != 0 || ip.TOS != 0x28 || p.End-p.L3 != 40 {
		t.Errorf("RST IP header: ttl %d flags %v id %d tos %#x len %d", ip.TTL, ip.Flags, ip.Id, ip.TOS, p.End-p.L3)
	}
	if e := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); e.DstMAC.String() != derivedMAC(client) {
		t.Errorf("RST to MAC %v", e.DstMAC)
	}
	// No ACK: RST|ACK, ack = seq + FIN + payload.
	r = h.send(seg(4001, 80, frames.TCPSeg{FIN: true, Seq: 1000, Payload: []byte("hello")}), forwarder.VIPSide)
	_, pkt = decodeReply(t, r.Frame)
	tcp = pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !tcp.RST || !tcp.ACK || tcp.Seq != 0 || tcp.Ack != 1006 {
		t.Errorf("RST to a FIN without ACK: rst %v ack %v seq %d ack %d", tcp.RST, tcp.ACK, tcp.Seq, tcp.Ack)
	}
	// Never a RST to a RST.
	if r = h.send(seg(4002, 80, frames.TCPSeg{RST: true}), forwarder.VIPSide); r.Action != forwarder.Drop {
		t.Errorf("RST without connection: %v", r.Action)
	}
	// A bad checksum: the host's stack drops the segment.
	bad := seg(4003, 80, frames.TCPSeg{ACK: true})
	bad[14+20+19] ^= 0x40 // the urgent pointer (the frame may be padded)
	if r = h.send(bad, forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.BadL4Checksum {
		t.Errorf("bad checksum: %v %v", r.Action, r.Reason)
	}
	if h.conns.Len() != 0 {
		t.Errorf("%d connections, want none", h.conns.Len())
	}
}

// The RST rate limit is per worker: a burst, then suppressed and counted.
func TestResetRateLimit(t *testing.T) {
	h := newHarness(t, twoNAT)
	sent := 0
	for i := 0; i < 100; i++ {
		if r := h.send(seg(uint16(5000+i), 80, frames.TCPSeg{ACK: true}), forwarder.VIPSide); r.Action == forwarder.Reply {
			sent++
		}
	}
	if sent != 64 || h.w.Counters.Reasons[forwarder.ResetLimited].Load() != 36 || h.w.Counters.Reasons[forwarder.Reset].Load() != 64 {
		t.Fatalf("sent %d RSTs, %d limited", sent, h.w.Counters.Reasons[forwarder.ResetLimited].Load())
	}
	h.now += 10e6 // 10 ms: 10 more
	sent = 0
	for i := 0; i < 20; i++ {
		if r := h.send(seg(uint16(6000+i), 80, frames.TCPSeg{ACK: true}), forwarder.VIPSide); r.Action == forwarder.Reply {
			sent++
		}
	}
	if sent != 10 {
		t.Fatalf("after 10 ms: %d RSTs, want 10", sent)
	}
}

// A non-persistent port-21 service schedules only port 21; other ports of
// its VIP (found by the FTP fallback) go to the host's stack. A
// persistent one forwards them with their own port.
func TestFTPServiceOtherPort(t *testing.T) {
	h := newHarness(t, "-A -t 198.51.100.10:21 -s rr\n-a -t 198.51.100.10:21 -r 198.18.2.11:21 -m\n")
	r := h.send(seg(4000, 5000, frames.TCPSeg{SYN: true}), forwarder.VIPSide)
	if r.Action != forwarder.Reply || r.Reason != forwarder.FTPPort || h.conns.Len() != 0 {
		t.Fatalf("SYN to VIP:5000 of a non-persistent FTP service: %v %v (%d conns)", r.Action, r.Reason, h.conns.Len())
	}
	if r = h.send(seg(4000, 21, frames.TCPSeg{SYN: true}), forwarder.VIPSide); r.Action != forwarder.Transmit {
		t.Fatalf("SYN to VIP:21: %v", r.Action)
	}

	h = newHarness(t, "-A -t 198.51.100.10:21 -s rr -p 60\n-a -t 198.51.100.10:21 -r 198.18.2.11:21 -m\n")
	r = h.send(seg(4000, 5000, frames.TCPSeg{SYN: true}), forwarder.VIPSide)
	if r.Action != forwarder.Transmit {
		t.Fatalf("SYN to VIP:5000 of a persistent FTP service: %v %v", r.Action, r.Reason)
	}
	tcp := gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp.DstPort != 5000 {
		t.Errorf("persistent FTP service, VIP:5000 forwarded to port %d, want 5000", tcp.DstPort)
	}
	r = h.send(seg(4001, 21, frames.TCPSeg{SYN: true}), forwarder.VIPSide)
	tcp = gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp.DstPort != 21 {
		t.Errorf("VIP:21 forwarded to port %d", tcp.DstPort)
	}
}

// Client port 20 is never scheduled (ip_vs_schedule's FTPDATA rule), TCP
// or UDP: the host's stack answers.
func TestFTPDataNotScheduled(t *testing.T) {
	h := newHarness(t, twoNAT+"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m\n")
	r := h.send(seg(20, 80, frames.TCPSeg{SYN: true}), forwarder.VIPSide)
	if r.Action != forwarder.Reply || r.Reason != forwarder.FTPData || h.conns.Len() != 0 {
		t.Fatalf("SYN from port 20: %v %v (%d conns)", r.Action, r.Reason, h.conns.Len())
	}
	u := frames.UDP(toDirector, frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 20, DstPort: 53, Payload: []byte("q")})
	r = h.send(u, forwarder.VIPSide)
	if r.Action != forwarder.Reply || r.Reason != forwarder.FTPData || h.conns.Len() != 0 {
		t.Fatalf("UDP from port 20: %v %v", r.Action, r.Reason)
	}
	ic := gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 3) {
		t.Errorf("UDP from port 20: %v, want port unreachable", ic.TypeCode)
	}
}

// A packet for a deleted real server is dropped before the state machine:
// a FIN neither moves the state nor restarts the timer. With
// expire_nodest_conn the connection expires and the packet is treated as
// a first packet.
func TestDeletedServerLeavesConnection(t *testing.T) {
	h := newHarness(t, twoNAT)
	r := h.send(syn(client, 1000), forwarder.VIPSide)
	h.send(ack(client, 1000), forwarder.VIPSide)
	first := r.Dest.AddrPort().String()
	k := conntrack.InKeyV4(ipvs.ProtoTCP, client.As4(), 1000, vip.As4(), 80)
	var before, after conntrack.Conn
	h.conns.PeekIn(k, h.now, &before)
	h.apply("-d -t 198.51.100.10:80 -r " + first)
	h.now += 5e9
	fin := seg(1000, 80, frames.TCPSeg{FIN: true, ACK: true, Seq: 2, Ack: 100})
	if r = h.send(fin, forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.DestRemoved {
		t.Fatalf("FIN after -d: %v %v", r.Action, r.Reason)
	}
	h.conns.PeekIn(k, h.now, &after)
	if after.State != conntrack.StateEstablished || after.Expires != before.Expires {
		t.Fatalf("FIN after -d: state %v expires %+d ns, want ESTABLISHED and the timer untouched", after.State, after.Expires-before.Expires)
	}

	h.set.Set(ipvs.SysExpireNodestConn, [2]int64{1})
	if r = h.send(ack(client, 1000), forwarder.VIPSide); r.Action != forwarder.Reply || r.Reason != forwarder.NoConn {
		t.Fatalf("ACK with expire_nodest_conn: %v %v, want the host's RST", r.Action, r.Reason)
	}
	if h.conns.PeekIn(k, h.now, &after) {
		t.Fatal("expire_nodest_conn: the connection is still there")
	}
	// A SYN of the same tuple is a first packet: scheduled.
	if r = h.send(syn(client, 1000), forwarder.VIPSide); r.Action != forwarder.Transmit || !r.New || r.Dest.AddrPort().String() == first {
		t.Fatalf("SYN after expire_nodest_conn: %v new=%v", r.Action, r.New)
	}
}

// With expire_nodest_conn (and conn_reuse_mode), a SYN on a connection
// whose real server has weight 0 is scheduled afresh.
func TestSYNWeightZeroResched(t *testing.T) {
	h := newHarness(t, twoNAT)
	r := h.send(syn(client, 1000), forwarder.VIPSide)
	first := r.Dest
	h.apply("-e -t 198.51.100.10:80 -r " + first.AddrPort().String() + " -m -w 0")
	if r = h.send(syn(client, 1000), forwarder.VIPSide); r.New || r.Dest != first {
		t.Fatalf("SYN, weight 0, expire_nodest_conn 0: new=%v, want the old connection", r.New)
	}
	h.set.Set(ipvs.SysExpireNodestConn, [2]int64{1})
	if r = h.send(syn(client, 1000), forwarder.VIPSide); !r.New || r.Dest == first {
		t.Fatalf("SYN, weight 0, expire_nodest_conn 1: new=%v dest %v, want a new connection elsewhere", r.New, r.Dest.AddrPort())
	}
}

// conn_reuse_mode: 0 never reschedules; bit 2 also reschedules a FIN_WAIT
// connection that saw no output (DR); a connection with a controlling
// template is never rescheduled, whatever its service is now.
func TestConnReuseMode(t *testing.T) {
	const dr = "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g\n-a -t 198.51.100.10:80 -r 198.18.2.12:80 -g\n"
	finWait := func(h *harness, port uint16) {
		h.send(syn(client, port), forwarder.VIPSide)
		h.send(ack(client, port), forwarder.VIPSide)
		if r := h.send(seg(port, 80, frames.TCPSeg{FIN: true, ACK: true, Seq: 2, Ack: 100}), forwarder.VIPSide); r.State != conntrack.StateFinWait {
			t.Fatalf("FIN: %v", r.State)
		}
	}
	h := newHarness(t, dr)
	finWait(h, 1000)
	if r := h.send(syn(client, 1000), forwarder.VIPSide); r.New {
		t.Fatal("mode 1: SYN on FIN_WAIT rescheduled")
	}
	h = newHarness(t, dr)
	h.set.Set(ipvs.SysConnReuseMode, [2]int64{3})
	finWait(h, 1000)
	if r := h.send(syn(client, 1000), forwarder.VIPSide); !r.New {
		t.Fatal("mode 3: SYN on a NOOUTPUT FIN_WAIT connection not rescheduled")
	}

	h = newHarness(t, twoNAT)
	h.set.Set(ipvs.SysConnReuseMode, [2]int64{0})
	h.send(syn(client, 1000), forwarder.VIPSide)
	h.send(ack(client, 1000), forwarder.VIPSide)
	if r := h.send(seg(1000, 80, frames.TCPSeg{RST: true, Seq: 2}), forwarder.VIPSide); r.State != conntrack.StateClose {
		t.Fatalf("RST: %v", r.State)
	}
	if r := h.send(syn(client, 1000), forwarder.VIPSide); r.New {
		t.Fatal("mode 0: SYN on CLOSE rescheduled")
	}

	// Persistence switched off after the connection was made: it still
	// has its template (cp->control), so it is not rescheduled.
	h = newHarness(t, "-A -t 198.51.100.10:80 -s rr -p 60\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n")
	h.send(syn(client, 1000), forwarder.VIPSide)
	h.send(ack(client, 1000), forwarder.VIPSide)
	if r := h.send(seg(1000, 80, frames.TCPSeg{RST: true, Seq: 2}), forwarder.VIPSide); r.State != conntrack.StateClose {
		t.Fatalf("RST: %v", r.State)
	}
	h.apply("-E -t 198.51.100.10:80 -s rr")
	if r := h.send(syn(client, 1000), forwarder.VIPSide); r.New {
		t.Fatal("SYN on a CLOSE connection with a template rescheduled")
	}
	// And switched on after: no template, rescheduled.
	h = newHarness(t, "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n")
	h.send(syn(client, 1000), forwarder.VIPSide)
	h.send(ack(client, 1000), forwarder.VIPSide)
	if r := h.send(seg(1000, 80, frames.TCPSeg{RST: true, Seq: 2}), forwarder.VIPSide); r.State != conntrack.StateClose {
		t.Fatalf("RST: %v", r.State)
	}
	h.apply("-E -t 198.51.100.10:80 -s rr -p 60")
	if r := h.send(syn(client, 1000), forwarder.VIPSide); !r.New {
		t.Fatal("SYN on a CLOSE connection without a template not rescheduled")
	}
}

// tunError builds an ICMP error from a router on the DIP side to the
// director about one of its IPIP frames, quoting the whole packet.
func tunError(typ, code uint8, mtu uint16, ipip []byte) []byte {
	router := netip.MustParseAddr("198.18.2.254")
	quote := append([]byte(nil), ipip[14:]...)
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	if code == 4 {
		icmp.Seq = mtu
	}
	eth := &layers.Ethernet{SrcMAC: frames.DerivedMAC(router).HW(), DstMAC: frames.DerivedMAC(dip).HW(), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: router.AsSlice(), DstIP: dip.AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, icmp, gopacket.Payload(quote)); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// An ICMP error about the director's IPIP packet is relayed to the client
// from the VIP, about the client's own packet (ip_vs_in_icmp's IPIP case).
func TestTunICMPRelay(t *testing.T) {
	h := newHarness(t, "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -i\n")
	r := h.send(seg(1000, 80, frames.TCPSeg{SYN: true, Payload: make([]byte, 100)}), forwarder.VIPSide)
	if r.Action != forwarder.Transmit {
		t.Fatalf("SYN: %v", r.Action)
	}
	ipip := append([]byte(nil), r.Frame...)
	d := r.Dest
	out0 := d.Stats[0].OutPkts.Load()

	r = h.send(tunError(3, 4, 1400, ipip), forwarder.DIPSide)
	if r.Action != forwarder.Reply || r.Reason != forwarder.TunICMP || r.Link != forwarder.VIPSide {
		t.Fatalf("frag needed about IPIP: %v %v link %d", r.Action, r.Reason, r.Link)
	}
	pkt := gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.Default)
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if addrOf(ip.SrcIP) != vip || addrOf(ip.DstIP) != client || ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || ic.Seq != 1380 {
		t.Fatalf("relayed %v -> %v %v mtu %d, want VIP -> client frag needed 1380", ip.SrcIP, ip.DstIP, ic.TypeCode, ic.Seq)
	}
	q := ic.Payload
	if len(q) != 20+20+100 || addrOf(q[12:16]) != client || addrOf(q[16:20]) != vip || binary.BigEndian.Uint16(q[22:]) != 80 {
		t.Fatalf("relayed quote: %d bytes %x", len(q), q[:min(len(q), 24)])
	}
	if d.Stats[0].OutPkts.Load() != out0+1 {
		t.Error("relayed error not counted as output")
	}
	// Time exceeded: the same type and code.
	r = h.send(tunError(11, 0, 0, ipip), forwarder.DIPSide)
	ic = gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if r.Action != forwarder.Reply || ic.TypeCode != layers.CreateICMPv4TypeCode(11, 0) {
		t.Fatalf("time exceeded about IPIP: %v %v", r.Action, ic.TypeCode)
	}
	// The client's packet had no DF: consumed, nothing relayed.
	r = h.send(frames.TCP(toDirector, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 1001, DstPort: 80, SYN: true}), forwarder.VIPSide)
	r = h.send(tunError(3, 4, 1400, append([]byte(nil), r.Frame...)), forwarder.DIPSide)
	if r.Action != forwarder.Drop || r.Reason != forwarder.TunICMPNoDF {
		t.Fatalf("frag needed, client packet without DF: %v %v", r.Action, r.Reason)
	}
}

// sloppy_tcp: a mid-stream segment (no SYN, no RST) with no connection is
// scheduled like a SYN (a backup taking over after a failover); a RST is
// never scheduled.
func TestSloppyTCP(t *testing.T) {
	h := newHarness(t, twoNAT)
	if err := h.set.Set(ipvs.SysSloppyTCP, [2]int64{1}); err != nil {
		t.Fatal(err)
	}
	r := h.send(seg(4100, 80, frames.TCPSeg{ACK: true, Seq: 7, Ack: 9, Payload: []byte("mid")}), forwarder.VIPSide)
	if r.Action != forwarder.Transmit || h.conns.Len() != 1 {
		t.Fatalf("mid-stream ACK under sloppy_tcp: %v %v, %d connections; want transmit and one", r.Action, r.Reason, h.conns.Len())
	}
	if r = h.send(seg(4101, 80, frames.TCPSeg{RST: true}), forwarder.VIPSide); r.Action == forwarder.Transmit || h.conns.Len() != 1 {
		t.Fatalf("RST under sloppy_tcp: %v, %d connections; want not scheduled", r.Action, h.conns.Len())
	}
	// Off again: the next stray segment gets the local stack's RST.
	if err := h.set.Set(ipvs.SysSloppyTCP, [2]int64{0}); err != nil {
		t.Fatal(err)
	}
	if r = h.send(seg(4102, 80, frames.TCPSeg{ACK: true}), forwarder.VIPSide); r.Action != forwarder.Reply || h.conns.Len() != 1 {
		t.Fatalf("stray ACK without sloppy_tcp: %v, %d connections", r.Action, h.conns.Len())
	}
}
