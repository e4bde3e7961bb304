//go:build hostile

package daemon_test

// Fault sequences and floods (hostileflood_e2e_linux_test.go) that take
// longer than make test allows: make hostile runs them.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gvs/internal/frames"
	"gvs/internal/lab"
)

// keeper is a long-lived HTTP/1.1 connection through the VIP that does a
// request/response round every interval in the background and records
// when each round completed.
type keeper struct {
	conn   net.Conn
	server string // the real server that answers it ("r2")
	mu     sync.Mutex
	done   []time.Time // completion time of every round
	failed error
	stop   atomic.Bool
	wg     sync.WaitGroup
}

var keepReq = []byte("GET / HTTP/1.1\r\nHost: vip\r\n\r\n")

// keepRound does one round on c: a request and its whole response.
func keepRound(c net.Conn, br *bufio.Reader, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(keepReq); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// startKeeper opens the connection from client c to the VIP's port and
// starts its rounds.
func startKeeper(t *testing.T, d *director, c lab.Client, port int, interval time.Duration) *keeper {
	t.Helper()
	k := &keeper{}
	err := lab.Do(c.NS, func() error {
		conn, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", d.l.VIP(), port), 2*time.Second)
		k.conn = conn
		return err
	})
	if err != nil {
		t.Fatalf("connecting through the VIP: %v", err)
	}
	br := bufio.NewReader(k.conn)
	body, err := keepRound(k.conn, br, 2*time.Second)
	if err != nil {
		t.Fatalf("first round: %v", err)
	}
	k.server, _, _ = strings.Cut(strings.TrimPrefix(body, "name="), " ")
	k.wg.Go(func() {
		for !k.stop.Load() {
			// A round may wait for TCP's retransmissions across a fault:
			// 20 s is far more than any recovery allowed below.
			_, err := keepRound(k.conn, br, 20*time.Second)
			k.mu.Lock()
			if err != nil {
				k.failed = err
				k.mu.Unlock()
				return
			}
			k.done = append(k.done, time.Now())
			k.mu.Unlock()
			time.Sleep(interval)
		}
	})
	t.Cleanup(func() {
		k.stop.Store(true)
		k.conn.Close()
		k.wg.Wait()
	})
	return k
}

// recovered waits until a round completes after since, for at most
// within, and returns how long after since it completed.
func (k *keeper) recovered(t *testing.T, what string, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(within)
	for {
		k.mu.Lock()
		failed := k.failed
		var at time.Time
		if n := len(k.done); n > 0 && k.done[n-1].After(since) {
			for _, d := range k.done {
				if d.After(since) {
					at = d
					break
				}
			}
		}
		k.mu.Unlock()
		if failed != nil {
			t.Fatalf("%s: the established connection failed: %v", what, failed)
		}
		if !at.IsZero() {
			return at.Sub(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the established connection did no round within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive fails the test when gvsd has exited.
func alive(t *testing.T, d *director, what string) {
	t.Helper()
	select {
	case <-d.gvsd.Done():
		t.Fatalf("%s: gvsd exited: %v", what, d.gvsd.Wait())
	default:
	}
}

// idle checks that gvsd uses next to no CPU over 2 quiet seconds.
func idle(t *testing.T, d *director, what string) {
	t.Helper()
	before := cpuTicks(t, d.gvsd.Pid())
	time.Sleep(2 * time.Second)
	if used := cpuTicks(t, d.gvsd.Pid()) - before; used > idleTicks {
		t.Errorf("%s: gvsd used %d ticks (1/100 s) of CPU in 2 s with little traffic, want at most %d", what, used, idleTicks)
	}
}

// Recovery bounds of the fault tests: an established connection does a
// round again within recoverWithin of the fault's end (its packets lost
// meanwhile are retransmitted: TCP's backoff allows a few seconds), a new
// connection is served within serveWithin.
const (
	recoverWithin = 5 * time.Second
	serveWithin   = 4 * time.Second
)

// garp sends a gratuitous ARP (request) for server s's address from its
// interface, with its current MAC.
func garp(t *testing.T, s lab.Server, mac net.HardwareAddr) {
	t.Helper()
	err := lab.Do(s.NS, func() error {
		ifi, err := net.InterfaceByName(lab.ServerIf)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		f := frames.ARPRequest(frames.MAC(mac), s.LAN.Addr(), s.LAN.Addr())
		bcast := [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: bcast})
	})
	if err != nil {
		t.Fatalf("gratuitous ARP from %s: %v", s.NS, err)
	}
}

// servedOn retries GETs to the VIP's port until a real server answers,
// for at most wait, and returns how long it took.
func servedOn(t *testing.T, ctx context.Context, d *director, port int, wait time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	url := fmt.Sprintf("http://%s:%d/", d.l.VIP(), port)
	var lastErr error
	for time.Since(start) < wait {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		body, err := httpGet(actx, d.l.Clients()[0].NS, url)
		acancel()
		if err == nil && strings.HasPrefix(body, "name=r") {
			return time.Since(start)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no GET of %s answered within %v (last error: %v)", url, wait, lastErr)
	return 0
}

func drRules(vip string) string {
	return fmt.Sprintf(`-A -t %[1]s:8080 -s rr
-a -t %[1]s:8080 -r 198.18.2.11 -g
-a -t %[1]s:8080 -r 198.18.2.12 -g
-a -t %[1]s:8080 -r 198.18.2.13 -g
`, vip)
}

// TestFaultSequences: faults an operator or the network inflicts while an
// established connection does a round every 50 ms through a NAT and a DR
// director: a storm of SIGHUPs, gvsadm -C then a reload, SIGSTOP for 3 s
// then SIGCONT, the real server's MAC changed (announced by gratuitous
// ARP), the route to the real servers removed and restored, the VIP side's
// address removed and re-added, the DIP interface renamed and renamed
// back, its MTU lowered and restored. After each, gvsd is up, the
// connection does a round again within recoverWithin, new connections are
// served, and gvsd is idle once the traffic is light.
func TestFaultSequences(t *testing.T) {
	for _, m := range []struct {
		name  string
		opts  lab.Options
		rules func(string) string
		port  int
	}{
		{"NAT", lab.Options{}, natRules, 80},
		{"DR", lab.Options{VIPOnServers: true, ClientLegOnServers: true}, drRules, 8080},
	} {
		t.Run(m.name, func(t *testing.T) { faultSequences(t, m.opts, m.rules, m.port) })
	}
}

func faultSequences(t *testing.T, opts lab.Options, rules func(string) string, port int) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	d := startDirector(t, ctx, opts, rules)
	ns, pid := d.l.Director().NS, d.gvsd.Pid()
	nat := port == 80
	defer syscall.Kill(pid, syscall.SIGCONT)
	if served := servedOn(t, ctx, d, port, 5*time.Second); served > serveWithin {
		t.Fatalf("first GET took %v", served)
	}
	k := startKeeper(t, d, d.l.Clients()[0], port, 50*time.Millisecond)
	check := func(what string, end time.Time) {
		t.Helper()
		alive(t, d, what)
		took := k.recovered(t, what, end, recoverWithin)
		served := servedOn(t, ctx, d, port, 10*time.Second)
		t.Logf("%s: established connection's next round %v after, a new connection served in %v", what, took.Round(time.Millisecond), served.Round(time.Millisecond))
		if served > serveWithin {
			t.Errorf("%s: a new connection took %v, want at most %v", what, served, serveWithin)
		}
	}

	// A storm of SIGHUPs: 50 in half a second.
	for range 50 {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	check("SIGHUP storm", time.Now())

	// gvsadm -C, then the rules again: IPVS keeps the deleted real
	// servers in its trash and takes them back, connections and all.
	if out, err := d.l.Run(ctx, ns, adminBin, "-C"); err != nil {
		t.Fatalf("gvsadm -C: %v: %s", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	if out, err := d.l.Run(ctx, ns, adminBin, "--reload"); err != nil {
		t.Fatalf("gvsadm --reload: %v: %s", err, out)
	}
	check("gvsadm -C, then --reload", time.Now())

	// SIGSTOP for 3 s.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	check("SIGSTOP 3 s, SIGCONT", time.Now())

	// The connection's real server changes its MAC and announces it.
	var srv lab.Server
	for i, s := range d.l.Servers() {
		if k.server == "r"+string(rune('1'+i)) {
			srv = s
		}
	}
	if srv.NS == "" {
		t.Fatalf("the long-lived connection's server %q is not in the lab", k.server)
	}
	newMAC := net.HardwareAddr{0x02, 0x99, 0, 0, 0, 0x42}
	ipIn(t, ctx, d, srv.NS, "link", "set", lab.ServerIf, "address", newMAC.String())
	garp(t, srv, newMAC)
	check("real server MAC changed (gratuitous ARP)", time.Now())

	// The route to the real servers removed for 2 s and restored.
	lan := d.l.Director().DIPSide.Prefix.Masked().String()
	ipIn(t, ctx, d, ns, "route", "del", lan, "dev", lab.DirectorDIPIf)
	time.Sleep(2 * time.Second)
	ipIn(t, ctx, d, ns, "route", "add", lan, "dev", lab.DirectorDIPIf, "proto", "kernel", "scope", "link",
		"src", d.l.Director().DIPSide.Addr().String())
	check("route to the real servers removed for 2 s", time.Now())

	// The VIP side's address removed for 2 s and added again.
	vipAddr := d.l.Director().VIPSide.Prefix.String()
	ipIn(t, ctx, d, ns, "addr", "del", vipAddr, "dev", lab.DirectorVIPIf)
	time.Sleep(2 * time.Second)
	ipIn(t, ctx, d, ns, "addr", "add", vipAddr, "dev", lab.DirectorVIPIf)
	check("VIP side's address removed for 2 s", time.Now())

	// The DIP interface renamed (down, rename, up) for 2 s, then back.
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorDIPIf, "down")
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorDIPIf, "name", "dipx")
	ipIn(t, ctx, d, ns, "link", "set", "dipx", "up")
	if err := lab.WaitCarrier(ns, "dipx", time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	check("DIP interface renamed", time.Now())
	idle(t, d, "DIP interface renamed")
	// A change of the rules while the interface has another name: the
	// ingress table is rebuilt under the current names.
	if nat {
		vip55 := d.l.VIP().String() + ":55"
		for _, args := range [][]string{{"-A", "-u", vip55, "-s", "rr"}, {"-a", "-u", vip55, "-r", "198.18.2.13:9000", "-m"}} {
			if out, err := d.l.Run(ctx, ns, adminBin, args...); err != nil {
				t.Errorf("gvsadm %v while the DIP interface is renamed: %v: %s", args, err, out)
			}
		}
		if got := udpEcho(t, ctx, d, 55, "while renamed"); got != "r3 while renamed" {
			t.Errorf("UDP echo of a service added while the DIP interface is renamed: %q", got)
		}
	}
	ipIn(t, ctx, d, ns, "link", "set", "dipx", "down")
	ipIn(t, ctx, d, ns, "link", "set", "dipx", "name", lab.DirectorDIPIf)
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorDIPIf, "up")
	if err := lab.WaitCarrier(ns, lab.DirectorDIPIf, time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	check("DIP interface renamed back", time.Now())
	// A change of the rules installs the ingress table on the interface.
	if nat {
		vipPort := d.l.VIP().String() + ":54"
		for _, args := range [][]string{{"-A", "-u", vipPort, "-s", "rr"}, {"-a", "-u", vipPort, "-r", "198.18.2.12:9000", "-m"}} {
			if out, err := d.l.Run(ctx, ns, adminBin, args...); err != nil {
				t.Fatalf("gvsadm %v after the renames: %v: %s", args, err, out)
			}
		}
		if got := udpEcho(t, ctx, d, 54, "renamed"); got != "r2 renamed" {
			t.Errorf("UDP echo of a service added after the renames: %q", got)
		}
	}

	// The DIP MTU lowered to 1400 and restored while forwarding.
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorDIPIf, "mtu", "1400")
	time.Sleep(time.Second)
	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorDIPIf, "mtu", "1500")
	check("DIP MTU 1400 for 1 s", time.Now())

	k.stop.Store(true)
	idle(t, d, "after the faults")
	if strings.Contains(d.gvsd.Output(), `"level":"error"`) || strings.Contains(d.gvsd.Output(), "panic") {
		t.Logf("gvsd logged errors:\n%s", tail(grepLines(d.gvsd.Output(), `"level":"error"`), 3000))
	}
	stopAndCheck(t, d)
}

// grepLines returns the lines of s containing substr.
func grepLines(s, substr string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
