package daemon_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/safchain/ethtool"

	"gvs/internal/lab"
)

// TestXDPFastPathNAT: with --xdp-fastpath a NAT download is forwarded
// (mostly) by the XDP program: the bytes arrive intact, gvsd's AF_XDP
// sockets see only a fraction of the packets, and -Ln --stats still counts
// them all (folded from the flow map).
//
// The program redirects to the director's veths, whose peers (the bridge
// ports dv-*, dd-*) take XDP frames only with NAPI on: GRO or an XDP
// program of their own. First the peers have neither: gvsd must not use
// the fast path (bpf_redirect would drop every frame: the download stalled
// at 0 bytes before gvsd checked) and the pipeline forwards everything.
// Then GRO goes on on the two peers, and within a housekeeping tick the
// fast path takes the next download.
//
// GRO is turned on on those two ports only. On the real servers' ports it
// would merge the servers' segments into CHECKSUM_PARTIAL super-packets
// that the bridge re-segments in software for dd-*, so dip0 would receive
// frames whose TCP checksum is only the pseudo-header sum; XDP cannot tell
// (neither can the AF_XDP path, which stalls the same way: the client
// counts TcpInCsumErrors), so gvs needs complete checksums on the wire,
// as a real NIC delivers them.
func TestXDPFastPathNAT(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := startXDPDirector(t, ctx, lab.Options{}, natRules, nil, "--xdp-fastpath", "--xdp-mode", "native")
	requireXDP(t, d, "native")
	if !strings.Contains(d.gvsd.Output(), "XDP fast path off for flows leaving this interface") {
		t.Errorf("gvsd did not warn that the director's veths (peers without NAPI) do not take redirected frames")
	}
	client := d.l.Clients()[0].NS
	get := func(size int) {
		t.Helper()
		body, err := httpGet(ctx, client, "http://"+d.l.VIP().String()+":80/data?bytes="+strconv.Itoa(size))
		if err != nil || len(body) != size {
			dumpFastPathState(t, d)
			t.Fatalf("GET %d bytes: %d bytes, %v", size, len(body), err)
		}
		time.Sleep(1500 * time.Millisecond) // a fold and a stats line
	}

	// Peers without NAPI: the pipeline's.
	const small = 1 << 20
	get(small)
	in1, out1, rx1 := fastPathCounts(t, ctx, d, ":80")
	if out1 < small/1500 || rx1 < (in1+out1)*9/10 {
		t.Errorf("peers without NAPI: in %d out %d packets counted, gvsd's sockets received %d (want all: no fast path)", in1, out1, rx1)
	}

	// GRO on the peers: the fast path's.
	groOnPeers(t, d)
	const size = 4 << 20
	get(size)
	in2, out2, rx2 := fastPathCounts(t, ctx, d, ":80")
	t.Logf("pipeline only: in %d out %d packets, sockets %d; with the fast path: in %d out %d, sockets %d",
		in1, out1, rx1, in2-in1, out2-out1, rx2-rx1)
	if out2-out1 < size/1500 {
		t.Errorf("-Ln --stats counts %d packets out for a %d-byte download (at least %d)", out2-out1, size, size/1500)
	}
	if (rx2-rx1)*4 > in2-in1+out2-out1 {
		t.Errorf("gvsd's sockets received %d frames of %d: the fast path did not take the download", rx2-rx1, in2-in1+out2-out1)
	}
	stopAndCheck(t, d)
}

// groOnPeers turns GRO on on the bridge ports of the director's veths
// (their peers then take redirected frames) and checks that gvsd noticed.
func groOnPeers(t *testing.T, d *director) {
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
	time.Sleep(300 * time.Millisecond)
	if !strings.Contains(d.gvsd.Output(), "XDP fast path: interface takes redirected frames") {
		t.Errorf("gvsd did not notice GRO on the veth peers")
	}
}

