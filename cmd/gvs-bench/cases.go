package main

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gvs/internal/lab"
)

// userHZ is the unit of /proc/stat and /proc/PID/stat times (USER_HZ,
// 100 on every Linux architecture gvs targets).
const userHZ = 100

// trafgen starts the generator on the client (pinned to the generator
// CPU): rate 0 = flat out; count bounds the run.
func (b *bench) trafgen(rate float64, count uint64) (*lab.Proc, error) {
	args := append([]string{"-c", b.o.genCPU, "trafgen"}, trafgenArgs(b.trafgenCfg, b.client.Name, rate, count)...)
	return b.l.Start(b.client.NS, "taskset", args...)
}

// prime sends a little traffic so that the forwarder has resolved the real
// servers' MACs and is warm before anything is measured.
func (b *bench) prime(ctx context.Context) error {
	p, err := b.trafgen(20000, 4000)
	if err != nil {
		return err
	}
	return b.waitProc(ctx, p, 10*time.Second)
}

// waitProc waits for a bounded process and stops it if it overruns.
func (b *bench) waitProc(ctx context.Context, p *lab.Proc, limit time.Duration) error {
	select {
	case <-p.Done():
	case <-time.After(limit):
		p.Stop()
		return fmt.Errorf("process in %s overran %v: %s", p.NS, limit, p.Output())
	case <-ctx.Done():
		p.Stop()
		return ctx.Err()
	}
	if err := p.Wait(); err != nil {
		return fmt.Errorf("trafgen: %w: %s", err, p.Output())
	}
	return nil
}

// measureLoad runs the generator at rate (0: flat out) and returns one
// window after the warm-up, plus the forwarder process's CPU ticks
// (user+system) in that window when proc is set.
func (b *bench) measureLoad(ctx context.Context, rate float64, proc *lab.Proc) (window, uint64, error) {
	total := b.o.warmup + b.o.window + time.Second
	maxRate := rate
	if maxRate == 0 {
		maxRate = 5e6 // a bound far above this generator
	}
	g, err := b.trafgen(rate, uint64(maxRate*total.Seconds()))
	if err != nil {
		return window{}, 0, err
	}
	defer g.Stop()
	select {
	case <-time.After(b.o.warmup):
	case <-g.Done():
		return window{}, 0, fmt.Errorf("trafgen ended early: %s", g.Output())
	case <-ctx.Done():
		return window{}, 0, ctx.Err()
	}
	pa, _ := procTicks(proc)
	s0, err := b.snap()
	if err != nil {
		return window{}, 0, err
	}
	time.Sleep(b.o.window)
	s1, err := b.snap()
	if err != nil {
		return window{}, 0, err
	}
	pb, _ := procTicks(proc)
	select {
	case <-g.Done():
		return window{}, 0, fmt.Errorf("trafgen ended inside the window: %s", g.Output())
	default:
	}
	return diff(s0, s1), pb - pa, nil
}

// procTicks is a process's user+system CPU ticks (0 without a process).
func procTicks(p *lab.Proc) (uint64, error) {
	if p == nil {
		return 0, nil
	}
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.Pid()), "stat"))
	if err != nil {
		return 0, err
	}
	u, s, err := parsePidStat(st)
	return u + s, err
}

// dirCPUNum is the director's CPU as a number.
func (b *bench) dirCPUNum() int {
	n, _ := strconv.Atoi(b.o.dirCPU)
	return n
}

