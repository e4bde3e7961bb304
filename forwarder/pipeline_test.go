package forwarder_test

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/forwarder/replay"
	"gvs/forwarder/staticenv"
	"gvs/internal/frames"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/rewrite"
)

// harness is a pipeline on the lab's default facts with one worker.
type harness struct {
	t     testing.TB
	table *ipvs.Table
	conns *conntrack.Table
	pl    *forwarder.Pipeline
	set   *ipvs.Settings
	w     *forwarder.Worker
	buf   []byte
	now   int64
}

func newHarness(t testing.TB, rules string) *harness {
	t.Helper()
	table, err := replay.ParseRules(strings.NewReader(rules), "rules")
	if err != nil {
		t.Fatal(err)
	}
	env, err := staticenv.New(staticenv.DefaultFacts())
	if err != nil {
		t.Fatal(err)
	}
	conns := conntrack.New(conntrack.Config{Seed: 1, Capacity: 1 << 22})
	set := ipvs.NewSettings()
	pl := forwarder.New(forwarder.Config{Env: env, Services: table, Conns: conns, Settings: set})
	return &harness{t: t, table: table, conns: conns, pl: pl, set: set, w: pl.NewWorker(), buf: make([]byte, 4096), now: int64(time.Hour)}
}

// send runs one frame arriving on link through the pipeline.
func (h *harness) send(frame []byte, link int) forwarder.Result {
	n := copy(h.buf[forwarder.Headroom:], frame)
	return h.w.Process(h.buf, forwarder.Headroom, n, link, false, h.now)
}

func (h *harness) apply(line string) {
	h.t.Helper()
	cmd, err := ipvsadm.ParseArgs(strings.Fields(line))
	if err != nil {
		h.t.Fatal(err)
	}
	if err := ipvsadm.Apply(h.table, cmd); err != nil {
		h.t.Fatal(err)
	}
}

func syn(c netip.Addr, cport uint16) []byte {
	return frames.TCP(frames.L2{Src: frames.DerivedMAC(c), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: c, Dst: vip, DF: true}, frames.TCPSeg{SrcPort: cport, DstPort: 80, SYN: true, Seq: 1})
}

func ack(c netip.Addr, cport uint16) []byte {
	return frames.TCP(frames.L2{Src: frames.DerivedMAC(c), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: c, Dst: vip, DF: true}, frames.TCPSeg{SrcPort: cport, DstPort: 80, ACK: true, Seq: 2, Ack: 100})
}

const twoNAT = "-A -t 198.51.100.10:80 -s rr\n" +
	"-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n" +
	"-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 1\n"

// Weight 0 drains: existing connections keep flowing to the quiesced real
// server, new ones go elsewhere (ipvsadm -e ... -w 0).
func TestDrainWeightZero(t *testing.T) {
	h := newHarness(t, twoNAT)
	r := h.send(syn(client, 1000), forwarder.VIPSide)
	first := r.Dest.AddrPort().String()
	h.apply("-e -t 198.51.100.10:80 -r " + first + " -m -w 0")
	for i := 0; i < 4; i++ {
		r := h.send(ack(client, 1000), forwarder.VIPSide)
		if r.Action != forwarder.Transmit || r.Dest.AddrPort().String() != first {
			t.Fatalf("existing connection: %v to %v, want transmit to %s", r.Action, r.Dest, first)
		}
		r = h.send(syn(client, uint16(2000+i)), forwarder.VIPSide)
		if r.Dest == nil || r.Dest.AddrPort().String() == first {
			t.Fatalf("new connection %d went to the quiesced %s", i, first)
		}
	}
}

// Deleting a real server stops its connections (IPVS drops their packets
// while expire_nodest_conn is 0); new ones go to the others.
func TestDeleteRealServer(t *testing.T) {
	h := newHarness(t, twoNAT)
	r := h.send(syn(client, 1000), forwarder.VIPSide)
	first := r.Dest.AddrPort().String()
	h.apply("-d -t 198.51.100.10:80 -r " + first)
	r = h.send(ack(client, 1000), forwarder.VIPSide)
	if r.Action != forwarder.Drop || r.Reason != forwarder.DestRemoved {
		t.Fatalf("packet of a deleted real server's connection: %v %v, want drop dest_removed", r.Action, r.Reason)
	}
	r = h.send(syn(client, 1001), forwarder.VIPSide)
	if r.Action != forwarder.Transmit || r.Dest.AddrPort().String() == first {
		t.Fatalf("new connection after delete: %v %v", r.Action, r.Dest)
	}
	// Deleting the service: its traffic is no longer ours.
	h.apply("-D -t 198.51.100.10:80")
	r = h.send(syn(client, 1002), forwarder.VIPSide)
	if r.Action != forwarder.Pass {
		t.Fatalf("after -D: %v, want pass", r.Action)
	}
}

