package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safchain/ethtool"
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
	d := newDirectorLab(t, ctx, lab.Options{}, fragmentedNATRules)
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
	fragmentedEcho(t, ctx, d, 0)
	stopAndCheck(t, d)
}

// fragmentedNATRules is TestFragmentedUDPNAT's service: UDP VIP:53 to one
// NAT real server's echo (r1).
func fragmentedNATRules(vip string) string {
	return fmt.Sprintf("-A -u %[1]s:53 -s rr\n-a -u %[1]s:53 -r 198.18.2.11:9000 -m -w 1\n", vip)
}

// TestAFXDPFragmentedUDPNAT is TestFragmentedUDPNAT under --io afxdp (XDP
// native and generic), and with --xdp-fastpath once the fast path takes
// the flow's small datagrams: the XDP program must give the pipeline
// every fragment, first and later, on both interfaces (never the kernel,
// whose copies the nftables table drops, nor the fast path), and the
// worker must send every fragment of the reassembled datagram.
func TestAFXDPFragmentedUDPNAT(t *testing.T) {
	lab.Require(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"native", []string{"--xdp-mode", "native"}},
		{"generic", []string{"--xdp-mode", "generic"}},
		{"fastpath", []string{"--xdp-mode", "native", "--xdp-fastpath"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			d := startXDPDirector(t, ctx, lab.Options{}, fragmentedNATRules, nil, append(c.args, "--workers", "1")...)
			requireXDP(t, d, c.args[1])
			warm := 0
			if c.name == "fastpath" {
				fastPathOn(t, ctx, d)
				// The flow's small datagrams first: its plans are
				// installed (the second packet each way), then the
				// fast path takes them; its fragments must not.
				warm = 6
			}
			fragmentedEcho(t, ctx, d, warm)
			if c.name == "fastpath" {
				fastUDPTaken(t, ctx, d)
			}
			stopAndCheck(t, d)
		})
	}
}

// fastPathOn turns GRO on on the director's veth peers, so that they take
// the XDP program's redirected frames, and waits for gvsd to notice
// (TestXDPFastPathNAT).
func fastPathOn(t *testing.T, ctx context.Context, d *director) {
	t.Helper()
	for _, name := range []string{"dv-" + d.l.Suffix(), "dd-" + d.l.Suffix()} {
		err := lab.Do(d.l.BridgeNS(), func() error {
			e, err := ethtool.NewEthtool()
			if err != nil {
				return err
			}
			defer e.Close()
			return e.Change(name, map[string]bool{"rx-gro": true})
		})
		if err != nil {
			t.Fatalf("GRO on %s: %v", name, err)
		}
	}
	for !strings.Contains(d.gvsd.Output(), "XDP fast path: interface takes redirected frames") {
		if ctx.Err() != nil {
			t.Fatal("gvsd did not notice GRO on the veth peers")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fastUDPTaken checks that the fast path forwarded some of the UDP
// service's packets: -Ln --stats counts more than gvsd's sockets received
// (its last stats line, a second on).
func fastUDPTaken(t *testing.T, ctx context.Context, d *director) {
	t.Helper()
	time.Sleep(2500 * time.Millisecond) // a fold and a stats line
	stats, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "-Ln", "--stats", "--exact")
	if err != nil {
		t.Fatalf("%v: %s", err, stats)
	}
	var in, out uint64
	for _, line := range strings.Split(stats, "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == "UDP" && strings.HasSuffix(f[1], ":53") {
			in, _ = strconv.ParseUint(f[3], 10, 64)
			out, _ = strconv.ParseUint(f[4], 10, 64)
		}
	}
	_, _, rx := fastPathCounts(t, ctx, d, ":80") // rx only
	if in+out <= rx {
		t.Errorf("UDP service counted %d+%d packets, gvsd's sockets received %d: the fast path took none", in, out, rx)
	}
}

// fragmentedEcho sends a 4000-byte datagram to the VIP's UDP port 53 (the
// client's kernel fragments it) and checks the 4003-byte answer from r1
// comes back whole, fragments crossing the director both ways. warm small
// datagrams (echoed) go first on the same socket, the same flow.
func fragmentedEcho(t *testing.T, ctx context.Context, d *director, warm int) {
	t.Helper()
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
	for i := 0; i < warm; i++ {
		if _, err := c.Write([]byte("warm")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "r1 warm" {
			t.Fatalf("small datagram %d: %q, %v", i, buf[:n], err)
		}
	}
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

// TestFragmentsEgressMTU: with a server LAN of MTU 1280 (the client's is
// 1500) the director sends what is too big for it as the kernel would,
// alike on TPACKET and AF_XDP: a reassembled 4000-byte datagram and its
// answer leave in fragments of at most 1280 bytes; an unfragmented
// 1400-byte datagram without DF is fragmented (every fragment sent, the
// echo comes back); with DF the client gets ICMP fragmentation needed
// with MTU 1280 (its route's path MTU drops to it).
func TestFragmentsEgressMTU(t *testing.T) {
	lab.Require(t)
	opts := lab.Options{ServerMTU: 1280}
	for _, io := range []string{"tpacket", "afxdp"} {
		t.Run(io, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			var d *director
			if io == "tpacket" {
				d = startDirector(t, ctx, opts, fragmentedNATRules)
			} else {
				d = startXDPDirector(t, ctx, opts, fragmentedNATRules, nil, "--xdp-mode", "generic")
				requireXDP(t, d, "generic")
			}
			fragmentedEcho(t, ctx, d, 0)

			msg := bytes.Repeat([]byte("m"), 1400)
			c := dialPMTU(t, ctx, d, unix.IP_PMTUDISC_DONT)
			defer c.Close()
			buf := make([]byte, 4096)
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
			if want := append([]byte("r1 "), msg...); !bytes.Equal(got, want) {
				t.Errorf("1400-byte datagram without DF: answer of %d bytes, want %d", len(got), len(want))
			}

			df := dialPMTU(t, ctx, d, unix.IP_PMTUDISC_DO)
			defer df.Close()
			mtu := 0
			for try := 0; try < 3 && mtu != 1280; try++ {
				if _, err := df.Write(msg); err != nil && !errors.Is(err, unix.EMSGSIZE) {
					t.Fatal(err)
				}
				df.SetReadDeadline(time.Now().Add(time.Second))
				df.Read(buf) // EMSGSIZE once the ICMP error came
				mtu = ipMTU(t, df)
			}
			if mtu != 1280 {
				t.Errorf("1400-byte datagram with DF: the client's path MTU is %d, want 1280 (ICMP fragmentation needed)", mtu)
			}
			stopAndCheck(t, d)
		})
	}
}

// dialPMTU dials the VIP's UDP port 53 from the client with
// IP_MTU_DISCOVER set to pmtu.
func dialPMTU(t *testing.T, ctx context.Context, d *director, pmtu int) *net.UDPConn {
	t.Helper()
	c, err := lab.Dial(ctx, d.l.Clients()[0].NS, "udp4", fmt.Sprintf("%s:53", d.l.VIP()))
	if err != nil {
		t.Fatal(err)
	}
	u := c.(*net.UDPConn)
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, pmtu)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return u
}

// ipMTU is the connected socket's path MTU (IP_MTU).
func ipMTU(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mtu int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		mtu, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return mtu
}
