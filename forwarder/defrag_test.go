package forwarder_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/forwarder/replay"
	"gvs/forwarder/staticenv"
	"gvs/internal/frames"
	"gvs/ipvs"
	"gvs/rewrite"
)

const natDNS = "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m -w 1\n"

var rs11 = netip.MustParseAddr("198.18.2.11")

// newDefragHarness is a one-worker pipeline whose hops on side have MTU
// mtu (0: the default 1500) and whose worker has slots reassembly slots.
func newDefragHarness(t testing.TB, rules string, side, mtu, slots int) *harness {
	t.Helper()
	table, err := replay.ParseRules(strings.NewReader(rules), "rules")
	if err != nil {
		t.Fatal(err)
	}
	env, err := staticenv.New(staticenv.DefaultFacts())
	if err != nil {
		t.Fatal(err)
	}
	var e forwarder.Env = env
	if mtu != 0 {
		e = mtuEnv{env, side, mtu}
	}
	conns := conntrack.New(conntrack.Config{Seed: 1, Capacity: 1 << 16})
	set := ipvs.NewSettings()
	pl := forwarder.New(forwarder.Config{Env: e, Services: table, Conns: conns, Settings: set, DefragSlots: slots})
	return &harness{t: t, table: table, conns: conns, pl: pl, set: set, w: pl.NewWorker(), buf: make([]byte, 1<<17), now: int64(time.Hour)}
}

// bigUDP is a UDP datagram from c:cport to the VIP's port 53 with n
// payload bytes (a pattern, so that misplaced bytes show), IP ID id.
func bigUDP(c netip.Addr, cport, id uint16, df bool, n int) []byte {
	pay := make([]byte, n)
	for i := range pay {
		pay[i] = byte(i*7 + i/251)
	}
	return frames.UDP(frames.L2{Src: frames.DerivedMAC(c), Dst: vipMAC}, frames.IP{Src: c, Dst: vip, DF: df, ID: id},
		frames.UDPDgram{SrcPort: cport, DstPort: 53, Payload: pay})
}

// cut is payload bytes [lo, hi) of a datagram as one fragment.
type cut struct{ lo, hi int }

// split cuts the IPv4 datagram of frame (untagged) into fragments, one
// per cut, MF on each that ends before the payload's end, DF as the
// datagram's when df is nil, else as df[i].
func split(frame []byte, df []bool, cuts ...cut) [][]byte {
	ihl := int(frame[14]&0xf) * 4
	pay := frame[14+ihl : 14+int(binary.BigEndian.Uint16(frame[16:]))]
	var out [][]byte
	for i, c := range cuts {
		f := make([]byte, 0, 14+ihl+c.hi-c.lo)
		f = append(f, frame[:14+ihl]...)
		f = append(f, pay[c.lo:c.hi]...)
		ip := rewrite.IPv4(f[14:])
		binary.BigEndian.PutUint16(ip[2:], uint16(ihl+c.hi-c.lo))
		fo := uint16(c.lo / 8)
		if c.hi < len(pay) {
			fo |= 0x2000
		}
		if df == nil && frame[20]&0x40 != 0 || df != nil && df[i] {
			fo |= 0x4000
		}
		binary.BigEndian.PutUint16(ip[6:], fo)
		ip.FixChecksum()
		out = append(out, f)
	}
	return out
}

// sendAll sends frames on link and returns the last Result; every frame
// but the last must be taken for reassembly.
func (h *harness) sendAll(link int, fs ...[]byte) forwarder.Result {
	h.t.Helper()
	var r forwarder.Result
	for i, f := range fs {
		r = h.send(f, link)
		if i < len(fs)-1 && (r.Action != forwarder.Drop || r.Reason != forwarder.Fragment) {
			h.t.Fatalf("fragment %d: %v %v, want taken (drop fragment)", i, r.Action, r.Reason)
		}
	}
	return r
}

// checkNATed reassembles the output fragments of r and checks the
// DNATed datagram: to the real server's 5353, the payload of want, a
// correct UDP checksum, fragments of at most mtu bytes.
func checkNATed(t *testing.T, h *harness, r forwarder.Result, want []byte, mtu int) {
	t.Helper()
	if r.Action != forwarder.Transmit || r.Frags == 0 || r.Link != forwarder.DIPSide {
		t.Fatalf("datagram: %v %v, %d fragments on %d, want fragments to the real server", r.Action, r.Reason, int(r.Frags), r.Link)
	}
	ip, data := reassemble(t, h.fragments(r), mtu)
	u := udpOK(t, ip, data)
	if u.DstPort != 5353 || [4]byte(ip.DstIP) != rs11.As4() || !bytes.Equal(u.Payload, want[14+28:]) {
		t.Errorf("to %v:%d, %d payload bytes (equal %v)", ip.DstIP, u.DstPort, len(u.Payload), bytes.Equal(u.Payload, want[14+28:]))
	}
}

