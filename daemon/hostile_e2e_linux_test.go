package daemon_test

// Hostile input checked with another generator than the other tests' TX
// ring: frames crafted byte by byte and sent one sendto(2) at a time on a
// plain AF_PACKET socket.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"

	"gvs/internal/frames"
	"gvs/internal/lab"
	"gvs/internal/oracle"
)

// rawSender sends frames on a client's interface through an AF_PACKET
// socket, one sendto(2) each.
type rawSender struct {
	t   *testing.T
	fd  int
	idx int
}

func newRawSender(t *testing.T, c lab.Client) *rawSender {
	t.Helper()
	s := &rawSender{t: t, fd: -1}
	err := lab.Do(c.NS, func() error {
		ifi, err := net.InterfaceByName(c.Name)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		s.fd, s.idx = fd, ifi.Index
		return nil
	})
	if err != nil {
		t.Fatalf("raw socket in %s: %v", c.NS, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// send sends frame; an error is fatal unless the kernel refused the frame
// for its size (a runt or a jumbo: returned).
func (s *rawSender) send(frame []byte) error {
	var dst [8]byte
	copy(dst[:], frame[:6])
	for {
		err := unix.Sendto(s.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: s.idx, Halen: 6, Addr: dst})
		switch err {
		case nil:
			return nil
		case unix.ENOBUFS, unix.EAGAIN, unix.EINTR:
			time.Sleep(time.Millisecond)
			continue
		case unix.EMSGSIZE, unix.EINVAL:
			return err
		}
		s.t.Fatalf("sendto: %v", err)
	}
}

// gvsdStats is gvsd's "stats" log line (--log-level debug).
type gvsdStats struct {
	RX, TX, Oversize, VLAN uint64
	SYNBudget              uint64 `json:"syn_budget"`
	Actions, Reasons       map[string]uint64
}

// statsLines returns gvsd's stats lines so far.
func statsLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `"msg":"stats"`) {
			lines = append(lines, l)
		}
	}
	return lines
}

