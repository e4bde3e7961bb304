package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"golang.org/x/sys/unix"
	"net/netip"
	"os"
	"testing"

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
