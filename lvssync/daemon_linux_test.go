//go:build linux

package lvssync

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"gvs/internal/lab"
)

// Two network namespaces joined by a veth pair (m0 in the master's, b0
// in the backup's, 198.18.0.1/24 and .2/24): the test's sockets are opened
// from a thread moved into the namespace with setns(2) and stay there.
// Without root or the ip tool the test skips, or fails under CI=true.

type netns struct {
	name string
}

func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true and the netns test environment is unavailable: %s", msg)
	}
	tb.Skipf("skipping: %s", msg)
}

func newNetns(tb testing.TB, prefix string) *netns {
	tb.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	n := &netns{name: prefix + hex.EncodeToString(rnd[:])}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		unavailable(tb, "cannot create a network namespace: %v: %s", err, strings.TrimSpace(string(out)))
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			tb.Errorf("deleting netns %s: %v: %s", n.name, err, out)
		}
	})
	return n
}

func (n *netns) ip(tb testing.TB, args ...string) {
	tb.Helper()
	full := append([]string{"-n", n.name}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(full, " "), err, strings.TrimSpace(string(out)))
	}
}

// do runs fn on an OS thread inside the namespace.
func (n *netns) do(fn func() error) error {
	return lab.Do(n.name, fn)
}

func pair(t *testing.T) (m, b *netns) {
	if os.Geteuid() != 0 {
		unavailable(t, "needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable(t, "the ip tool (iproute2) is not installed: %v", err)
	}
	m, b = newNetns(t, "gvssyncm-"), newNetns(t, "gvssyncb-")
	m.ip(t, "link", "add", "m0", "type", "veth", "peer", "name", "b0", "netns", b.name)
	for _, x := range []struct {
		ns   *netns
		dev  string
		addr string
	}{{m, "m0", "198.18.0.1/24"}, {b, "b0", "198.18.0.2/24"}} {
		x.ns.ip(t, "link", "set", x.dev, "multicast", "on")
		x.ns.ip(t, "addr", "add", x.addr, "dev", x.dev)
		x.ns.ip(t, "link", "set", x.dev, "up")
		x.ns.ip(t, "link", "set", "lo", "up")
	}
	return m, b
}

// collector is a Handler that keeps what it gets.
type collector struct {
	mu    sync.Mutex
	conns []Conn
}

func (c *collector) SyncConn(x *Conn) {
	c.mu.Lock()
	c.conns = append(c.conns, *x)
	c.mu.Unlock()
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// waitFor polls cond until it holds; the deadline only bounds a failing
// test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)

		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMasterToBackup(t *testing.T) {
	mns, bns := pair(t)

	var match, other, any, self collector
	var rMatch, rOther, rAny, rSelf *Receiver
	if err := bns.do(func() error {
		var err error
		if rMatch, err = NewReceiver(Config{State: Backup, McastIfn: "b0", SyncID: 5}, &match); err != nil {
			return err
		}
		if rOther, err = NewReceiver(Config{State: Backup, McastIfn: "b0", SyncID: 9}, &other); err != nil {
			return err
		}
		rAny, err = NewReceiver(Config{State: Backup, McastIfn: "b0"}, &any)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rMatch.Close()
	defer rOther.Close()
	defer rAny.Close()

	var s *Sender
	if err := mns.do(func() error {
		var err error
		s, err = NewSender(Config{State: Master, McastIfn: "m0", SyncID: 5},
			SenderOptions{Producers: 2, SendDelay: 5 * time.Millisecond, FlushAfter: 20 * time.Millisecond})
		if err != nil {
			return err
		}
		// A backup next to the master, on its interface: master and
		// backup run at once, and multicast loop is off.
		rSelf, err = NewReceiver(Config{State: Backup, McastIfn: "m0", SyncID: 5}, &self)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer rSelf.Close()

	if got := FormatDaemon(&Config{State: Master, McastIfn: "m0", SyncID: 5, SyncMaxlen: s.Config().SyncMaxlen,
		McastGroup: s.Config().McastGroup, McastPort: s.Config().McastPort, McastTTL: s.Config().McastTTL}, nil); got != "master sync daemon (mcast=m0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" {
		t.Errorf("FormatDaemon: %q", got)
	}

	// 300 records from two workers: several full messages (40 records
	// of 36 bytes fit in 1472) and a partial one flushed by age.
	const n = 300
	var want []Conn
	for i := range n {
		c := connV1TCP
		c.CPort = uint16(10000 + i)
		c.Flags |= FlagHashed // not sent
		if i%10 == 0 {
			c = connsV1Mixed[0] // a template
			c.CAddr = netip.AddrFrom4([4]byte{198, 18, 1, byte(i / 10)})
		}
		for !s.Producer(i % 2).Enqueue(&c) {
			time.Sleep(time.Millisecond) // the default queue holds 1024: never here
		}
		c.Flags = BackupFlags(1, MasterFlags(c.Flags))
		want = append(want, c)
	}
	v6 := connV1IPv6
	s.Producer(0).Enqueue(&v6)

	waitFor(t, "the sender to send every record", func() bool { return s.Stats().Records == n+1 })
	sent := s.Stats().Messages
	for _, r := range []*Receiver{rMatch, rOther, rAny} {
		waitFor(t, "every message at every backup", func() bool { return r.Counters().Messages.Load() == sent })
	}
	// Messages counts a datagram as Decode starts on it; its records reach
	// the collector after that, so wait for them too.
	waitFor(t, "every record at the matching backups", func() bool { return match.len() >= n && any.len() >= n })
	if match.len() != n || any.len() != n {
		t.Fatalf("backups got %d and %d records, want %d", match.len(), any.len(), n)
	}

	// Each worker's records arrive in its order; compare as sets.
	key := func(c Conn) string { return fmt.Sprintf("%+v", c) }
	wantSet := map[string]int{}
	for _, c := range want {
		wantSet[key(c)]++
	}
	for name, col := range map[string]*collector{"syncid 5": &match, "syncid 0": &any} {
		got := map[string]int{}
		for _, c := range col.conns {
			got[key(c)]++
		}
		for k, v := range wantSet {
			if got[k] != v {
				t.Errorf("%s backup: %s received %d times, want %d", name, k, got[k], v)
				break
			}
		}
	}
	if other.len() != 0 || rOther.Counters().Count(ReasonSyncID) != sent {
		t.Errorf("syncid 9 backup took %d records; %d of %d messages filtered", other.len(), rOther.Counters().Count(ReasonSyncID), sent)
	}
	if rMatch.Counters().Count(ReasonIPv6) != 1 {
		t.Errorf("IPv6 records skipped: %d, want 1", rMatch.Counters().Count(ReasonIPv6))
	}
	st := s.Stats()
	if st.Records != n+1 || st.Messages < (n+1+39)/40 || st.Dropped != 0 || st.SendErrors != 0 {
		t.Errorf("sender stats %+v", st)
	}
	if self.len() != 0 || rSelf.Counters().Messages.Load() != 0 {
		t.Errorf("the master's own backup received %d messages (multicast loop must be off)", rSelf.Counters().Messages.Load())
	}

	// Version 0 on the fly (sync_version=0): records arrive with v0's
	// backup flags and no timeout; the IPv6 record cannot be sent.
	s.SetVersion(0)
	c0 := connsV0[1]
	s.Producer(1).Enqueue(&c0)
	s.Producer(1).Enqueue(&v6)
	waitFor(t, "the version 0 record", func() bool { return match.len() == n+1 })
	match.mu.Lock()
	got := match.conns[n]
	match.mu.Unlock()
	wantV0 := c0
	wantV0.Flags = BackupFlags(0, c0.Flags)
	if !equalConns([]Conn{got}, []Conn{wantV0}) {
		t.Errorf("v0 record %+v, want %+v", got, wantV0)
	}
	waitFor(t, "the IPv6 record refused", func() bool { return s.Stats().Invalid == 1 })
}

// TestSenderQueueFull: a producer whose queue is full drops the record and
// counts it, without blocking.
func TestSenderQueueFull(t *testing.T) {
	mns, _ := pair(t)
	var s *Sender
	if err := mns.do(func() error {
		var err error
		// The sender drains only every hour: the queue fills.
		s, err = NewSender(Config{State: Master, McastIfn: "m0"}, SenderOptions{QueueLen: 4, SendDelay: time.Hour})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := connV1TCP
	ok := 0
	for range 10 {
		if s.Producer(0).Enqueue(&c) {
			ok++
		}
	}
	if ok != 4 || s.Stats().Dropped != 6 {
		t.Errorf("%d queued, %d dropped; want 4 and 6", ok, s.Stats().Dropped)
	}
}

func TestUnknownInterface(t *testing.T) {
	if _, err := NewSender(Config{State: Master, McastIfn: "nosuchif0"}, SenderOptions{}); err == nil || !strings.Contains(err.Error(), "unknown mcast interface: nosuchif0") {
		t.Errorf("NewSender: %v", err)
	}
	if _, err := NewReceiver(Config{State: Backup, McastIfn: "nosuchif0"}, HandlerFunc(func(*Conn) {})); err == nil {
		t.Error("NewReceiver on a missing interface")
	}
}
