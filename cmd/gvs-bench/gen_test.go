package main

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func testStream() udpStream {
	return udpStream{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddr("198.18.1.11"), Dst: netip.MustParseAddr("198.51.100.10"),
		PortLo: 1024, PortHi: 11023, DstPort: 9, FrameLen: 60,
	}
}

// TestGenFrame compares the generator's frames with gopacket's
// serialization of the same headers (checksums computed by gopacket).
func TestGenFrame(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		sport uint16
	}{
		{"min 64B on the wire", 60, 1024},
		{"odd length", 61, 65535},
		{"headers only", headerLen, 1},
		{"full MTU", 1514, 4242},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testStream()
			s.FrameLen = tc.n
			buf := make([]byte, 2048)
			if got := s.frame(buf, tc.sport); got != tc.n {
				t.Fatalf("frame length %d, want %d", got, tc.n)
			}
			eth := &layers.Ethernet{SrcMAC: s.SrcMAC, DstMAC: s.DstMAC, EthernetType: layers.EthernetTypeIPv4}
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP,
				SrcIP: s.Src.AsSlice(), DstIP: s.Dst.AsSlice()}
			udp := &layers.UDP{SrcPort: layers.UDPPort(tc.sport), DstPort: layers.UDPPort(s.DstPort)}
			if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			sb := gopacket.NewSerializeBuffer()
			err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
				eth, ip, udp, gopacket.Payload(bytes.Repeat([]byte{0x61}, tc.n-headerLen)))
			if err != nil {
				t.Fatal(err)
			}
			want := sb.Bytes()
			// gopacket pads the Ethernet frame to 60 bytes; the generator
			// sends what it is asked for (veth does not pad).
			if len(want) > tc.n && tc.n < 60 && bytes.Count(want[tc.n:], []byte{0}) == len(want)-tc.n {
				want = want[:tc.n]
			}
			if !bytes.Equal(buf[:tc.n], want) {
				t.Fatalf("frame differs from the reference:\n got %x\nwant %x", buf[:tc.n], want)
			}
		})
	}
}

func TestGenFrameRejects(t *testing.T) {
	s := testStream()
	if n := s.frame(make([]byte, 59), 1); n != 0 {
		t.Errorf("short buffer: wrote %d bytes", n)
	}
	s.FrameLen = headerLen - 1
	if n := s.frame(make([]byte, 100), 1); n != 0 {
		t.Errorf("frame shorter than its headers: wrote %d bytes", n)
	}
	s = testStream()
	s.SrcMAC = nil
	if n := s.frame(make([]byte, 100), 1); n != 0 {
		t.Errorf("no source MAC: wrote %d bytes", n)
	}
}

// TestPacer checks that frames are spread over time, not sent a second's
// worth at once (what trafgen -b does), and that the schedule catches up
// after a late wake-up and stops at the limit.
func TestPacer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		at   time.Duration
		max  int
		want int
	}
	for _, tc := range []struct {
		name  string
		rate  float64
		limit uint64
		steps []step
	}{
		{"nothing due at start", 40000, 0, []step{{0, 256, 0}, {-time.Millisecond, 256, 0}}},
		{"even ticks at 40k", 40000, 0, []step{{250 * time.Microsecond, 256, 10}, {500 * time.Microsecond, 256, 10}, {750 * time.Microsecond, 256, 10}}},
		{"late wake-up catches up in capped batches", 100000, 0, []step{
			{10 * time.Millisecond, 256, 256}, {10 * time.Millisecond, 256, 256}, {10 * time.Millisecond, 256, 256},
			{10 * time.Millisecond, 256, 232}, {10 * time.Millisecond, 256, 0}}},
		{"limit", 100000, 150, []step{{time.Millisecond, 256, 100}, {time.Second, 256, 50}, {2 * time.Second, 256, 0}}},
		{"zero max", 100000, 0, []step{{time.Second, 0, 0}}},
		{"a second at 40k is 40k", 40000, 0, []step{{time.Second, 1 << 20, 40000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pacer{rate: tc.rate, start: t0, limit: tc.limit}
			for i, s := range tc.steps {
				if got := p.Take(t0.Add(s.at), s.max); got != s.want {
					t.Fatalf("step %d at %v: Take = %d, want %d", i, s.at, got, s.want)
				}
			}
			if tc.limit > 0 && !p.Done() {
				t.Errorf("not Done after %d of %d frames", p.sent, tc.limit)
			}
		})
	}
	// Over one simulated second of 250 µs ticks no batch exceeds the
	// tick's share (plus rounding), and the total is the rate.
	p := pacer{rate: 100000, start: t0}
	total, biggest := 0, 0
	for at := genTick; at <= time.Second; at += genTick {
		n := p.Take(t0.Add(at), genMaxBatch)
		total += n
		biggest = max(biggest, n)
	}
	if total != 100000 || biggest > 26 {
		t.Errorf("one second at 100k: %d frames, biggest batch %d; want 100000 and <= 26", total, biggest)
	}
}

