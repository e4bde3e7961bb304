package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvs/internal/lab"
)

var (
	buildOnce         sync.Once
	gvsdBin, adminBin string
	buildErr          error
)

// binaries builds gvsd and gvsadm once per test binary.
func binaries(t *testing.T) (gvsd, gvsadm string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gvsd-test-")
		if err != nil {
			buildErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var e1, e2 error
		if gvsdBin, e1 = lab.Build(ctx, dir, "gvs/cmd/gvsd"); e1 == nil {
			adminBin, e2 = lab.Build(ctx, dir, "gvs/cmd/gvsadm")
		}
		buildErr = errors.Join(e1, e2)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return gvsdBin, adminBin
}

// newLab is a small lab: one client, one real server, the director.
func newLab(t *testing.T) *lab.Lab {
	t.Helper()
	lab.Require(t)
	l, err := lab.New(lab.Options{Prefix: "gvssd", Servers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// notifySocket listens where NOTIFY_SOCKET points, as systemd does.
type notifySocket struct {
	t     *testing.T
	conn  *net.UnixConn
	path  string
	pings int // WATCHDOG=1 messages seen
}

func listenNotify(t *testing.T) *notifySocket {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{t: t, conn: c, path: path}
}

// next returns the next message that is not only a watchdog ping or a
// periodic STATUS= line; pings are counted.
func (n *notifySocket) next() string {
	n.t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = n.conn.SetReadDeadline(deadline)
		k, err := n.conn.Read(buf)
		if err != nil {
			n.t.Fatalf("no notification: %v", err)
		}
		msg := string(buf[:k])
		switch {
		case msg == "WATCHDOG=1":
			n.pings++
		case strings.HasPrefix(msg, "STATUS=") && !strings.Contains(msg, "\n"):
		default:
			return msg
		}
	}
}

var monotonicReload = regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*\n$`)

// expectReload checks a RELOADING=1 + MONOTONIC_USEC message followed by
// READY=1 (with the failure's STATUS when fail is not "").
func (n *notifySocket) expectReload(fail string) {
	n.t.Helper()
	if msg := n.next(); !monotonicReload.MatchString(msg) {
		n.t.Fatalf("reload began with %q, want RELOADING=1 and MONOTONIC_USEC", msg)
	}
	msg := n.next()
	if fail == "" {
		if msg != "READY=1" {
			n.t.Fatalf("after a good reload: %q, want READY=1", msg)
		}
		return
	}
	if !strings.HasPrefix(msg, "READY=1\nSTATUS=reload failed: ") || !strings.Contains(msg, fail) {
		n.t.Fatalf("after a failed reload: %q, want READY=1 and STATUS=reload failed: …%s…", msg, fail)
	}
}

// gvsadm runs gvsadm in ns and returns stdout, stderr and the exit status.
func gvsadm(t *testing.T, l *lab.Lab, ns string, args ...string) (string, string, int) {
	t.Helper()
	_, admin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := l.ExecContext(ctx, ns, admin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// TestSystemdNotify runs gvsd under a fake systemd (NOTIFY_SOCKET,
// WATCHDOG_USEC) in a lab: READY=1 once serving, RELOADING=1 +
// MONOTONIC_USEC then READY=1 around reloads by SIGHUP and by gvsadm
// --reload, READY=1 + STATUS=reload failed for a bad rules file (the rules
// in force stay, gvsadm --reload exits 1 with the error), watchdog pings,
// STOPPING=1 at SIGTERM.
func TestSystemdNotify(t *testing.T) {
	l := newLab(t)
	gvsd, _ := binaries(t)
	ns := l.Director().NS
	sock := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", sock.path)
	t.Setenv("WATCHDOG_USEC", "2000000") // pings every second

	vip := l.VIP().String()
	rip := l.Servers()[0].LAN.Addr().String()
	rules := filepath.Join(t.TempDir(), "rules")
	write := func(s string) {
		if err := os.WriteFile(rules, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	one := fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %s:80 -r %s:80 -m\n", vip, vip, rip)
	two := one + fmt.Sprintf("-A -u %s:53 -s rr\n-a -u %s:53 -r %s:53 -m\n", vip, vip, rip)
	write(one)
	p, err := l.Start(ns, gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf, "--rules", rules)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("gvsd output:\n%s", p.Output())
		}
	})

	if msg := sock.next(); msg != "READY=1\nSTATUS=1 service, 1 real server, 0 pps" {
		t.Fatalf("first notification %q, want READY=1 with the status", msg)
	}
	if out, errOut, code := gvsadm(t, l, ns, "-Sn"); code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("after READY=1: gvsadm -Sn exit %d: %q %q", code, out, errOut)
	}

	// SIGHUP: asynchronous; the notifications tell when it is done.
	write(two)
	if err := syscall.Kill(p.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	sock.expectReload("")
	if out, _, _ := gvsadm(t, l, ns, "-Sn"); strings.Count(out, "\n") != 4 {
		t.Fatalf("SIGHUP did not load the second service:\n%s", out)
	}

	// gvsadm --reload with a bad file: the error, exit 1, nothing changes.
	write(two + "-A -t " + vip + ":443 -s bogus\n")
	_, errOut, code := gvsadm(t, l, ns, "--reload")
	if code != 1 || !strings.Contains(errOut, "line 5: Scheduler or persistence engine not found") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("bad rules: gvsadm --reload exit %d, stderr %q", code, errOut)
	}
	sock.expectReload("line 5: Scheduler or persistence engine not found")
	if out, _, _ := gvsadm(t, l, ns, "-Sn"); strings.Count(out, "\n") != 4 || strings.Contains(out, ":443") {
		t.Fatalf("a failed reload changed the rules:\n%s", out)
	}

	// gvsadm --reload with a good file: exit 0 once it is in force.
	write(one)
	if out, errOut, code := gvsadm(t, l, ns, "--reload"); code != 0 || out != "" || errOut != "" {
		t.Fatalf("gvsadm --reload: exit %d, %q %q", code, out, errOut)
	}
	if out, _, _ := gvsadm(t, l, ns, "-Sn"); strings.Count(out, "\n") != 2 {
		t.Fatalf("gvsadm --reload returned before the rules were in force:\n%s", out)
	}
	sock.expectReload("")

	// SIGHUP with a missing file: READY=1 and the failure.
	if err := os.Remove(rules); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	sock.expectReload("no such file or directory")

	if err := syscall.Kill(p.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := sock.next(); msg != "STOPPING=1\nSTATUS=stopping" {
		t.Fatalf("at SIGTERM: %q, want STOPPING=1", msg)
	}
	// The data path's watchdog pings (1 s apart; the first at once).
	if sock.pings == 0 {
		t.Error("no WATCHDOG=1 while the workers ran")
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("gvsd exit: %v", err)
	}
}

// TestStartupErrors runs the built gvsd into operators' mistakes: each is
// one line on stderr ("gvsd: ..."), no stack trace, a non-zero exit.
func TestStartupErrors(t *testing.T) {
	l := newLab(t)
	gvsd, _ := binaries(t)
	ns := l.Director().NS
	// An interface without an IPv4 address.
	if _, err := l.Run(context.Background(), ns, "ip", "link", "add", "noaddr0", "type", "veth", "peer", "name", "noaddr1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Run(context.Background(), ns, "ip", "link", "set", "noaddr0", "up"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("-A -t "+l.VIP().String()+":80 -s bogus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ifs := []string{"--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf}
	run := func(want string, code int, prefix []string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := l.ExecContext(ctx, ns, prefix[0], append(prefix[1:], args...)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		_ = cmd.Run()
		got := e.String()
		if cmd.ProcessState.ExitCode() != code || strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "gvsd: ") ||
			!strings.Contains(got, want) || strings.Contains(got, "goroutine") || strings.Contains(got, "panic") ||
			strings.Contains(got, "stacktrace") || strings.Contains(got, ".go:") {
			t.Errorf("gvsd %q: exit %d, stderr %q; want exit %d and one line with %q", args, cmd.ProcessState.ExitCode(), got, code, want)
		}
	}
	plain := []string{gvsd}
	run("interface nope0", 1, plain, "--vip-if", "nope0", "--dip-if", "nope0")
	run("interface noaddr0: no IPv4 address", 1, plain, "--vip-if", "noaddr0", "--dip-if", lab.DirectorDIPIf)
	run(bad+": line 1: Scheduler or persistence engine not found", 1, plain, append(ifs, "--rules", bad)...)
	run("no such file or directory", 1, plain, append(ifs, "--rules", filepath.Join(dir, "none"))...)
	run("flag provided but not defined: -bogus", 2, plain, "--bogus")
	run(`invalid value "x" for flag -workers`, 2, plain, append(ifs, "--workers", "x")...)
	run("--conn-capacity must not be negative", 2, plain, append(ifs, "--conn-capacity", "-1")...)
	// Without privileges (no CAP_NET_ADMIN/CAP_NET_RAW): a hint.
	run("needs CAP_NET_RAW and CAP_NET_ADMIN", 1, []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", gvsd}, ifs...)

	// The control socket in use: a second gvsd.
	p, err := l.Start(ns, gvsd, append(ifs, "--rules", good)...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := p.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	run("control socket @gvsd is in use", 1, plain, ifs...)
}

// TestRunAsUser runs gvsd as an unprivileged user with only CAP_NET_RAW
// and CAP_NET_ADMIN as ambient capabilities (what gvsd.service gives it):
// it must serve, and root's gvsadm must be able to list and change it.
func TestRunAsUser(t *testing.T) {
	l := newLab(t)
	gvsd, _ := binaries(t)
	ns := l.Director().NS
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) is needed")
	}
	vip := l.VIP().String()
	dir, err := os.MkdirTemp("", "gvsd-user-") // readable by nobody
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "rules")
	if err := os.WriteFile(rules, []byte("-A -t "+vip+":80 -s rr\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := l.Start(ns, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"--inh-caps=+net_raw,+net_admin", "--ambient-caps=+net_raw,+net_admin",
		gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf, "--rules", rules)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Stop(); err != nil {
			t.Errorf("gvsd exit: %v\n%s", err, p.Output())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := p.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := gvsadm(t, l, ns, "-a", "-t", vip+":80", "-r", l.Servers()[0].LAN.Addr().String()+":80", "-m"); code != 0 {
		t.Fatalf("gvsadm -a as root: exit %d %q\n%s", code, errOut, p.Output())
	}
	if out, _, code := gvsadm(t, l, ns, "-Sn"); code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("gvsadm -Sn: exit %d %q", code, out)
	}
	if _, errOut, code := gvsadm(t, l, ns, "--reload"); code != 0 {
		t.Fatalf("gvsadm --reload: exit %d %q", code, errOut)
	}
	if strings.Contains(p.Output(), `"level":"error"`) {
		t.Errorf("errors in the log:\n%s", p.Output())
	}
}