// A SYN that finds its old connection in TIME_WAIT starts a new one
// (conn_reuse_mode 1), scheduled afresh.
func TestConnReuse(t *testing.T) {
	h := newHarness(t, twoNAT)
	r := h.send(syn(client, 1000), forwarder.VIPSide)
	first := r.Dest
	rst := frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 1000, DstPort: 80, RST: true, Seq: 2})
	h.send(ack(client, 1000), forwarder.VIPSide) // ESTABLISHED
	if r := h.send(rst, forwarder.VIPSide); r.State != conntrack.StateClose {
		t.Fatalf("RST: state %v, want CLOSE", r.State)
	}
	r = h.send(syn(client, 1000), forwarder.VIPSide)
	if !r.New || r.Dest == first {
		t.Fatalf("SYN on a CLOSE connection: new=%v dest=%v, want a new connection on the other server", r.New, r.Dest.AddrPort())
	}
}

// A CHECKSUM_PARTIAL frame (TP_STATUS_CSUMNOTREADY) leaves with a full,
// valid checksum.
func TestChecksumPartial(t *testing.T) {
	h := newHarness(t, twoNAT)
	f := syn(client, 1000)
	// Make it partial: the TCP checksum field holds only the folded
	// pseudo-header sum, as a sender with tx offload leaves it.
	ihl := int(f[14]&0x0f) * 4
	l4 := 14 + ihl
	tcpLen := int(binary.BigEndian.Uint16(f[16:])) - ihl
	var sum uint32
	for _, b := range [][]byte{f[26:30], f[30:34]} {
		sum += uint32(binary.BigEndian.Uint16(b)) + uint32(binary.BigEndian.Uint16(b[2:]))
	}
	sum += 6 + uint32(tcpLen)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(f[l4+16:], uint16(sum))
	n := copy(h.buf[forwarder.Headroom:], f)
	r := h.w.Process(h.buf, forwarder.Headroom, n, forwarder.VIPSide, true, h.now)
	if r.Action != forwarder.Transmit {
		t.Fatalf("%v %v", r.Action, r.Reason)
	}
	pkt := gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.Default)
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if got, want := tcp.Checksum, l4Checksum(t, ip, tcp); got != want {
		t.Fatalf("partial checksum input: sent %#04x, want the full %#04x", got, want)
	}
}

// One-arm: both links are the same interface and prefix; forwarding still works.
func TestOneArm(t *testing.T) {
	f := staticenv.DefaultFacts()
	f.DIPIf = f.VIPIf
	env, err := staticenv.New(f)
	if err != nil {
		t.Fatal(err)
	}
	table, err := replay.ParseRules(strings.NewReader("-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.1.50:80 -g\n"), "rules")
	if err != nil {
		t.Fatal(err)
	}
	pl := forwarder.New(forwarder.Config{Env: env, Services: table, Conns: conntrack.New(conntrack.Config{})})
	w := pl.NewWorker()
	buf := make([]byte, 2048)
	n := copy(buf[forwarder.Headroom:], syn(client, 1))
	r := w.Process(buf, forwarder.Headroom, n, forwarder.VIPSide, false, 1)
	if r.Action != forwarder.Transmit || r.Link != forwarder.DIPSide {
		t.Fatalf("one-arm DR: %v on %d", r.Action, r.Link)
	}
	if got := [6]byte(r.Frame[0:6]); got != staticenv.DerivedMAC(netip.MustParseAddr("198.18.1.50")) {
		t.Fatalf("dst mac %x", got)
	}
}

