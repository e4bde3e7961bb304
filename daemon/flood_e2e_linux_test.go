package daemon_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvs/forwarder/ring"
	"gvs/internal/frames"
	"gvs/internal/lab"
)

// flood sends TCP SYNs from client c to vip:80, addressed to dstMAC, with
// source ports cycling over 8192 values, through a TX ring at rate frames a
// second (0: as fast as the ring drains), until max frames are sent, the
// duration is over or stop is closed. It returns the number of frames sent.
func flood(c lab.Client, dstMAC frames.MAC, vip netip.Addr, rate, max int, dur time.Duration, stop <-chan struct{}) (int, error) {
	const ports = 8192
	tmpl := make([][]byte, ports)
	for i := range tmpl {
		tmpl[i] = frames.TCP(frames.L2{Src: frames.MAC(c.MAC), Dst: dstMAC},
			frames.IP{Src: c.Addr(), Dst: vip},
			frames.TCPSeg{SrcPort: uint16(20000 + i), DstPort: 80, Seq: uint32(i) * 7919, SYN: true})
	}
	sent := 0
	err := lab.Do(c.NS, func() error {
		ifi, err := net.InterfaceByName(c.Name)
		if err != nil {
			return err
		}
		cfg := ring.DefaultTXConfig()
		cfg.FlushEvery = -1
		tx, err := ring.OpenTX(ifi.Index, &cfg)
		if err != nil {
			return err
		}
		defer tx.Close()
		begin := time.Now()
		end := begin.Add(dur)
		for sent < max {
			if rate > 0 && sent%64 == 0 && sent >= int(time.Since(begin).Seconds()*float64(rate)) {
				_ = tx.Flush()
				time.Sleep(time.Millisecond)
				continue
			}
			if sent%4096 == 0 {
				select {
				case <-stop:
					return tx.Flush()
				default:
				}
				if time.Now().After(end) {
					return tx.Flush()
				}
			}
			slot, ok := tx.Slot()
			if !ok {
				_ = tx.Flush()
				_ = tx.Wait(10 * time.Millisecond)
				continue
			}
			f := tmpl[sent%ports]
			tx.Commit(copy(slot, f))
			sent++
			if sent%64 == 0 {
				_ = tx.Flush()
			}
		}
		return tx.Flush()
	})
	return sent, err
}

// Bounds of the flood at start-up: at most floodFrames frames, for at most
// floodTime.
const (
	floodFrames = 20_000_000
	floodTime   = 20 * time.Second
)

// floodSenders is the number of sending threads (each its own TX ring),
// floodRate the frames a second they send together (0: as fast as they
// can). A flood beyond what the worker forwards (~150k frames a second on
// the shared 2-CPU machine, less when other work competes) drops frames at
// random in the full RX ring, the test's own connection's too, which
// measures capacity, not start-up; 20k/s leaves a wide margin.
var floodSenders, floodRate = 1, 20_000

