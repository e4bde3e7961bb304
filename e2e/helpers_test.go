package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gvs/internal/lab"
)

// labPrefix starts the namespace names of this package's labs, so that
// lab.Cleanup can remove what a crashed run left behind without touching
// other packages' labs.
const labPrefix = "gvse2e"

// bin holds the binaries TestMain built: gvsd, gvsadm, ipvsadm (a symlink
// to gvsadm), gvs-testsrv and gvs-decap. Its folder is first in PATH.
var bin struct {
	dir                  string
	gvsd, testsrv, decap string
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Without a lab the tests skip (or fail under CI=true) in lab.Require;
	// building would only cost time.
	if lab.Check() == nil {
		dir, err := os.MkdirTemp("", "gvs-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := buildAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		lab.Cleanup(labPrefix)
	}
	return m.Run()
}

// buildAll builds the four commands into dir and links ipvsadm to gvsadm.
func buildAll(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pkgs := []string{"gvs/cmd/gvsd", "gvs/cmd/gvsadm", "gvs/cmd/gvs-testsrv", "gvs/cmd/gvs-decap"}
	paths := make([]string, len(pkgs))
	errs := make([]error, len(pkgs))
	var wg sync.WaitGroup
	for i, p := range pkgs {
		wg.Go(func() { paths[i], errs[i] = lab.Build(ctx, dir, p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Symlink(paths[1], filepath.Join(dir, "ipvsadm")); err != nil {
		return err
	}
	bin.dir, bin.gvsd, bin.testsrv, bin.decap = dir, paths[0], paths[2], paths[3]
	return nil
}

// requireTools stops the test when a command it needs is missing: a skip
// normally, a failure under CI=true (make deps installs them).
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	lab.Require(t)
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true: %s not installed (make deps installs it)", n)
			}
			t.Skipf("%s not installed (make deps installs it)", n)
		}
	}
}

// mode is a forwarding method with the ports a lab uses for it.
type mode struct {
	name string // nat, dr, tun
	flag string // ipvsadm's forwarding option
	fwd  string // the Forward column of ipvsadm -Ln
	// httpPort is the VIP port of the HTTP service. NAT maps VIP:80 to
	// the real servers' :8080; DR and TUN cannot change the port.
	httpPort int
}

var (
	modeNAT = mode{name: "nat", flag: "-m", fwd: "Masq", httpPort: 80}
	modeDR  = mode{name: "dr", flag: "-g", fwd: "Route", httpPort: 8080}
	modeTUN = mode{name: "tun", flag: "-i", fwd: "Tunnel", httpPort: 8080}
)

// Real-server ports of gvs-testsrv.
const (
	httpPort = 8080
	udpPort  = 9000
	sinkPort = 9001
)

// env is one test's lab: gvs-testsrv on every real server (and gvs-decap
// in TUN mode), gvsd on the director with no rules until ipvsadm adds them.
type env struct {
	t     *testing.T
	ctx   context.Context
	l     *lab.Lab
	m     mode
	gvsd  *lab.Proc
	srv   []*lab.Proc // gvs-testsrv per real server, nil when not started
	vip   netip.Addr
	dirNS string
}

// envOptions tunes newEnv.
type envOptions struct {
	clients, servers int
	// noTestsrv leaves the real servers without gvs-testsrv (the
	// selftest runs socat on the service port instead).
	noTestsrv bool
	// vipOnDirector puts the VIP on the director's lo, as kernel IPVS
	// setups (and its selftest) do: gvsd must keep the kernel from
	// answering the VIP traffic itself.
	vipOnDirector bool
}

// kernelIPIP reports whether this kernel can decapsulate IPIP itself
// (tunl0). This machine's cannot; where it can, TUN real servers use it as
// the kernel selftest does, and gvs-decap is not needed.
var kernelIPIP = sync.OnceValue(func() bool {
	return exec.Command("modprobe", "-q", "ipip").Run() == nil
})

// newEnv builds the lab for mode m and starts the processes. The returned
// env's context ends after timeout; everything is removed when the test
// ends.
func newEnv(t *testing.T, m mode, o envOptions, timeout time.Duration) *env {
	t.Helper()
	requireTools(t, "curl", "socat")
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	opts := lab.Options{Prefix: labPrefix, Clients: o.clients, Servers: o.servers, VIPOnDirector: o.vipOnDirector}
	if m != modeNAT {
		// Replies go from the real server straight to the client.
		opts.VIPOnServers, opts.ClientLegOnServers = true, true
	}
	if m == modeTUN {
		opts.ServerMTU = 1520 // room for the 20-byte outer IP header
	}
	start := time.Now()
	l, err := lab.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	e := &env{t: t, ctx: ctx, l: l, m: m, vip: l.VIP(), dirNS: l.Director().NS}
	for i, s := range l.Servers() {
		name := serverName(i)
		if !o.noTestsrv {
			p := e.start(s.NS, "ready name="+name, bin.testsrv, "--name", name)
			e.srv = append(e.srv, p)
		}
		switch {
		case m == modeTUN && kernelIPIP():
			for _, c := range [][]string{{"ip", "link", "set", "tunl0", "up"}, {"sysctl", "-qw", "net.ipv4.conf.tunl0.rp_filter=0"}} {
				if out, err := l.Run(ctx, s.NS, c[0], c[1:]...); err != nil {
					t.Fatalf("%v in %s: %v %s", c, s.NS, err, out)
				}
			}
		case m == modeTUN:
			// No ipip module here: the userspace decapsulator stands in
			// for tunl0.
			e.start(s.NS, "ready", bin.decap, "--if", lab.ServerIf, "--vip", e.vip.String())
		}
	}
	e.gvsd = e.start(e.dirNS, "gvsd ready", bin.gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--log-format", "console", "--stats-interval", "0")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gvsd output:\n%s", e.gvsd.Output())
			for i, p := range e.srv {
				t.Logf("%s output:\n%s", serverName(i), p.Output())
			}
		}
	})
	t.Logf("%s lab %s ready in %v", m.name, l.Suffix(), time.Since(start).Round(time.Millisecond))
	return e
}

