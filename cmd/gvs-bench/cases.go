package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gvs/internal/lab"
)

// userHZ is the unit of /proc/stat and /proc/PID/stat times (USER_HZ,
// 100 on every Linux architecture gvs targets).
const userHZ = 100

// trafgen starts the generator on the client (pinned to the generator
// CPU): rate 0 = flat out (trafgen); a fixed rate runs the paced generator
// (gvs-bench gen, see gen.go), or trafgen -b with -trafgen-rate; count
// bounds the run.
//
// trafgen forks its sending process, and a signal to the parent alone
// leaves the child sending; so every run is bounded twice: by count and by
// timeout(1), which signals its whole process group (SIGINT, then SIGKILL
// 2 s later), and killGen removes any survivor.
func (b *bench) trafgen(rate float64, count uint64, limit time.Duration) (*lab.Proc, error) {
	return b.startTrafgen(rate, count, limit, 0)
}

// startTrafgen is trafgen at a nice level: the latency case's background
// load runs at 19, so that the measured client and echo servers (nice 0,
// on the same CPU) are not queued behind its busy-waiting.
func (b *bench) startTrafgen(rate float64, count uint64, limit time.Duration, nice int) (*lab.Proc, error) {
	args := []string{"-s", "INT", "-k", "2", fmt.Sprintf("%.2f", limit.Seconds()),
		"nice", "-n", strconv.Itoa(nice), "taskset", "-c", b.o.genCPU}
	if rate > 0 && !b.o.trafgenRate {
		args = append(append(args, b.self, "gen"), genArgs(b.stream, b.client.Name, rate, count)...)
	} else {
		args = append(append(args, "trafgen"), trafgenArgs(b.trafgenCfg, b.client.Name, rate, count)...)
	}
	return b.l.Start(b.client.NS, "timeout", args...)
}

// isGenerator reports whether a process (its comm and NUL-separated
// cmdline) is a generator: trafgen or `gvs-bench gen` (not `gvs-bench
// ping`, which shares the namespace).
func isGenerator(comm string, cmdline []byte) bool {
	if comm == "trafgen" {
		return true
	}
	args := strings.Split(string(cmdline), "\x00")
	return comm == "gvs-bench" && len(args) > 1 && args[1] == "gen"
}

