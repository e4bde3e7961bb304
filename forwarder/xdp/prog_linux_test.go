package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"golang.org/x/sys/unix"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"gvs/internal/frames"
)

// needBPF loads the test program, or skips (fails under CI=true) without
// the privilege to.
func needBPF(t *testing.T, mac [6]byte) *Program {
	t.Helper()
	p, err := load(mac, false, nil)
	if err != nil {
		if os.Getenv("CI") == "true" || !errors.Is(err, unix.EPERM) {
			t.Fatalf("cannot load the XDP program: %v", err)
		}
		t.Skipf("cannot load the XDP program: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestProgramVerdicts(t *testing.T) {
	ours := frames.MAC{0x02, 0, 0, 0, 0, 1}
	other := frames.MAC{0x02, 0, 0, 0, 0, 9}
	p := needBPF(t, ours)
	vip := netip.MustParseAddr("198.18.0.10")
	rip := netip.MustParseAddr("198.19.0.2")
	client := netip.MustParseAddr("198.18.0.99")
	anyPort := netip.MustParseAddr("198.18.0.11")
	hostAddr := netip.MustParseAddr("198.19.0.1")
	if err := p.SetRules([]Rule{
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 80},
		{Dst: true, Addr: vip, Proto: protoUDP, Port: 53},
		{Dst: true, Addr: vip, Proto: protoICMP},
		{Dst: true, Addr: anyPort, Proto: protoTCP},
		{Addr: rip, Proto: protoTCP, Port: 8080},
		{Local: true, Addr: hostAddr},
		// The Frags rules syncXDP derives from the same services.
		{Frags: true, Dst: true, Addr: vip, Proto: protoTCP},
		{Frags: true, Dst: true, Addr: vip, Proto: protoUDP},
		{Frags: true, Dst: true, Addr: anyPort, Proto: protoTCP},
		{Frags: true, Addr: rip, Proto: protoTCP},
	}, false); err != nil {
		t.Fatal(err)
	}
	l2 := frames.L2{Src: other, Dst: ours}
	syn := frames.TCPSeg{SrcPort: 40000, DstPort: 80, SYN: true}
	about := frames.TCP(frames.L2{}, frames.IP{Src: vip, Dst: client}, frames.TCPSeg{SrcPort: 80, DstPort: 40000})[14:]
	pay := make([]byte, 64)
	udp53 := frames.UDP(l2, frames.IP{Src: client, Dst: vip, ID: 7}, frames.UDPDgram{SrcPort: 5000, DstPort: 53, Payload: pay})
	udp80 := frames.UDP(l2, frames.IP{Src: client, Dst: vip, ID: 8}, frames.UDPDgram{SrcPort: 5000, DstPort: 80, Payload: pay})
	tcp80 := frames.TCP(l2, frames.IP{Src: client, Dst: vip, ID: 9}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, ACK: true, Payload: pay})
	cases := []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"tcp to vip:80", frames.TCP(l2, frames.IP{Src: client, Dst: vip}, syn), xdpRedirect},
		{"tcp to vip:22", frames.TCP(l2, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 40000, DstPort: 22, SYN: true}), xdpPass},
		{"udp to vip:53", frames.UDP(l2, frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 5000, DstPort: 53}), xdpRedirect},
		{"udp to vip:80", frames.UDP(l2, frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 5000, DstPort: 80}), xdpPass},
		{"tcp to port-0 service", frames.TCP(l2, frames.IP{Src: client, Dst: anyPort}, frames.TCPSeg{SrcPort: 1, DstPort: 4444}), xdpRedirect},
		{"udp to port-0 tcp service", frames.UDP(l2, frames.IP{Src: client, Dst: anyPort}, frames.UDPDgram{SrcPort: 1, DstPort: 4444}), xdpPass},
		{"nat reply from rip:8080", frames.TCP(l2, frames.IP{Src: rip, Dst: client}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true}), xdpRedirect},
		{"rip:8080 to the host's own address", frames.TCP(l2, frames.IP{Src: rip, Dst: hostAddr}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true}), xdpPass},
		{"rip:22 to the host", frames.TCP(l2, frames.IP{Src: rip, Dst: client}, frames.TCPSeg{SrcPort: 22, DstPort: 40000, ACK: true}), xdpPass},
		{"tcp to vip:80, another host's MAC", frames.TCP(frames.L2{Src: other, Dst: other}, frames.IP{Src: client, Dst: vip}, syn), xdpPass},
		{"tcp to vip:80, broadcast", frames.TCP(frames.L2{Src: other, Dst: frames.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, frames.IP{Src: client, Dst: vip}, syn), xdpPass},
		{"icmp error to vip", frames.ICMPError(l2, frames.IP{Src: client, Dst: vip}, 3, 4, 1400, about), xdpRedirect},
		{"icmp echo to vip", frames.ICMPEcho(l2, frames.IP{Src: client, Dst: vip}, 1, 1), xdpPass},
		{"icmp error to the host", frames.ICMPError(l2, frames.IP{Src: client, Dst: rip}, 11, 0, 0, about), xdpPass},
		{"arp", frames.ARPRequest(other, client, vip), xdpPass},
		{"vlan-tagged tcp to vip:80", frames.TCP(frames.L2{Src: other, Dst: ours, VLAN: 5}, frames.IP{Src: client, Dst: vip}, syn), xdpPass},
		{"truncated", frames.TCP(l2, frames.IP{Src: client, Dst: vip}, syn)[:36], xdpPass},
		// Fragments, first or later, go to the pipeline by address and
		// protocol (it reassembles them), whatever their ports.
		{"udp first fragment to vip:53", fragment(udp53, true, 0), xdpRedirect},
		{"udp middle fragment to vip", fragment(udp53, true, 185), xdpRedirect},
		{"udp last fragment to vip", fragment(udp53, false, 370), xdpRedirect},
		{"udp first fragment to vip:80", fragment(udp80, true, 0), xdpRedirect},
		{"udp first fragment, 2 bytes of its header", fragment(udp53, true, 0)[:36], xdpRedirect},
		{"tcp last fragment to vip", fragment(tcp80, false, 185), xdpRedirect},
		{"udp last fragment to a tcp-only vip", fragment(frames.UDP(l2, frames.IP{Src: client, Dst: anyPort}, frames.UDPDgram{SrcPort: 1, DstPort: 4444, Payload: pay}), false, 185), xdpPass},
		{"udp last fragment to another address", fragment(frames.UDP(l2, frames.IP{Src: client, Dst: rip}, frames.UDPDgram{SrcPort: 1, DstPort: 53, Payload: pay}), false, 185), xdpPass},
		{"icmp error fragment to vip", fragment(frames.ICMPError(l2, frames.IP{Src: client, Dst: vip}, 3, 4, 1400, about), true, 0), xdpPass},
		{"tcp last fragment from rip", fragment(frames.TCP(l2, frames.IP{Src: rip, Dst: client}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true, Payload: pay}), false, 185), xdpRedirect},
		{"tcp last fragment from rip to the host", fragment(frames.TCP(l2, frames.IP{Src: rip, Dst: hostAddr}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true, Payload: pay}), false, 185), xdpPass},
		{"udp last fragment from rip (tcp real server)", fragment(frames.UDP(l2, frames.IP{Src: rip, Dst: client}, frames.UDPDgram{SrcPort: 8080, DstPort: 40000, Payload: pay}), false, 185), xdpPass},
		{"udp last fragment to vip, another host's MAC", fragment(frames.UDP(frames.L2{Src: other, Dst: other}, frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 5000, DstPort: 53, Payload: pay}), false, 185), xdpPass},
	}
	for _, c := range cases {
		got, err := p.prog.Run(&ebpf.RunOptions{Data: c.frame})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}

	// Every ICMP error once enabled (the DIP side); rules removed.
	if err := p.SetRules(nil, true); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"icmp error to the host", frames.ICMPError(l2, frames.IP{Src: client, Dst: rip}, 11, 0, 0, about), xdpRedirect},
		{"tcp to vip:80 after removal", frames.TCP(l2, frames.IP{Src: client, Dst: vip}, syn), xdpPass},
	} {
		got, err := p.prog.Run(&ebpf.RunOptions{Data: c.frame})
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
}