// with returns a copy of e that reports to t: subtests must fail
// themselves, not their parent.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// start runs a background process in ns and waits for its ready line.
func (e *env) start(ns, ready, name string, args ...string) *lab.Proc {
	e.t.Helper()
	p, err := e.l.Start(ns, name, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := p.WaitFor(e.ctx, ready); err != nil {
		e.t.Fatalf("%s in %s: %v", filepath.Base(name), ns, err)
	}
	return p
}

// serverName is the --name of real server i (0-based): r1, r2, ...
func serverName(i int) string { return "r" + strconv.Itoa(i+1) }

// client is the namespace of client i (0-based).
func (e *env) client(i int) string { return e.l.Clients()[i].NS }

// server describes real server i (0-based).
func (e *env) server(i int) lab.Server { return e.l.Servers()[i] }

// vipPort is "VIP:port".
func (e *env) vipPort(port int) string {
	return netip.AddrPortFrom(e.vip, uint16(port)).String()
}

// rip is "real server i's LAN address:port".
func (e *env) rip(i, port int) string {
	return netip.AddrPortFrom(e.server(i).LAN.Addr(), uint16(port)).String()
}

// ipvsadmResult is what one ipvsadm run printed and its exit status.
type ipvsadmResult struct {
	stdout, stderr string
	code           int
}

// ipvsadmRun runs `ipvsadm args...` in the director namespace, with stdin
// when not nil, and returns what it printed and its status.
func (e *env) ipvsadmRun(stdin io.Reader, args ...string) ipvsadmResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	cmd := e.l.ExecContext(ctx, e.dirNS, "ipvsadm", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := cmd.Run()
	r := ipvsadmResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		e.t.Fatalf("ipvsadm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return r
}

// ipvsadm runs `ipvsadm args...` in the director namespace, fails the test
// unless it succeeds, and returns its stdout.
func (e *env) ipvsadm(args ...string) string {
	e.t.Helper()
	r := e.ipvsadmRun(nil, args...)
	if r.code != 0 || r.stderr != "" {
		e.t.Fatalf("ipvsadm %s: exit %d: %s%s", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// addService adds the service proto ("-t"/"-u") VIP:vport with scheduler
// sched and extra service options, and every real server :rport with the
// env's forwarding method and the given weights (default 1 each).
func (e *env) addService(proto string, vport int, sched string, rport int, weights []int, extra ...string) string {
	e.t.Helper()
	svc := e.vipPort(vport)
	e.ipvsadm(append([]string{"-A", proto, svc, "-s", sched}, extra...)...)
	for i := range e.l.Servers() {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		e.ipvsadm("-a", proto, svc, "-r", e.rip(i, rport), e.m.flag, "-w", strconv.Itoa(w))
	}
	return svc
}

// list runs `ipvsadm -Ln` and parses it.
func (e *env) list() listing {
	e.t.Helper()
	out := e.ipvsadm("-Ln")
	ls, err := parseList(out)
	if err != nil {
		e.t.Fatalf("parsing ipvsadm -Ln: %v\n%s", err, out)
	}
	return ls
}

// service returns the listing of one service ("TCP"/"UDP", "VIP:port").
func (e *env) service(proto, addr string) service {
	e.t.Helper()
	ls := e.list()
	s, ok := ls.find(proto, addr)
	if !ok {
		e.t.Fatalf("ipvsadm -Ln has no %s %s:\n%v", proto, addr, ls)
	}
	return s
}

// stats runs `ipvsadm -Ln --stats --exact` and parses it.
func (e *env) stats() map[string]statService {
	e.t.Helper()
	out := e.ipvsadm("-Ln", "--stats", "--exact")
	st, err := parseStats(out)
	if err != nil {
		e.t.Fatalf("parsing ipvsadm -Ln --stats --exact: %v\n%s", err, out)
	}
	return st
}

// waitList polls `ipvsadm -Ln` until cond holds for the service, for at
// most d, and returns the last listing of it.
func (e *env) waitList(proto, addr string, d time.Duration, cond func(service) bool) (service, bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := e.service(proto, addr)
		if cond(s) {
			return s, true
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// curl fetches url with curl from namespace ns and returns the body.
func (e *env) curl(ns, url string) (string, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	return e.l.Output(ctx, ns, "curl", "-sS", "--fail", "--max-time", "5", url)
}

// field returns the value of key=value in a gvs-testsrv answer.
func field(body, key string) string {
	for f := range strings.FieldsSeq(body) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// httpClient is an HTTP client dialing from namespace ns, one connection
// per request (so every request is a new connection to schedule).
func httpClient(ns string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lab.Dial(ctx, ns, network, addr)
			},
		},
	}
}

// names does n GETs of http://addr/ from ns, each on a new connection, and
// counts the answering real servers.
func (e *env) names(ns, addr string, n int) map[string]int {
	e.t.Helper()
	c := httpClient(ns)
	seen := map[string]int{}
	for i := range n {
		req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			e.t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			e.t.Fatalf("GET %d of %d to %s: %v", i+1, n, addr, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			e.t.Fatalf("GET %d of %d to %s: %v", i+1, n, addr, err)
		}
		seen[field(string(body), "name")]++
	}
	return seen
}

// udpExchange sends payload from a new socket (a new source port) in ns to
// dst and returns the answer and the address it came from. It does not
// retry: a lost datagram is an error.
func (e *env) udpExchange(ns, dst, payload string, timeout time.Duration) (string, netip.AddrPort, error) {
	pc, err := lab.ListenPacket(e.ctx, ns, "udp4", "0.0.0.0:0")
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	defer pc.Close()
	to, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	if _, err := pc.WriteTo([]byte(payload), to); err != nil {
		return "", netip.AddrPort{}, err
	}
	pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("no answer to %q from %s: %w", payload, dst, err)
	}
	return string(buf[:n]), from.(*net.UDPAddr).AddrPort(), nil
}

// socatTransfer is the kernel selftest's check: `socat -u TCP-LISTEN:port
// STDOUT > outfile` in server namespace srvNS, `socat -u STDIN TCP:dst <
// infile` in client namespace cliNS with 32 random bytes, then the two
// files must be equal.
func (e *env) socatTransfer(srvNS, cliNS string, port int, dst string) {
	e.t.Helper()
	dir := e.t.TempDir()
	in := make([]byte, 32)
	rand.Read(in)
	inFile, outFile := filepath.Join(dir, "infile"), filepath.Join(dir, "outfile")
	if err := os.WriteFile(inFile, in, 0o600); err != nil {
		e.t.Fatal(err)
	}
	out, err := os.Create(outFile)
	if err != nil {
		e.t.Fatal(err)
	}
	defer out.Close()

	sctx, scancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer scancel()
	srv := e.l.ExecContext(sctx, srvNS, "socat", "-u", "-4", fmt.Sprintf("TCP-LISTEN:%d,reuseaddr", port), "STDOUT")
	var srvErr bytes.Buffer
	srv.Stdout, srv.Stderr = out, &srvErr
	if err := srv.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	e.waitListening(srvNS, port, done)

	f, err := os.Open(inFile)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	cctx, ccancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer ccancel()
	cli := e.l.ExecContext(cctx, cliNS, "socat", "-u", "-4", "STDIN", "TCP:"+dst)
	cli.Stdin = f
	if b, err := cli.CombinedOutput(); err != nil {
		e.t.Fatalf("client socat to %s: %v: %s", dst, err, b)
	}
	if err := <-done; err != nil {
		e.t.Fatalf("server socat on :%d: %v: %s", port, err, srvErr.String())
	}
	got, err := os.ReadFile(outFile)
	if err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Equal(got, in) {
		e.t.Fatalf("socat through %s: received %x, sent %x", dst, got, in)
	}
}

// waitListening waits until a TCP socket listens on port in ns (or the
// process reports on done that it ended).
func (e *env) waitListening(ns string, port int, done <-chan error) {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		out, err := e.l.Output(e.ctx, ns, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if err == nil && strings.TrimSpace(out) != "" {
			return
		}
		select {
		case err := <-done:
			e.t.Fatalf("listener on :%d in %s ended: %v", port, ns, err)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("nothing listens on :%d in %s after 3 s", port, ns)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdSink opens n TCP connections from ns to the TCP sink service dst and
// keeps them open (nothing is written, so the sink waits).
func (e *env) holdSink(ns, dst string, n int) []*net.TCPConn {
	e.t.Helper()
	conns := make([]*net.TCPConn, 0, n)
	e.t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		ctx, cancel := context.WithTimeout(e.ctx, 3*time.Second)
		c, err := lab.Dial(ctx, ns, "tcp4", dst)
		cancel()
		if err != nil {
			e.t.Fatalf("connecting to %s: %v", dst, err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	return conns
}

// finishSink half-closes c (the sink's EOF), reads the sink's answer
// "sha256=HEX bytes=N" and closes c.
func finishSink(c *net.TCPConn, timeout time.Duration) (string, error) {
	defer c.Close()
	if err := c.CloseWrite(); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the sink's answer: %w (got %q)", err, line)
	}
	return strings.TrimSpace(line), nil
}

// connDest returns the real server ("ip:port") of the connection from
// client ("ip:port") to the virtual service svc, as `ipvsadm -Lnc` shows
// it, or "" when it lists none.
func (e *env) connDest(svc, client string) string {
	e.t.Helper()
	for line := range strings.Lines(e.ipvsadm("-Lnc")) {
		if f := strings.Fields(line); len(f) == 6 && f[3] == client && f[4] == svc {
			return f[5]
		}
	}
	return ""
}