// killGen ends every generator left in the client namespace (all of
// them started by this run: the namespace is the run's own).
func (b *bench) killGen(ctx context.Context) {
	out, err := b.l.Output(ctx, b.client.NS, "ip", "netns", "pids", b.client.NS)
	if err != nil {
		// `ip netns pids NS` needs no namespace; retry outside it.
		o, err2 := exec.CommandContext(ctx, "ip", "netns", "pids", b.client.NS).Output()
		if err2 != nil {
			return
		}
		out = string(o)
	}
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", f, "comm"))
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", f, "cmdline"))
		if isGenerator(strings.TrimSpace(string(comm)), cmd) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// prime sends a little traffic so that the forwarder has resolved the real
// servers' MACs and is warm before anything is measured.
func (b *bench) prime(ctx context.Context) error {
	p, err := b.trafgen(20000, 4000, 5*time.Second)
	if err != nil {
		return err
	}
	return b.waitProc(ctx, p, 10*time.Second)
}

// waitProc waits for a bounded process and stops it if it overruns.
func (b *bench) waitProc(ctx context.Context, p *lab.Proc, limit time.Duration) error {
	defer b.killGen(ctx)
	select {
	case <-p.Done():
	case <-time.After(limit):
		p.Stop()
		return fmt.Errorf("process in %s overran %v: %s", p.NS, limit, p.Output())
	case <-ctx.Done():
		p.Stop()
		return ctx.Err()
	}
	if err := p.Wait(); err != nil && !timedOut(err) {
		return fmt.Errorf("trafgen: %w: %s", err, p.Output())
	}
	return nil
}

// timedOut reports timeout(1)'s exit status 124: the run reached its time
// bound, which for a flat-out run is the plan.
func timedOut(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == 124
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
	g, err := b.trafgen(rate, uint64(maxRate*total.Seconds()), total)
	if err != nil {
		return window{}, 0, err
	}
	defer func() {
		_ = b.waitProc(ctx, g, total+5*time.Second)
	}()
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
	b.add("pps", c, round, "overload_backlog_drops_pps", float64(w.backlog)/w.secs)
	b.logf("  %-10s overload: offered %s/s, at director %s/s, forwarded %s/s (per real server %v), input-backlog drops %s/s", c.Name, formatValue(w.offered), formatValue(w.arrived), formatValue(fwd), w.perSrv, formatValue(float64(w.backlog)/w.secs))
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
		b.logf("    trial %s/s: sent %d, received %d, loss %.4f%%, input-backlog drops %d", formatValue(t.Rate), t.Sent, t.Received, 100*t.Loss, t.BacklogDrops)
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
	d0, c0 := b.linkDrops(), b.trialCounters()
	defer func() {
		if dd := dropDelta(d0, b.linkDrops()); dd != "" {
			b.logf("      interface drops: %s", dd)
		}
		if dc := counterDelta(c0, b.trialCounters()); dc != "" {
			b.logf("      driver and softnet counters: %s", dc)
		}
	}()
	s0, err := b.snap()
	if err != nil {
		return t, err
	}
	began := time.Now()
	g, err := b.trafgen(rate, count, 2*b.o.trial+3*time.Second)
	if err != nil {
		return t, err
	}
	if err := b.waitProc(ctx, g, 3*b.o.trial+10*time.Second); err != nil {
		return t, err
	}
	// The generator may take longer than planned to send count frames
	// (then it could not offer rate): the offered rate is what it
	// achieved over its own sending time, or over its lifetime (which
	// includes its setup and errs low) if it did not report one.
	if bs := genBursts(g.Output()); bs != "" {
		b.logf("      generator: %s", bs)
	}
	elapsed, ok := parseTrafgenTime(g.Output())
	if !ok || elapsed <= 0 {
		elapsed = time.Since(began)
	}
	time.Sleep(300 * time.Millisecond) // let the rings and queues drain
	s1, err := b.snap()
	if err != nil {
		return t, err
	}
	w := diff(s0, s1)
	t.Sent, t.Received, t.BacklogDrops = w.clientTX, w.srvRX, w.backlog
	t.Offered = float64(t.Sent) / elapsed.Seconds()
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

// cpuCharge returns the ticks the cpu case charges to forwarding (softirq
// and irq of every CPU, plus user and system of the director's CPU) and the
// sum of every CPU's times.
func cpuCharge(cpus map[int]cpuTimes, dirCPU int) (charged uint64, all cpuTimes) {
	for n, t := range cpus {
		charged += t.SoftIRQ + t.IRQ
		if n == dirCPU {
			charged += t.User + t.Nice + t.System
		}
		all.User += t.User + t.Nice
		all.System += t.System
		all.IRQ += t.IRQ
		all.SoftIRQ += t.SoftIRQ
		all.Idle += t.Idle
		all.IOWait += t.IOWait
		all.Steal += t.Steal
	}
	return charged, all
}

// caseCPS: wrk with Connection: close against nginx through the VIP (the
// conn/s each contender reaches as placed, and the CPUs' tick-sampled busy
// share: the placement-biased view), then the exact run: `gvs-bench conn`
// opens connections at the fixed -cps-rate (below every contender's limit)
// while the idle-priority spinners charge all the CPU of the run, wherever
// it ran (exact_ns_per_conn). The generator contender runs the same against
// one real server's client-LAN address with no director ("direct"): the
// cost of the endpoints (the client, nginx, their TCP stacks) at the same
// rate. exact_net_ns_per_conn is a contender's cost minus that, per
// connection, in the same round: the director's work wherever it ran;
// conns_per_cpu_s is its inverse.
func (b *bench) caseCPS(ctx context.Context, c contender, r *running, round int) error {
	host := b.l.VIP().String()
	if c.kind == kindGen {
		if len(b.servers) == 0 || !b.servers[0].ClientLeg.IsValid() {
			return errors.New("cps: the real servers have no client-LAN leg for the direct run")
		}
		host = b.servers[0].ClientLeg.Addr().String()
	}
	addr := fmt.Sprintf("%s:%d", host, httpPort)
	if err := waitTCP(ctx, b.client.NS, addr, 5*time.Second); err != nil {
		return err
	}
	wrk := func() (wrkResult, window, error) {
		s0, err := b.snap()
		if err != nil {
			return wrkResult{}, window{}, err
		}
		wctx, cancel := context.WithTimeout(ctx, b.o.cpsDur+30*time.Second)
		defer cancel()
		out, err := b.l.Output(wctx, b.client.NS, "taskset", "-c", b.o.worldCPU, "wrk", "-t1", fmt.Sprintf("-c%d", b.o.cpsConns),
			fmt.Sprintf("-d%ds", int(b.o.cpsDur.Seconds())), "--latency", "-H", "Connection: close", "http://"+addr+"/")
		if err != nil {
			return wrkResult{}, window{}, err
		}
		s1, err := b.snap()
		if err != nil {
			return wrkResult{}, window{}, err
		}
		res, err := parseWrk(out)
		return res, diff(s0, s1), err
	}
	res, w, err := wrk()
	if err != nil {
		return err
	}
	b.add("cps", c, round, "cps", res.RPS)
	b.add("cps", c, round, "p50_ms", float64(res.P50)/1e6)
	b.add("cps", c, round, "p99_ms", float64(res.P99)/1e6)
	b.add("cps", c, round, "errors", float64(res.SocketError+res.Non2xx))
	b.add("cps", c, round, "cpu_busy_pct", busyPct(w, b.dirCPUNum()))
	if n, err := strconv.Atoi(b.o.worldCPU); err == nil {
		b.add("cps", c, round, "world_cpu_busy_pct", busyPct(w, n))
	}
	b.logf("  %-10s cps: %.0f conn/s, p50 %v, p99 %v, errors %d, director CPU %.0f%%", c.Name, res.RPS, res.P50, res.P99, res.SocketError+res.Non2xx, busyPct(w, b.dirCPUNum()))

	// The exact run: a fixed connection rate for every contender and the
	// direct baseline alike.
	sp, err := startSpin(b.self, b.o.spinThreshold, b.logDir)
	if err != nil {
		return err
	}
	defer sp.Close()
	time.Sleep(spinSettle)
	lab0, err := b.labTasks()
	if err != nil {
		return err
	}
	z0, err := sp.Snap()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, b.o.cpsDur+30*time.Second)
	defer cancel()
	out, err := b.l.Output(cctx, b.client.NS, "taskset", "-c", b.o.worldCPU, b.self, "conn",
		"-dst", addr, "-rate", fmt.Sprint(b.o.cpsRate), "-duration", b.o.cpsDur.String())
	if err != nil {
		return err
	}
	z1, err := sp.Snap()
	if err != nil {
		return err
	}
	lab1, err := b.labTasks()
	if err != nil {
		return err
	}
	var cr connResult
	if err := json.Unmarshal([]byte(out), &cr); err != nil {
		return fmt.Errorf("gvs-bench conn: %w: %q", err, out)
	}
	us, err := spinWindow(z0, z1)
	if err != nil {
		return err
	}
	if cr.OK <= 0 {
		return errors.New("cps: no connection completed in the exact run")
	}
	want := b.o.cpsRate * b.o.cpsDur.Seconds()
	if short := 1 - float64(cr.OK)/want; short > 0.01 {
		b.logf("  %-10s WARNING: the exact run completed %d of %.0f connections (%d errors, %d not started): %s/s is above this contender's limit here", c.Name, cr.OK, want, cr.Errors, cr.Skipped, formatValue(b.o.cpsRate))
	}
	cost, wall := exactCost(us, b.dirCPUNum(), float64(cr.OK))
	b.add("cps", c, round, "exact_conns", float64(cr.OK))
	b.add("cps", c, round, "exact_errors", float64(cr.Errors+cr.Skipped))
	b.add("cps", c, round, "exact_ns_per_conn", float64(cost.NS)/cost.Units)
	b.add("cps", c, round, "exact_busy_cpus", float64(cost.NS)/float64(wall))
	lab := labCost(taskExecDelta(lab0, lab1), us)
	b.add("cps", c, round, "lab_ns_per_conn", float64(lab)/cost.Units)
	labNote := ""
	if c.kind == kindGen {
		b.directLabCPS = unitCost{NS: lab, Units: cost.Units}
	} else if b.directLabCPS.Units > 0 {
		ln := netPerUnit(lab, cost.Units, b.directLabCPS.NS, b.directLabCPS.Units)
		b.add("cps", c, round, "lab_net_ns_per_conn", ln)
		labNote = fmt.Sprintf("; lab-attributed net %.1f µs", ln/1e3)
	}
	note := ""
	if c.kind == kindGen {
		b.directCPS = cost
	} else if b.directCPS.Units > 0 {
		net := netPerUnit(cost.NS, cost.Units, b.directCPS.NS, b.directCPS.Units)
		b.add("cps", c, round, "exact_net_ns_per_conn", net)
		b.add("cps", c, round, "conns_per_cpu_s", perCPUSecond(net))
		note = fmt.Sprintf(", net of direct %.1f µs", net/1e3)
	}
	note += labNote
	b.logf("  %-10s cps at %s/s, exact: %d connections, %.1f µs CPU per connection, all CPUs%s; %.2f CPUs busy",
		c.Name, formatValue(b.o.cpsRate), cr.OK, float64(cost.NS)/cost.Units/1e3, note, float64(cost.NS)/float64(wall))
	return nil
}

// caseLatency: UDP request/response round trips through the VIP at a
// fixed low request rate, alone and under the fixed background load.
//
// The generator contender measures the same round trip without a director:
// from the client straight to a real server's client-LAN leg ("direct").
// Every other contender's added latency is its RTT minus that, same round.
func (b *bench) caseLatency(ctx context.Context, c contender, r *running, round int) error {
	dst := netip.AddrPortFrom(b.l.VIP(), echoPort)
	if c.kind == kindGen {
		if len(b.servers) == 0 || !b.servers[0].ClientLeg.IsValid() {
			return errors.New("latency: the real servers have no client-LAN leg for the direct round trip")
		}
		dst = netip.AddrPortFrom(b.servers[0].ClientLeg.Addr(), echoPort)
	}
	for _, load := range []string{"low", "high"} {
		var g *lab.Proc
		if load == "high" {
			var err error
			bound := b.o.pingDur + 3*time.Second
			g, err = b.startTrafgen(b.o.rate, uint64(b.o.rate*bound.Seconds()), bound, 19)
			if err != nil {
				return err
			}
			time.Sleep(time.Second)
		}
		res, err := b.ping(ctx, dst)
		if g != nil {
			g.Stop()
			b.killGen(ctx)
		}
		if err != nil {
			return err
		}
		loss := 1.0
		if res.Sent > 0 {
			loss = math.Max(0, 1-float64(res.Received)/float64(res.Sent))
		}
		p50, p99 := percentile(res.RTTs, 50), percentile(res.RTTs, 99)
		b.add("latency", c, round, load+"_p50_us", p50)
		b.add("latency", c, round, load+"_p99_us", p99)
		if c.kind == kindGen {
			b.direct[load] = [2]float64{p50, p99}
		} else if d, ok := b.direct[load]; ok {
			b.add("latency", c, round, load+"_p50_added_us", p50-d[0])
			b.add("latency", c, round, load+"_p99_added_us", p99-d[1])
		}
		b.add("latency", c, round, load+"_loss_pct", 100*loss)
		b.logf("  %-10s latency (%s load): p50 %.0f us, p99 %.0f us, %d/%d answered", c.Name, load, percentile(res.RTTs, 50), percentile(res.RTTs, 99), res.Received, res.Sent)
	}
	return nil
}

// ping runs `gvs-bench ping` in the client namespace, pinned to the
// generator's CPU: the director's CPU stays the director's, for every
// contender (the kernel's forwarding needs no CPU of its own there, a
// userspace forwarder does; a client or echo server scheduled next to it
// would measure the sharing, not the forwarding).
func (b *bench) ping(ctx context.Context, dst netip.AddrPort) (pingResult, error) {
	var res pingResult
	pctx, cancel := context.WithTimeout(ctx, b.o.pingDur+10*time.Second)
	defer cancel()
	out, err := b.l.Output(pctx, b.client.NS, "taskset", "-c", b.o.worldCPU, b.self, "ping",
		"-dst", dst.String(), "-rate", fmt.Sprint(b.o.pingRate), "-duration", b.o.pingDur.String(), "-sockets", "16")
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return res, fmt.Errorf("gvs-bench ping: %w", err)
	}
	return res, nil
}