// TestXDPFastPathTUN: with --xdp-fastpath the packets of a TUN upload
// (client -> VIP, encapsulated in IPIP for the real server, which
// decapsulates them in userspace: gvs-decap) are encapsulated by the XDP
// program: the sink receives every byte intact (its SHA-256), -Ln --stats
// counts them all, and gvsd's AF_XDP sockets see only a fraction of them.
// The server LAN's MTU (1600) carries a full-sized client packet plus the
// outer header.
//
// The DIP veth's peer gets NAPI from a pass-through XDP program rather
// than GRO: GRO there merges the redirected IPIP segments into one GSO
// packet (ipip's GRO), which gvs-decap, reading raw frames, writes into
// its TUN device with the inner TCP checksum unfinished (measured: 346 of
// 711 segments counted as TcpInCsumErrors on the server, the upload
// stalled). With an XDP program on the device the kernel skips GRO
// (netif_elide_gro); the kernel's own ipip decapsulation would not care.
func TestXDPFastPathTUN(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin := decap(t)
	d := startXDPDirector(t, ctx, lab.Options{VIPOnServers: true, ClientLegOnServers: true, ServerMTU: 1600}, func(vip string) string {
		return fmt.Sprintf("-A -t %[1]s:9001 -s rr\n-a -t %[1]s:9001 -r 198.18.2.11 -i\n", vip)
	}, func(d *director) {
		p, err := d.l.Start(d.l.Servers()[0].NS, bin, "--if", lab.ServerIf, "--vip", d.l.VIP().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.WaitFor(ctx, "ready"); err != nil {
			t.Fatalf("gvs-decap: %v\n%s", err, p.Output())
		}
	}, "--xdp-fastpath", "--xdp-mode", "native")
	requireXDP(t, d, "native")
	xdpPassOn(t, d.l.BridgeNS(), "dd-"+d.l.Suffix())
	time.Sleep(300 * time.Millisecond)
	if !strings.Contains(d.gvsd.Output(), "XDP fast path: interface takes redirected frames") {
		t.Errorf("gvsd did not notice the XDP program on the DIP veth's peer")
	}

	const size = 4 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i*7 + i>>11)
	}
	c, err := lab.Dial(ctx, d.l.Clients()[0].NS, "tcp4", d.l.VIP().String()+":9001")
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := tc.Write(payload); err != nil {
		dumpFastPathState(t, d)
		t.Fatalf("upload: %v", err)
	}
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	ans, err := bufio.NewReader(tc).ReadString('\n')
	sum := sha256.Sum256(payload)
	if want := fmt.Sprintf("sha256=%x bytes=%d", sum, size); err != nil || strings.TrimSpace(ans) != want {
		dumpFastPathState(t, d)
		t.Fatalf("the sink answered %q (%v), want %q", ans, err, want)
	}
	time.Sleep(1500 * time.Millisecond) // a fold and a stats line
	in, _, rx := fastPathCounts(t, ctx, d, ":9001")
	t.Logf("-Ln --stats: %d packets in; gvsd's sockets received %d frames", in, rx)
	if in < size/1500 {
		t.Errorf("-Ln --stats counts %d packets in for a %d-byte upload (at least %d)", in, size, size/1500)
	}
	if rx*4 > in {
		t.Errorf("gvsd's sockets received %d frames of %d: the fast path did not take the TUN upload", rx, in)
	}
	stopAndCheck(t, d)
}

// xdpPassOn attaches an XDP program that passes every frame to interface
// name in namespace ns (native mode), until the test ends.
func xdpPassOn(t *testing.T, ns, name string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // XDP_PASS
	if err != nil {
		t.Fatalf("XDP pass program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	err = lab.Do(ns, func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("XDP pass program on %s: %v", name, err)
	}
}

// fastPathCounts returns the packet counters of the TCP service on port
// (":80") from -Ln --stats and the frames gvsd's sockets received (its
// last stats line).
func fastPathCounts(t *testing.T, ctx context.Context, d *director, port string) (in, out, rx uint64) {
	t.Helper()
	stats, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "-Ln", "--stats", "--exact")
	if err != nil {
		t.Fatalf("%v: %s", err, stats)
	}
	for _, line := range strings.Split(stats, "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == "TCP" && strings.HasSuffix(f[1], port) {
			in, _ = strconv.ParseUint(f[3], 10, 64)
			out, _ = strconv.ParseUint(f[4], 10, 64)
		}
	}
	o := d.gvsd.Output()
	i := strings.LastIndex(o, `"msg":"stats"`)
	if i < 0 {
		t.Fatalf("no stats line from gvsd")
	}
	_, rest, _ := strings.Cut(o[i:], `"rx":`)
	v, _, _ := strings.Cut(rest, ",")
	rx, _ = strconv.ParseUint(v, 10, 64)
	return in, out, rx
}

// dumpFastPathState logs what tells a dropped redirect (RX drops of the
// ingress veth) from a bad checksum (the client's TcpInCsumErrors).
func dumpFastPathState(t *testing.T, d *director) {
	ctx := context.Background()
	o, _ := d.l.Run(ctx, d.l.Director().NS, "ip", "-s", "link")
	t.Logf("director: ip -s link\n%s", o)
	o, _ = d.l.Run(ctx, d.l.Clients()[0].NS, "nstat", "-az", "TcpInSegs", "TcpInCsumErrors")
	t.Logf("client: nstat\n%s", o)
}

