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
	b := &fastBed{flows: f, progs: map[[6]byte]*Program{}}
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
	// The cases about steady NAT and DR traffic must exercise the fast
	// path, in both NAT directions.
	for _, c := range []string{"nat-tcp", "nat-udp", "dr-tcp"} {
		if hits[c] == 0 {
			t.Errorf("%s: no frame took the fast path", c)
		}
	}
}

func fastCase(t *testing.T, dir string) (hits int) {
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
	pl := forwarder.New(forwarder.Config{Env: env, Services: table, Conns: conns, Settings: ipvs.NewSettings()})
	w := pl.NewWorker()

	raw, err := os.ReadFile(filepath.Join(dir, "in.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	ng, err := pcapgo.NewNgReader(bytes.NewReader(raw), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	linkOf := func(i int) int {
		if intf, err := ng.Interface(i); err == nil {
			for side := range links {
				if intf.Name != "" && intf.Name == links[side].Name {
					return side
				}
			}
		}
		if i == forwarder.DIPSide {
			return forwarder.DIPSide
		}
		return forwarder.VIPSide
	}
	type entry struct {
		out  bool
		dest *ipvs.Dest
	}
	installed := map[FlowKey]FlowPlan{}
	entries := map[FlowKey]entry{}
	remove := func(k FlowKey) {
		var p FlowPlan
		if bed.flows.Remove(&k, &p) {
			delete(installed, k)
			delete(entries, k)
		}
	}
	buf := make([]byte, forwarder.Headroom+65536)
	for i := 0; ; i++ {
		data, ci, err := ng.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		now := ci.Timestamp.UnixNano()
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
		verdict, xout := bed.run(t, in)
		n := copy(buf[forwarder.Headroom:], data)
		r := w.Process(buf, forwarder.Headroom, n, linkOf(ci.InterfaceIndex), false, now)
		if verdict == xdpRedirect {
			// The fast path took it: it must be the pipeline's
			// transmission, byte for byte.
			hits++
			if r.Action != forwarder.Transmit || r.Frags != 0 {
				t.Fatalf("frame %d: the fast path forwarded it, the pipeline's action is %v (%v)", i, r.Action, r.Reason)
			}
			if !bytes.Equal(xout, r.Frame) {
				t.Fatalf("frame %d: the fast path's frame differs from the pipeline's:\nxdp  %x\ngo   %x", i, xout, r.Frame)
			}
			p := installed[key]
			var got FlowPlan
			ipLen := uint64(binary.BigEndian.Uint16(in[16:]))
			if !bed.flows.Lookup(&key, &got) || got.Packets != p.Packets+1 || got.Bytes != p.Bytes+ipLen || got.Seen <= p.Seen {
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
		plan, ok := PlanFor(&key, r.Frame, m, r.Link+1, hop.MTU)
		if !ok {
			t.Fatalf("frame %d: no plan from the pipeline's output %x", i, r.Frame)
		}
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		plan.Seen, plan.Timeout = uint64(ts.Nano()), uint64(time.Hour)
		if _, err := bed.flows.Install(&key, &plan); err != nil {
			t.Fatal(err)
		}
		installed[key] = plan
		entries[key] = entry{out: r.Out, dest: r.Dest}
		// The frame the plan came from, through the program: the same
		// bytes, or (a packet the fast path leaves to the pipeline,
		// such as a UDP datagram without a checksum) untouched.
		verdict, xout = bed.run(t, in)
		switch {
		case verdict == xdpPass && bytes.Equal(xout[:len(in)], in):
		case verdict != xdpRedirect || !bytes.Equal(xout, r.Frame):
			t.Fatalf("frame %d: after install, verdict %d and frame\nxdp  %x\ngo   %x", i, verdict, xout, r.Frame)
		default:
			var got FlowPlan
			if !bed.flows.Lookup(&key, &got) || got.Packets != 1 || got.Ifindex != uint32(r.Link+1) {
				t.Fatalf("frame %d: plan %+v after one packet", i, got)
			}
			installed[key] = got
			hits++
		}
	}
	return hits
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
	plan, ok := PlanFor(&key, out, FastNATIn, 7, 1500)
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
		p.Seen, p.Timeout, p.MTU = c.seen, c.timeout, c.mtu
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

// fillFlows installs n distinct flows (plan i carries i in Packets).
func fillFlows(tb testing.TB, f *FlowMap, n int) {
	tb.Helper()
	for i := range n {
		k := FlowKey{Src: [4]byte{198, 18, byte(i >> 8), byte(i)}, Dst: [4]byte{198, 18, 0, 10}, DstPort: [2]byte{0, 53}, Proto: protoUDP}
		binary.BigEndian.PutUint16(k.SrcPort[:], uint16(1024+i))
		p := FlowPlan{Method: FastNATIn, Ifindex: 1, MTU: 1500, Packets: uint64(i)}
		if ok, err := f.Install(&k, &p); !ok || err != nil {
			tb.Fatalf("install %d: %v %v", i, ok, err)
		}
	}
}

// TestFlowMapReadAll: the batch read returns every entry once, with its
// plan, across several chunks, into reused buffers.
func TestFlowMapReadAll(t *testing.T) {
	bed := newFastBed(t)
	keys, plans, err := bed.flows.ReadAll(nil, nil)
	if err != nil || len(keys) != 0 || len(plans) != 0 {
		t.Fatalf("empty map: %d keys, %d plans, %v", len(keys), len(plans), err)
	}
	const n = 2*readChunk + 77
	fillFlows(t, bed.flows, n)
	for range 2 { // the second read reuses the first's buffers
		keys, plans, err = bed.flows.ReadAll(keys[:0], plans[:0])
		if err != nil || len(keys) != n || len(plans) != n {
			t.Fatalf("%d entries: read %d keys, %d plans, %v", n, len(keys), len(plans), err)
		}
		seen := map[FlowKey]bool{}
		for i, k := range keys {
			if seen[k] {
				t.Fatalf("key %v read twice", k)
			}
			seen[k] = true
			want := uint64(binary.BigEndian.Uint16(k.SrcPort[:]) - 1024)
			if plans[i].Packets != want || plans[i].Method != FastNATIn {
				t.Fatalf("key %v: plan %+v, want Packets %d", k, plans[i], want)
			}
		}
	}
}

// BenchmarkFlowMapFold compares the fold's two ways of reading 10k
// entries: one Lookup per entry, and ReadAll (ns/op: one whole read).
func BenchmarkFlowMapFold(b *testing.B) {
	const n = 10000
	f, err := NewFlowMap()
	if err != nil {
		b.Skipf("cannot create the flow map: %v", err)
	}
	defer f.Close()
	fillFlows(b, f, n)
	keys, plans, err := f.ReadAll(nil, nil)
	if err != nil || len(keys) != n {
		b.Fatalf("%d %v", len(keys), err)
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
	b.Run("batch", func(b *testing.B) {
		for range b.N {
			if keys, plans, err = f.ReadAll(keys[:0], plans[:0]); err != nil || len(keys) != n {
				b.Fatalf("%d %v", len(keys), err)
			}
		}
	})
}