// A 3000-byte datagram in three fragments, in order, out of order, with a
// duplicate: one datagram goes through NAT (one new connection, one
// packet counted), out as fragments no larger than the largest received.
func TestDefragOrders(t *testing.T) {
	d := bigUDP(client, 4000, 0x1234, false, 3000-28)
	fs := split(d, nil, cut{0, 1480}, cut{1480, 2960}, cut{2960, 2980})
	for _, tc := range []struct {
		name  string
		order [][]byte
	}{
		{"in-order", fs},
		{"out-of-order", [][]byte{fs[2], fs[0], fs[1]}},
		{"reversed", [][]byte{fs[2], fs[1], fs[0]}},
		{"duplicate", [][]byte{fs[0], fs[0], fs[1], fs[1], fs[2]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newDefragHarness(t, natDNS, 0, 0, 0)
			r := h.sendAll(forwarder.VIPSide, tc.order...)
			if !r.New || r.Dest == nil {
				t.Errorf("not a new connection: %+v", r)
			}
			checkNATed(t, h, r, d, 1500)
			if int(r.Frags) != 3 {
				t.Errorf("%d fragments, want 3 (cut at the largest received, 1500)", int(r.Frags))
			}
			st := r.Dest.Stats.Sum()
			if st.InPkts != 1 || st.InBytes != 3000 || st.Conns != 1 {
				t.Errorf("counted %d packets, %d bytes, %d conns; want 1, 3000, 1", st.InPkts, st.InBytes, st.Conns)
			}
			if r, ok := h.w.Expire(h.now + int64(time.Minute)); ok {
				t.Errorf("a completed datagram expired: %v %v", r.Action, r.Reason)
			}
		})
	}
}

// Re-fragmented to a smaller egress MTU, with the UDP checksum right for
// the NATed datagram; and the real server's fragmented reply is
// reassembled, SNATed and fragmented to the client.
func TestDefragNATBothWays(t *testing.T) {
	h := newDefragHarness(t, natDNS, forwarder.DIPSide, 1000, 0)
	d := bigUDP(client, 4000, 0x1234, false, 3000-28)
	r := h.sendAll(forwarder.VIPSide, split(d, nil, cut{0, 1480}, cut{1480, 2960}, cut{2960, 2980})...)
	checkNATed(t, h, r, d, 1000)
	if int(r.Frags) != 4 {
		t.Errorf("%d fragments over MTU 1000, want 4", int(r.Frags))
	}
	// The reply: 2000 bytes in three fragments from the real server.
	pay := bytes.Repeat([]byte("0123456789abcdef"), 124)[:1972]
	reply := frames.UDP(frames.L2{Src: frames.DerivedMAC(rs11), Dst: frames.DerivedMAC(dip)}, frames.IP{Src: rs11, Dst: client, ID: 0x99},
		frames.UDPDgram{SrcPort: 5353, DstPort: 4000, Payload: pay})
	r = h.sendAll(forwarder.DIPSide, split(reply, nil, cut{0, 976}, cut{976, 1952}, cut{1952, 1980})...)
	if r.Action != forwarder.Transmit || !r.Out || r.Link != forwarder.VIPSide || int(r.Frags) != 3 {
		t.Fatalf("reply: %v %v out %v, %d fragments, want 3 to the client", r.Action, r.Reason, r.Out, int(r.Frags))
	}
	ip, data := reassemble(t, h.fragments(r), 996) // the largest received fragment
	u := udpOK(t, ip, data)
	if [4]byte(ip.SrcIP) != vip.As4() || u.SrcPort != 53 || !bytes.Equal(u.Payload, pay) {
		t.Errorf("reply from %v:%d, payload equal %v", ip.SrcIP, u.SrcPort, bytes.Equal(u.Payload, pay))
	}
}

