//go:build linux

package ring

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"gvs/internal/lab"
)

// Test network namespaces.
//
// Approach: every privileged test creates its own named network namespace
// (gvsring-<random hex>) with `ip netns add`, creates veth pairs inside it
// with `ip -n`, and opens its sockets from a goroutine whose OS thread is
// locked and temporarily moved into the namespace with setns(2). A socket
// stays in the namespace it was created in, so after creation the rings are
// used from any goroutine and the test process itself never leaves its own
// namespace. If the thread cannot be moved back it stays locked, and the
// runtime destroys it when the goroutine exits. Cleanup closes the rings,
// then the namespace file descriptor, then deletes the namespace, which
// destroys the veths. Addresses are taken from 198.18.0.0/15 (RFC 2544
// benchmarking); no frame leaves the namespace.
//
// Privileges: without root, the ip tool or netns support the tests skip
// with the reason, except under CI=true, where that is a failure.

// unavailable fails the test (under CI=true) or skips it, with the reason.
func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true and the netns test environment is unavailable: %s", msg)
	}
	tb.Skipf("skipping: %s", msg)
}

// testNet is a private network namespace with veth pairs.
type testNet struct {
	name string
}

// link describes one interface of a testNet.
type link struct {
	name    string
	ifindex int
	mac     net.HardwareAddr
}

// newTestNet creates a namespace and, for every pair {x, y}, a veth pair x
// <-> y, both up, with 198.18.<k>.1/24 and .2/24 addresses and no IPv6
// link-local address (less background traffic). It registers cleanup.
func newTestNet(tb testing.TB, pairs ...[2]string) *testNet {
	tb.Helper()
	if os.Geteuid() != 0 {
		unavailable(tb, "needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN) for network namespaces and packet sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable(tb, "the ip tool (iproute2) is not installed: %v", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	n := &testNet{name: "gvsring-" + hex.EncodeToString(rnd[:])}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		unavailable(tb, "cannot create a network namespace: %v: %s", err, strings.TrimSpace(string(out)))
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			tb.Errorf("deleting netns %s: %v: %s", n.name, err, out)
		}
	})
	for k, p := range pairs {
		n.ip(tb, "link", "add", p[0], "type", "veth", "peer", "name", p[1])
		for j, l := range p {
			n.ip(tb, "link", "set", l, "addrgenmode", "none")
			n.ip(tb, "addr", "add", fmt.Sprintf("198.18.%d.%d/24", k+1, j+1), "dev", l)
			n.ip(tb, "link", "set", l, "up")
		}
	}
	return n
}

// ip runs `ip -n <ns> args...` and fails the test on error.
func (n *testNet) ip(tb testing.TB, args ...string) {
	tb.Helper()
	full := append([]string{"-n", n.name}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(full, " "), err, strings.TrimSpace(string(out)))
	}
}

// do runs fn on an OS thread that is inside the namespace.
func (n *testNet) do(fn func() error) error {
	return lab.Do(n.name, fn)
}

// link looks up an interface inside the namespace.
func (n *testNet) link(tb testing.TB, name string) link {
	tb.Helper()
	var l link
	err := n.do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		l = link{name: name, ifindex: ifi.Index, mac: ifi.HardwareAddr}
		return nil
	})
	if err != nil {
		tb.Fatalf("looking up %s in %s: %v", name, n.name, err)
	}
	return l
}

// openRX opens an RX ring on the named interface and registers Close.
func (n *testNet) openRX(tb testing.TB, name string, cfg *RXConfig) *RX {
	tb.Helper()
	l := n.link(tb, name)
	var r *RX
	err := n.do(func() (err error) {
		r, err = OpenRX(l.ifindex, cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("OpenRX(%s): %v", name, err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// openTX opens a TX ring on the named interface and registers Close.
func (n *testNet) openTX(tb testing.TB, name string, cfg *TXConfig) *TX {
	tb.Helper()
	l := n.link(tb, name)
	var t *TX
	err := n.do(func() (err error) {
		t, err = OpenTX(l.ifindex, cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("OpenTX(%s): %v", name, err)
	}
	tb.Cleanup(func() { t.Close() })
	return t
}
