package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newLab builds a lab for one test and closes it at the end.
func newLab(t *testing.T, o Options) *Lab {
	t.Helper()
	Require(t)
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// heldNS opens namespace ns so that it outlives `ip netns del`.
func heldNS(t *testing.T, ns string) int {
	t.Helper()
	fd, err := unix.Open(NSPath(ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// waitInNS waits until process pid (started through `ip netns exec`) has
// joined namespace ns.
func waitInNS(t *testing.T, ns string, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := nsPids(ns)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(pids, pid) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never entered %s", pid, ns)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// linksIn lists the interfaces of a namespace held open by fd.
func linksIn(t *testing.T, fd int) []string {
	t.Helper()
	var names []string
	err := doFD(fd, "held", func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestNATLabBuildAndTeardown(t *testing.T) {
	l := newLab(t, Options{})
	ctx := ctxT(t, 20*time.Second)
	d, cs, ss := l.Director(), l.Clients(), l.Servers()
	if len(cs) != 1 || len(ss) != 3 {
		t.Fatalf("%d clients, %d servers", len(cs), len(ss))
	}
	for _, ns := range l.Namespaces() {
		if _, err := os.Stat(NSPath(ns)); err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
		if !strings.HasSuffix(ns, "-"+l.Suffix()) {
			t.Fatalf("namespace %s lacks suffix %s", ns, l.Suffix())
		}
	}

	t.Run("ping", func(t *testing.T) {
		if err := Ping(ctx, cs[0].NS, d.VIPSide.Addr()); err != nil {
			t.Error(err)
		}
		for _, s := range ss {
			if err := Ping(ctx, s.NS, d.DIPSide.Addr()); err != nil {
				t.Error(err)
			}
			// Servers share one L2 LAN.
			if err := Ping(ctx, s.NS, ss[0].LAN.Addr()); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("director does not forward", func(t *testing.T) {
		if v, err := ReadSysctl(d.NS, "net.ipv4.ip_forward"); err != nil || v != "0" {
			t.Fatalf("ip_forward = %q, %v", v, err)
		}
		short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		defer cancel()
		if err := Ping(short, cs[0].NS, ss[0].LAN.Addr()); err == nil {
			t.Fatal("client reached a real server through a non-forwarding director")
		}
	})
	t.Run("addresses routes and MACs", func(t *testing.T) {
		out, err := l.Output(ctx, ss[1].NS, "ip", "-4", "route", "show", "default")
		if err != nil || !strings.Contains(out, "default via 198.18.2.1 dev eth0") {
			t.Fatalf("server default route %q, %v", out, err)
		}
		out, err = l.Output(ctx, cs[0].NS, "ip", "-4", "route", "show", "default")
		if err != nil || !strings.Contains(out, "default via 198.18.1.1 dev eth0") {
			t.Fatalf("client default route %q, %v", out, err)
		}
		for ns, ifc := range map[string]Iface{d.NS: d.VIPSide, ss[2].NS: ss[2].LAN, cs[0].NS: cs[0].Iface} {
			err := Do(ns, func() error {
				ifi, err := net.InterfaceByName(ifc.Name)
				if err != nil {
					return err
				}
				addrs, err := ifi.Addrs()
				if err != nil {
					return err
				}
				if ifi.HardwareAddr.String() != ifc.MAC.String() {
					return fmt.Errorf("%s MAC %v, want %v", ifc.Name, ifi.HardwareAddr, ifc.MAC)
				}
				if len(addrs) != 1 || addrs[0].String() != ifc.Prefix.String() {
					return fmt.Errorf("%s addresses %v, want only %v", ifc.Name, addrs, ifc.Prefix)
				}
				return nil
			})
			if err != nil {
				t.Errorf("%s: %v", ns, err)
			}
		}
		if ss[0].ClientLeg.IsValid() {
			t.Fatal("NAT lab has server client legs")
		}
		if v, err := ReadSysctl(ss[0].NS, "net.ipv4.conf.all.arp_ignore"); err != nil || v != "0" {
			t.Fatalf("NAT server arp_ignore = %q, %v", v, err)
		}
	})
	t.Run("offloads off", func(t *testing.T) {
		for ns, ifname := range map[string]string{cs[0].NS: ClientIf, ss[0].NS: ServerIf, d.NS: DirectorDIPIf} {
			m, err := Offloads(ns, ifname)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"tx-checksum-ip-generic", "tx-tcp-segmentation", "tx-generic-segmentation"} {
				on, ok := m[f]
				if !ok || on {
					t.Errorf("%s %s: %s present=%v on=%v", ns, ifname, f, ok, on)
				}
			}
		}
	})
	t.Run("no ipv6", func(t *testing.T) {
		out, err := l.Output(ctx, ss[0].NS, "ip", "-6", "addr")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("ipv6 addresses %q, %v", out, err)
		}
	})

	t.Run("teardown", func(t *testing.T) {
		held := map[string]int{l.BridgeNS(): heldNS(t, l.BridgeNS()), d.NS: heldNS(t, d.NS), ss[0].NS: heldNS(t, ss[0].NS)}
		// An untracked process inside a namespace must not keep it alive.
		cmd := l.Exec(ss[1].NS, "sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		waitInNS(t, ss[1].NS, cmd.Process.Pid)

		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		for _, ns := range l.Namespaces() {
			if _, err := os.Stat(NSPath(ns)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("namespace %s still exists: %v", ns, err)
			}
		}
		// Even namespaces kept alive by an open descriptor hold no links.
		for ns, fd := range held {
			if got := linksIn(t, fd); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("%s still has links %v", ns, got)
			}
		}
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			t.Error("process inside the lab survived Close")
		}
		if _, err := os.Stat(filepath.Join(markerDir, l.Suffix())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("marker left: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := l.Start(d.NS, "true"); err == nil {
			t.Error("Start after Close succeeded")
		}
	})
}

func TestCleanupRemovesOnlyStaleLabs(t *testing.T) {
	const prefix = "gvslt"
	l := newLab(t, Options{Prefix: prefix, Servers: 1})
	sfx := l.Suffix()

	// A namespace that merely shares the prefix is not a lab's.
	foreign := prefix + "foreign-" + sfx
	if err := runIP("netns", "add", foreign); err != nil {
		t.Fatal(err)
	}
	defer runIP("netns", "del", foreign)

	removed, err := Cleanup(prefix)
	if err != nil || slices.ContainsFunc(removed, func(ns string) bool { return strings.HasSuffix(ns, sfx) }) {
		t.Fatalf("Cleanup of a live lab removed %v, %v", removed, err)
	}
	for _, ns := range l.Namespaces() {
		if _, err := os.Stat(NSPath(ns)); err != nil {
			t.Fatalf("live namespace %s gone: %v", ns, err)
		}
	}

	// Simulate a crashed owner: pid 1 with a start time that is not its own.
	if err := os.WriteFile(filepath.Join(markerDir, sfx), []byte("1 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := l.Exec(l.Servers()[0].NS, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	waitInNS(t, l.Servers()[0].NS, cmd.Process.Pid)
	fd := heldNS(t, l.BridgeNS())

	removed, err = Cleanup(prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(l.Namespaces()))
	var ours []string
	for _, ns := range removed {
		if strings.HasSuffix(ns, "-"+sfx) {
			ours = append(ours, ns)
		}
	}
	if !slices.Equal(ours, want) {
		t.Fatalf("Cleanup removed %v, want %v", ours, want)
	}
	for _, ns := range want {
		if _, err := os.Stat(NSPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s survived Cleanup", ns)
		}
	}
	if got := linksIn(t, fd); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("bridge namespace still has links %v", got)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("process inside a stale lab survived Cleanup")
	}
	if ownerAlive(sfx) {
		t.Error("marker survived Cleanup")
	}
	if _, err := os.Stat(NSPath(foreign)); err != nil || slices.Contains(removed, foreign) {
		t.Errorf("Cleanup removed the foreign namespace %s: %v", foreign, err)
	}
	// Close after an external cleanup has nothing left to do.
	if err := l.Close(); err != nil {
		t.Fatalf("Close after Cleanup: %v", err)
	}
}

func TestOwnerAlive(t *testing.T) {
	Require(t)
	if err := writeMarker("ownertest"); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Join(markerDir, "ownertest"))
	if !ownerAlive("ownertest") {
		t.Fatal("own marker not alive")
	}
	for _, content := range []string{"1 0\n", "0 0\n", "x y\n", "", "999999999 1\n"} {
		os.WriteFile(filepath.Join(markerDir, "ownertest"), []byte(content), 0o644)
		if ownerAlive("ownertest") {
			t.Errorf("marker %q alive", content)
		}
	}
	if ownerAlive("") || ownerAlive("no-such-marker") {
		t.Error("missing marker alive")
	}
}

func TestProcLifecycle(t *testing.T) {
	l := newLab(t, Options{Servers: 1})
	ns := l.Director().NS
	ctx := ctxT(t, 10*time.Second)

	p, err := l.Start(ns, "sh", "-c", "echo partial; echo ready now; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	line, err := p.WaitFor(ctx, "ready")
	if err != nil || line != "ready now" {
		t.Fatalf("WaitFor = %q, %v", line, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	p, err = l.Start(ns, "sh", "-c", "echo bye >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor(ctx, "never"); !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "bye") {
		t.Fatalf("WaitFor on exited process: %v", err)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Wait = %v, want exit status 3", err)
	}

	out, err := l.Run(ctx, ns, "sh", "-c", "echo out; echo err >&2")
	if err != nil || out != "out\nerr\n" {
		t.Fatalf("Run = %q, %v", out, err)
	}
	if out, err := l.Run(ctx, ns, "sh", "-c", "echo oops >&2; exit 2"); err == nil || !strings.Contains(err.Error(), "oops") || out != "oops\n" {
		t.Fatalf("failing Run = %q, %v", out, err)
	}
	if out, err := l.Output(ctx, ns, "sh", "-c", "echo out; echo err >&2"); err != nil || out != "out\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
	if out, err := l.Output(ctx, ns, "cat", "/proc/thread-self/net/dev"); err != nil || !strings.Contains(out, "dip0:") {
		t.Fatalf("Output did not run inside %s: %q %v", ns, out, err)
	}

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	p, err = l.Start(ns, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor(short, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor past deadline: %v", err)
	}
	// Close stops what Start started.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Close left a started process running")
	}
}

// TestCloseOnSignal runs a lab in a child process (this test binary again)
// and checks that SIGTERM removes it and still terminates the child.
func TestCloseOnSignal(t *testing.T) {
	if os.Getenv("GVS_LAB_SIGNAL_CHILD") == "1" {
		l, err := New(Options{Prefix: "gvsls", Servers: 1})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		l.CloseOnSignal()
		fmt.Println("suffix", l.Suffix())
		time.Sleep(time.Minute)
		os.Exit(3) // not reached unless the signal was lost
	}
	Require(t)
	ctx := ctxT(t, 30*time.Second)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCloseOnSignal$")
	cmd.Env = append(os.Environ(), "GVS_LAB_SIGNAL_CHILD=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 || f[0] != "suffix" {
		cmd.Process.Kill()
		t.Fatalf("child said %q, %v", line, err)
	}
	sfx := f[1]
	if !ownerAlive(sfx) {
		t.Fatal("child lab has no live marker")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("child ended with %v, want death by SIGTERM", err)
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "-"+sfx) {
			t.Errorf("namespace %s survived SIGTERM", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(markerDir, sfx)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker survived SIGTERM: %v", err)
	}
}

func TestDoEntersAndLeaves(t *testing.T) {
	l := newLab(t, Options{Servers: 1, ServerMTU: 1600})
	ino := func(path string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	before := ino("/proc/self/ns/net")
	target := ino(NSPath(l.Director().NS))
	for range 20 {
		var inside uint64
		if err := Do(l.Director().NS, func() error {
			inside = ino("/proc/thread-self/ns/net")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if inside != target {
			t.Fatalf("inside Do: namespace %d, want %d", inside, target)
		}
	}
	for ns, want := range map[string]map[string]int{
		l.Director().NS:   {DirectorVIPIf: 1500, DirectorDIPIf: 1600},
		l.Servers()[0].NS: {ServerIf: 1600},
		l.BridgeNS():      {"brs-" + l.Suffix(): 1600, "brc-" + l.Suffix(): 1500},
	} {
		for ifname, mtu := range want {
			if err := Do(ns, func() error {
				ifi, err := net.InterfaceByName(ifname)
				if err == nil && ifi.MTU != mtu {
					err = fmt.Errorf("MTU %d, want %d", ifi.MTU, mtu)
				}
				return err
			}); err != nil {
				t.Errorf("%s %s: %v", ns, ifname, err)
			}
		}
	}
	wantErr := errors.New("from fn")
	if err := Do(l.Director().NS, func() error { return wantErr }); err != wantErr {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	if err := Do("gvs-no-such-namespace", func() error { return nil }); err == nil {
		t.Fatal("Do in a missing namespace succeeded")
	}
	// Dial/Listen create their sockets inside the namespace.
	ln, err := Listen(context.Background(), l.Director().NS, "tcp4", "198.18.2.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := net.Listen("tcp4", "198.18.2.1:0"); err == nil {
		t.Fatal("lab address bindable outside the lab")
	}
	if ino("/proc/self/ns/net") != before {
		t.Fatal("test process changed namespace")
	}
}

// snmpCounter reads one counter of /proc/net/snmp inside ns, e.g.
// ("Icmp", "OutDestUnreachs").
func snmpCounter(t *testing.T, ns, group, name string) int {
	t.Helper()
	v := -1
	err := Do(ns, func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		var header []string
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != group+":" {
				continue
			}
			if header == nil {
				header = fields
				continue
			}
			if i := slices.Index(header, name); i > 0 && i < len(fields) {
				v, err = strconv.Atoi(fields[i])
				return err
			}
		}
		return fmt.Errorf("%s %s not found", group, name)
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
