package forwarder_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/forwarder"
	"gvs/internal/frames"
	"gvs/ipvs"
)

var vipMAC = frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))

func udpTo(c netip.Addr, cport, vport uint16, ttl uint8, payload int) []byte {
	return frames.UDP(frames.L2{Src: frames.DerivedMAC(c), Dst: vipMAC},
		frames.IP{Src: c, Dst: vip, TTL: ttl}, frames.UDPDgram{SrcPort: cport, DstPort: vport, Payload: make([]byte, payload)})
}

func ipv4Of(t *testing.T, f []byte) *layers.IPv4 {
	t.Helper()
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		t.Fatalf("no IPv4 in %x", f)
	}
	return ip
}

// ICMP errors gvs sends carry the IP header the kernel's icmp_send
// writes: DF clear, a non-zero ID, TOS = (original & 0x1E) | 0xC0, TTL 64.
func TestICMPErrorHeader(t *testing.T) {
	h := newHarness(t, "-A -u 198.51.100.10:53 -s rr\n")
	f := udpTo(client, 5000, 53, 64, 10)
	f[15] = 0xbb // TOS: DSCP/ECN bits beyond RT_TOS's mask
	f[24], f[25] = 0, 0
	var sum uint32
	for i := 14; i < 34; i += 2 {
		sum += uint32(f[i])<<8 | uint32(f[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	f[24], f[25] = byte(^sum>>8), byte(^sum)
	ids := map[uint16]bool{}
	for i := 0; i < 2; i++ {
		r := h.send(f, forwarder.VIPSide)
		if r.Action != forwarder.Reply || r.Reason != forwarder.NoDest {
			t.Fatalf("%v %v, want reply no_dest", r.Action, r.Reason)
		}
		ip := ipv4Of(t, r.Frame)
		if ip.Flags != 0 || ip.Id == 0 || ip.TOS != 0xbb&0x1e|0xc0 || ip.TTL != 64 || [4]byte(ip.SrcIP) != vip.As4() {
			t.Errorf("port unreachable IP header: flags %v id %d tos %#x ttl %d src %v", ip.Flags, ip.Id, ip.TOS, ip.TTL, ip.SrcIP)
		}
		ids[ip.Id] = true
	}
	if len(ids) != 2 {
		t.Errorf("two errors with the same IP ID")
	}
}

// The kernel's ICMP rate limits: a destination gets a burst of 6 errors,
// then one per second (icmp_ratelimit); all destinations together a burst
// of 50, then 1000 a second (icmp_msgs_per_sec). Frag-needed is exempt.
func TestICMPRateLimit(t *testing.T) {
	h := newHarness(t, "-A -u 198.51.100.10:53 -s rr\n")
	count := func(n int, src func(i int) netip.Addr) (replies int) {
		for i := 0; i < n; i++ {
			r := h.send(udpTo(src(i), uint16(1000+i), 53, 64, 4), forwarder.VIPSide)
			switch {
			case r.Action == forwarder.Reply:
				replies++
			case r.Action != forwarder.Drop || r.Reason != forwarder.NoDest:
				t.Fatalf("frame %d: %v %v", i, r.Action, r.Reason)
			}
		}
		return replies
	}
	one := func(int) netip.Addr { return client }
	if got := count(100, one); got != 6 {
		t.Errorf("100 datagrams from one client at once: %d port unreachables, want 6", got)
	}
	h.now += int64(500 * time.Millisecond)
	if got := count(10, one); got != 0 {
		t.Errorf("0.5 s later: %d port unreachables, want 0", got)
	}
	h.now += int64(500 * time.Millisecond)
	if got := count(10, one); got != 1 {
		t.Errorf("1 s later: %d port unreachables, want 1", got)
	}
	h.now += int64(time.Minute)
	many := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 6 + byte(i/250), byte(1 + i%250)}) }
	if got := count(1000, many); got != 50 {
		t.Errorf("1000 datagrams from 1000 clients at once: %d port unreachables, want 50", got)
	}
	h.now += int64(100 * time.Millisecond)
	if got := count(1000, func(i int) netip.Addr { return many(i + 1000) }); got != 50 {
		t.Errorf("100 ms later, 1000 more clients: %d port unreachables, want 50 (the burst)", got)
	}
	// Then 2000 clients over one second: about 1000 answered.
	got := 0
	for i := 0; i < 2000; i++ {
		h.now += int64(500 * time.Microsecond)
		got += count(1, func(int) netip.Addr { return many(i + 2000) })
	}
	if got < 990 || got > 1010 {
		t.Errorf("2000 clients over 1 s: %d port unreachables, want about 1000", got)
	}
	_, reasons := forwarder.Totals(h.w)
	if limited, want := reasons[forwarder.ICMPLimited.String()], uint64(100-6+10+9+950+950+2000-got); limited != want {
		t.Errorf("icmp_limited %d, want %d", limited, want)
	}
}

