package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/forwarder/replay"
	"gvs/forwarder/staticenv"
	"gvs/internal/frames"
	"gvs/ipvs"
)

const replayDir = "../../testdata/replay"

// fastBed is a flow map and one test program per director MAC address
// (the programs of the VIP and the DIP interface share the map, as in
// gvsd).
type fastBed struct {
	flows *FlowMap
	progs map[[6]byte]*Program
	ids   *uint32 // the worker's IPv4 ID counter (one slot)
}

func newFastBed(t *testing.T, macs ...[6]byte) *fastBed {
	t.Helper()
	f, err := NewFlowMap()
	if err != nil {
		if os.Getenv("CI") == "true" || !errors.Is(err, unix.EPERM) {
			t.Fatalf("cannot create the flow map: %v", err)
		}
		t.Skipf("cannot create the flow map: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	ids, err := f.IDCounters(1)
	if err != nil {
		t.Fatal(err)
	}
	b := &fastBed{flows: f, progs: map[[6]byte]*Program{}, ids: ids[0]}
	for _, mac := range macs {
		if b.progs[mac] != nil {
			continue
		}
		p, err := load(mac, false, f)
		if err != nil {
			t.Fatalf("cannot load the XDP program with the fast path: %v", err)
		}
		t.Cleanup(func() { p.Close() })
		b.progs[mac] = p
	}
	return b
}

// run runs frame through the program of the MAC it is addressed to and
// returns the verdict and the frame after the program.
// arm readies counter slot i for a new flow last seen at seen.
func (b *fastBed) arm(i uint32, seen uint64) {
	c := b.flows.Counters(i)
	atomic.StoreUint64(&c.Packets, 0)
	atomic.StoreUint64(&c.Bytes, 0)
	atomic.StoreUint64(&c.Seen, seen)
}

// counters reads counter slot i.
func (b *fastBed) counters(i uint32) FlowCounters {
	c := b.flows.Counters(i)
	return FlowCounters{atomic.LoadUint64(&c.Packets), atomic.LoadUint64(&c.Bytes), atomic.LoadUint64(&c.Seen)}
}

func (b *fastBed) run(t *testing.T, frame []byte) (uint32, []byte) {
	t.Helper()
	if len(frame) < 14 { // BPF_PROG_TEST_RUN wants an Ethernet header
		return xdpPass, frame
	}
	p := b.progs[[6]byte(frame[:6])]
	if p == nil {
		return xdpPass, frame
	}
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	v, err := p.prog.Run(opts)
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return v, opts.DataOut
}

// fastMethod is the fast-path method of a transmitted Result (0: none).
func fastMethod(r *forwarder.Result) uint8 {
	switch {
	case r.Method == ipvs.Masq && r.Out:
		return FastNATOut
	case r.Method == ipvs.Masq:
		return FastNATIn
	case r.Method == ipvs.Route && !r.Out:
		return FastDR
	case r.Method == ipvs.Tunnel && !r.Out:
		return FastTUN
	}
	return 0
}

// TestFastPathGolden is the fast path's equivalence proof: every golden
// replay case runs through the Go pipeline, and every input frame also
// through the XDP program (BPF_PROG_TEST_RUN) with the flow map as gvsd
// keeps it (a flow's plan installed from the pipeline's output for its
// first steady packet, removed when its connection leaves the steady
// state). Whatever the program forwards must be byte for byte what the
// pipeline transmits; what it does not forward it must leave untouched.
func TestFastPathGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(replayDir, "*", "in.pcapng"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no replay cases in %s: %v", replayDir, err)
	}
	hits := map[string]int{}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			hits[name] = fastCase(t, dir)
			t.Logf("%d frames took the fast path", hits[name])
		})
	}
	// The cases about steady NAT, DR and TUN traffic must exercise the
	// fast path, in both NAT directions.
	for _, c := range []string{"nat-tcp", "nat-udp", "dr-tcp", "tun-tcp"} {
		if hits[c] == 0 {
			t.Errorf("%s: no frame took the fast path", c)
		}
	}
}