// fragment makes frame (Ethernet, IPv4 without options) a fragment: MF
// and offset (in 8-byte units) set, the header checksum fixed. A later
// fragment keeps the bytes after the IPv4 header, now payload.
func fragment(frame []byte, mf bool, off uint16) []byte {
	f := bytes.Clone(frame)
	ip := f[14:34]
	v := off & 0x1fff
	if mf {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], v)
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	return f
}

// TestProgramPortRanges: a rule's port range (a persistent FTP service's
// data ports, 1024-65535) matches every port in it, its edges included,
// and none outside; exact-port and any-port rules beside it keep working,
// and a changed or removed range leaves nothing of the old one behind.
func TestProgramPortRanges(t *testing.T) {
	ours := frames.MAC{0x02, 0, 0, 0, 0, 1}
	other := frames.MAC{0x02, 0, 0, 0, 0, 9}
	p := needBPF(t, ours)
	vip := netip.MustParseAddr("198.18.0.21")
	vip2 := netip.MustParseAddr("198.18.0.22") // also the host's own (one arm)
	rip := netip.MustParseAddr("198.19.0.2")
	client := netip.MustParseAddr("198.18.0.99")
	ftp := []Rule{
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 21},
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 20},
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 1024, PortMax: 65535},
		{Dst: true, Addr: vip, Proto: protoUDP, Port: 5000, PortMax: 5010},
		{Dst: true, Addr: vip, Proto: protoUDP, Port: 5003}, // inside the range too
		{Dst: true, Addr: vip2, Proto: protoTCP, Port: 1024, PortMax: 65535},
		{Addr: rip, Proto: protoTCP, Port: 8080},
		{Addr: rip, Proto: protoUDP, Port: 30000, PortMax: 30009},
		{Local: true, Addr: vip2},
	}
	if err := p.SetRules(ftp, false); err != nil {
		t.Fatal(err)
	}
	l2 := frames.L2{Src: other, Dst: ours}
	tcpTo := func(dst netip.Addr, port uint16) []byte {
		return frames.TCP(l2, frames.IP{Src: client, Dst: dst}, frames.TCPSeg{SrcPort: 40000, DstPort: port, SYN: true})
	}
	udpTo := func(dst netip.Addr, port uint16) []byte {
		return frames.UDP(l2, frames.IP{Src: client, Dst: dst}, frames.UDPDgram{SrcPort: 40000, DstPort: port})
	}
	udpFrom := func(sport uint16, dst netip.Addr) []byte {
		return frames.UDP(l2, frames.IP{Src: rip, Dst: dst}, frames.UDPDgram{SrcPort: sport, DstPort: 40000})
	}
	tcpFrom := func(sport uint16, dst netip.Addr, dport uint16) []byte {
		return frames.TCP(l2, frames.IP{Src: rip, Dst: dst}, frames.TCPSeg{SrcPort: sport, DstPort: dport, ACK: true})
	}
	type verdictCase struct {
		name  string
		frame []byte
		want  uint32
	}
	run := func(cases []verdictCase) {
		t.Helper()
		for _, c := range cases {
			got, err := p.prog.Run(&ebpf.RunOptions{Data: c.frame})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if got != c.want {
				t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
			}
		}
	}
	run([]verdictCase{
		{"tcp to vip:21", tcpTo(vip, 21), xdpRedirect},
		{"tcp to vip:20", tcpTo(vip, 20), xdpRedirect},
		{"tcp to vip:22", tcpTo(vip, 22), xdpPass},
		{"tcp to vip:1023, below the range", tcpTo(vip, 1023), xdpPass},
		{"tcp to vip:1024, its first port", tcpTo(vip, 1024), xdpRedirect},
		{"tcp to vip:1025", tcpTo(vip, 1025), xdpRedirect},
		{"tcp to vip:2047", tcpTo(vip, 2047), xdpRedirect},
		{"tcp to vip:2048", tcpTo(vip, 2048), xdpRedirect},
		{"tcp to vip:40000", tcpTo(vip, 40000), xdpRedirect},
		{"tcp to vip:65534", tcpTo(vip, 65534), xdpRedirect},
		{"tcp to vip:65535, its last port", tcpTo(vip, 65535), xdpRedirect},
		{"udp to vip:1024, tcp-only range", udpTo(vip, 1024), xdpPass},
		{"tcp to another address:40000", tcpTo(client, 40000), xdpPass},
		{"udp to vip:4999, below", udpTo(vip, 4999), xdpPass},
		{"udp to vip:5000, first", udpTo(vip, 5000), xdpRedirect},
		{"udp to vip:5003, exact too", udpTo(vip, 5003), xdpRedirect},
		{"udp to vip:5007", udpTo(vip, 5007), xdpRedirect},
		{"udp to vip:5010, last", udpTo(vip, 5010), xdpRedirect},
		{"udp to vip:5011, above", udpTo(vip, 5011), xdpPass},
		{"udp from rip:29999, below", udpFrom(29999, client), xdpPass},
		{"udp from rip:30000, first", udpFrom(30000, client), xdpRedirect},
		{"udp from rip:30009, last", udpFrom(30009, client), xdpRedirect},
		{"udp from rip:30010, above", udpFrom(30010, client), xdpPass},
		{"udp from rip:30005 to the host's own address", udpFrom(30005, vip2), xdpPass},
		{"tcp from rip:8080 to the host's own address", tcpFrom(8080, vip2, 80), xdpPass},
		// A source match to a local address still goes to gvs when the
		// destination matches a range: destination rules come first.
		{"tcp from rip:8080 to vip2:3000 (local, in its range)", tcpFrom(8080, vip2, 3000), xdpRedirect},
		{"tcp from rip:22 to vip2:3000", tcpFrom(22, vip2, 3000), xdpRedirect},
		{"tcp from rip:8080 to a client", tcpFrom(8080, client, 40000), xdpRedirect},
		{"tcp to vip:40000, another host's MAC", frames.TCP(frames.L2{Src: other, Dst: other}, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 1, DstPort: 40000, SYN: true}), xdpPass},
	})

	// The range shrinks: the ports it no longer has go to the kernel.
	ftp[2].PortMax = 2047
	if err := p.SetRules(ftp, false); err != nil {
		t.Fatal(err)
	}
	run([]verdictCase{
		{"shrunk: tcp to vip:1024", tcpTo(vip, 1024), xdpRedirect},
		{"shrunk: tcp to vip:2047", tcpTo(vip, 2047), xdpRedirect},
		{"shrunk: tcp to vip:2048", tcpTo(vip, 2048), xdpPass},
		{"shrunk: tcp to vip:65535", tcpTo(vip, 65535), xdpPass},
		{"shrunk: tcp to vip2:65535", tcpTo(vip2, 65535), xdpRedirect},
	})
	if err := p.SetRules(nil, false); err != nil {
		t.Fatal(err)
	}
	run([]verdictCase{
		{"removed: tcp to vip:1024", tcpTo(vip, 1024), xdpPass},
		{"removed: udp to vip:5007", udpTo(vip, 5007), xdpPass},
		{"removed: udp from rip:30000", udpFrom(30000, client), xdpPass},
	})

	for _, r := range []Rule{
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 2000, PortMax: 1999},
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 0, PortMax: 1999},
		{Dst: true, Addr: vip, Proto: protoICMP, Port: 1, PortMax: 2},
		{Frags: true, Dst: true, Addr: vip, Proto: protoTCP, PortMax: 2},
	} {
		if err := p.SetRules([]Rule{r}, false); err == nil {
			t.Errorf("SetRules accepted %+v", r)
		}
	}
}