func TestGenArgsRoundTrip(t *testing.T) {
	s := testStream()
	f, err := parseGenFlags(genArgs(s, "eth0", 40000, 123456), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.dev != "eth0" || f.rate != 40000 || f.count != 123456 || f.tick != genTick {
		t.Errorf("dev %q rate %v count %d tick %v", f.dev, f.rate, f.count, f.tick)
	}
	g := f.s
	if g.SrcMAC.String() != s.SrcMAC.String() || g.DstMAC.String() != s.DstMAC.String() || g.Src != s.Src || g.Dst != s.Dst ||
		g.PortLo != s.PortLo || g.PortHi != s.PortHi || g.DstPort != s.DstPort || g.FrameLen != s.FrameLen {
		t.Errorf("stream %+v, want %+v", g, s)
	}
}

func TestParseGenFlagsErrors(t *testing.T) {
	good := genArgs(testStream(), "eth0", 1000, 0)
	with := func(flag, v string) []string {
		a := append([]string(nil), good...)
		for i := 0; i+1 < len(a); i += 2 {
			if a[i] == flag {
				a[i+1] = v
				return a
			}
		}
		return append(a, flag, v)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no dev", with("-dev", "")},
		{"zero rate", with("-rate", "0")},
		{"negative rate", with("-rate", "-5")},
		{"NaN rate", with("-rate", "NaN")},
		{"infinite rate", with("-rate", "+Inf")},
		{"zero tick", with("-tick", "0s")},
		{"port range reversed", with("-sport-lo", "20000")},
		{"port too big", with("-sport-hi", "70000")},
		{"dport too big", with("-dport", "65536")},
		{"frame too short", with("-len", "41")},
		{"frame too long", with("-len", "1515")},
		{"bad MAC", with("-src-mac", "02:00:00")},
		{"IPv6 source", with("-src", "2001:db8::1")},
		{"bad destination", with("-dst", "x")},
		{"unknown flag", with("-bogus", "1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseGenFlags(tc.args, io.Discard); err == nil {
				t.Errorf("accepted %q", tc.args)
			}
		})
	}
}

func TestIsGenerator(t *testing.T) {
	for _, tc := range []struct {
		comm string
		cmd  string
		want bool
	}{
		{"trafgen", "trafgen\x00-i\x00x", true},
		{"gvs-bench", "/bin/gvs-bench\x00gen\x00-dev\x00eth0\x00", true},
		{"gvs-bench", "/bin/gvs-bench\x00ping\x00-dst\x00", false},
		{"gvs-bench", "/bin/gvs-bench\x00", false},
		{"nginx", "nginx\x00gen\x00", false},
	} {
		if got := isGenerator(tc.comm, []byte(tc.cmd)); got != tc.want {
			t.Errorf("isGenerator(%q, %q) = %v, want %v", tc.comm, tc.cmd, got, tc.want)
		}
	}
}

func TestGenBursts(t *testing.T) {
	out := "gen: 100 frames sent, 100 kernel-accepted, 0 ring-full drops, 9 kicks; largest burst 42 frames, 0 bursts over 64\n  0 sec, 5 usec on CPU0 (100 packets)\n"
	if got, want := genBursts(out), "largest burst 42 frames, 0 bursts over 64"; got != want {
		t.Errorf("genBursts = %q, want %q", got, want)
	}
	if got := genBursts("  1 sec, 0 usec on CPU0 (5 packets)\n"); got != "" {
		t.Errorf("genBursts of trafgen's output = %q, want empty", got)
	}
}

func TestCounterDelta(t *testing.T) {
	a := trialCounters{drv: map[string]uint64{"vip0:rx_queue_0_drops": 5, "dv:x_err": 1},
		softnet: []softnet{{dropped: 1}, {squeezed: 2}}}
	c := trialCounters{drv: map[string]uint64{"vip0:rx_queue_0_drops": 9, "dv:x_err": 1, "new:err": 3},
		softnet: []softnet{{dropped: 1}, {dropped: 4, squeezed: 3}}}
	if got, want := counterDelta(a, c), "vip0:rx_queue_0_drops+4; softnet cpu1 dropped+4 time_squeeze+1"; got != want {
		t.Errorf("counterDelta = %q, want %q", got, want)
	}
}
