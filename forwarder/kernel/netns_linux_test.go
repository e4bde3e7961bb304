//go:build linux

package kernel

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// runID makes namespace and table names unique per test process.
var runID = func() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// requireNetNS skips the test when network namespaces cannot be created
// (not root, no ip(8)); under CI=true that is a failure instead.
func requireNetNS(t *testing.T) {
	t.Helper()
	reason := ""
	switch {
	case os.Geteuid() != 0:
		reason = "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for network namespaces"
	default:
		if _, err := exec.LookPath("ip"); err != nil {
			reason = "needs ip(8) from iproute2"
		} else if _, err := os.Stat("/proc/self/ns/net"); err != nil {
			reason = "kernel without network namespaces"
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", reason)
	}
	t.Skip(reason)
}

// testNS is a named network namespace deleted when the test ends.
type testNS struct {
	name string
	h    netns.NsHandle
}

func newNS(t *testing.T, tag string) *testNS {
	t.Helper()
	name := "gvsk-" + runID + "-" + tag
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "true" {
			t.Skipf("cannot create network namespace: %v: %s", err, out)
		}
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &testNS{name: name}
	t.Cleanup(func() {
		if n.h.IsOpen() {
			n.h.Close()
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("opening namespace %s: %v", name, err)
	}
	n.h = h
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs "ip -n NS args...".
func (n *testNS) ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
}

// sh runs a shell command inside the namespace.
func (n *testNS) sh(t *testing.T, cmd string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.name, "sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", n.name, cmd, err, out)
	}
}

// do runs f on the test goroutine's thread switched into the namespace.
// Sockets f opens stay in the namespace. f may call t.Fatal: the thread is
// switched back (or, if that fails, left locked so the runtime discards it).
func (n *testNS) do(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current namespace: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("entering %s: %v", n.name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("leaving %s: %v (thread stays locked)", n.name, err)
			return
		}
		runtime.UnlockOSThread()
	}()
	f()
}

// vethPair links a (interface aIf, address aCIDR) and b (bIf, bCIDR).
func vethPair(t *testing.T, a *testNS, aIf, aCIDR string, b *testNS, bIf, bCIDR string) {
	t.Helper()
	a.ip(t, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.name)
	a.ip(t, "addr", "add", aCIDR, "dev", aIf)
	b.ip(t, "addr", "add", bCIDR, "dev", bIf)
	a.ip(t, "link", "set", aIf, "up")
	b.ip(t, "link", "set", bIf, "up")
}

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