// DF: a reassembled datagram keeps DF when its largest fragment had it
// (the fragments going out carry it); too big for the egress MTU it gets
// fragmentation needed, as ensure_mtu_is_adequate.
func TestDefragDF(t *testing.T) {
	h := newDefragHarness(t, natDNS, forwarder.DIPSide, 1000, 0)
	d := bigUDP(client, 4000, 0x1234, true, 1600-28)
	r := h.sendAll(forwarder.VIPSide, split(d, nil, cut{0, 800}, cut{800, 1580})...)
	if r.Action != forwarder.Reply || r.Reason != forwarder.FragNeeded || icmpOf4(t, r.Frame).Seq != 1000 {
		t.Fatalf("DF datagram of 1600 over MTU 1000: %v %v", r.Action, r.Reason)
	}
	h = newDefragHarness(t, natDNS, forwarder.DIPSide, 1000, 0)
	d = bigUDP(client, 4000, 0x1235, true, 900-28)
	r = h.sendAll(forwarder.VIPSide, split(d, nil, cut{0, 600}, cut{600, 880})...)
	if r.Action != forwarder.Transmit || int(r.Frags) != 2 {
		t.Fatalf("DF datagram of 900: %v %v, %d fragments", r.Action, r.Reason, int(r.Frags))
	}
	for i, f := range h.fragments(r) {
		if ip := ipv4Of(t, f); ip.Flags&layers.IPv4DontFragment == 0 || ip.Length > 620 {
			t.Errorf("fragment %d: flags %v, length %d; want DF, at most 620", i, ip.Flags, ip.Length)
		}
	}
	// A small DF fragment and a larger one without: no DF.
	d = bigUDP(client, 4000, 0x1236, false, 900-28)
	r = h.sendAll(forwarder.VIPSide, split(d, []bool{false, true}, cut{0, 600}, cut{600, 880})...)
	if r.Action != forwarder.Transmit || int(r.Frags) != 2 {
		t.Fatalf("mixed DF: %v %v", r.Action, r.Reason)
	}
	if ip := ipv4Of(t, h.w.Fragment(0)); ip.Flags&layers.IPv4DontFragment != 0 {
		t.Errorf("mixed DF: fragments carry DF")
	}
}

