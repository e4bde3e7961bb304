package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gvs/internal/lab"
)

var (
	decapOnce sync.Once
	decapBin  string
	decapErr  error
)

// decap builds gvs-decap once (the TUN real servers' IPIP decapsulator).
func decap(t *testing.T) string {
	t.Helper()
	binaries(t) // buildDir
	decapOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		decapBin, decapErr = lab.Build(ctx, buildDir, "gvs/cmd/gvs-decap")
	})
	if decapErr != nil {
		t.Fatal(decapErr)
	}
	return decapBin
}

// startXDPDirector starts gvsd --io afxdp (plus args) on a lab and waits
// until it is ready.
func startXDPDirector(t *testing.T, ctx context.Context, opts lab.Options, rules func(vip string) string, prepare func(d *director), args ...string) *director {
	t.Helper()
	d := newDirectorLab(t, ctx, opts, rules)
	if prepare != nil {
		prepare(d)
	}
	gvsd, _ := binaries(t)
	argv := append([]string{"--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--rules", d.rules, "--log-level", "debug", "--stats-interval", "1s", "--io", "afxdp"}, args...)
	p, err := d.l.Start(d.l.Director().NS, gvsd, argv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("gvsd output:\n%s", p.Output())
		}
	})
	d.gvsd = p
	if _, err := d.gvsd.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	return d
}

// requireXDP fails the test unless gvsd runs on AF_XDP in mode (it did not
// fall back).
func requireXDP(t *testing.T, d *director, mode string) {
	t.Helper()
	out := d.gvsd.Output()
	if strings.Contains(out, "AF_XDP unavailable") {
		t.Fatalf("gvsd fell back to TPACKET:\n%s", out)
	}
	if !strings.Contains(out, `"AF_XDP data path"`) || !strings.Contains(out, `"xdp_mode":"`+mode+`"`) {
		t.Fatalf("gvsd did not log the AF_XDP data path in %s mode:\n%s", mode, out)
	}
}

func TestAFXDPNAT(t *testing.T) {
	lab.Require(t)
	for _, mode := range []string{"native", "generic"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			d := startXDPDirector(t, ctx, lab.Options{}, natRules, nil, "--xdp-mode", mode)
			requireXDP(t, d, mode)
			seen := serverNames(t, ctx, d, 6)
			for _, name := range []string{"r1", "r2", "r3"} {
				if seen[name] != 2 {
					t.Errorf("rr over 3 servers, 6 GETs: %s answered %d times (all: %v)", name, seen[name], seen)
				}
			}
			if got := udpEcho(t, ctx, d, 53, "hello"); got != "r1 hello" {
				t.Errorf("UDP echo through NAT: got %q, want %q", got, "r1 hello")
			}
			// A service added through the control socket is redirected at
			// once (Sync updates the XDP rules).
			vipPort := d.l.VIP().String() + ":54"
			for _, args := range [][]string{{"-A", "-u", vipPort, "-s", "rr"}, {"-a", "-u", vipPort, "-r", "198.18.2.12:9000", "-m"}} {
				if out, err := d.l.Run(ctx, d.l.Director().NS, adminBin, args...); err != nil {
					t.Fatalf("gvsadm %v: %v: %s", args, err, out)
				}
			}
			if got := udpEcho(t, ctx, d, 54, "ctl"); got != "r2 ctl" {
				t.Errorf("UDP echo after gvsadm -A/-a: got %q", got)
			}
			// The director's own connection to a real server's service
			// port: the replies (from RIP:8080, like NAT replies) are
			// addressed to the host and passed to its stack.
			if body, err := httpGet(ctx, d.l.Director().NS, "http://198.18.2.11:8080/"); err != nil || !strings.HasPrefix(body, "name=r1") {
				t.Errorf("GET 198.18.2.11:8080 from the director: %q, %v", body, err)
			}
			stopAndCheck(t, d)
		})
	}
}

func TestAFXDPDR(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startXDPDirector(t, ctx, lab.Options{VIPOnServers: true, ClientLegOnServers: true}, func(vip string) string {
		return fmt.Sprintf(`-A -t %[1]s:8080 -s rr
-a -t %[1]s:8080 -r 198.18.2.11 -g
-a -t %[1]s:8080 -r 198.18.2.12 -g
-a -t %[1]s:8080 -r 198.18.2.13 -g
-A -u %[1]s:9000 -s rr
-a -u %[1]s:9000 -r 198.18.2.12 -g
`, vip)
	}, nil)
	requireXDP(t, d, "native")
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

func TestAFXDPTUN(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	bin := decap(t)
	d := startXDPDirector(t, ctx, lab.Options{VIPOnServers: true, ClientLegOnServers: true, ServerMTU: 1600}, func(vip string) string {
		return fmt.Sprintf(`-A -t %[1]s:8080 -s rr
-a -t %[1]s:8080 -r 198.18.2.11 -i
-a -t %[1]s:8080 -r 198.18.2.12 -i
-A -u %[1]s:9000 -s rr
-a -u %[1]s:9000 -r 198.18.2.12 -i
`, vip)
	}, func(d *director) {
		for _, s := range d.l.Servers()[:2] {
			p, err := d.l.Start(s.NS, bin, "--if", lab.ServerIf, "--vip", d.l.VIP().String())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.WaitFor(ctx, "ready"); err != nil {
				t.Fatalf("gvs-decap: %v\n%s", err, p.Output())
			}
		}
	})
	requireXDP(t, d, "native")
	ns := d.l.Clients()[0].NS
	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		body, err := httpGet(ctx, ns, "http://"+d.l.VIP().String()+":8080/")
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(body, "name="), " ")
		seen[name]++
	}
	if seen["r1"] != 2 || seen["r2"] != 2 {
		t.Errorf("rr over 2 TUN servers, 4 GETs: %v", seen)
	}
	if got := udpEcho(t, ctx, d, 9000, "tun"); got != "r2 tun" {
		t.Errorf("UDP echo through TUN: got %q, want %q", got, "r2 tun")
	}
	stopAndCheck(t, d)
}

// TestAFXDPFallback: where AF_XDP cannot be set up (here: a VIP interface
// MTU larger than a UMEM frame holds), gvsd says so in one line and
// forwards on TPACKET rings.
func TestAFXDPFallback(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := startXDPDirector(t, ctx, lab.Options{}, natRules, func(d *director) {
		if out, err := d.l.Run(ctx, d.l.Director().NS, "ip", "link", "set", "dev", lab.DirectorVIPIf, "mtu", "9000"); err != nil {
			t.Fatalf("mtu 9000: %v: %s", err, out)
		}
	})
	out := d.gvsd.Output()
	if n := strings.Count(out, "AF_XDP unavailable, using TPACKET rings"); n != 1 {
		t.Fatalf("want one fallback line, got %d:\n%s", n, out)
	}
	if strings.Contains(out, `"AF_XDP data path"`) {
		t.Fatalf("AF_XDP reported up after the fallback:\n%s", out)
	}
	seen := serverNames(t, ctx, d, 3)
	if len(seen) != 3 {
		t.Errorf("3 GETs through the TPACKET fallback: %v", seen)
	}
	stopAndCheck(t, d)
}