// TestNoAllocs proves the per-packet path allocates nothing: established
// NAT in both directions, DR, TUN, new connections, ICMP replies, drops.
func TestNoAllocs(t *testing.T) {
	rules := twoNAT +
		"-A -t 198.51.100.10:81 -s wlc\n-a -t 198.51.100.10:81 -r 198.18.2.11:81 -g\n" +
		"-A -t 198.51.100.10:82 -s mh\n-a -t 198.51.100.10:82 -r 198.18.2.11:82 -i\n" +
		"-A -u 198.51.100.10:53 -s sh -p 300\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m\n"
	h := newHarness(t, rules)
	mk := func(port uint16, flags frames.TCPSeg) []byte {
		flags.DstPort = port
		return frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
			frames.IP{Src: client, Dst: vip, DF: true}, flags)
	}
	nat := mk(80, frames.TCPSeg{SrcPort: 5000, SYN: true})
	dr := mk(81, frames.TCPSeg{SrcPort: 5000, SYN: true})
	tun := mk(82, frames.TCPSeg{SrcPort: 5000, SYN: true})
	for _, f := range [][]byte{nat, dr, tun} {
		if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Transmit {
			t.Fatalf("setup: %v %v", r.Action, r.Reason)
		}
	}
	r := h.send(nat, forwarder.VIPSide)
	reply := frames.TCP(frames.L2{Src: frames.DerivedMAC(r.Dest.Addr), Dst: frames.DerivedMAC(dip)},
		frames.IP{Src: r.Dest.Addr, Dst: client}, frames.TCPSeg{SrcPort: 8080, DstPort: 5000, SYN: true, ACK: true})
	ttl := frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: client, Dst: vip, TTL: 1}, frames.TCPSeg{SrcPort: 7000, DstPort: 80, SYN: true})
	bad := append([]byte(nil), nat...)
	bad[24] ^= 0xff
	port := uint16(10000)
	cases := map[string]func() []byte{
		"nat-in":  func() []byte { return nat },
		"nat-out": func() []byte { return reply },
		"dr":      func() []byte { return dr },
		"tun":     func() []byte { return tun },
		"ttl":     func() []byte { return ttl },
		"bad":     func() []byte { return bad },
		"new-syn": func() []byte { port++; return mk(80, frames.TCPSeg{SrcPort: port, SYN: true}) },
		"new-udp-persistent": func() []byte {
			port++
			return frames.UDP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
				frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: port, DstPort: 53, Payload: []byte("q")})
		},
	}
	// Warm the connection table up: its slab and indexes grow in chunks
	// (amortised, not per packet), which a short run would catch early.
	for i := 0; i < 20000; i++ {
		h.send(mk(80, frames.TCPSeg{SrcPort: uint16(20000 + i), SYN: true}), forwarder.VIPSide)
	}
	// The host-stack RST (the clock moves on so that the rate limit lets
	// every one through) and an ICMP error about an IPIP packet relayed
	// to the client.
	ackOnly := mk(80, frames.TCPSeg{SrcPort: 9, ACK: true, Ack: 5})
	if a := testing.AllocsPerRun(50, func() {
		h.now += 2e6
		if r := h.send(ackOnly, forwarder.VIPSide); r.Action != forwarder.Reply {
			t.Fatalf("rst: %v", r.Action)
		}
	}); a != 0 {
		t.Errorf("rst: %.1f allocations per packet, want 0", a)
	}
	ipip := append([]byte(nil), h.send(tun, forwarder.VIPSide).Frame...)
	tunErr := tunError(3, 4, 1400, ipip)
	if a := testing.AllocsPerRun(50, func() {
		if r := h.send(tunErr, forwarder.DIPSide); r.Action != forwarder.Reply {
			t.Fatalf("tun icmp: %v %v", r.Action, r.Reason)
		}
	}); a != 0 {
		t.Errorf("tun icmp relay: %.1f allocations per packet, want 0", a)
	}
	for name, next := range cases {
		// Build the frames first: only Process is measured.
		fs := make([][]byte, 64)
		for i := range fs {
			fs[i] = next()
		}
		i := 0
		allocs := testing.AllocsPerRun(50, func() {
			h.send(fs[i%len(fs)], forwarder.VIPSide)
			i++
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per packet, want 0", name, allocs)
		}
	}
}

