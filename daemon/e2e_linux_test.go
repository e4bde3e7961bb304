package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"gvs/forwarder/kernel"
	"gvs/internal/frames"
	"gvs/internal/lab"
)

var (
	buildOnce                     sync.Once
	gvsdBin, testsrvBin, adminBin string
	buildErr                      error
	buildDir                      string
)

// binaries builds gvsd and gvs-testsrv once per test binary.
func binaries(t *testing.T) (gvsd, testsrv string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "gvsd-e2e-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		var e1, e2, e3 error
		wg.Go(func() { gvsdBin, e1 = lab.Build(ctx, buildDir, "gvs/cmd/gvsd") })
		wg.Go(func() { testsrvBin, e2 = lab.Build(ctx, buildDir, "gvs/cmd/gvs-testsrv") })
		wg.Go(func() { adminBin, e3 = lab.Build(ctx, buildDir, "gvs/cmd/gvsadm") })
		wg.Wait()
		buildErr = errors.Join(e1, e2, e3)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return gvsdBin, testsrvBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// director is a lab with real servers running gvs-testsrv and gvsd running
// in the director namespace with rules.
type director struct {
	l     *lab.Lab
	gvsd  *lab.Proc
	rules string // the rules file
}

func startDirector(t *testing.T, ctx context.Context, opts lab.Options, rules func(vip string) string) *director {
	t.Helper()
	d := newDirectorLab(t, ctx, opts, rules)
	d.startGVSD(t, ctx)
	if _, err := d.gvsd.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	return d
}

// newDirectorLab builds the lab, starts the real servers and writes the
// rules file; gvsd is not started.
func newDirectorLab(t *testing.T, ctx context.Context, opts lab.Options, rules func(vip string) string) *director {
	t.Helper()
	_, testsrv := binaries(t)
	l, err := lab.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for i, s := range l.Servers() {
		name := fmt.Sprintf("r%d", i+1)
		p, err := l.Start(s.NS, testsrv, "--name", name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.WaitFor(ctx, "ready name="+name); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "rules")
	if err := os.WriteFile(file, []byte(rules(l.VIP().String())), 0o644); err != nil {
		t.Fatal(err)
	}
	return &director{l: l, rules: file}
}

// startGVSD starts gvsd in the director namespace (it does not wait).
func (d *director) startGVSD(t *testing.T, ctx context.Context) {
	t.Helper()
	gvsd, _ := binaries(t)
	p, err := d.l.Start(d.l.Director().NS, gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--rules", d.rules, "--log-level", "debug", "--stats-interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("gvsd output:\n%s", p.Output())
		}
	})
	d.gvsd = p
}

// httpGet fetches url from the client namespace on a fresh connection.
func httpGet(ctx context.Context, ns, url string) (string, error) {
	c := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lab.Dial(ctx, ns, network, addr)
			},
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// serverNames does n GETs to the VIP and returns how often each real
// server answered.
func serverNames(t *testing.T, ctx context.Context, d *director, n int) map[string]int {
	t.Helper()
	ns := d.l.Clients()[0].NS
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		body, err := httpGet(ctx, ns, "http://"+d.l.VIP().String()+":80/")
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(body, "name="), " ")
		seen[name]++
	}
	return seen
}