// fastFrame is a frame of a case: its bytes, arrival time and link.
type fastFrame struct {
	data []byte
	now  int64
	link int
}

func fastCase(t *testing.T, dir string) (hits int) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "in.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	ng, err := pcapgo.NewNgReader(bytes.NewReader(raw), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	var in []fastFrame
	var names []string
	for {
		data, ci, err := ng.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := ""
		if intf, err := ng.Interface(ci.InterfaceIndex); err == nil {
			name = intf.Name
		}
		names = append(names, name)
		in = append(in, fastFrame{data: data, now: ci.Timestamp.UnixNano(), link: ci.InterfaceIndex})
	}
	hits, _ = fastReplay(t, dir, ipvs.NewSettings(), in, names)
	return hits
}

// fastReplay runs frames (with the names of the interfaces they arrived
// on, "" when unknown) through the pipeline and the program for case dir
// (its rules, facts.json, conn-capacity) with settings set. hits counts
// the frames the program forwarded (the frame a plan was made from, run
// again, included); fwd[i] tells whether frame i was forwarded as it came.
func fastReplay(t *testing.T, dir string, set *ipvs.Settings, frames []fastFrame, ifnames []string) (hits int, fwd []bool) {
	t.Helper()
	table, err := replay.LoadRules(filepath.Join(dir, "rules"))
	if err != nil {
		t.Fatal(err)
	}
	facts := staticenv.DefaultFacts()
	if _, err := os.Stat(filepath.Join(dir, "facts.json")); err == nil {
		if facts, err = staticenv.LoadFacts(filepath.Join(dir, "facts.json")); err != nil {
			t.Fatal(err)
		}
	}
	capacity := 0
	if b, err := os.ReadFile(filepath.Join(dir, "conn-capacity")); err == nil {
		if capacity, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatal(err)
		}
	}
	env, err := staticenv.New(facts)
	if err != nil {
		t.Fatal(err)
	}
	links := env.Links()
	bed := newFastBed(t, links[0].MAC, links[1].MAC)
	conns := conntrack.New(conntrack.Config{Seed: replay.Seed, Capacity: capacity, Shards: 16})
	pl := forwarder.New(forwarder.Config{Env: env, Services: table, Conns: conns, Settings: set})
	w := pl.NewWorker()
	// The program draws TUN's IPv4 IDs from the worker's counter.
	w.ShareIPID(bed.ids)
	flags := uint8(FlagCopyDF)
	if set.Get(ipvs.SysPmtuDisc) == 0 {
		flags = 0
	}

	linkOf := func(i int) int {
		for side := range links {
			if ifnames[i] != "" && ifnames[i] == links[side].Name {
				return side
			}
		}
		if frames[i].link == forwarder.DIPSide {
			return forwarder.DIPSide
		}
		return forwarder.VIPSide
	}
	type entry struct {
		out  bool
		dest *ipvs.Dest
	}
	installed := map[FlowKey]FlowCounters{} // the counters after the last packet
	slots := map[FlowKey]uint32{}
	var nextSlot uint32 // never reused here
	entries := map[FlowKey]entry{}
	remove := func(k FlowKey) {
		var p FlowPlan
		if bed.flows.Remove(&k, &p) {
			if p.Slot != slots[k] {
				t.Fatalf("flow %v: removed plan's slot %d, installed %d", k, p.Slot, slots[k])
			}
			delete(installed, k)
			delete(entries, k)
			delete(slots, k)
		}
	}
	buf := make([]byte, forwarder.Headroom+65536)
	fwd = make([]bool, len(frames))
	for i, f := range frames {
		data, now := f.data, f.now
		conns.Expire(now)
		// The daemon's fold: an entry whose connection expired or left
		// the steady state goes.
		for k, e := range entries {
			var c conntrack.Conn
			sp, dp := k.Ports()
			var alive bool
			if e.out {
				alive = conns.PeekOut(conntrack.ReplyKeyV4(ipvs.Protocol(k.Proto), k.Src, sp, k.Dst, dp), now, &c)
			} else {
				alive = conns.PeekIn(conntrack.InKeyV4(ipvs.Protocol(k.Proto), k.Src, sp, k.Dst, dp), now, &c)
			}
			if !alive || c.Dest != e.dest || (c.State != conntrack.StateEstablished && c.State != conntrack.StateUDP) {
				remove(k)
			}
		}
		in := bytes.Clone(data)
		key, steady, keyOK := FrameKey(in)
		// The program, then the pipeline, from the same IPv4 ID counter:
		// a frame the program forwards must take the IDs the pipeline
		// takes for it.
		id0 := atomic.LoadUint32(bed.ids)
		verdict, xout := bed.run(t, in)
		idX := atomic.LoadUint32(bed.ids)
		atomic.StoreUint32(bed.ids, id0)
		n := copy(buf[forwarder.Headroom:], data)
		r := w.Process(buf, forwarder.Headroom, n, linkOf(i), false, now)
		id1 := atomic.LoadUint32(bed.ids)
		if verdict != xdpRedirect && idX != id0 {
			t.Fatalf("frame %d: the program did not forward it but took IPv4 IDs %d..%d", i, id0, idX)
		}
		if verdict == xdpRedirect && idX != id1 {
			t.Fatalf("frame %d: the program took IPv4 IDs up to %d, the pipeline up to %d", i, idX, id1)
		}
		if verdict == xdpRedirect {
			// The fast path took it: it must be the pipeline's
			// transmission, byte for byte.
			hits++
			fwd[i] = true
			if r.Action != forwarder.Transmit || r.Frags != 0 {
				t.Fatalf("frame %d: the fast path forwarded it, the pipeline's action is %v (%v)", i, r.Action, r.Reason)
			}
			if !bytes.Equal(xout, r.Frame) {
				t.Fatalf("frame %d: the fast path's frame differs from the pipeline's:\nxdp  %x\ngo   %x", i, xout, r.Frame)
			}
			p := installed[key]
			got := bed.counters(slots[key])
			ipLen := uint64(binary.BigEndian.Uint16(in[16:]))
			if got.Packets != p.Packets+1 || got.Bytes != p.Bytes+ipLen || got.Seen <= p.Seen {
				t.Fatalf("frame %d: counters %d packets %d bytes (seen %d), want %d, %d (after %d)", i, got.Packets, got.Bytes, got.Seen, p.Packets+1, p.Bytes+ipLen, p.Seen)
			}
			installed[key] = got
		} else if !bytes.Equal(xout[:len(in)], in) || verdict != xdpPass {
			t.Fatalf("frame %d: the program did not forward it (verdict %d) but changed it", i, verdict)
		}
		if !keyOK || r.Dest == nil {
			continue
		}
		// The daemon's upkeep of the map (daemon/fastpath_linux.go).
		stable := r.State == conntrack.StateEstablished || r.State == conntrack.StateUDP
		m := fastMethod(&r)
		if r.Action == forwarder.Transmit && r.Frags == 0 && m != 0 && !stable {
			remove(key)
			if fk, _, ok := FrameKey(r.Frame); ok {
				remove(fk.Reverse())
			}
			continue
		}
		if !stable || r.New {
			remove(key)
			continue
		}
		if r.Action != forwarder.Transmit || r.Frags != 0 || !steady || m == 0 {
			continue
		}
		if _, ok := installed[key]; ok {
			continue
		}
		dst := r.Dest.Addr
		if r.Out {
			dst = netip.AddrFrom4(key.Dst)
		}
		hop, ok := env.Route(dst)
		if !ok {
			t.Fatalf("frame %d: no route to %v", i, dst)
		}
		plan, ok := PlanFor(&key, r.Frame, m, r.Link+1, hop.MTU, flags)
		if !ok {
			t.Fatalf("frame %d: no plan from the pipeline's output %x", i, r.Frame)
		}
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		plan.Slot, plan.Timeout = nextSlot, uint64(time.Hour)
		nextSlot++
		bed.arm(plan.Slot, uint64(ts.Nano()))
		if _, err := bed.flows.Install(&key, &plan); err != nil {
			t.Fatal(err)
		}
		installed[key] = bed.counters(plan.Slot)
		slots[key] = plan.Slot
		entries[key] = entry{out: r.Out, dest: r.Dest}
		// The frame the plan came from, through the program: the same
		// bytes (and IPv4 IDs), or (a packet the fast path leaves to
		// the pipeline, such as a UDP datagram without a checksum)
		// untouched.
		atomic.StoreUint32(bed.ids, id0)
		verdict, xout = bed.run(t, in)
		idX = atomic.LoadUint32(bed.ids)
		atomic.StoreUint32(bed.ids, id1)
		switch {
		case verdict == xdpPass && bytes.Equal(xout[:len(in)], in) && idX == id0:
		case verdict != xdpRedirect || !bytes.Equal(xout, r.Frame) || idX != id1:
			t.Fatalf("frame %d: after install, verdict %d and frame\nxdp  %x\ngo   %x", i, verdict, xout, r.Frame)
		default:
			var p FlowPlan
			got := bed.counters(plan.Slot)
			if !bed.flows.Lookup(&key, &p) || got.Packets != 1 || p.Ifindex != uint32(r.Link+1) {
				t.Fatalf("frame %d: plan %+v, counters %+v after one packet", i, p, got)
			}
			installed[key] = got
			hits++
		}
	}
	return hits, fwd
}

