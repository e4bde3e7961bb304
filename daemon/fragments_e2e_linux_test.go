package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gvs/internal/frames"
	"gvs/internal/lab"
)

// ipStats reads the Ip: counters of /proc/net/snmp in namespace ns.
func ipStats(t *testing.T, ns string) map[string]int64 {
	t.Helper()
	var b []byte
	err := lab.Do(ns, func() (err error) {
		// thread-self: the namespace is the calling thread's.
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var names, values []string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Ip: "); ok {
			if names == nil {
				names = strings.Fields(rest)
			} else {
				values = strings.Fields(rest)
			}
		}
	}
	if len(names) == 0 || len(names) != len(values) {
		t.Fatalf("no Ip: counters in %s's /proc/net/snmp", ns)
	}
	m := map[string]int64{}
	for i, n := range names {
		v, err := strconv.ParseInt(values[i], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		m[n] = v
	}
	return m
}

// TestFragmentedUDPNAT: a 4000-byte UDP datagram, which the client's
// kernel sends in three fragments over the lab's MTU 1500, reaches a NAT
// real server's UDP echo through one gvsd worker (reassembled, DNATed,
// fragmented again), and the 4003-byte answer, fragmented by the real
// server's kernel, comes back to the client (reassembled, SNATed,
// fragmented again) byte for byte. The director does not forward (its
// ip_forward is off) and the nftables table drops the kernel's copy of
// the later fragments: only gvs can carry the datagram.
//
// GVS_E2E_GVSD, when set, is the gvsd binary to run instead of the one
// built from this tree (to compare with an older build).
func TestFragmentedUDPNAT(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := newDirectorLab(t, ctx, lab.Options{}, func(vip string) string {
		return fmt.Sprintf("-A -u %[1]s:53 -s rr\n-a -u %[1]s:53 -r 198.18.2.11:9000 -m -w 1\n", vip)
	})
	gvsd, _ := binaries(t)
	if b := os.Getenv("GVS_E2E_GVSD"); b != "" {
		gvsd = b
	}
	p, err := d.l.Start(d.l.Director().NS, gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--rules", d.rules, "--log-level", "debug", "--workers", "1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("gvsd output:\n%s", p.Output())
		}
	})
	d.gvsd = p
	if _, err := p.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}

	cns := d.l.Clients()[0].NS
	// A small datagram first: neighbours resolved, the path known good.
	if got := udpEcho(t, ctx, d, 53, "small"); got != "r1 small" {
		t.Fatalf("small datagram: %q, want %q", got, "r1 small")
	}
	before := ipStats(t, cns)

	c, err := lab.Dial(ctx, cns, "udp4", fmt.Sprintf("%s:53", d.l.VIP()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 4000)
	for i := range msg {
		msg[i] = byte(i*7 + i/251)
	}
	want := append([]byte("r1 "), msg...)
	buf := make([]byte, 16<<10)
	var got []byte
	for try := 0; try < 3 && got == nil; try++ {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil {
			got = buf[:n]
		}
	}
	if got == nil {
		t.Fatalf("no answer to a 4000-byte datagram through the VIP")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("answer: %d bytes (want %d), equal %v", len(got), len(want), bytes.Equal(got, want))
	}
	// The client's kernel sent fragments and reassembled the answer from
	// fragments: the datagrams did cross the director as fragments.
	after := ipStats(t, cns)
	if n := after["FragCreates"] - before["FragCreates"]; n < 3 {
		t.Errorf("client created %d fragments, want at least 3", n)
	}
	if n := after["ReasmOKs"] - before["ReasmOKs"]; n < 1 {
		t.Errorf("client reassembled %d datagrams, want the fragmented answer", n)
	}
	stopAndCheck(t, d)
}

// TestAFXDPReassemblyTimeout: under --io afxdp the worker loop expires
// reassembly (as the TPACKET loop does): a first fragment to the VIP
// whose other fragments never come gets the client ICMP time exceeded,
// fragment reassembly, from the VIP 30 s later (ip_expire), quoting it.
func TestAFXDPReassemblyTimeout(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := startXDPDirector(t, ctx, lab.Options{}, natRules, nil, "--xdp-mode", "generic", "--workers", "1")
	requireXDP(t, d, "generic")
	if got := udpEcho(t, ctx, d, 53, "small"); got != "r1 small" {
		t.Fatalf("small datagram: %q, want %q", got, "r1 small")
	}
	c := d.l.Clients()[0]
	icmp, err := lab.ListenPacket(ctx, c.NS, "ip4:icmp", "0.0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	defer icmp.Close()

	// The first of a datagram's fragments (MF, offset 0), sent as a frame.
	const id = 0x4a4b
	frame := frames.UDP(frames.L2{Src: frames.MAC(c.MAC), Dst: frames.MAC(d.l.Director().VIPSide.MAC)},
		frames.IP{Src: c.Addr(), Dst: d.l.VIP(), ID: id},
		frames.UDPDgram{SrcPort: 40123, DstPort: 53, Payload: bytes.Repeat([]byte("f"), 1400)})
	ip := frame[14:34]
	ip[6] |= 0x20 // MF
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	ip[10], ip[11] = byte(^sum>>8), byte(^sum)
	err = lab.Do(c.NS, func() error {
		ifi, err := net.InterfaceByName(c.Name)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var addr [8]byte
		copy(addr[:], frame[:6])
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: addr})
	})
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()

	buf := make([]byte, 2048)
	icmp.SetReadDeadline(sent.Add(40 * time.Second))
	for {
		n, from, err := icmp.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no ICMP fragment reassembly time exceeded within 40 s: %v", err)
		}
		b := buf[:n] // ICMP header, then the quoted IPv4 header
		if n < 8+20 || b[0] != 11 || b[1] != 1 || b[8+4] != id>>8 || b[8+5] != id&0xff {
			continue
		}
		if waited := time.Since(sent); waited < 29*time.Second {
			t.Errorf("reassembly time exceeded after %v, want ipfrag_time (30 s)", waited)
		}
		if got := from.String(); got != d.l.VIP().String() {
			t.Errorf("from %s, want the VIP", got)
		}
		break
	}
	stopAndCheck(t, d)
}