// freshStats waits for the second stats line after this call (one whole
// interval after it) and returns it.
func freshStats(t *testing.T, ctx context.Context, d *director) gvsdStats {
	t.Helper()
	n := len(statsLines(d.gvsd.Output()))
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := statsLines(d.gvsd.Output())
		if len(lines) >= n+2 {
			var s gvsdStats
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
				t.Fatalf("stats line %q: %v", lines[len(lines)-1], err)
			}
			return s
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("no new stats line from gvsd within 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// accounted checks that every frame gvsd took from its rings got a verdict
// or a worker counter (nothing vanished uncounted).
func (s gvsdStats) accounted(t *testing.T) {
	t.Helper()
	var sum uint64
	for _, n := range s.Actions {
		sum += n
	}
	if got := sum + s.Oversize + s.VLAN + s.SYNBudget; got != s.RX {
		t.Errorf("rx %d frames, but actions %v + oversize %d + vlan %d + syn_budget %d = %d", s.RX, s.Actions, s.Oversize, s.VLAN, s.SYNBudget, got)
	}
}

// fixIPSum rewrites the IPv4 header checksum of the frame's header of ihl
// bytes at l3 (as far as the frame holds it).
func fixIPSum(f []byte, l3, ihl int) {
	end := min(l3+ihl, len(f))
	f[l3+10], f[l3+11] = 0, 0
	binary.BigEndian.PutUint16(f[l3+10:], ^oracle.Sum1071(f[l3:end], 0))
}

// icmpFrame builds Ethernet/IPv4/ICMP with the given ICMP body after the
// 8-byte ICMP header (type, code, checksum, rest), checksums right.
func icmpFrame(l2 frames.L2, src, dst netip.Addr, typ, code uint8, rest uint32, body []byte) []byte {
	f := make([]byte, 14+20+8+len(body))
	copy(f[0:6], l2.Dst[:])
	copy(f[6:12], l2.Src[:])
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	fixIPSum(f, 14, 20)
	ic := ip[20:]
	ic[0], ic[1] = typ, code
	binary.BigEndian.PutUint32(ic[4:], rest)
	copy(ic[8:], body)
	binary.BigEndian.PutUint16(ic[2:], ^oracle.Sum1071(ic, 0))
	return f
}

// hostileCase is one kind of malformed frame and the drop reason (or
// worker counter) each copy must add to gvsd's statistics.
type hostileCase struct {
	name   string
	reason string // a reason, or "vlan" for the worker counter
	build  func(i int) []byte
}

// TestHostileFramesCounted: malformed and odd frames to the VIP, each kind
// sent n times from a client's AF_PACKET socket: gvsd stays up, counts
// every copy under the reason the kind calls for, every frame taken from
// a ring is accounted for (a verdict or a worker counter), and the VIP
// still serves.
func TestHostileFramesCounted(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	c := d.l.Clients()[0]
	vip := d.l.VIP()
	l2 := frames.L2{Src: frames.MAC(c.MAC), Dst: frames.MAC(d.l.Director().VIPSide.MAC)}
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Fatalf("3 GETs through the VIP: %v", seen)
	}
	syn := func(i int) []byte {
		return frames.TCP(l2, frames.IP{Src: c.Addr(), Dst: vip}, frames.TCPSeg{SrcPort: uint16(30000 + i), DstPort: 80, Seq: 1, SYN: true})
	}
	ack := func(i int) []byte {
		return frames.TCP(l2, frames.IP{Src: c.Addr(), Dst: vip}, frames.TCPSeg{SrcPort: uint16(31000 + i), DstPort: 80, Seq: 1, Ack: 1, ACK: true})
	}
	udp := func(i int, payload []byte) []byte {
		return frames.UDP(l2, frames.IP{Src: c.Addr(), Dst: vip}, frames.UDPDgram{SrcPort: uint16(32000 + i), DstPort: 53, Payload: payload})
	}
	// setTotal sets the IP total length and cuts the frame to it.
	setTotal := func(f []byte, total int) []byte {
		binary.BigEndian.PutUint16(f[16:], uint16(total))
		fixIPSum(f, 14, 20)
		return f[:min(len(f), 14+total)]
	}
	// withOpts inserts IPv4 options (a multiple of 4 bytes) after the
	// header of an untagged frame.
	withOpts := func(f, opts []byte) []byte {
		g := make([]byte, 0, len(f)+len(opts))
		g = append(g, f[:34]...)
		g = append(g, opts...)
		g = append(g, f[34:]...)
		g[14] = 0x40 | byte((20+len(opts))/4)
		binary.BigEndian.PutUint16(g[16:], binary.BigEndian.Uint16(f[16:])+uint16(len(opts)))
		fixIPSum(g, 14, 20+len(opts))
		return g
	}
	cases := []hostileCase{
		// ip_rcv_options drops what ip_options_compile rejects, and
		// source-routed packets while accept_source_route is 0, before
		// IPVS sees them.
		{"IP option of length 0", "bad_ip_options", func(i int) []byte { return withOpts(syn(i), []byte{0x07, 0, 0, 0}) }},
		{"IP option beyond the header", "bad_ip_options", func(i int) []byte { return withOpts(syn(i), []byte{0x07, 0x0b, 4, 0}) }},
		{"IP loose source route", "source_route", func(i int) []byte {
			return withOpts(syn(i), []byte{0x83, 0x07, 0x04, 198, 18, 2, 11, 0x00})
		}},
		{"IHL 4", "bad_ihl", func(i int) []byte { f := syn(i); f[14] = 0x44; return f }},
		{"IHL 0", "bad_ihl", func(i int) []byte { f := syn(i); f[14] = 0x40; return f }},
		{"TCP, IHL 15 beyond the total length", "bad_ihl", func(i int) []byte { f := syn(i); f[14] = 0x4f; return f }},
		{"UDP, IHL 15 beyond the total length", "bad_ihl", func(i int) []byte { f := udp(i, nil); f[14] = 0x4f; return f }},
		{"total length beyond the frame", "bad_total_length", func(i int) []byte {
			f := syn(i)
			binary.BigEndian.PutUint16(f[16:], 1000)
			fixIPSum(f, 14, 20)
			return f
		}},
		{"total length below the header", "bad_total_length", func(i int) []byte {
			f := syn(i)
			binary.BigEndian.PutUint16(f[16:], 12)
			fixIPSum(f, 14, 20)
			return f
		}},
		{"bad IP checksum", "bad_ip_checksum", func(i int) []byte { f := syn(i); f[24] ^= 0x5a; return f }},
		{"TCP data offset 4", "bad_tcp_offset", func(i int) []byte { f := syn(i); f[46] = 4 << 4; return f }},
		{"TCP data offset beyond the segment", "bad_tcp_offset", func(i int) []byte { f := syn(i); f[46] = 15 << 4; return f }},
		{"TCP SYN header cut at 10 bytes", "truncated_tcp", func(i int) []byte { return setTotal(syn(i), 30) }},
		{"TCP ACK header cut at 12 bytes", "truncated_tcp", func(i int) []byte { return setTotal(ack(i), 32) }},
		{"TCP segment without a header", "truncated_tcp", func(i int) []byte { return setTotal(syn(i), 20) }},
		{"UDP header cut at 4 bytes", "truncated_udp", func(i int) []byte { return setTotal(udp(i, nil), 24) }},
		{"UDP length below its header", "bad_udp_length", func(i int) []byte {
			f := udp(i, []byte("abcd"))
			binary.BigEndian.PutUint16(f[38:], 4)
			return f
		}},
		{"UDP length beyond the datagram", "bad_udp_length", func(i int) []byte {
			f := udp(i, []byte("abcd"))
			binary.BigEndian.PutUint16(f[38:], 400)
			return f
		}},
		// IPVS schedules a TTL-0 SYN (a connection in SYN_RECV) before
		// its transmit finds the TTL spent: keep its ports out of the
		// client's ephemeral range (32768-60999), or a later GET from
		// the same port reuses that connection and its real server.
		{"TTL 0", "ttl_exceeded", func(i int) []byte {
			f := frames.TCP(l2, frames.IP{Src: c.Addr(), Dst: vip}, frames.TCPSeg{SrcPort: uint16(30500 + i), DstPort: 80, SYN: true})
			f[22] = 0
			fixIPSum(f, 14, 20)
			return f
		}},
		{"ACK with a bad TCP checksum (no connection)", "bad_l4_checksum", func(i int) []byte { f := ack(i); f[50] ^= 0xff; return f }},
		{"ICMP error quoting garbage", "bad_icmp_embedded", func(i int) []byte {
			body := make([]byte, 28)
			for j := range body {
				body[j] = byte(j * 13)
			}
			body[0] = 0x00 // version 0
			return icmpFrame(l2, c.Addr(), vip, 3, 3, uint32(i), body)
		}},
		{"ICMP error quoting 6 bytes", "truncated_icmp_embedded", func(i int) []byte {
			return icmpFrame(l2, c.Addr(), vip, 3, 3, uint32(i), []byte{0x45, 0, 0, 40, 0, 0})
		}},
		{"ICMP error quoting an IHL beyond the quote", "truncated_icmp_embedded", func(i int) []byte {
			inner := syn(i)[14:42]
			inner[0] = 0x4f
			return icmpFrame(l2, c.Addr(), vip, 3, 4, 1400, inner)
		}},
		{"ICMP error with a bad checksum", "bad_icmp_checksum", func(i int) []byte {
			f := icmpFrame(l2, c.Addr(), vip, 11, 0, 0, syn(i)[14:42])
			f[36] ^= 0x33
			return f
		}},
		// The kernel would reassemble it; gvs parses the first fragment's
		// transport header and finds it cut short.
		{"first fragment of 8 bytes of a TCP SYN", "truncated_tcp", func(i int) []byte {
			f := syn(i)
			binary.BigEndian.PutUint16(f[18:], uint16(0x4000+i)) // ID
			binary.BigEndian.PutUint16(f[20:], 0x2000)           // MF, offset 0
			return setTotal(f, 28)
		}},
		{"802.1Q tag (VLAN 5)", "vlan", func(i int) []byte {
			l := l2
			l.VLAN = 5
			return frames.TCP(l, frames.IP{Src: c.Addr(), Dst: vip}, frames.TCPSeg{SrcPort: uint16(34000 + i), DstPort: 80, SYN: true})
		}},
		{"802.1ad + 802.1Q tags", "vlan", func(i int) []byte {
			f := syn(i)
			q := make([]byte, 0, len(f)+8)
			q = append(q, f[:12]...)
			q = append(q, 0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x05)
			return append(q, f[12:]...)
		}},
	}
	const n = 20
	s := newRawSender(t, c)
	before := freshStats(t, ctx, d)
	for _, k := range cases {
		for i := range n {
			if err := s.send(k.build(i)); err != nil {
				t.Fatalf("%s: sendto: %v", k.name, err)
			}
		}
	}
	// And frames that are not gvs's to count (the kernel's): IPv6, a runt
	// without a whole IPv4 header, ARP cut short. Nothing to assert but
	// that gvsd survives them.
	v6 := make([]byte, 14+40)
	copy(v6, syn(0)[:12])
	binary.BigEndian.PutUint16(v6[12:], 0x86dd)
	v6[14] = 0x60
	runt := syn(0)[:24]
	arp := frames.ARPRequest(frames.MAC(c.MAC), c.Addr(), vip)[:30]
	for range n {
		for _, f := range [][]byte{v6, runt, arp} {
			_ = s.send(f)
		}
	}
	after := freshStats(t, ctx, d)
	want := map[string]uint64{}
	for _, k := range cases {
		want[k.reason] += n
	}
	for reason, w := range want {
		var got uint64
		if reason == "vlan" {
			got = after.VLAN - before.VLAN
		} else {
			got = after.Reasons[reason] - before.Reasons[reason]
		}
		if got < w {
			var kinds []string
			for _, k := range cases {
				if k.reason == reason {
					kinds = append(kinds, k.name)
				}
			}
			t.Errorf("%s: counted %d, want at least %d (%d each of: %s)", reason, got, w, n, strings.Join(kinds, "; "))
		}
	}
	after.accounted(t)
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs after the hostile frames: %v", seen)
	}
	stopAndCheck(t, d)
}