// TestFastPathDeclines: a hit the pipeline must handle (idle past its
// timeout, larger than the egress MTU, TTL 1, a FIN) is left untouched.
func TestFastPathDeclines(t *testing.T) {
	ours := frames.MAC{0x02, 0, 0, 0, 0, 1}
	bed := newFastBed(t, ours)
	client, vip := netip.MustParseAddr("198.18.0.99"), netip.MustParseAddr("198.18.0.10")
	l2 := frames.L2{Src: frames.MAC{0x02, 0, 0, 0, 0, 9}, Dst: ours}
	ack := frames.TCP(l2, frames.IP{Src: client, Dst: vip, TTL: 64}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, ACK: true})
	key, steady, ok := FrameKey(ack)
	if !ok || !steady {
		t.Fatal("an ACK is a steady packet")
	}
	out := bytes.Clone(ack)
	copy(out[30:34], []byte{198, 19, 0, 2})
	plan, ok := PlanFor(&key, out, FastNATIn, 7, 1500, 0)
	if !ok {
		t.Fatal("no plan")
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	now := uint64(ts.Nano())
	for _, c := range []struct {
		name    string
		frame   []byte
		seen    uint64
		timeout uint64
		mtu     uint32
		want    uint32
	}{
		{"steady", ack, now, uint64(time.Hour), 1500, xdpRedirect},
		{"idle past the timeout", ack, now - uint64(2*time.Hour), uint64(time.Hour), 1500, xdpPass},
		{"too big", ack, now, uint64(time.Hour), 39, xdpPass},
		{"ttl 1", frames.TCP(l2, frames.IP{Src: client, Dst: vip, TTL: 1}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, ACK: true}), now, uint64(time.Hour), 1500, xdpPass},
		{"fin", frames.TCP(l2, frames.IP{Src: client, Dst: vip, TTL: 64}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, ACK: true, FIN: true}), now, uint64(time.Hour), 1500, xdpPass},
	} {
		var old FlowPlan
		bed.flows.Remove(&key, &old)
		p := plan
		p.Slot, p.Timeout, p.MTU = 3, c.timeout, c.mtu
		bed.arm(p.Slot, c.seen)
		if _, err := bed.flows.Install(&key, &p); err != nil {
			t.Fatal(err)
		}
		got, xout := bed.run(t, c.frame)
		if got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
		if got == xdpPass && !bytes.Equal(xout[:len(c.frame)], c.frame) {
			t.Errorf("%s: declined but changed", c.name)
		}
	}
}