func udpEcho(t *testing.T, ctx context.Context, d *director, port int, msg string) string {
	t.Helper()
	c, err := lab.Dial(ctx, d.l.Clients()[0].NS, "udp4", fmt.Sprintf("%s:%d", d.l.VIP(), port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	// The first datagram may meet an unresolved neighbour: retry.
	for try := 0; try < 5; try++ {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no UDP answer from %s:%d", d.l.VIP(), port)
	return ""
}

// stopAndCheck stops gvsd with SIGTERM and checks it exits 0 quickly and
// leaves no nftables table behind.
func stopAndCheck(t *testing.T, d *director) {
	t.Helper()
	start := time.Now()
	if err := syscall.Kill(d.gvsd.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.gvsd.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("gvsd did not stop within 3 s")
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("gvsd took %v to stop", took)
	}
	if err := d.gvsd.Wait(); err != nil {
		t.Errorf("gvsd exit: %v", err)
	}
	table := kernel.TableName("gvsd")
	err := lab.Do(d.l.Director().NS, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyNetdev)
		if err != nil {
			return err
		}
		for _, tb := range tables {
			if tb.Name == table {
				return fmt.Errorf("nftables table %s left behind", table)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func natRules(vip string) string {
	return fmt.Sprintf(`# NAT lab
-A -t %[1]s:80 -s rr
-a -t %[1]s:80 -r 198.18.2.11:8080 -m -w 1
-a -t %[1]s:80 -r 198.18.2.12:8080 -m -w 1
-a -t %[1]s:80 -r 198.18.2.13:8080 -m -w 1
-A -u %[1]s:53 -s rr
-a -u %[1]s:53 -r 198.18.2.11:9000 -m
`, vip)
}

func TestNAT(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)

	seen := serverNames(t, ctx, d, 6)
	for _, name := range []string{"r1", "r2", "r3"} {
		if seen[name] != 2 {
			t.Errorf("rr over 3 servers, 6 GETs: %s answered %d times (all: %v)", name, seen[name], seen)
		}
	}
	if got := udpEcho(t, ctx, d, 53, "hello"); got != "r1 hello" {
		t.Errorf("UDP echo through NAT: got %q, want %q", got, "r1 hello")
	}

	// A change through the control socket: a new UDP service is captured
	// and answered at once (OnChange re-syncs filters and ingress drops).
	dns := d.l.Director().NS
	vipPort := d.l.VIP().String() + ":54"
	for _, args := range [][]string{{"-A", "-u", vipPort, "-s", "rr"}, {"-a", "-u", vipPort, "-r", "198.18.2.12:9000", "-m"}} {
		if out, err := d.l.Run(ctx, dns, adminBin, args...); err != nil {
			t.Fatalf("gvsadm %v: %v: %s", args, err, out)
		}
	}
	if got := udpEcho(t, ctx, d, 54, "ctl"); got != "r2 ctl" {
		t.Errorf("UDP echo after gvsadm -A/-a: got %q", got)
	}
	if out, err := d.l.Run(ctx, dns, adminBin, "-Ln"); err != nil || !strings.Contains(out, "UDP  "+vipPort) {
		t.Errorf("gvsadm -Ln: %v\n%s", err, out)
	}

	// SIGHUP with r3 removed from the file: only r1 and r2 answer.
	rules := strings.ReplaceAll(natRules(d.l.VIP().String()), "-a -t "+d.l.VIP().String()+":80 -r 198.18.2.13:8080 -m -w 1\n", "")
	if err := os.WriteFile(d.rules, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(d.gvsd.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := d.gvsd.WaitFor(ctx, "rules reloaded"); err != nil {
		t.Fatal(err)
	}
	seen = serverNames(t, ctx, d, 4)
	if seen["r1"] != 2 || seen["r2"] != 2 {
		t.Errorf("after reload without r3, 4 GETs: %v", seen)
	}

	stopAndCheck(t, d)
}

func TestDR(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{VIPOnServers: true, ClientLegOnServers: true}, func(vip string) string {
		return fmt.Sprintf(`-A -t %[1]s:8080 -s rr
-a -t %[1]s:8080 -r 198.18.2.11 -g
-a -t %[1]s:8080 -r 198.18.2.12 -g
-a -t %[1]s:8080 -r 198.18.2.13 -g
-A -u %[1]s:9000 -s rr
-a -u %[1]s:9000 -r 198.18.2.12 -g
`, vip)
	})
	ns := d.l.Clients()[0].NS
	seen := map[string]int{}
	for i := 0; i < 6; i++ {
		body, err := httpGet(ctx, ns, "http://"+d.l.VIP().String()+":8080/")
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(body, "name="), " ")
		seen[name]++
	}
	for _, name := range []string{"r1", "r2", "r3"} {
		if seen[name] != 2 {
			t.Errorf("rr over 3 DR servers, 6 GETs: %s answered %d times (all: %v)", name, seen[name], seen)
		}
	}
	if got := udpEcho(t, ctx, d, 9000, "dr"); got != "r2 dr" {
		t.Errorf("UDP echo through DR: got %q, want %q", got, "r2 dr")
	}
	stopAndCheck(t, d)
}

// TestDirectorReachesNATServers: the director's own connections to a NAT
// real server's service port (health checks, an administrator's curl) get
// their replies while the server is in the table, and clients are still
// served through the VIP.
func TestDirectorReachesNATServers(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs through the VIP: %v", seen)
	}
	for _, rip := range []string{"198.18.2.11", "198.18.2.12"} {
		body, err := httpGet(ctx, d.l.Director().NS, "http://"+rip+":8080/")
		if err != nil {
			t.Errorf("GET %s:8080 from the director: %v", rip, err)
		} else if !strings.HasPrefix(body, "name=r") {
			t.Errorf("GET %s:8080 from the director: %q", rip, body)
		}
	}
	stopAndCheck(t, d)
}

// TestForeignMACNotForwarded: the client LAN is a bridge that floods frames
// for unknown MACs to every port, the director's too. gvsd forwards only the
// frames addressed to its own MAC, like the kernel's IP stack: a datagram to
// the VIP flooded towards another MAC creates no connection and reaches no
// real server, the same datagram to the director's MAC does.
func TestForeignMACNotForwarded(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	c := d.l.Clients()[0]
	dirMAC := frames.MAC(d.l.Director().VIPSide.MAC)
	udpStats := func() (conns, inPkts string) {
		t.Helper()
		out, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "-Ln", "--stats")
		if err != nil {
			t.Fatalf("gvsadm -Ln --stats: %v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 4 && f[0] == "UDP" && f[1] == d.l.VIP().String()+":53" {
				return f[2], f[3]
			}
		}
		t.Fatalf("no UDP service line in:\n%s", out)
		return "", ""
	}
	send := func(dst frames.MAC, sport uint16) {
		t.Helper()
		frame := frames.UDP(frames.L2{Src: frames.MAC(c.MAC), Dst: dst},
			frames.IP{Src: c.Addr(), Dst: d.l.VIP()},
			frames.UDPDgram{SrcPort: sport, DstPort: 53, Payload: []byte("flooded")})
		err := lab.Do(c.NS, func() error {
			ifi, err := net.InterfaceByName(c.Name)
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte(append(dst[:], 0, 0))})
		})
		if err != nil {
			t.Fatalf("sending a frame from %s: %v", c.NS, err)
		}
	}
	// Another host's MAC (unknown to the bridge: flooded), broadcast and
	// multicast: none is VIP traffic.
	send(frames.MAC{0x02, 0, 0, 0, 0, 0x99}, 40001)
	send(frames.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 40002)
	send(frames.MAC{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}, 40003)
	time.Sleep(300 * time.Millisecond)
	if conns, in := udpStats(); conns != "0" || in != "0" {
		t.Errorf("after frames to other MACs: Conns %s InPkts %s, want 0 0", conns, in)
	}
	// The same datagram to the director's MAC is forwarded (the injection
	// works). (The client's ICMP port unreachable for the echo adds an
	// InPkt: only the connection is counted.)
	send(dirMAC, 40004)
	deadline := time.Now().Add(3 * time.Second)
	for {
		conns, _ := udpStats()
		if conns == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a frame to the director's MAC: Conns %s, want 1", conns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopAndCheck(t, d)
}

// tablePresent reports whether gvsd's nftables table exists in ns.
func tablePresent(t *testing.T, ns string) bool {
	t.Helper()
	var found bool
	err := lab.Do(ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		_, err = c.ListTableOfFamily(kernel.TableName("gvsd"), nftables.TableFamilyNetdev)
		found = err == nil
		if errors.Is(err, syscall.ENOENT) {
			err = nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestSecondDaemonAndVanishedTable: a second gvsd in the namespace fails
// with one clear line before it touches the first one's state; a table
// removed by hand is put back by the running daemon.
func TestSecondDaemonAndVanishedTable(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	ns := d.l.Director().NS
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs through the VIP: %v", seen)
	}

	second, err := d.l.Start(ns, gvsdBin, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf, "--rules", d.rules)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.Done():
	case <-time.After(5 * time.Second):
		second.Stop()
		t.Fatalf("the second gvsd did not exit:\n%s", second.Output())
	}
	if err := second.Wait(); err == nil {
		t.Errorf("the second gvsd exited 0:\n%s", second.Output())
	}
	out := second.Output()
	if !strings.Contains(out, "another gvsd runs in this network namespace") {
		t.Errorf("the second gvsd's output does not say why it failed:\n%s", out)
	}
	for _, touched := range []string{"stale nftables", "ingress drop rules", "offloads", "ARP"} {
		if strings.Contains(out, touched) {
			t.Errorf("the second gvsd touched the host (%q) before failing:\n%s", touched, out)
		}
	}
	if !tablePresent(t, ns) {
		t.Fatal("the first gvsd's nftables table is gone after the second one failed")
	}
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs after the second gvsd failed: %v", seen)
	}

	// nft delete table netdev gvs_gvsd
	err = lab.Do(ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Name: kernel.TableName("gvsd"), Family: nftables.TableFamilyNetdev})
		return c.Flush()
	})
	if err != nil {
		t.Fatalf("deleting the table by hand: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	defer wcancel()
	if _, err := d.gvsd.WaitFor(wctx, "nftables table was removed by someone else: restored"); err != nil {
		t.Fatalf("table not restored: %v", err)
	}
	if !tablePresent(t, ns) {
		t.Fatal("gvsd said it restored the table, but there is none")
	}
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs after the table was restored: %v", seen)
	}
	stopAndCheck(t, d)
}