// Martian sources and group source MACs are dropped before any lookup, as
// the kernel's routing drops them before IPVS sees them.
func TestMartians(t *testing.T) {
	h := newHarness(t, twoNAT)
	a := netip.MustParseAddr
	for _, tt := range []struct {
		src  netip.Addr
		want forwarder.Reason
	}{
		{a("0.0.0.1"), forwarder.MartianSource},
		{a("127.0.0.1"), forwarder.MartianSource},
		{a("224.0.0.5"), forwarder.MartianSource},
		{a("239.255.255.255"), forwarder.MartianSource},
		{a("255.255.255.255"), forwarder.MartianSource},
		{vip, forwarder.MartianSource},               // a VIP (a local address)
		{a("198.18.1.1"), forwarder.MartianSource},   // the director's own link address
		{a("198.18.2.1"), forwarder.MartianSource},   // ... on the other side
		{a("198.18.1.255"), forwarder.MartianSource}, // a connected subnet's broadcast
		{a("240.0.0.1"), forwarder.ReasonNone},       // class E: not a martian to the kernel
		{a("198.18.1.77"), forwarder.ReasonNone},     // an ordinary client
	} {
		r := h.send(syn(tt.src, 1234), forwarder.VIPSide)
		if tt.want == forwarder.ReasonNone {
			if r.Action != forwarder.Transmit {
				t.Errorf("SYN from %v: %v %v, want transmit", tt.src, r.Action, r.Reason)
			}
			continue
		}
		if r.Action != forwarder.Drop || r.Reason != tt.want || r.Dest != nil {
			t.Errorf("SYN from %v: %v %v (dest %v), want drop %v", tt.src, r.Action, r.Reason, r.Dest, tt.want)
		}
	}
	f := syn(a("198.18.1.78"), 1235)
	f[6] |= 1 // a group source MAC
	if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.MartianMAC {
		t.Errorf("SYN from a multicast MAC: %v %v, want drop martian_mac", r.Action, r.Reason)
	}
	// Broadcast destinations are the host's: a DHCP discover from 0.0.0.0.
	d := frames.UDP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		frames.IP{Src: a("0.0.0.0"), Dst: a("255.255.255.255")}, frames.UDPDgram{SrcPort: 68, DstPort: 67, Payload: []byte("discover")})
	if r := h.send(d, forwarder.VIPSide); r.Action != forwarder.Pass {
		t.Errorf("DHCP discover: %v %v, want pass", r.Action, r.Reason)
	}
	if n := h.conns.Len(); n != 2 {
		t.Errorf("%d connections, want 2 (the two non-martians)", n)
	}
}

// nat_icmp_send: a packet from a NAT real server's address and port that
// matches no connection is the host's while the sysctl is 0; with 1 the
// real server gets ICMP port unreachable (not about a TCP RST, not for
// another source port) and the packet is dropped (ip_vs_out).
func TestNATICMPSend(t *testing.T) {
	h := newHarness(t, twoNAT)
	rs := netip.MustParseAddr("198.18.2.11")
	dipMAC := frames.DerivedMAC(netip.MustParseAddr("198.18.2.1"))
	seg := func(sport uint16, rst bool) []byte {
		return frames.TCP(frames.L2{Src: frames.DerivedMAC(rs), Dst: dipMAC}, frames.IP{Src: rs, Dst: client, DF: true},
			frames.TCPSeg{SrcPort: sport, DstPort: 40000, ACK: !rst, RST: rst, Seq: 5})
	}
	if r := h.send(seg(8080, false), forwarder.DIPSide); r.Action != forwarder.Pass {
		t.Fatalf("nat_icmp_send 0: %v %v, want pass", r.Action, r.Reason)
	}
	if err := h.set.Set(ipvs.SysNatIcmpSend, [2]int64{1}); err != nil {
		t.Fatal(err)
	}
	r := h.send(seg(8080, false), forwarder.DIPSide)
	if r.Action != forwarder.Reply || r.Reason != forwarder.NATNoConn || r.Link != forwarder.DIPSide {
		t.Fatalf("nat_icmp_send 1: %v %v on %d, want reply nat_no_conn on the DIP side", r.Action, r.Reason, r.Link)
	}
	ip := ipv4Of(t, r.Frame)
	ic := icmpOf4(t, r.Frame)
	if [4]byte(ip.SrcIP) != [4]byte{198, 18, 2, 1} || [4]byte(ip.DstIP) != rs.As4() ||
		ic.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort) {
		t.Errorf("%v -> %v %v, want port unreachable from the DIP to the real server", ip.SrcIP, ip.DstIP, ic.TypeCode)
	}
	if r := h.send(seg(8080, true), forwarder.DIPSide); r.Action != forwarder.Pass {
		t.Errorf("a RST: %v %v, want pass", r.Action, r.Reason)
	}
	if r := h.send(seg(9999, false), forwarder.DIPSide); r.Action != forwarder.Pass {
		t.Errorf("not a real server's port: %v %v, want pass", r.Action, r.Reason)
	}
}