// TestFastPathFragments: a flow with a fast-path plan still sends its
// fragments (first, middle, last) to the AF_XDP socket, untouched and not
// counted, for the pipeline's reassembly; only its unfragmented packets
// take the fast path.
func TestFastPathFragments(t *testing.T) {
	ours := frames.MAC{0x02, 0, 0, 0, 0, 1}
	bed := newFastBed(t, ours)
	client, vip := netip.MustParseAddr("198.18.0.99"), netip.MustParseAddr("198.18.0.10")
	if err := bed.progs[ours].SetRules([]Rule{
		{Dst: true, Addr: vip, Proto: protoUDP, Port: 53},
		{Frags: true, Dst: true, Addr: vip, Proto: protoUDP},
	}, false); err != nil {
		t.Fatal(err)
	}
	l2 := frames.L2{Src: frames.MAC{0x02, 0, 0, 0, 0, 9}, Dst: ours}
	dgram := frames.UDP(l2, frames.IP{Src: client, Dst: vip, TTL: 64, ID: 77}, frames.UDPDgram{SrcPort: 5000, DstPort: 53, Payload: make([]byte, 64)})
	packets := bed.natInPlan(t, dgram, MaxFlows-1)
	// The unfragmented datagram: the fast path's (rewritten, counted).
	if v, x := bed.run(t, dgram); v != xdpRedirect || bytes.Equal(x[:len(dgram)], dgram) || packets() != 1 {
		t.Fatalf("unfragmented datagram: verdict %d, rewritten %v, %d packets; want the fast path", v, !bytes.Equal(x[:len(dgram)], dgram), packets())
	}
	for _, c := range []struct {
		name    string
		mf      bool
		off     uint16
		trimUDP bool
	}{
		{"first fragment", true, 0, false},
		{"middle fragment", true, 185, false},
		{"last fragment", false, 370, false},
		{"first fragment, short", true, 0, true},
	} {
		f := fragment(dgram, c.mf, c.off)
		if c.trimUDP {
			f = f[:36]
		}
		v, x := bed.run(t, f)
		if v != xdpRedirect || !bytes.Equal(x[:len(f)], f) {
			t.Errorf("%s: verdict %d, changed %v; want the socket's (redirect, untouched)", c.name, v, !bytes.Equal(x[:len(f)], f))
		}
	}
	if n := packets(); n != 1 {
		t.Errorf("the plan counted %d packets, want 1 (fragments are not the fast path's)", n)
	}
}

