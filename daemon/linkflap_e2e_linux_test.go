package daemon_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvs/internal/lab"
)

// cpuTicks is the CPU time (user + system, in clock ticks of 1/100 s) the
// process pid has used so far (/proc/PID/stat fields 14 and 15).
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces: the fields start after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state): utime is field 14, stime 15.
	ut, err1 := strconv.Atoi(f[11])
	st, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return ut + st
}

// ipIn runs `ip args...` in namespace ns.
func ipIn(t *testing.T, ctx context.Context, d *director, ns string, args ...string) {
	t.Helper()
	if out, err := d.l.Run(ctx, ns, "ip", args...); err != nil {
		t.Fatalf("ip %v in %s: %v: %s", args, ns, err, out)
	}
}

// waitLog waits up to wait for a line of gvsd's output containing substr.
func waitLog(t *testing.T, ctx context.Context, d *director, substr string, wait time.Duration) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if _, err := d.gvsd.WaitFor(wctx, substr); err != nil {
		t.Fatalf("gvsd did not log %q within %v: %v", substr, wait, err)
	}
}

// servedWithin retries GETs through the VIP until one is answered by a real
// server, for at most wait, and returns how long it took.
func servedWithin(t *testing.T, ctx context.Context, d *director, wait time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var lastErr error
	for wctx.Err() == nil {
		actx, acancel := context.WithTimeout(wctx, time.Second)
		body, err := httpGet(actx, d.l.Clients()[0].NS, "http://"+d.l.VIP().String()+":80/")
		acancel()
		if err == nil && strings.HasPrefix(body, "name=r") {
			return time.Since(start)
		}
		lastErr = err
		select {
		case <-wctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("no GET through the VIP answered within %v (last error: %v)", wait, lastErr)
	return 0
}

// idleTicks is the most CPU time (clock ticks) gvsd may use in an idle
// interval of 2 s: a spinning worker uses all of it (200).
const idleTicks = 20

// TestLinkDownUp: the DIP interface goes down for 2 s and comes back. gvsd
// logs both transitions, stays idle meanwhile (the rings' ENETDOWN does not
// make a worker spin), stays idle afterwards, and forwards again.
func TestLinkDownUp(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	ns, pid := d.l.Director().NS, d.gvsd.Pid()
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Fatalf("3 GETs through the VIP: %v", seen)
	}

	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorDIPIf, "down")
	waitLog(t, ctx, d, `"link down"`, 3*time.Second)
	// A client keeps trying meanwhile: frames for the down side reach the
	// worker and are refused by the device.
	go func() {
		actx, acancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer acancel()
		_, _ = httpGet(actx, d.l.Clients()[0].NS, "http://"+d.l.VIP().String()+":80/")
	}()
	before := cpuTicks(t, pid)
	time.Sleep(2 * time.Second)
	used := cpuTicks(t, pid) - before
	t.Logf("link down: gvsd used %d ticks (1/100 s) of CPU in 2 s", used)
	if used > idleTicks {
		t.Errorf("link down: gvsd used %d ticks (1/100 s) of CPU in 2 s, want at most %d", used, idleTicks)
	}

	ipIn(t, ctx, d, ns, "link", "set", lab.DirectorDIPIf, "up")
	if err := lab.WaitCarrier(ns, lab.DirectorDIPIf, time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ctx, d, `"link up"`, 3*time.Second)
	took := servedWithin(t, ctx, d, 10*time.Second)
	t.Logf("served again %v after the link came up", took)

	before = cpuTicks(t, pid)
	time.Sleep(2 * time.Second)
	used = cpuTicks(t, pid) - before
	t.Logf("link back up: gvsd used %d ticks of CPU in 2 idle seconds", used)
	if used > idleTicks {
		t.Errorf("link back up: gvsd used %d ticks of CPU in 2 idle seconds, want at most %d", used, idleTicks)
	}
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs after the link came back: %v", seen)
	}

	// The VIP side flaps: the ARP responder's socket sees ENETDOWN too,
	// and must keep answering for the VIP afterwards.
	vif := d.l.Director().VIPSide.Name
	ipIn(t, ctx, d, ns, "link", "set", vif, "down")
	waitLog(t, ctx, d, `"link down","interface":"`+vif, 3*time.Second)
	ipIn(t, ctx, d, ns, "link", "set", vif, "up")
	if err := lab.WaitCarrier(ns, vif, time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !arpAnswered(t, d.l.Clients()[0], d.l.VIP(), 2*time.Second) {
		t.Error("after the VIP link flapped: ARP for the VIP not answered")
	}
	servedWithin(t, ctx, d, 10*time.Second)
	if strings.Contains(d.gvsd.Output(), "ARP responder stopped") {
		t.Error("the ARP responder stopped on a link flap")
	}
	stopAndCheck(t, d)
}

// TestInterfaceRecreated: the VIP interface is deleted and created again
// with the same name, MAC and address (another ifindex). gvsd logs the
// removal and the re-creation, moves its rings and ARP responder to the new
// interface and serves the VIP again; at exit its table is gone.
func TestInterfaceRecreated(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{}, natRules)
	ns, bns, sfx := d.l.Director().NS, d.l.BridgeNS(), d.l.Suffix()
	vipSide := d.l.Director().VIPSide
	port, bridge := "dv-"+sfx, "brc-"+sfx // the lab's names for the VIP veth's bridge end
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Fatalf("3 GETs through the VIP: %v", seen)
	}

	ipIn(t, ctx, d, bns, "link", "del", port) // removes both ends
	waitLog(t, ctx, d, `"interface removed`, 3*time.Second)
	ipIn(t, ctx, d, bns, "link", "add", port, "mtu", "1500", "type", "veth", "peer", "name", vipSide.Name, "netns", ns)
	ipIn(t, ctx, d, bns, "link", "set", port, "master", bridge, "up")
	ipIn(t, ctx, d, ns, "link", "set", vipSide.Name, "address", vipSide.MAC.String(), "mtu", "1500", "up")
	ipIn(t, ctx, d, ns, "addr", "add", vipSide.Prefix.String(), "dev", vipSide.Name)
	if err := lab.DisableOffloads(ns, vipSide.Name); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitCarrier(ns, vipSide.Name, time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ctx, d, `"interface re-created"`, 3*time.Second)
	waitLog(t, ctx, d, `"rings re-opened"`, 3*time.Second)
	took := servedWithin(t, ctx, d, 10*time.Second)
	t.Logf("served again %v after the interface was back", took)
	if seen := serverNames(t, ctx, d, 3); len(seen) != 3 {
		t.Errorf("3 GETs after the re-creation: %v", seen)
	}
	if got := udpEcho(t, ctx, d, 53, "again"); got != "r1 again" {
		t.Errorf("UDP echo after the re-creation: %q", got)
	}
	if !arpAnswered(t, d.l.Clients()[0], d.l.VIP(), time.Second) {
		t.Error("ARP for the VIP not answered on the re-created interface")
	}
	stopAndCheck(t, d)
}