// arpAnswered sends an ARP request for target from the client and reports
// whether anyone answered within wait.
func arpAnswered(t *testing.T, c lab.Client, target netip.Addr, wait time.Duration) bool {
	t.Helper()
	var answered bool
	err := lab.Do(c.NS, func() error {
		ifi, err := net.InterfaceByName(c.Name)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ARP))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			return err
		}
		req := frames.ARPRequest(frames.MAC(c.MAC), c.Addr(), target)
		bcast := [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: bcast}); err != nil {
			return err
		}
		deadline := time.Now().Add(wait)
		buf := make([]byte, 128)
		for {
			left := time.Until(deadline)
			if left <= 0 {
				return nil
			}
			tv := unix.NsecToTimeval(left.Nanoseconds())
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return err
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return err
			}
			// An ARP reply (op 2) whose sender address is the target.
			if n >= 42 && buf[20] == 0 && buf[21] == 2 && netip.AddrFrom4([4]byte(buf[28:32])) == target {
				answered = true
				return nil
			}
		}
	})
	if err != nil {
		t.Fatalf("ARP probe from %s: %v", c.NS, err)
	}
	return answered
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestARPFollowsHostAddresses: with --arp auto, gvsd answers ARP for a VIP
// the host does not hold; once the host holds it (keepalived's master) it
// is the host's: after the address is removed again (demotion), nobody
// answers for it on this director.
func TestARPFollowsHostAddresses(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	c, vip, ns := d.l.Clients()[0], d.l.VIP(), d.l.Director().NS
	if !arpAnswered(t, c, vip, time.Second) {
		t.Fatal("VIP held by no host: gvsd did not answer ARP for it")
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := d.l.Run(ctx, ns, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("addr", "add", vip.String()+"/32", "dev", lab.DirectorVIPIf) // keepalived: MASTER
	// Wait until gvsd has seen it (an address added and removed between
	// two looks would go unnoticed).
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	defer wcancel()
	if _, err := d.gvsd.WaitFor(wctx, "VIP held by the host"); err != nil {
		t.Errorf("gvsd did not notice the VIP on the host: %v", err)
	}
	if !arpAnswered(t, c, vip, time.Second) {
		t.Error("VIP on the director's interface: nobody answered ARP")
	}
	ip("addr", "del", vip.String()+"/32", "dev", lab.DirectorVIPIf) // BACKUP again
	// The kernel stops at once; gvsd must not take over.
	deadline := time.Now().Add(3 * time.Second)
	for arpAnswered(t, c, vip, 300*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("VIP removed from the host: the director still answers ARP for it")
		}
	}
	// And it stays silent (not just between two evaluations).
	time.Sleep(500 * time.Millisecond)
	if arpAnswered(t, c, vip, 500*time.Millisecond) {
		t.Error("VIP removed from the host: the director answers ARP for it again")
	}
	stopAndCheck(t, d)
}