// BenchmarkProgramRules: the program's run time (BPF_PROG_TEST_RUN,
// repeated in the kernel) per verdict path, with an FTP service's range
// beside exact-port rules: exact hits must cost what they did before the
// ranges (which are looked up only after the hash lookups miss).
func BenchmarkProgramRules(b *testing.B) {
	ours := frames.MAC{0x02, 0, 0, 0, 0, 1}
	p, err := load(ours, false, nil)
	if err != nil {
		b.Skipf("cannot load the XDP program: %v", err)
	}
	defer p.Close()
	vip := netip.MustParseAddr("198.18.0.10")
	rip := netip.MustParseAddr("198.19.0.2")
	client := netip.MustParseAddr("198.18.0.99")
	if err := p.SetRules([]Rule{
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 80},
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 21},
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 1024, PortMax: 65535},
		{Addr: rip, Proto: protoTCP, Port: 8080},
	}, false); err != nil {
		b.Fatal(err)
	}
	l2 := frames.L2{Src: frames.MAC{0x02, 0, 0, 0, 0, 9}, Dst: ours}
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"exact-dst", frames.TCP(l2, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, ACK: true})},
		{"exact-src", frames.TCP(l2, frames.IP{Src: rip, Dst: client}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true})},
		{"range-dst", frames.TCP(l2, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 40000, DstPort: 40000, ACK: true})},
		{"miss", frames.TCP(l2, frames.IP{Src: client, Dst: rip}, frames.TCPSeg{SrcPort: 40000, DstPort: 22, ACK: true})},
	} {
		b.Run(c.name, func(b *testing.B) {
			const repeat = 100000
			var total time.Duration
			for b.Loop() {
				_, d, err := p.prog.Benchmark(c.frame, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/run")
		})
	}
}

// withTag inserts an 802.1Q-style tag (tpid, tci) after the MAC addresses
// of an untagged frame.
func withTag(frame []byte, tpid, tci uint16) []byte {
	f := append([]byte(nil), frame[:12]...)
	f = binary.BigEndian.AppendUint16(f, tpid)
	f = binary.BigEndian.AppendUint16(f, tci)
	return append(f, frame[12:]...)
}

// TestProgramPriorityTagged: a frame with an 802.1p priority tag (VLAN ID
// 0, 802.1Q or 802.1ad) followed by IPv4 is matched like the untagged
// frame (the kernel takes it as untagged, and TPACKET mode forwards it);
// redirected, it reaches the socket without its tag, as the pipeline sees
// it in TPACKET mode; passed, the kernel gets it as it came. Any other
// VLAN, and a priority tag followed by another tag, are the kernel's.
func TestProgramPriorityTagged(t *testing.T) {
	ours := frames.MAC{0x02, 0, 0, 0, 0, 1}
	other := frames.MAC{0x02, 0, 0, 0, 0, 9}
	p := needBPF(t, ours)
	vip := netip.MustParseAddr("198.18.0.10")
	rip := netip.MustParseAddr("198.19.0.2")
	client := netip.MustParseAddr("198.18.0.99")
	hostAddr := netip.MustParseAddr("198.19.0.1")
	if err := p.SetRules([]Rule{
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 80},
		{Dst: true, Addr: vip, Proto: protoUDP, Port: 53},
		{Dst: true, Addr: vip, Proto: protoICMP},
		{Dst: true, Addr: vip, Proto: protoTCP, Port: 1024, PortMax: 65535},
		{Addr: rip, Proto: protoTCP, Port: 8080},
		{Local: true, Addr: hostAddr},
		{Frags: true, Dst: true, Addr: vip, Proto: protoUDP},
	}, false); err != nil {
		t.Fatal(err)
	}
	l2 := frames.L2{Src: other, Dst: ours}
	pay := make([]byte, 64)
	syn80 := frames.TCP(l2, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, SYN: true})
	syn22 := frames.TCP(l2, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 40000, DstPort: 22, SYN: true})
	syn3000 := frames.TCP(l2, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 40000, DstPort: 3000, SYN: true})
	udp53 := frames.UDP(l2, frames.IP{Src: client, Dst: vip, ID: 7}, frames.UDPDgram{SrcPort: 5000, DstPort: 53, Payload: pay})
	reply := frames.TCP(l2, frames.IP{Src: rip, Dst: client}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true})
	toHost := frames.TCP(l2, frames.IP{Src: rip, Dst: hostAddr}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true})
	about := frames.TCP(frames.L2{}, frames.IP{Src: vip, Dst: client}, frames.TCPSeg{SrcPort: 80, DstPort: 40000})[14:]
	icmpErr := frames.ICMPError(l2, frames.IP{Src: client, Dst: vip}, 3, 4, 1400, about)
	echo := frames.ICMPEcho(l2, frames.IP{Src: client, Dst: vip}, 1, 1)
	elsewhere := frames.TCP(frames.L2{Src: other, Dst: other}, frames.IP{Src: client, Dst: vip}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, SYN: true})
	const prio5 = 5 << 13
	cases := []struct {
		name  string
		frame []byte
		want  uint32
		out   []byte // the frame after the program
	}{
		{"untagged tcp to vip:80", syn80, xdpRedirect, syn80},
		{"priority-tagged tcp to vip:80", withTag(syn80, 0x8100, prio5), xdpRedirect, syn80},
		{"priority-tagged (priority 0) tcp to vip:80", withTag(syn80, 0x8100, 0), xdpRedirect, syn80},
		{"priority-tagged (DEI) tcp to vip:80", withTag(syn80, 0x8100, 1<<12), xdpRedirect, syn80},
		{"802.1ad priority-tagged tcp to vip:80", withTag(syn80, 0x88a8, prio5), xdpRedirect, syn80},
		{"vlan 5 tcp to vip:80", withTag(syn80, 0x8100, prio5|5), xdpPass, withTag(syn80, 0x8100, prio5|5)},
		{"vlan 256 tcp to vip:80", withTag(syn80, 0x8100, 256), xdpPass, withTag(syn80, 0x8100, 256)},
		{"vlan 4095 tcp to vip:80", withTag(syn80, 0x8100, 0x0fff), xdpPass, withTag(syn80, 0x8100, 0x0fff)},
		{"802.1ad vlan 5 tcp to vip:80", withTag(syn80, 0x88a8, 5), xdpPass, withTag(syn80, 0x88a8, 5)},
		{"priority tag, then vlan 5", withTag(withTag(syn80, 0x8100, 5), 0x8100, prio5), xdpPass, withTag(withTag(syn80, 0x8100, 5), 0x8100, prio5)},
		{"priority tag, then a second priority tag", withTag(withTag(syn80, 0x8100, 0), 0x88a8, 0), xdpPass, withTag(withTag(syn80, 0x8100, 0), 0x88a8, 0)},
		{"priority-tagged tcp to vip:22", withTag(syn22, 0x8100, prio5), xdpPass, withTag(syn22, 0x8100, prio5)},
		{"priority-tagged tcp to vip:3000 (range)", withTag(syn3000, 0x8100, prio5), xdpRedirect, syn3000},
		{"priority-tagged udp to vip:53", withTag(udp53, 0x8100, prio5), xdpRedirect, udp53},
		{"priority-tagged udp fragment to vip", withTag(fragment(udp53, false, 185), 0x8100, prio5), xdpRedirect, fragment(udp53, false, 185)},
		{"priority-tagged nat reply from rip:8080", withTag(reply, 0x8100, prio5), xdpRedirect, reply},
		{"priority-tagged rip:8080 to the host's own address", withTag(toHost, 0x8100, prio5), xdpPass, withTag(toHost, 0x8100, prio5)},
		{"priority-tagged icmp error to vip", withTag(icmpErr, 0x8100, prio5), xdpRedirect, icmpErr},
		{"priority-tagged icmp echo to vip", withTag(echo, 0x8100, prio5), xdpPass, withTag(echo, 0x8100, prio5)},
		{"priority-tagged, another host's MAC", withTag(elsewhere, 0x8100, prio5), xdpPass, withTag(elsewhere, 0x8100, prio5)},
		{"priority-tagged arp", withTag(frames.ARPRequest(other, client, vip), 0x8100, prio5), xdpPass, withTag(frames.ARPRequest(other, client, vip), 0x8100, prio5)},
		{"priority-tagged, 19 bytes of IPv4 header", withTag(syn80, 0x8100, prio5)[:37], xdpPass, withTag(syn80, 0x8100, prio5)[:37]},
	}
	for _, c := range cases {
		opts := &ebpf.RunOptions{Data: c.frame, DataOut: make([]byte, len(c.frame)+64)}
		got, err := p.prog.Run(opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
		if !bytes.Equal(opts.DataOut, c.out) {
			t.Errorf("%s: frame after the program\n% x\nwant\n% x", c.name, opts.DataOut, c.out)
		}
	}
}
