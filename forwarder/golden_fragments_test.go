package forwarder_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"gvs/forwarder/replay"
)

func init() {
	caseChecks["fragments-nat-udp"] = checkFragmentsNATUDP
}

// isReassemblyTimeout reports whether f is an ICMP time exceeded,
// fragment reassembly time exceeded: what the director sends when a
// datagram's reassembly times out (ip_expire), answering no frame.
func isReassemblyTimeout(f outFrame) bool {
	ic, ok := f.pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	return ok && ic.TypeCode == layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeFragmentReassemblyTimeExceeded)
}

// defragIPs reassembles the IPv4 fragments ips with gopacket's
// defragmenter (independent of gvs), which must make exactly one datagram
// of them, with the last one.
func defragIPs(t *testing.T, what string, ips []*layers.IPv4) *layers.IPv4 {
	t.Helper()
	d := ip4defrag.NewIPv4Defragmenter()
	var out *layers.IPv4
	for i, ip := range ips {
		c := *ip // the defragmenter keeps what it is given
		got, err := d.DefragIPv4(&c)
		if err != nil {
			t.Fatalf("%s: fragment %d: %v", what, i, err)
		}
		if got != nil && i != len(ips)-1 {
			t.Fatalf("%s: complete after %d of %d fragments", what, i+1, len(ips))
		}
		out = got
	}
	if out == nil {
		t.Fatalf("%s: %d fragments make no datagram", what, len(ips))
	}
	return out
}

// udpOfDatagram decodes the UDP datagram of a reassembled IPv4 packet and
// checks its length and its checksum (one's complement sum over the
// pseudo-header and the whole datagram, computed here, not by gvs).
func udpOfDatagram(t *testing.T, what string, ip *layers.IPv4) *layers.UDP {
	t.Helper()
	b := ip.Payload
	var u layers.UDP
	if err := u.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		t.Fatalf("%s: UDP: %v", what, err)
	}
	if int(u.Length) != len(b) {
		t.Errorf("%s: UDP length %d, datagram %d bytes", what, u.Length, len(b))
	}
	if u.Checksum == 0 {
		t.Errorf("%s: no UDP checksum", what)
		return &u
	}
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(ip.SrcIP.To4())
	add(ip.DstIP.To4())
	sum += uint32(layers.IPProtocolUDP) + uint32(len(b))
	add(b)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("%s: UDP checksum %#04x does not verify (sum %#04x)", what, u.Checksum, sum)
	}
	return &u
}

// readInput decodes a case's in.pcapng.
func readInput(t *testing.T, name string) []gopacket.Packet {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(replayDir, name, "in.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	var pkts []gopacket.Packet
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return pkts
		}
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default))
	}
}

func ipv4sOf(t *testing.T, pkts []gopacket.Packet) []*layers.IPv4 {
	t.Helper()
	var ips []*layers.IPv4
	for i, p := range pkts {
		ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok {
			t.Fatalf("packet %d: no IPv4", i)
		}
		ips = append(ips, ip)
	}
	return ips
}