// TestFastPathPriorityTagged: a priority-tagged frame (VLAN ID 0) of a
// flow with a fast-path plan goes to the socket, untagged and otherwise
// untouched, and is not counted: the fast path rewrites untagged frames
// only. Passed to the kernel (no rule), it keeps its tag.
func TestFastPathPriorityTagged(t *testing.T) {
	ours := frames.MAC{0x02, 0, 0, 0, 0, 1}
	bed := newFastBed(t, ours)
	client, vip := netip.MustParseAddr("198.18.0.99"), netip.MustParseAddr("198.18.0.10")
	l2 := frames.L2{Src: frames.MAC{0x02, 0, 0, 0, 0, 9}, Dst: ours}
	ack := frames.TCP(l2, frames.IP{Src: client, Dst: vip, TTL: 64}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, ACK: true, Payload: make([]byte, 32)})
	packets := bed.natInPlan(t, ack, MaxFlows-2)
	tagged := withTag(ack, 0x8100, 5<<13)
	// No rule: the kernel's, tag and all.
	if v, x := bed.run(t, tagged); v != xdpPass || !bytes.Equal(x, tagged) || packets() != 0 {
		t.Errorf("priority-tagged ACK, no rule: verdict %d, changed %v, %d packets; want passed untouched", v, !bytes.Equal(x, tagged), packets())
	}
	if err := bed.progs[ours].SetRules([]Rule{{Dst: true, Addr: vip, Proto: protoTCP, Port: 80}}, false); err != nil {
		t.Fatal(err)
	}
	if v, x := bed.run(t, tagged); v != xdpRedirect || !bytes.Equal(x, ack) || packets() != 0 {
		t.Errorf("priority-tagged ACK: verdict %d, untagged and untouched %v, %d packets; want the socket's", v, bytes.Equal(x, ack), packets())
	}
	// The untagged frame of the same flow is the fast path's.
	if v, x := bed.run(t, ack); v != xdpRedirect || bytes.Equal(x[:len(ack)], ack) || packets() != 1 {
		t.Errorf("untagged ACK: verdict %d, rewritten %v, %d packets; want the fast path", v, !bytes.Equal(x[:len(ack)], ack), packets())
	}
}