// TestXDPFastPathKeepsConnection: a UDP flow the fast path forwards for
// longer than its connection's timeout keeps its one connection. The
// pipeline sees only its first packets; the fold re-arms the connection's
// timer from the flow map's last-seen time when the timer comes due (half
// the timeout before it runs out). Without that the connection expires
// after the timeout, the fold removes the entry and the next datagram
// makes a second connection.
//
// First, with a 10 s UDP timeout, after 3 s of the flow -Lnc lists the
// connection's expire as the kernel would, the timeout from the latest
// datagram (9 or 10 s, truncated), although its timer was last set when
// the flow began (7 s left): the listing takes the program's last-seen
// time. Then the timeout goes down to 3 s (--set): the fold applies it to
// the connection within a few ticks, as the next packet would.
func TestXDPFastPathKeepsConnection(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := startXDPDirector(t, ctx, lab.Options{}, natRules, func(d *director) {
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
	}, "--xdp-fastpath", "--xdp-mode", "native")
	requireXDP(t, d, "native")
	setUDP := func(secs string) {
		t.Helper()
		if out, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "--set", "0", "0", secs); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	setUDP("10")
	udpConns := func() (conns, pkts uint64) {
		t.Helper()
		stats, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "-Ln", "--stats", "--exact")
		if err != nil {
			t.Fatalf("%v: %s", err, stats)
		}
		for _, line := range strings.Split(stats, "\n") {
			f := strings.Fields(line)
			if len(f) >= 7 && f[0] == "UDP" && strings.HasSuffix(f[1], ":53") {
				conns, _ = strconv.ParseUint(f[2], 10, 64)
				in, _ := strconv.ParseUint(f[3], 10, 64)
				out, _ := strconv.ParseUint(f[4], 10, 64)
				return conns, in + out
			}
		}
		t.Fatalf("no UDP :53 service in\n%s", stats)
		return 0, 0
	}
	c, err := lab.Dial(ctx, d.l.Clients()[0].NS, "udp4", d.l.VIP().String()+":53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	time.Sleep(1200 * time.Millisecond)                           // gvsd's first stats line
	_, _, rx0 := fastPathCounts(t, ctx, d, "")                    // rx only
	const period, total = 100 * time.Millisecond, 7 * time.Second // more than twice the timeout
	sent, answered := 0, 0
	flow := func(d time.Duration) {
		for start := time.Now(); time.Since(start) < d; {
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			sent++
			c.SetReadDeadline(time.Now().Add(period))
			if n, err := c.Read(buf); err == nil && n > 0 {
				answered++
			}
			time.Sleep(period / 2)
		}
	}
	flow(3 * time.Second)
	list, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "-Lnc")
	if err != nil {
		t.Fatalf("%v: %s", err, list)
	}
	expire := ""
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[0] == "UDP" && strings.HasSuffix(f[4], ":53") {
			expire = f[1]
		}
	}
	if expire != "00:09" && expire != "00:10" {
		t.Errorf("-Lnc lists the expire of a flow that keeps sending with a 10 s UDP timeout as %q, want 00:09 or 00:10:\n%s", expire, list)
	}
	// UDP timeout 3 s: the program goes on with the flow (installed
	// under 10 s, it takes it for 9 s after its last packet), the
	// connection lives 3 s after the last re-arm.
	setUDP("3")
	flow(total)
	time.Sleep(300 * time.Millisecond) // a fold
	conns, pkts := udpConns()
	_, _, rx1 := fastPathCounts(t, ctx, d, "") // rx only
	t.Logf("%d of %d datagrams answered; UDP :53 Conns %d, packets %d; gvsd's sockets received %d", answered, sent, conns, pkts, rx1-rx0)
	if conns != 1 {
		t.Errorf("one flow for %v with a 3 s UDP timeout made %d connections, want 1 (the fold did not keep its timer)", total, conns)
	}
	if answered < sent*9/10 {
		t.Errorf("only %d of %d datagrams answered", answered, sent)
	}
	if (rx1-rx0)*4 > pkts {
		t.Errorf("gvsd's sockets received %d of %d packets: the fast path did not take the flow", rx1-rx0, pkts)
	}
	stopAndCheck(t, d)
}