// TestMTURaised: the DIP side's MTU goes from 1500 to 9000 while gvsd
// runs (director and real server). A 4000-byte UDP datagram from the
// client (three fragments on the client LAN) must then reach the real
// server's echo, and its 4003-byte answer, one frame on the server LAN,
// must come back: gvsd's rings must take frames of the new MTU. Then the
// VIP side's MTU goes to 9000 too, and an 8000-byte datagram crosses the
// director whole both ways.
func TestMTURaised(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	if got := udpEcho(t, ctx, d, 53, "small"); got != "r1 small" {
		t.Fatalf("small datagram: %q", got)
	}
	bns, sfx := d.l.BridgeNS(), d.l.Suffix()
	r1 := d.l.Servers()[0]
	ipIn(t, ctx, d, bns, "link", "set", "dd-"+sfx, "mtu", "9000")
	ipIn(t, ctx, d, bns, "link", "set", "r1-"+sfx, "mtu", "9000")
	ipIn(t, ctx, d, r1.NS, "link", "set", lab.ServerIf, "mtu", "9000")
	ipIn(t, ctx, d, d.l.Director().NS, "link", "set", lab.DirectorDIPIf, "mtu", "9000")
	// gvsd takes the new MTU in: new link data (logged with the MTU) or
	// new rings.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out := d.gvsd.Output()
		if strings.Contains(out, `"MTU":9000`) || strings.Contains(out, `"rings re-opened"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("gvsd did not take the DIP side's new MTU in within 3 s")
		}
	}
	time.Sleep(200 * time.Millisecond)

	c, err := lab.Dial(ctx, d.l.Clients()[0].NS, "udp4", fmt.Sprintf("%s:53", d.l.VIP()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 4000)
	for i := range msg {
		msg[i] = byte(i * 11)
	}
	buf := make([]byte, 16<<10)
	got := -1
	for try := 0; try < 3 && got < 0; try++ {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil {
			got = n
		}
	}
	if got != 4003 || string(buf[:3]) != "r1 " {
		st := freshStats(t, ctx, d)
		t.Errorf("4000-byte datagram after the DIP MTU went to 9000: answer of %d bytes, want 4003 (gvsd: oversize %d, reasons %v)", got, st.Oversize, st.Reasons)
	}
	if got := udpEcho(t, ctx, d, 53, "small again"); got != "r1 small again" {
		t.Errorf("small datagram after the MTU change: %q", got)
	}

	// The VIP side too (director, client): an 8000-byte datagram then
	// crosses the director whole both ways.
	c0 := d.l.Clients()[0]
	reopened := strings.Count(d.gvsd.Output(), `"rings re-opened"`)
	ipIn(t, ctx, d, bns, "link", "set", "dv-"+sfx, "mtu", "9000")
	ipIn(t, ctx, d, bns, "link", "set", "c1-"+sfx, "mtu", "9000")
	ipIn(t, ctx, d, c0.NS, "link", "set", c0.Name, "mtu", "9000")
	ipIn(t, ctx, d, d.l.Director().NS, "link", "set", lab.DirectorVIPIf, "mtu", "9000")
	for deadline := time.Now().Add(3 * time.Second); strings.Count(d.gvsd.Output(), `"rings re-opened"`) == reopened; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("gvsd did not re-open its rings within 3 s of the VIP side's MTU change")
			break
		}
	}
	big := make([]byte, 8000)
	got = -1
	for try := 0; try < 3 && got < 0; try++ {
		if _, err := c.Write(big); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil {
			got = n
		}
	}
	if got != 8003 {
		st := freshStats(t, ctx, d)
		t.Errorf("8000-byte datagram with MTU 9000 on both sides: answer of %d bytes, want 8003 (gvsd: oversize %d, reasons %v)", got, st.Oversize, st.Reasons)
	}
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs after the MTU changes: %v", seen)
	}
	stopAndCheck(t, d)
}

// TestPriorityTagged: a client that sends 802.1p priority-tagged frames
// (an 802.1Q tag with VLAN ID 0, as some hosts and phones do for QoS) is
// served: the kernel treats such a frame as untagged (the receive path
// clears a tag of VLAN 0), so IPVS would schedule it, and gvs's ingress
// table keeps it from the kernel. A tag with another VLAN ID, which the
// kernel drops without a VLAN device, stays the kernel's (counter vlan;
// under AF_XDP the XDP program passes it). Alike on TPACKET and AF_XDP
// (native and generic XDP).
func TestPriorityTagged(t *testing.T) {
	lab.Require(t)
	for _, io := range []string{"tpacket", "afxdp-native", "afxdp-generic"} {
		t.Run(io, func(t *testing.T) { testPriorityTagged(t, io) })
	}
}

func testPriorityTagged(t *testing.T, io string) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var d *director
	if mode, ok := strings.CutPrefix(io, "afxdp-"); ok {
		d = startXDPDirector(t, ctx, lab.Options{}, natRules, nil, "--xdp-mode", mode)
		requireXDP(t, d, mode)
	} else {
		d = startDirector(t, ctx, lab.Options{}, natRules)
	}
	c := d.l.Clients()[0]
	l2 := frames.L2{Src: frames.MAC(c.MAC), Dst: frames.MAC(d.l.Director().VIPSide.MAC)}
	udpConns := func() string {
		t.Helper()
		out, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "-Ln", "--stats")
		if err != nil {
			t.Fatalf("gvsadm -Ln --stats: %v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "UDP" && f[1] == d.l.VIP().String()+":53" {
				return f[2]
			}
		}
		t.Fatalf("no UDP service line in:\n%s", out)
		return ""
	}
	// The tag on the wire: the director's bridge port inserts it in the
	// frame (as a switch does), not in the skb's metadata (veth's VLAN
	// transmit offload), where XDP would not see it.
	port := "dv-" + d.l.Suffix()
	if err := lab.Do(d.l.BridgeNS(), func() error {
		e, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer e.Close()
		return e.Change(port, map[string]bool{"tx-vlan-hw-insert": false})
	}); err != nil {
		t.Fatalf("VLAN transmit offload off on %s: %v", port, err)
	}
	// tagged inserts an 802.1Q tag with tci into an untagged frame.
	tagged := func(f []byte, tci uint16) []byte {
		g := append([]byte(nil), f[:12]...)
		g = append(g, 0x81, 0x00, byte(tci>>8), byte(tci))
		return append(g, f[12:]...)
	}
	s := newRawSender(t, c)
	// VLAN 7 (priority 5): not this interface's traffic.
	if err := s.send(tagged(frames.UDP(l2, frames.IP{Src: c.Addr(), Dst: d.l.VIP()}, frames.UDPDgram{SrcPort: 40100, DstPort: 53, Payload: []byte("vlan 7")}), 5<<13|7)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := udpConns(); n != "0" {
		t.Errorf("a datagram tagged with VLAN 7 made %s connections, want 0", n)
	}
	// VLAN 0 (priority 5): untagged to the kernel.
	if err := s.send(tagged(frames.UDP(l2, frames.IP{Src: c.Addr(), Dst: d.l.VIP()}, frames.UDPDgram{SrcPort: 40101, DstPort: 53, Payload: []byte("prio")}), 5<<13)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); udpConns() != "1"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			st := freshStats(t, ctx, d)
			t.Fatalf("a priority-tagged datagram (VLAN 0) to the VIP made no connection (gvsd: vlan %d, actions %v)", st.VLAN, st.Actions)
		}
	}
	stopAndCheck(t, d)
}

// kernelTCPOutRsts reads the Tcp OutRsts counter of namespace ns.
func kernelTCPOutRsts(t *testing.T, ctx context.Context, d *director, ns string) int {
	t.Helper()
	out, err := d.l.Output(ctx, ns, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "OutRsts" && i < len(f) {
				var v int
				fmt.Sscan(f[i], &v)
				return v
			}
		}
	}
	t.Fatalf("no Tcp OutRsts in /proc/net/snmp:\n%s", out)
	return 0
}

// TestVIPInterfaceRenamed: with the VIP on the director's lo (the
// README's setup), the VIP interface is renamed while gvsd runs. New
// connections are still served, and the director's kernel answers none of
// the VIP traffic (no RST): the ingress table keeps covering the
// interface under its new name.
func TestVIPInterfaceRenamed(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{VIPOnDirector: true}, natRules)
	ns := d.l.Director().NS
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Fatalf("3 GETs through the VIP: %v", seen)
	}
	rsts := kernelTCPOutRsts(t, ctx, d, ns)
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorVIPIf, "down")
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorVIPIf, "name", "vipx")
	ipIn(t, ctx, d, ns, "link", "set", "vipx", "up")
	if err := lab.WaitCarrier(ns, "vipx", time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	servedWithin(t, ctx, d, 10*time.Second)
	seen := serverNames(t, ctx, d, 3)
	if after := kernelTCPOutRsts(t, ctx, d, ns); after != rsts {
		t.Errorf("VIP interface renamed: the director's kernel sent %d RSTs for VIP traffic (GETs answered by %v)", after-rsts, seen)
	}
	ipIn(t, ctx, d, ns, "link", "set", "vipx", "down")
	ipIn(t, ctx, d, ns, "link", "set", "vipx", "name", lab.DirectorVIPIf)
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorVIPIf, "up")
	if err := lab.WaitCarrier(ns, lab.DirectorVIPIf, time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	servedWithin(t, ctx, d, 10*time.Second)
	stopAndCheck(t, d)
}