// checkFragmentsNATUDP: the fragmented query leaves as one DNATed
// datagram re-cut for the real servers' MTU 1000, the fragmented answer
// as one SNATed datagram re-cut at its largest fragment (996 bytes), both
// reassembling (with gopacket's defragmenter) to the datagram the sender
// sent with only the NAT rewrite applied and a valid UDP checksum; the
// datagram that lost its last fragment gets the client an ICMP fragment
// reassembly time exceeded from the VIP once 30 s have passed.
func checkFragmentsNATUDP(t *testing.T, r goldenRun) {
	expectSeq(t, r, "action", "drop drop transmit drop drop drop drop transmit drop drop transmit",
		func(v replay.Verdict) string { return v.Action })
	expectSeq(t, r, "reason", "fragment fragment - fragment fragment fragment fragment - fragment fragment -",
		func(v replay.Verdict) string { return orDash(v.Reason) })
	if v := r.verdicts[2]; v.Frags != 4 || v.Egress != "dip0" || v.Conn != "new" || v.Dest != "198.18.2.11:5353" {
		t.Errorf("query: %+v, want a new connection to 198.18.2.11:5353 and 4 fragments on dip0", v)
	}
	if v := r.verdicts[7]; v.Frags != 5 || v.Egress != "vip0" || v.Conn != "existing" || v.Dir != "out" {
		t.Errorf("answer: %+v, want the connection's reply in 5 fragments on vip0", v)
	}
	if v := r.verdicts[10]; v.Frags != 0 || v.Conn != "new" {
		t.Errorf("frame after 31 s: %+v, want a new connection, one frame", v)
	}
	if len(r.frames) != 4+5+1+1 {
		t.Fatalf("%d frames out, want 4 + 5 fragments, the ICMP error and the last datagram", len(r.frames))
	}

	in := ipv4sOf(t, readInput(t, "fragments-nat-udp"))
	if len(in) != 11 {
		t.Fatalf("%d input frames, want 11", len(in))
	}
	wantQ := defragIPs(t, "input query", in[0:3])
	wantA := defragIPs(t, "input answer", in[3:8])

	// Re-fragmented: at most the egress MTU (1000 towards the real
	// servers) and the largest fragment received (1500 and 996); the
	// header's ID, no DF (none of the fragments had it), TTL one less.
	out := func(lo, hi int, iface, dstMAC string, mtu int, id uint16) []*layers.IPv4 {
		var ips []*layers.IPv4
		for i := lo; i < hi; i++ {
			f := r.frames[i]
			ip := ipOf(t, f)
			expectEq(t, i, "iface", f.iface, iface)
			expectEq(t, i, "dst mac", ethOf(t, f).DstMAC.String(), dstMAC)
			expectEq(t, i, "id", ip.Id, id)
			expectEq(t, i, "ttl", ip.TTL, uint8(63))
			expectEq(t, i, "DF", ip.Flags&layers.IPv4DontFragment != 0, false)
			if int(ip.Length) > mtu {
				t.Errorf("frame %d: %d bytes, more than %d", i, ip.Length, mtu)
			}
			ips = append(ips, ip)
		}
		return ips
	}
	q := defragIPs(t, "query out", out(0, 4, "dip0", derivedMAC(rs1), 1000, wantQ.Id))
	expectEq(t, 0, "query src", addrOf(q.SrcIP), client)
	expectEq(t, 0, "query dst", addrOf(q.DstIP), rs1)
	qu, wqu := udpOfDatagram(t, "query out", q), udpOfDatagram(t, "input query", wantQ)
	expectEq(t, 0, "query sport", qu.SrcPort, wqu.SrcPort)
	expectEq(t, 0, "query dport", qu.DstPort, layers.UDPPort(5353))
	if len(wqu.Payload) != 3000-8 || !bytes.Equal(qu.Payload, wqu.Payload) {
		t.Errorf("query payload: %d bytes out, %d in, equal %v", len(qu.Payload), len(wqu.Payload), bytes.Equal(qu.Payload, wqu.Payload))
	}

	a := defragIPs(t, "answer out", out(4, 9, "vip0", derivedMAC(client), 996, wantA.Id))
	expectEq(t, 4, "answer src", addrOf(a.SrcIP), vip)
	expectEq(t, 4, "answer dst", addrOf(a.DstIP), client)
	au, wau := udpOfDatagram(t, "answer out", a), udpOfDatagram(t, "input answer", wantA)
	expectEq(t, 4, "answer sport", au.SrcPort, layers.UDPPort(53))
	expectEq(t, 4, "answer dport", au.DstPort, wau.DstPort)
	if len(wau.Payload) != 4000-8 || !bytes.Equal(au.Payload, wau.Payload) {
		t.Errorf("answer payload: %d bytes out, %d in, equal %v", len(au.Payload), len(wau.Payload), bytes.Equal(au.Payload, wau.Payload))
	}

	// The reassembly timeout, before the frame 31 s later is forwarded:
	// from the VIP (the datagram was to the VIP) to the client, quoting
	// the lost datagram's first fragment as it arrived.
	f := r.frames[9]
	ip, ic := ipOf(t, f), icmpOf(t, f)
	expectEq(t, 9, "iface", f.iface, "vip0")
	expectEq(t, 9, "icmp", ic.TypeCode, layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeFragmentReassemblyTimeExceeded))
	expectEq(t, 9, "src", addrOf(ip.SrcIP), vip)
	expectEq(t, 9, "dst", addrOf(ip.DstIP), client)
	expectEq(t, 9, "dst mac", ethOf(t, f).DstMAC.String(), derivedMAC(client))
	e, lost := embedded(t, f), in[8]
	expectEq(t, 9, "quoted id", e.Id, lost.Id)
	expectEq(t, 9, "quoted src", addrOf(e.SrcIP), client)
	expectEq(t, 9, "quoted dst", addrOf(e.DstIP), vip)
	expectEq(t, 9, "quoted offset", e.FragOffset, uint16(0))
	expectEq(t, 9, "quoted MF", e.Flags&layers.IPv4MoreFragments != 0, true)
	expectEq(t, 9, "quoted ports", embeddedPorts(e), [2]uint16{33101, 53})
	if n := len(e.Payload); n < 8 || !bytes.Equal(e.Payload, lost.Payload[:n]) {
		t.Errorf("frame 9: the quote's %d payload bytes are not the first fragment's", n)
	}
	last := r.frames[10]
	expectEq(t, 10, "iface", last.iface, "dip0")
	expectEq(t, 10, "dport", udpOf(t, last).DstPort, layers.UDPPort(5353))
	expectEq(t, 10, "sport", udpOf(t, last).SrcPort, layers.UDPPort(33102))
}