// TestStartUnderFlood: gvsd starts while a SYN flood hits the VIP, and is
// restarted after SIGKILL (a stale nftables table) three times. Each time it
// must serve within startBound of being started: gvsadm -Ln answers, and the
// first TCP connection made then completes without a retransmission (the
// real servers' next hops are resolved before gvsd is ready).
func TestStartUnderFlood(t *testing.T) {
	lab.Require(t)
	const startBound = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDirectorLab(t, ctx, lab.Options{}, natRules)
	c := d.l.Clients()[0]

	stop := make(chan struct{})
	var stopOnce sync.Once
	stopFlood := func() { stopOnce.Do(func() { close(stop) }) }
	defer stopFlood()
	var sent atomic.Int64
	var floodErr error
	var wg sync.WaitGroup
	floodStart := time.Now()
	var errMu sync.Mutex
	for range floodSenders {
		wg.Go(func() {
			n, err := flood(c, frames.MAC(d.l.Director().VIPSide.MAC), d.l.VIP(), floodRate/floodSenders, floodFrames/floodSenders, floodTime, stop)
			sent.Add(int64(n))
			errMu.Lock()
			floodErr = errors.Join(floodErr, err)
			errMu.Unlock()
		})
	}
	defer wg.Wait()
	time.Sleep(500 * time.Millisecond) // the flood is on before gvsd starts

	// A first start under the flood, then SIGKILL (the table stays
	// behind, blackholing the VIP) and restarts under the same flood.
	for round, what := range []string{"start", "restart 1 after SIGKILL", "restart 2 after SIGKILL", "restart 3 after SIGKILL"} {
		if round > 0 {
			if err := syscall.Kill(d.gvsd.Pid(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-d.gvsd.Done()
			if !tablePresent(t, d.l.Director().NS) {
				t.Fatal("after SIGKILL the nftables table is gone: the restart is not tested with a stale table")
			}
		}
		ctlAt, servedAt, ready := startServed(t, ctx, d, 2*startBound)
		t.Logf("%s under a flood: gvsadm -Ln answered %v after start, first GET served %v after start; %s",
			what, ctlAt.Round(time.Millisecond), servedAt.Round(time.Millisecond), ready)
		if servedAt > startBound {
			t.Errorf("%s under a flood: gvsd served %v after being started, want at most %v", what, servedAt, startBound)
		}
	}
	stopFlood()
	wg.Wait()
	floodFor := time.Since(floodStart)
	if floodErr != nil {
		t.Fatalf("flood: %v", floodErr)
	}
	t.Logf("flood: %d SYNs in %v (%.0f/s)", sent.Load(), floodFor.Round(time.Millisecond), float64(sent.Load())/floodFor.Seconds())
	stopAndCheck(t, d)
}

// startServed starts gvsd and waits (at most bound each) until gvsadm -Ln
// lists the VIP's TCP service and until a GET through the VIP is answered.
// It returns both times since the start, and gvsd's ready line.
func startServed(t *testing.T, ctx context.Context, d *director, bound time.Duration) (ctlAt, servedAt time.Duration, ready string) {
	t.Helper()
	start := time.Now()
	d.startGVSD(t, ctx)
	ns := d.l.Director().NS
	for {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		out, err := d.l.Run(actx, ns, adminBin, "-Ln")
		acancel()
		if err == nil && strings.Contains(out, "TCP  "+d.l.VIP().String()+":80") {
			ctlAt = time.Since(start)
			break
		}
		if time.Since(start) > bound {
			t.Fatalf("gvsadm -Ln did not answer within %v: %v: %s", bound, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// One connection, right away, given less time than the client's SYN
	// retransmission (1 s): its first SYN must be forwarded, that is gvsd
	// must not be ready before it knows its real servers' MACs.
	actx, acancel := context.WithTimeout(ctx, 900*time.Millisecond)
	body, err := httpGet(actx, d.l.Clients()[0].NS, "http://"+d.l.VIP().String()+":80/")
	acancel()
	if err != nil || !strings.HasPrefix(body, "name=r") {
		// Logged, not failed: on a loaded machine a frame may be lost for
		// other reasons. What makes it fail every few starts is asserted
		// below from gvsd's log.
		t.Logf("the first connection right after gvsadm answered (%v after start) failed: %v %q", ctlAt, err, body)
		servedWithin(t, ctx, d, bound)
	}
	servedAt = time.Since(start)
	ready, _ = d.gvsd.WaitFor(ctx, "gvsd ready")
	// Ready means every real server's next hop is known: a connection
	// scheduled to one whose MAC is still being resolved loses its first
	// packet (no_route), a SYN costs the client a second.
	out := d.gvsd.Output()
	readyAt := strings.Index(out, `"msg":"gvsd ready"`)
	for _, rip := range []string{"198.18.2.11", "198.18.2.12", "198.18.2.13"} {
		at := strings.Index(out, `"msg":"next hop resolved","dest":"`+rip+`"`)
		if at < 0 || at > readyAt {
			t.Errorf("gvsd was ready before the next hop of real server %s was resolved", rip)
		}
	}
	return ctlAt, servedAt, ready
}