// An overlap discards the whole datagram (the kernel applies RFC 5722 to
// IPv4 too); so do a second last fragment ending elsewhere and data beyond
// the end.
func TestDefragBad(t *testing.T) {
	d := bigUDP(client, 4000, 0x1234, false, 3000-28)
	for _, tc := range []struct {
		name string
		cuts []cut
	}{
		{"overlap", []cut{{0, 1480}, {1472, 2960}}},
		{"overlap-before", []cut{{1480, 2960}, {8, 1488}}},
		{"beyond-end", []cut{{2960, 2980}, {1480, 2984}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newDefragHarness(t, natDNS, 0, 0, 0)
			fs := split(d, nil, tc.cuts...)
			if tc.name == "beyond-end" {
				// Mark the second as a middle fragment (MF).
				fs[1][20] |= 0x20
				rewrite.IPv4(fs[1][14:]).FixChecksum()
			}
			h.sendAll(forwarder.VIPSide, fs[0])
			if r := h.send(fs[1], forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.FragBad {
				t.Fatalf("%v %v, want drop frag_bad", r.Action, r.Reason)
			}
			// The rest cannot complete it: the datagram is gone.
			for _, f := range split(d, nil, cut{0, 1480}, cut{1480, 2960}) {
				if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.Fragment {
					t.Fatalf("after the discard: %v %v", r.Action, r.Reason)
				}
			}
		})
	}
}

// A datagram missing a fragment times out 30 s after its first fragment
// arrived (ipfrag_time): with its first fragment, ICMP time exceeded code
// 1 quoting it goes back from the VIP; without, it is dropped silently.
func TestDefragTimeout(t *testing.T) {
	h := newDefragHarness(t, natDNS, 0, 0, 0)
	d := bigUDP(client, 4000, 0x1234, false, 3000-28)
	fs := split(d, nil, cut{0, 1480}, cut{1480, 2960}, cut{2960, 2980})
	h.sendAll(forwarder.VIPSide, fs[0], fs[2])
	d2 := bigUDP(client, 4001, 0x1235, false, 3000-28)
	h.sendAll(forwarder.VIPSide, split(d2, nil, cut{1480, 2960})...)
	if r, ok := h.w.Expire(h.now + 30*int64(time.Second) - 1); ok {
		t.Fatalf("expired before 30 s: %v %v", r.Action, r.Reason)
	}
	var replies, drops int
	for {
		r, ok := h.w.Expire(h.now + 30*int64(time.Second))
		if !ok {
			break
		}
		switch {
		case r.Action == forwarder.Reply && r.Reason == forwarder.FragTimeout:
			replies++
			ip := ipv4Of(t, r.Frame)
			ic := icmpOf4(t, r.Frame)
			if ic.TypeCode != layers.CreateICMPv4TypeCode(11, 1) || [4]byte(ip.SrcIP) != vip.As4() || [4]byte(ip.DstIP) != client.As4() || r.Link != forwarder.VIPSide {
				t.Errorf("ICMP %v from %v to %v on %d", ic.TypeCode, ip.SrcIP, ip.DstIP, r.Link)
			}
			// The quote is the first fragment's header (MF, offset 0,
			// its own length) and the start of its payload.
			q := ic.Payload
			if binary.BigEndian.Uint16(q[2:]) != 1500 || binary.BigEndian.Uint16(q[4:]) != 0x1234 || binary.BigEndian.Uint16(q[6:]) != 0x2000 ||
				!bytes.Equal(q[20:28], d[34:42]) {
				t.Errorf("quote %x", q[:28])
			}
		case r.Action == forwarder.Drop && r.Reason == forwarder.FragTimeout:
			drops++
		default:
			t.Errorf("expired: %v %v", r.Action, r.Reason)
		}
	}
	if replies != 1 || drops != 1 {
		t.Errorf("%d time exceeded, %d silent drops; want 1 and 1", replies, drops)
	}
	// The missing fragment comes too late: it starts a new datagram.
	h.now += 31 * int64(time.Second)
	if r := h.send(fs[1], forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.Fragment {
		t.Errorf("late fragment: %v %v", r.Action, r.Reason)
	}
}

// With every slot taken, a new datagram evicts the oldest (counted); the
// evicted one can no longer complete, the others can.
func TestDefragEvict(t *testing.T) {
	h := newDefragHarness(t, natDNS, 0, 0, 2)
	var fs [3][][]byte
	for i := range fs {
		d := bigUDP(client, uint16(4000+i), uint16(0x100+i), false, 3000-28)
		fs[i] = split(d, nil, cut{0, 1480}, cut{1480, 2960}, cut{2960, 2980})
		h.sendAll(forwarder.VIPSide, fs[i][0])
		h.now += int64(time.Millisecond)
	}
	if n := h.w.Counters.Reasons[forwarder.FragEvicted].Load(); n != 1 {
		t.Errorf("%d evictions, want 1", n)
	}
	if r := h.sendAll(forwarder.VIPSide, fs[0][1], fs[0][2]); r.Action != forwarder.Drop {
		t.Errorf("evicted datagram completed: %v %v", r.Action, r.Reason)
	}
	for i := 1; i < 3; i++ {
		// Datagram 0's fragments took a slot again and evicted 1; send
		// 2's, the newest, which must still be there.
		_ = i
	}
	if r := h.sendAll(forwarder.VIPSide, fs[2][1], fs[2][2]); r.Action != forwarder.Transmit {
		t.Errorf("newest datagram: %v %v, want transmit", r.Action, r.Reason)
	}
}

// Fragments of other protocols, and to the director's own address, are
// the kernel's.
func TestDefragPass(t *testing.T) {
	h := newDefragHarness(t, natDNS, 0, 0, 0)
	d := bigUDP(client, 4000, 0x1234, false, 3000-28)
	own := append([]byte(nil), d...)
	copy(own[30:34], netip.MustParseAddr("198.18.1.1").AsSlice())
	rewrite.IPv4(own[14:]).FixChecksum()
	if r := h.send(split(own, nil, cut{0, 1480})[0], forwarder.VIPSide); r.Action != forwarder.Pass {
		t.Errorf("fragment to the director: %v %v", r.Action, r.Reason)
	}
	icmp := append([]byte(nil), d...)
	icmp[23] = 1
	rewrite.IPv4(icmp[14:]).FixChecksum()
	if r := h.send(split(icmp, nil, cut{1480, 2960})[0], forwarder.VIPSide); r.Action != forwarder.Pass {
		t.Errorf("ICMP fragment to the VIP: %v %v", r.Action, r.Reason)
	}
}

// Taking fragments and forwarding the reassembled datagram allocate
// nothing.
func TestDefragNoAllocs(t *testing.T) {
	h := newDefragHarness(t, natDNS, forwarder.DIPSide, 1000, 0)
	d := bigUDP(client, 4000, 0x1234, false, 3000-28)
	fs := split(d, nil, cut{0, 1480}, cut{1480, 2960}, cut{2960, 2980})
	h.sendAll(forwarder.VIPSide, fs...)
	lone := split(bigUDP(client, 4001, 0, false, 3000-28), nil, cut{0, 1480})[0]
	id := uint16(0)
	if a := testing.AllocsPerRun(200, func() {
		if r := h.sendAll(forwarder.VIPSide, fs...); r.Action != forwarder.Transmit {
			t.Fatalf("%v %v", r.Action, r.Reason)
		}
		id++
		binary.BigEndian.PutUint16(lone[18:], id)
		rewrite.IPv4(lone[14:]).FixChecksum()
		h.send(lone, forwarder.VIPSide) // evicts, times out
		h.now += int64(time.Second)
		for {
			if _, ok := h.w.Expire(h.now); !ok {
				break
			}
		}
	}); a != 0 {
		t.Errorf("%v allocations per round", a)
	}
}