// TestFastPathTUN: the outer header of TUN's encapsulation in the program
// is the pipeline's for what the golden cases do not vary: the inner TOS
// with ECN CE (carried as ECT(0)) and without, the inner DF copied with
// net.ipv4.vs.pmtu_disc and cleared without it, IDs from the worker's
// counter interleaved with IDs the pipeline takes (an ICMP time exceeded),
// the largest packet that fits the MTU after encapsulation (forwarded) and
// the smallest that does not (the pipeline's: fragmentation needed or
// fragments), TTL 2, and UDP. Byte for byte, through fastReplay.
func TestFastPathTUN(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(replayDir, "tun-tcp", "in.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	ng, err := pcapgo.NewNgReader(bytes.NewReader(raw), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	syn, _, err := ng.ReadPacketData() // the case's SYN: the client's MAC and addresses
	if err != nil || len(syn) < 34 {
		t.Fatalf("tun-tcp's first frame: %v", err)
	}
	l2 := frames.L2{Src: frames.MAC(syn[6:12]), Dst: frames.MAC(syn[0:6])}
	client, vip := netip.AddrFrom4([4]byte(syn[26:30])), netip.AddrFrom4([4]byte(syn[30:34]))
	dir := t.TempDir()
	rules := "-A -t " + vip.String() + ":80 -s rr\n-a -t " + vip.String() + ":80 -r 198.18.2.11:80 -i -w 1\n" +
		"-A -u " + vip.String() + ":53 -s rr\n-a -u " + vip.String() + ":53 -r 198.18.2.12:53 -i -w 1\n"
	if err := os.WriteFile(filepath.Join(dir, "rules"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	// A payload that makes a TCP/IPv4 packet (20+20 bytes of headers) n
	// bytes long.
	data := func(n int) []byte { return bytes.Repeat([]byte{0x5a}, n-40) }
	const mtu = 1500
	seq := uint32(1000)
	tcp := func(tos uint8, df bool, ttl uint8, size int, syn bool) []byte {
		s := frames.TCPSeg{SrcPort: 40001, DstPort: 80, Seq: seq, Ack: 1, SYN: syn, ACK: !syn}
		if size > 40 {
			s.Payload = data(size)
		}
		seq += uint32(len(s.Payload))
		return frames.TCP(l2, frames.IP{Src: client, Dst: vip, TTL: ttl, TOS: tos, DF: df}, s)
	}
	udp := func(tos uint8, df bool) []byte {
		return frames.UDP(l2, frames.IP{Src: client, Dst: vip, TOS: tos, DF: df}, frames.UDPDgram{SrcPort: 40002, DstPort: 53, Payload: []byte("query")})
	}
	type step struct {
		name  string
		frame []byte
		fast  bool // the program must forward it
	}
	for _, pmtu := range []int64{1, 0} {
		t.Run("pmtu_disc="+strconv.FormatInt(pmtu, 10), func(t *testing.T) {
			seq = 1000
			steps := []step{
				{"syn", tcp(0, true, 64, 40, true), false},
				{"ack (installs)", tcp(0, true, 64, 40, false), false},
				{"ack", tcp(0, true, 64, 40, false), true},
				{"ECN CE, DF", tcp(0x03, true, 64, 40, false), true},
				{"ECN ECT(1), no DF", tcp(0x01, false, 64, 40, false), true},
				{"DSCP and CE, no DF", tcp(0xbb, false, 64, 40, false), true},
				{"DSCP and ECT(0), DF", tcp(0xba, true, 64, 40, false), true},
				{"MTU-20 bytes, DF", tcp(0, true, 64, mtu-20, false), true},
				{"MTU-19 bytes, DF", tcp(0, true, 64, mtu-19, false), false},
				{"MTU-19 bytes, no DF", tcp(0, false, 64, mtu-19, false), false},
				{"TTL 1 (time exceeded: an ID)", tcp(0, true, 1, 40, false), false},
				{"TTL 2", tcp(0, true, 2, 40, false), true},
				{"after an ID the pipeline took", tcp(0x02, false, 64, 100, false), true},
				{"udp (new)", udp(0, false), false},
				{"udp (installs)", udp(0, true), false},
				{"udp, DF, CE", udp(0x03, true), true},
				{"udp, no DF", udp(0, false), true},
			}
			in := make([]fastFrame, len(steps))
			names := make([]string, len(steps))
			for i, s := range steps {
				in[i] = fastFrame{data: s.frame, now: int64(i+1) * int64(time.Millisecond), link: forwarder.VIPSide}
			}
			set := ipvs.NewSettings()
			if err := set.Set(ipvs.SysPmtuDisc, [2]int64{pmtu}); err != nil {
				t.Fatal(err)
			}
			_, fwd := fastReplay(t, dir, set, in, names)
			for i, s := range steps {
				if s.fast && !fwd[i] {
					t.Errorf("frame %d (%s): the program did not forward it", i, s.name)
				}
				if !s.fast && fwd[i] {
					t.Errorf("frame %d (%s): the program forwarded it", i, s.name)
				}
			}
		})
	}
}

// BenchmarkFlowMapFold: what the fold reads of 10k flows (ns/op: one
// whole read): the counter slots in memory (counters); for comparison, the
// plans one Lookup per entry (lookup; the fold before the counter slots
// read every plan, with BPF_MAP_LOOKUP_BATCH in the end: ~1-2.7 ms).
func BenchmarkFlowMapFold(b *testing.B) {
	const n = 10000
	f, err := NewFlowMap()
	if err != nil {
		b.Skipf("cannot create the flow map: %v", err)
	}
	defer f.Close()
	keys := make([]FlowKey, n)
	for i := range n {
		k := FlowKey{Src: [4]byte{198, 18, byte(i >> 8), byte(i)}, Dst: [4]byte{198, 18, 0, 10}, DstPort: [2]byte{0, 53}, Proto: protoUDP}
		binary.BigEndian.PutUint16(k.SrcPort[:], uint16(1024+i))
		p := FlowPlan{Method: FastNATIn, Ifindex: 1, MTU: 1500, Slot: uint32(i)}
		if ok, err := f.Install(&k, &p); !ok || err != nil {
			b.Fatalf("install %d: %v %v", i, ok, err)
		}
		atomic.StoreUint64(&f.Counters(uint32(i)).Packets, uint64(i))
		keys[i] = k
	}
	b.Run("lookup", func(b *testing.B) {
		var p FlowPlan
		for range b.N {
			for i := range keys {
				if !f.Lookup(&keys[i], &p) {
					b.Fatal("missing")
				}
			}
		}
	})
	b.Run("counters", func(b *testing.B) {
		for range b.N {
			var sum uint64
			for i := range uint32(n) {
				c := f.Counters(i)
				sum += atomic.LoadUint64(&c.Packets) + atomic.LoadUint64(&c.Bytes) + atomic.LoadUint64(&c.Seen)
			}
			if sum != n*(n-1)/2 {
				b.Fatalf("sum %d", sum)
			}
		}
	})
}

// natInPlan installs a NAT plan (destination 198.19.0.2, unexpiring,
// counters in slot) for the flow of frame, a steady packet, and returns
// the slot's packet count.
func (b *fastBed) natInPlan(t *testing.T, frame []byte, slot uint32) func() uint64 {
	t.Helper()
	key, steady, ok := FrameKey(frame)
	if !ok || !steady {
		t.Fatal("not a steady packet")
	}
	out := bytes.Clone(frame)
	copy(out[30:34], []byte{198, 19, 0, 2})
	plan, ok := PlanFor(&key, out, FastNATIn, 7, 1500, 0)
	if !ok {
		t.Fatal("no plan")
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	plan.Slot, plan.Timeout = slot, uint64(time.Hour)
	b.arm(plan.Slot, uint64(ts.Nano()))
	if _, err := b.flows.Install(&key, &plan); err != nil {
		t.Fatal(err)
	}
	return func() uint64 { return b.counters(slot).Packets }
}