// gvsdStats is the part of gvsd's periodic stats log line the gc case reads.
type gvsdStats struct {
	RX         uint64 `json:"rx"`
	GoAllocs   uint64 `json:"go_allocs"`
	GoGCCycles uint64 `json:"go_gc_cycles"`
}

// lastStats returns the last complete stats line in gvsd's output (console
// log format: "... stats {json}") and how many there were.
func lastStats(out string) (gvsdStats, int, error) {
	var st gvsdStats
	lines := strings.Split(out, "\n")
	n := 0
	var last string
	for _, l := range lines[:len(lines)-1] { // the last element is an incomplete line or ""
		if i := strings.Index(l, "\tstats\t{"); i >= 0 {
			last, n = l[i+len("\tstats\t"):], n+1
		}
	}
	if n == 0 {
		return st, 0, errors.New("no stats line in gvsd's log")
	}
	return st, n, json.Unmarshal([]byte(last), &st)
}

// caseGC: gvsd forwards at the fixed rate for -gc-duration; its own stats
// lines (every 2 s) give the heap objects the whole process allocated and
// the GC cycles it ran over that time, against the frames it took in.
func (b *bench) caseGC(ctx context.Context, c contender, r *running, round int) error {
	if r.proc == nil {
		return errors.New("gc: no gvsd")
	}
	bound := b.o.gcDur + b.o.warmup + 8*time.Second
	g, err := b.trafgen(b.o.rate, uint64(b.o.rate*bound.Seconds()), bound)
	if err != nil {
		return err
	}
	defer func() {
		g.Stop()
		b.killGen(ctx)
	}()
	// A fresh stats line after the warm-up, then one after the run.
	wait := func(after int) (gvsdStats, error) {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if st, n, err := lastStats(r.proc.Output()); err == nil && n > after {
				return st, nil
			}
		}
		return gvsdStats{}, errors.New("gc: gvsd logged no stats line in 10 s")
	}
	time.Sleep(b.o.warmup)
	_, n0, _ := lastStats(r.proc.Output())
	s0, err := wait(n0)
	if err != nil {
		return err
	}
	t0 := time.Now()
	time.Sleep(b.o.gcDur)
	_, n1, _ := lastStats(r.proc.Output())
	s1, err := wait(n1)
	if err != nil {
		return err
	}
	secs := time.Since(t0).Seconds()
	pkts := float64(s1.RX - s0.RX)
	if pkts <= 0 {
		return errors.New("gc: gvsd took no frames")
	}
	allocs, cycles := float64(s1.GoAllocs-s0.GoAllocs), float64(s1.GoGCCycles-s0.GoGCCycles)
	b.add("gc", c, round, "allocs", allocs)
	b.add("gc", c, round, "gc_cycles", cycles)
	b.add("gc", c, round, "packets", pkts)
	b.add("gc", c, round, "secs", secs)
	b.add("gc", c, round, "allocs_per_pkt", allocs/pkts)
	b.logf("  %-10s gc: %.0f frames in %.1f s, %.0f heap objects allocated (%.2g per frame), %.0f GC cycles", c.Name, pkts, secs, allocs, allocs/pkts, cycles)
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