// casePPS: overload rate, then the loss-free rate search.
func (b *bench) casePPS(ctx context.Context, c contender, r *running, round int) error {
	w, _, err := b.measureLoad(ctx, 0, nil)
	if err != nil {
		return err
	}
	fwd := w.fwded
	if c.kind == kindGen {
		fwd = w.arrived
		b.genMax = w.offered
	}
	b.add("pps", c, round, "offered_pps", w.offered)
	b.add("pps", c, round, "overload_fwd_pps", fwd)
	b.add("pps", c, round, "overload_cpu_pct", busyPct(w, b.dirCPUNum()))
	if c.Name == "gvs-nat" {
		b.lastNatOverload = fwd
	}
	b.logf("  %-10s overload: offered %s/s, at director %s/s, forwarded %s/s", c.Name, formatValue(w.offered), formatValue(w.arrived), formatValue(fwd))
	if c.kind == kindGen {
		return nil
	}
	hi := b.genMax
	if hi == 0 {
		hi = w.offered
	}
	best, genBound, trials, err := searchLossFree(searchConfig{
		Hi: hi * 1.02, Guess: fwd, Tolerance: b.o.tolerance, Steps: b.o.steps,
	}, func(rate float64) (trial, error) { return b.trial(ctx, rate) })
	for _, t := range trials {
		b.logf("    trial %s/s: sent %d, received %d, loss %.4f%%", formatValue(t.Rate), t.Sent, t.Received, 100*t.Loss)
	}
	if err != nil {
		return err
	}
	note := ""
	if genBound {
		note = "generator-bound: no loss at the highest rate the generator offered"
	}
	b.addSample(sample{Case: "pps", Contender: c.Name, Round: round, Metric: "lossfree_pps", Value: best, Trials: trials, Note: note})
	b.logf("  %-10s loss-free: %s/s %s", c.Name, formatValue(best), note)
	return nil
}

// trial offers rate for the trial duration and counts every frame.
func (b *bench) trial(ctx context.Context, rate float64) (trial, error) {
	t := trial{Rate: rate}
	count := uint64(rate * b.o.trial.Seconds())
	s0, err := b.snap()
	if err != nil {
		return t, err
	}
	g, err := b.trafgen(rate, count)
	if err != nil {
		return t, err
	}
	if err := b.waitProc(ctx, g, 3*b.o.trial+10*time.Second); err != nil {
		return t, err
	}
	time.Sleep(300 * time.Millisecond) // let the rings and queues drain
	s1, err := b.snap()
	if err != nil {
		return t, err
	}
	w := diff(s0, s1)
	t.Sent, t.Received = w.clientTX, w.srvRX
	t.Offered = float64(t.Sent) / b.o.trial.Seconds()
	if t.Sent > 0 {
		t.Loss = math.Max(0, 1-float64(t.Received)/float64(t.Sent))
	}
	return t, nil
}

func busyPct(w window, cpu int) float64 {
	t := w.cpu[cpu]
	if t.Total() == 0 {
		return math.NaN()
	}
	return 100 * float64(t.Busy()) / float64(t.Total())
}

// caseCPU: CPU time per forwarded packet at a fixed rate below every
// contender's limit. Counted: user+nice+system+irq+softirq of the
// director's CPU (with RPS, everything the director does runs there,
// including the kernel contender's softirq work and the delivery to the
// real servers' sinks, which is the same for everyone).
func (b *bench) caseCPU(ctx context.Context, c contender, r *running, round int) error {
	w, pticks, err := b.measureLoad(ctx, b.o.rate, r.proc)
	if err != nil {
		return err
	}
	fwd := float64(w.srvRX)
	if c.kind == kindGen {
		fwd = float64(w.dirRX)
	}
	cpu := w.cpu[b.dirCPUNum()]
	if fwd == 0 {
		return fmt.Errorf("cpu: %s forwarded nothing", c.Name)
	}
	nsPer := float64(cpu.Busy()) * (1e9 / userHZ) / fwd
	b.add("cpu", c, round, "fwd_pps", fwd/w.secs)
	b.add("cpu", c, round, "cpu_ns_per_pkt", nsPer)
	b.add("cpu", c, round, "cpu_busy_pct", busyPct(w, b.dirCPUNum()))
	tot := float64(cpu.Total())
	if tot > 0 {
		b.add("cpu", c, round, "usr_pct", 100*float64(cpu.User+cpu.Nice)/tot)
		b.add("cpu", c, round, "sys_pct", 100*float64(cpu.System)/tot)
		b.add("cpu", c, round, "softirq_pct", 100*float64(cpu.SoftIRQ+cpu.IRQ)/tot)
	}
	if r.proc != nil {
		b.add("cpu", c, round, "proc_ns_per_pkt", float64(pticks)*(1e9/userHZ)/fwd)
	}
	b.logf("  %-10s cpu at %s/s: forwarded %s/s, director CPU %.0f%% busy, %.0f ns/packet", c.Name, formatValue(b.o.rate), formatValue(fwd/w.secs), busyPct(w, b.dirCPUNum()), nsPer)
	return nil
}