// The flow cache may skip the table for steady packets, but never past a
// deleted real server, never for state-changing segments, and the table's
// timer is re-armed at least once per second of traffic.
func TestFlowCache(t *testing.T) {
	h := newHarness(t, twoNAT)
	h.send(syn(client, 1000), forwarder.VIPSide)
	r := h.send(ack(client, 1000), forwarder.VIPSide) // ESTABLISHED: cacheable
	if r.State != conntrack.StateEstablished {
		t.Fatalf("state %v", r.State)
	}
	d := r.Dest
	// Steady ACKs for 10 minutes, 0.5 s apart: the connection (900 s) never
	// expires, whether a packet takes the cache or the table.
	for i := 0; i < 1200; i++ {
		h.now += int64(500 * time.Millisecond)
		h.conns.Expire(h.now)
		if r := h.send(ack(client, 1000), forwarder.VIPSide); r.Action != forwarder.Transmit || r.New {
			t.Fatalf("ack %d: %v new=%v", i, r.Action, r.New)
		}
	}
	var c conntrack.Conn
	k := conntrack.InKeyV4(ipvs.ProtoTCP, client.As4(), 1000, vip.As4(), 80)
	if !h.conns.PeekIn(k, h.now, &c) || c.Remaining(h.now) < 899*time.Second {
		t.Fatalf("table timer not re-armed by cached traffic: %v left", c.Remaining(h.now))
	}
	// A FIN always goes to the table.
	fin := frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 1000, DstPort: 80, FIN: true, ACK: true})
	if r := h.send(fin, forwarder.VIPSide); r.State != conntrack.StateCloseWait {
		t.Fatalf("FIN: state %v, want CLOSE_WAIT", r.State)
	}
	if d.ActiveConns.Load() != 0 || d.InactConns.Load() != 1 {
		t.Fatalf("counters after FIN: %d/%d", d.ActiveConns.Load(), d.InactConns.Load())
	}

	// A cached flow whose real server is deleted stops at once.
	h.send(syn(client, 2000), forwarder.VIPSide)
	r = h.send(ack(client, 2000), forwarder.VIPSide)
	h.apply("-d -t 198.51.100.10:80 -r " + r.Dest.AddrPort().String())
	if r := h.send(ack(client, 2000), forwarder.VIPSide); r.Action != forwarder.Drop || r.Reason != forwarder.DestRemoved {
		t.Fatalf("cached flow of a deleted real server: %v %v", r.Action, r.Reason)
	}
}

// A UDP flow's idle timeout is measured from the last packet the table saw:
// at most a second earlier than IPVS's (the documented flow-cache slack).
func TestFlowCacheUDPTimeout(t *testing.T) {
	h := newHarness(t, "-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m\n")
	q := frames.UDP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 5000, DstPort: 53, Payload: []byte("q")})
	h.send(q, forwarder.VIPSide)
	h.now += int64(400 * time.Millisecond)
	h.send(q, forwarder.VIPSide) // cached: the table still says t0 + 300 s
	h.now += int64(298*time.Second + 500*time.Millisecond)
	h.conns.Expire(h.now)
	if r := h.send(q, forwarder.VIPSide); r.New {
		t.Fatal("UDP connection gone before its 300 s")
	}
	h.now += int64(301 * time.Second)
	h.conns.Expire(h.now)
	if r := h.send(q, forwarder.VIPSide); !r.New {
		t.Fatal("UDP connection alive after 301 s of silence")
	}
}

// A GUE or GRE tunnel real server is not sent IPIP it cannot decapsulate.
func TestTunTypeUnsupported(t *testing.T) {
	h := newHarness(t, "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -i --tun-type gue --tun-port 6080\n")
	r := h.send(syn(client, 1), forwarder.VIPSide)
	if r.Action != forwarder.Drop || r.Reason != forwarder.TunTypeUnsupported || r.Reason.String() != "tun_type_unsupported" {
		t.Fatalf("%v %v", r.Action, r.Reason)
	}
}

// The pipeline hands rewrite's parsed TCP flag byte to conntrack unchanged:
// both packages name the same header bits (they are siblings and do not
// import each other).
func TestTCPFlagBitsAgree(t *testing.T) {
	pairs := [][2]uint8{{conntrack.TCPFin, rewrite.TCPFin}, {conntrack.TCPSyn, rewrite.TCPSyn}, {conntrack.TCPRst, rewrite.TCPRst}, {conntrack.TCPAck, rewrite.TCPAck}}
	for _, p := range pairs {
		if p[0] != p[1] {
			t.Fatalf("conntrack and rewrite disagree on a TCP flag bit: %#x vs %#x", p[0], p[1])
		}
	}
}

// movingEnv is a StaticEnv whose next hops can change: a real server may
// move to another MAC, announced by a new generation (or, without
// generations, not announced at all).
type movingEnv struct {
	static *staticenv.Env // not embedded: its Generation would be promoted
	gen    uint64
	mac    [6]byte // when non-zero, every next hop's MAC
	routes int     // Route calls
}

func (e *movingEnv) Route(dst netip.Addr) (forwarder.Hop, bool) {
	e.routes++
	h, ok := e.static.Route(dst)
	if e.mac != ([6]byte{}) {
		h.MAC = e.mac
	}
	return h, ok
}

