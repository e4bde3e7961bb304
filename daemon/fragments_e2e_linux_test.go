package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvs/internal/lab"
)

// ipStats reads the Ip: counters of /proc/net/snmp in namespace ns.
func ipStats(t *testing.T, ns string) map[string]int64 {
	t.Helper()
	var b []byte
	err := lab.Do(ns, func() (err error) {
		// thread-self: the namespace is the calling thread's.
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var names, values []string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Ip: "); ok {
			if names == nil {
				names = strings.Fields(rest)
			} else {
				values = strings.Fields(rest)
			}
		}
	}
	if len(names) == 0 || len(names) != len(values) {
		t.Fatalf("no Ip: counters in %s's /proc/net/snmp", ns)
	}
	m := map[string]int64{}
	for i, n := range names {
		v, err := strconv.ParseInt(values[i], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		m[n] = v
	}
	return m
}

// TestFragmentedUDPNAT: a 4000-byte UDP datagram, which the client's
// kernel sends in three fragments over the lab's MTU 1500, reaches a NAT
// real server's UDP echo through one gvsd worker (reassembled, DNATed,
// fragmented again), and the 4003-byte answer, fragmented by the real
// server's kernel, comes back to the client (reassembled, SNATed,
// fragmented again) byte for byte. The director does not forward (its
// ip_forward is off) and the nftables table drops the kernel's copy of
// the later fragments: only gvs can carry the datagram.
//
// GVS_E2E_GVSD, when set, is the gvsd binary to run instead of the one
// built from this tree (to compare with an older build).
func TestFragmentedUDPNAT(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d := newDirectorLab(t, ctx, lab.Options{}, func(vip string) string {
		return fmt.Sprintf("-A -u %[1]s:53 -s rr\n-a -u %[1]s:53 -r 198.18.2.11:9000 -m -w 1\n", vip)
	})
	gvsd, _ := binaries(t)
	if b := os.Getenv("GVS_E2E_GVSD"); b != "" {
		gvsd = b
	}
	p, err := d.l.Start(d.l.Director().NS, gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--rules", d.rules, "--log-level", "debug", "--workers", "1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("gvsd output:\n%s", p.Output())
		}
	})
	d.gvsd = p
	if _, err := p.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}

	cns := d.l.Clients()[0].NS
	// A small datagram first: neighbours resolved, the path known good.
	if got := udpEcho(t, ctx, d, 53, "small"); got != "r1 small" {
		t.Fatalf("small datagram: %q, want %q", got, "r1 small")
	}
	before := ipStats(t, cns)

	c, err := lab.Dial(ctx, cns, "udp4", fmt.Sprintf("%s:53", d.l.VIP()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 4000)
	for i := range msg {
		msg[i] = byte(i*7 + i/251)
	}
	want := append([]byte("r1 "), msg...)
	buf := make([]byte, 16<<10)
	var got []byte
	for try := 0; try < 3 && got == nil; try++ {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil {
			got = buf[:n]
		}
	}
	if got == nil {
		t.Fatalf("no answer to a 4000-byte datagram through the VIP")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("answer: %d bytes (want %d), equal %v", len(got), len(want), bytes.Equal(got, want))
	}
	// The client's kernel sent fragments and reassembled the answer from
	// fragments: the datagrams did cross the director as fragments.
	after := ipStats(t, cns)
	if n := after["FragCreates"] - before["FragCreates"]; n < 3 {
		t.Errorf("client created %d fragments, want at least 3", n)
	}
	if n := after["ReasmOKs"] - before["ReasmOKs"]; n < 1 {
		t.Errorf("client reassembled %d datagrams, want the fragmented answer", n)
	}
	stopAndCheck(t, d)
}
