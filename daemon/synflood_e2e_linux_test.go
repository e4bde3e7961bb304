package daemon_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvs/internal/frames"
	"gvs/internal/lab"
)

// Bounds of TestEstablishedUnderSYNFlood.
const (
	synFloodConns    = 8                      // long-lived connections
	synFloodInterval = 20 * time.Millisecond  // one request/response per connection this often
	synFloodFor      = 6 * time.Second        // flood (and measurement) length
	synFloodMax      = 30_000_000             // frames, at most
	synFloodSenders  = 2                      // sending threads, each its own TX ring
	synFloodLate     = 150 * time.Millisecond // a round slower than this lost a packet (TCP's RTO is 200 ms)
)

// TestEstablishedUnderSYNFlood: while a second client floods the VIP with
// TCP SYNs as fast as this lab's senders go, established connections keep
// their packets: at least 99 % of their request/response rounds (one per
// connection every 20 ms) are answered without a retransmission. gvsd
// runs without the per-source SYN budget (--syn-rate 0), so that the
// split into an established ring and a SYN ring alone is tested; the SYN
// ring must have overflowed (the flood was beyond the worker), the
// established rings must not have.
func TestEstablishedUnderSYNFlood(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := newDirectorLab(t, ctx, lab.Options{Clients: 2}, natRules)
	startGVSDArgs(t, ctx, d, "--syn-rate", "0")
	if _, err := d.gvsd.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	legit, flooder := d.l.Clients()[0], d.l.Clients()[1]
	url := "http://" + d.l.VIP().String() + ":80/"

	// The long-lived connections, opened before the flood.
	conns := make([]net.Conn, synFloodConns)
	err := lab.Do(legit.NS, func() error {
		for i := range conns {
			c, err := net.DialTimeout("tcp4", d.l.VIP().String()+":80", 2*time.Second)
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		t.Fatalf("connecting through the VIP: %v", err)
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	type tally struct {
		rounds, late, failed int
		worst                time.Duration
	}
	results := make([]tally, len(conns))
	var stopRounds atomic.Bool
	var rw sync.WaitGroup
	req := []byte("GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
	for i, c := range conns {
		rw.Go(func() {
			br := bufio.NewReader(c)
			r := &results[i]
			next := time.Now()
			for !stopRounds.Load() {
				start := time.Now()
				_ = c.SetDeadline(start.Add(2 * time.Second))
				_, err := c.Write(req)
				var resp *http.Response
				if err == nil {
					resp, err = http.ReadResponse(br, nil)
				}
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				took := time.Since(start)
				r.rounds++
				r.worst = max(r.worst, took)
				switch {
				case err != nil:
					r.failed++
					t.Errorf("connection %d: %v after %v", i, err, took)
					return
				case took > synFloodLate:
					r.late++
				}
				next = next.Add(synFloodInterval)
				time.Sleep(time.Until(next))
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // rounds before the flood are counted too: they all pass
	var sent atomic.Int64
	var fw sync.WaitGroup
	floodStart := time.Now()
	stop := make(chan struct{})
	for range synFloodSenders {
		fw.Go(func() {
			n, err := flood(flooder, frames.MAC(d.l.Director().VIPSide.MAC), d.l.VIP(), 0, synFloodMax/synFloodSenders, synFloodFor, stop)
			sent.Add(int64(n))
			if err != nil {
				t.Errorf("flood: %v", err)
			}
		})
	}
	fw.Wait()
	floodFor := time.Since(floodStart)
	stopRounds.Store(true)
	rw.Wait()
	close(stop)

	var all tally
	for _, r := range results {
		all.rounds += r.rounds
		all.late += r.late
		all.failed += r.failed
		all.worst = max(all.worst, r.worst)
	}
	delivered := float64(all.rounds-all.late-all.failed) / float64(max(all.rounds, 1))
	// A new connection still gets through once the flood is over.
	if body, err := httpGet(ctx, legit.NS, url); err != nil {
		t.Errorf("a new connection after the flood: %v %q", err, body)
	}
	time.Sleep(1100 * time.Millisecond) // a stats line after the flood
	st := lastStats(d.gvsd.Output())
	t.Logf("flood: %d SYNs in %v (%.0f/s) from %v; established: %d rounds on %d connections, %d late (> %v), %d failed, worst %v: %.2f %% delivered; gvsd: %v",
		sent.Load(), floodFor.Round(time.Millisecond), float64(sent.Load())/floodFor.Seconds(), flooder.Addr(),
		all.rounds, len(conns), all.late, synFloodLate, all.failed, all.worst.Round(time.Millisecond), 100*delivered, st)
	if delivered < 0.99 {
		t.Errorf("established connections: %.2f %% of their rounds answered in time, want at least 99 %%", 100*delivered)
	}
	if st["syn_ring_drops"] == 0 {
		t.Errorf("the SYN ring dropped nothing: the flood (%.0f/s) did not overload the worker, nothing was tested", float64(sent.Load())/floodFor.Seconds())
	}
	if est := st["ring_drops"] - st["syn_ring_drops"]; est != 0 {
		t.Errorf("the established rings dropped %d frames under the flood, want none", est)
	}
	stopAndCheck(t, d)
}

// startGVSDArgs starts gvsd as startGVSD does, with extra flags.
func startGVSDArgs(t *testing.T, ctx context.Context, d *director, extra ...string) {
	t.Helper()
	gvsd, _ := binaries(t)
	args := append([]string{"--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--rules", d.rules, "--log-level", "debug", "--stats-interval", "1s"}, extra...)
	p, err := d.l.Start(d.l.Director().NS, gvsd, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("gvsd output (tail):\n%s", tail(p.Output(), 4000))
		}
	})
	d.gvsd = p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var statsField = regexp.MustCompile(`"(ring_drops|syn_ring_drops|udp_ring_drops|syn_budget|rx|tx|tx_full)":(\d+)`)

// lastStats returns the counters of gvsd's last "stats" log line.
func lastStats(out string) map[string]uint64 {
	m := map[string]uint64{}
	at := strings.LastIndex(out, `"msg":"stats"`)
	if at < 0 {
		return m
	}
	line, _, _ := strings.Cut(out[at:], "\n")
	for _, f := range statsField.FindAllStringSubmatch(line, -1) {
		v, _ := strconv.ParseUint(f[2], 10, 64)
		m[f[1]] = v
	}
	return m
}