// caseCPS: wrk with Connection: close against nginx through the VIP.
func (b *bench) caseCPS(ctx context.Context, c contender, r *running, round int) error {
	url := fmt.Sprintf("http://%s:%d/", b.l.VIP(), httpPort)
	if err := waitTCP(ctx, b.client.NS, fmt.Sprintf("%s:%d", b.l.VIP(), httpPort), 5*time.Second); err != nil {
		return err
	}
	s0, err := b.snap()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, b.o.cpsDur+30*time.Second)
	defer cancel()
	out, err := b.l.Output(wctx, b.client.NS, "taskset", "-c", b.o.worldCPU, "wrk", "-t1", fmt.Sprintf("-c%d", b.o.cpsConns),
		fmt.Sprintf("-d%ds", int(b.o.cpsDur.Seconds())), "--latency", "-H", "Connection: close", url)
	if err != nil {
		return err
	}
	s1, err := b.snap()
	if err != nil {
		return err
	}
	res, err := parseWrk(out)
	if err != nil {
		return err
	}
	w := diff(s0, s1)
	b.add("cps", c, round, "cps", res.RPS)
	b.add("cps", c, round, "p50_ms", float64(res.P50)/1e6)
	b.add("cps", c, round, "p99_ms", float64(res.P99)/1e6)
	b.add("cps", c, round, "errors", float64(res.SocketError+res.Non2xx))
	b.add("cps", c, round, "cpu_busy_pct", busyPct(w, b.dirCPUNum()))
	b.logf("  %-10s cps: %.0f conn/s, p50 %v, p99 %v, errors %d, director CPU %.0f%%", c.Name, res.RPS, res.P50, res.P99, res.SocketError+res.Non2xx, busyPct(w, b.dirCPUNum()))
	return nil
}

// caseLatency: UDP request/response round trips through the VIP at a
// fixed low request rate, alone and under the fixed background load.
func (b *bench) caseLatency(ctx context.Context, c contender, r *running, round int) error {
	dst := netip.AddrPortFrom(b.l.VIP(), echoPort)
	for _, load := range []string{"low", "high"} {
		var g *lab.Proc
		if load == "high" {
			var err error
			g, err = b.trafgen(b.o.rate, uint64(b.o.rate*(b.o.pingDur+3*time.Second).Seconds()))
			if err != nil {
				return err
			}
			time.Sleep(time.Second)
		}
		res, err := udpPingPong(ctx, b.client.NS, dst, b.o.pingRate, b.o.pingDur, 16)
		if g != nil {
			g.Stop()
		}
		if err != nil {
			return err
		}
		loss := 1.0
		if res.Sent > 0 {
			loss = math.Max(0, 1-float64(res.Received)/float64(res.Sent))
		}
		b.add("latency", c, round, load+"_p50_us", percentile(res.RTTs, 50))
		b.add("latency", c, round, load+"_p99_us", percentile(res.RTTs, 99))
		b.add("latency", c, round, load+"_loss_pct", 100*loss)
		b.logf("  %-10s latency (%s load): p50 %.0f us, p99 %.0f us, %d/%d answered", c.Name, load, percentile(res.RTTs, 50), percentile(res.RTTs, 99), res.Received, res.Sent)
	}
	return nil
}

// caseScaling: the overload forwarding rate per worker count.
func (b *bench) caseScaling(ctx context.Context, c contender, r *running, round int) error {
	fwd := b.lastNatOverload
	if c.workers > 1 || fwd == 0 {
		w, _, err := b.measureLoad(ctx, 0, nil)
		if err != nil {
			return err
		}
		fwd = w.fwded
	}
	b.addSample(sample{Case: "scaling", Contender: fmt.Sprintf("gvs-nat %dw", c.workers), Round: round, Metric: "overload_fwd_pps", Value: fwd})
	b.logf("  %-10s scaling: %d worker(s): %s/s", c.Name, c.workers, formatValue(fwd))
	return nil
}