func (e *movingEnv) Links() *[2]forwarder.Link { return e.static.Links() }

type genEnv struct{ *movingEnv }

func (e genEnv) Generation() uint64 { return e.gen }

// Cached flows keep their next hop only while the Env's generation stands:
// after a change every packet, cached or not, in either direction, leaves
// with the new answer. An Env without generations is asked every time.
func TestTransmitPlanFollowsRoutes(t *testing.T) {
	const rules = "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n"
	moved := [6]byte{0x02, 0xaa, 0, 0, 0, 1}
	for _, withGen := range []bool{true, false} {
		t.Run(map[bool]string{true: "generations", false: "no generations"}[withGen], func(t *testing.T) {
			static, err := staticenv.New(staticenv.DefaultFacts())
			if err != nil {
				t.Fatal(err)
			}
			me := &movingEnv{static: static}
			var env forwarder.Env = me
			if withGen {
				env = genEnv{me}
			}
			table, err := replay.ParseRules(strings.NewReader(rules), "rules")
			if err != nil {
				t.Fatal(err)
			}
			pl := forwarder.New(forwarder.Config{Env: env, Services: table, Conns: conntrack.New(conntrack.Config{Seed: 1})})
			h := &harness{t: t, table: table, pl: pl, w: pl.NewWorker(), buf: make([]byte, 4096), now: int64(time.Hour)}
			reply := frames.TCP(frames.L2{Src: frames.DerivedMAC(rs1), Dst: frames.DerivedMAC(dip)},
				frames.IP{Src: rs1, Dst: client}, frames.TCPSeg{SrcPort: 8080, DstPort: 1000, ACK: true})
			h.send(syn(client, 1000), forwarder.VIPSide)
			h.send(ack(client, 1000), forwarder.VIPSide) // ESTABLISHED: cached from now on
			h.send(reply, forwarder.DIPSide)
			check := func(step string, wantIn, wantOut [6]byte) {
				t.Helper()
				for i := 0; i < 3; i++ {
					r := h.send(ack(client, 1000), forwarder.VIPSide)
					if r.Action != forwarder.Transmit || [6]byte(r.Frame[:6]) != wantIn {
						t.Fatalf("%s: client packet %d: %v to %x, want transmit to %x", step, i, r.Action, r.Frame[:6], wantIn)
					}
					r = h.send(reply, forwarder.DIPSide)
					if r.Action != forwarder.Transmit || [6]byte(r.Frame[:6]) != wantOut {
						t.Fatalf("%s: reply %d: %v to %x, want transmit to %x", step, i, r.Action, r.Frame[:6], wantOut)
					}
				}
			}
			check("before", staticenv.DerivedMAC(rs1), staticenv.DerivedMAC(client))
			me.mac = moved
			if withGen {
				me.gen++
			}
			before := me.routes
			check("after the move", moved, moved)
			if !withGen && me.routes-before != 6 {
				t.Fatalf("without generations: %d Route calls for 6 packets, want one each", me.routes-before)
			}
			if withGen && me.routes-before != 2 {
				t.Fatalf("with generations: %d Route calls for 6 packets of 2 destinations, want 2", me.routes-before)
			}
		})
	}
}

// A connection started afresh on another real server (conn_reuse_mode)
// does not inherit the old connection's cached next hop.
func TestConnReuseNewNextHop(t *testing.T) {
	h := newHarness(t, twoNAT)
	first := h.send(syn(client, 1000), forwarder.VIPSide).Dest
	for i := 0; i < 3; i++ { // ESTABLISHED and cached
		h.send(ack(client, 1000), forwarder.VIPSide)
	}
	rst := frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 1000, DstPort: 80, RST: true, Seq: 2})
	h.send(rst, forwarder.VIPSide)
	second := h.send(syn(client, 1000), forwarder.VIPSide).Dest
	if second == first {
		t.Fatal("the new connection went to the same real server")
	}
	for i := 0; i < 3; i++ {
		r := h.send(ack(client, 1000), forwarder.VIPSide)
		if r.Dest != second || [6]byte(r.Frame[:6]) != staticenv.DerivedMAC(second.Addr) ||
			netip.AddrFrom4([4]byte(r.Frame[30:34])) != second.Addr {
			t.Fatalf("ack %d: to %v (MAC %x, IP %v), want %v", i, r.Dest.Addr, r.Frame[:6], netip.AddrFrom4([4]byte(r.Frame[30:34])), second.Addr)
		}
	}
}
