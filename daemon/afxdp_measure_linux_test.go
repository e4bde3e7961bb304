//go:build measure

// go test -tags measure -run TestMeasureIO -v ./daemon/ : CPU per forwarded
// packet of gvsd --io tpacket and --io afxdp (NAT, UDP, fixed rate). Not
// part of make test: a measurement, not a check.

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

// schedNS is the CPU time (ns) of every thread of pid (schedstat's first
// field, summed over /proc/pid/task/*).
func schedNS(pid int) uint64 {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var sum uint64
	for _, tk := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, tk.Name()))
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		v, _ := strconv.ParseUint(f[0], 10, 64)
		sum += v
	}
	return sum
}

// cpuBusy sums user+nice+system+irq+softirq (USER_HZ ticks) of all CPUs,
// and softirq alone.
func cpuBusy() (busy, softirq uint64) {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, idx := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseUint(f[idx], 10, 64)
		busy += v
		if i == 4 {
			softirq = v
		}
	}
	return busy, softirq
}

func lastTX(out string) uint64 {
	i := strings.LastIndex(out, `"msg":"stats"`)
	if i < 0 {
		return 0
	}
	_, rest, _ := strings.Cut(out[i:], `"tx":`)
	v, _, _ := strings.Cut(rest, ",")
	n, _ := strconv.ParseUint(v, 10, 64)
	return n
}

func TestMeasureIO(t *testing.T) {
	lab.Require(t)
	rate := 30000.0 // requests/s; the echo doubles it: 60 kpps forwarded
	if v := os.Getenv("RATE"); v != "" {
		rate, _ = strconv.ParseFloat(v, 64)
	}
	ctx := context.Background()
	benchBin, err := lab.Build(ctx, t.TempDir(), "gvs/cmd/gvs-bench")
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		for _, io := range []string{"tpacket", "afxdp"} {
			var d *director
			if io == "afxdp" {
				d = startXDPDirector(t, ctx, lab.Options{}, natRules, nil)
			} else {
				d = startDirector(t, ctx, lab.Options{}, natRules)
			}
			udpEcho(t, ctx, d, 53, "warm")
			c := d.l.Clients()[0]
			gen, err := d.l.Start(c.NS, benchBin, "gen", "-dev", lab.ClientIf, "-rate", fmt.Sprint(rate),
				"-src-mac", c.MAC.String(), "-dst-mac", d.l.Director().VIPSide.MAC.String(),
				"-src", c.Addr().String(), "-dst", d.l.VIP().String(), "-sport-lo", "1024", "-sport-hi", "2047", "-dport", "53")
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			tx0, s0 := lastTX(d.gvsd.Output()), schedNS(d.gvsd.Pid())
			b0, si0 := cpuBusy()
			t0 := time.Now()
			time.Sleep(8 * time.Second)
			tx1, s1 := lastTX(d.gvsd.Output()), schedNS(d.gvsd.Pid())
			b1, si1 := cpuBusy()
			el := time.Since(t0)
			gen.Stop()
			la, _ := os.ReadFile("/proc/loadavg")
			pk := float64(tx1 - tx0)
			hz := 100.0
			t.Logf("io=%s round=%d forwarded=%.0f pps gvsd=%.2f µs/pkt all-CPU busy=%.2f µs/pkt softirq=%.2f µs/pkt (window %v, loadavg %s)",
				io, round, pk/el.Seconds(), float64(s1-s0)/pk/1000,
				float64(b1-b0)/hz*1e6/pk, float64(si1-si0)/hz*1e6/pk, el.Round(time.Millisecond), strings.TrimSpace(string(la)))
			stopAndCheck(t, d)
			d.l.Close()
		}
	}
}
