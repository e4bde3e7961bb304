package main

// The fair view: every contender charged all the CPU its forwarding causes,
// wherever it runs (see spin.go for how CPU is measured, and
// docs/PERFORMANCE.md, "Method").

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"

	"gvs/internal/lab"
)

// unitCost is CPU (ns, all CPUs) spent on a number of work units (packets,
// connections), and the part of it on the director's CPU.
type unitCost struct {
	NS, DirNS int64
	Units     float64
}

// cpuWindows are the two windows of one cpu-case load run at a fixed rate:
// tick-sampled without spinners, then exact with them.
type cpuWindows struct {
	ticks  window
	pticks uint64
	spin   []spinUsage
	exact  window
	labNS  int64 // the lab's threads' and ksoftirqd's run time in the spinner window (tasks.go)
}

// spinSettle is how long the spinners run before their window opens.
const spinSettle = 300 * time.Millisecond

// measureCPU runs the paced generator at rate and measures, after the
// warm-up, one window with /proc/stat's tick samples (no spinners: they
// would fill every CPU's idle time with user ticks), then one with the
// idle-priority spinners (exact).
func (b *bench) measureCPU(ctx context.Context, c contender, rate float64, proc *lab.Proc) (cpuWindows, error) {
	var m cpuWindows
	total := b.o.warmup + 2*b.o.window + spinSettle + 2*time.Second
	g, err := b.trafgen(rate, uint64(rate*total.Seconds()), total)
	if err != nil {
		return m, err
	}
	defer func() { _ = b.waitProc(ctx, g, total+5*time.Second) }()
	ended := func() error {
		select {
		case <-g.Done():
			return fmt.Errorf("the generator ended inside the measurement: %s", g.Output())
		default:
			return nil
		}
	}
	select {
	case <-time.After(b.o.warmup):
	case <-g.Done():
		return m, fmt.Errorf("the generator ended early: %s", g.Output())
	case <-ctx.Done():
		return m, ctx.Err()
	}
	var perf *perfRun
	if b.o.perf {
		if perf, err = b.startPerf(fmt.Sprintf("%s-%.0f", c.Name, rate), b.o.window); err != nil {
			return m, err
		}
	}
	pa, _ := procTicks(proc)
	s0, err := b.snap()
	if err != nil {
		return m, err
	}
	time.Sleep(b.o.window)
	s1, err := b.snap()
	if err != nil {
		return m, err
	}
	pb, _ := procTicks(proc)
	m.ticks, m.pticks = diff(s0, s1), pb-pa
	if err := perf.wait(); err != nil {
		return m, fmt.Errorf("perf: %w", err)
	}

	sp, err := startSpin(b.self, b.o.spinThreshold, b.logDir)
	if err != nil {
		return m, err
	}
	defer sp.Close()
	time.Sleep(spinSettle)
	c0, err := b.snap()
	if err != nil {
		return m, err
	}
	lab0, err := b.labTasks()
	if err != nil {
		return m, err
	}
	z0, err := sp.Snap()
	if err != nil {
		return m, err
	}
	time.Sleep(b.o.window)
	z1, err := sp.Snap()
	if err != nil {
		return m, err
	}
	lab1, err := b.labTasks()
	if err != nil {
		return m, err
	}
	m.labNS = taskExecDelta(lab0, lab1)
	c1, err := b.snap()
	if err != nil {
		return m, err
	}
	if err := ended(); err != nil {
		return m, err
	}
	m.exact = diff(c0, c1)
	m.spin, err = spinWindow(z0, z1)
	return m, err
}

// labTasks is taskSnap of the lab's namespaces.
func (b *bench) labTasks() (map[int]int64, error) {
	if b.labNS == nil {
		ns, err := b.labNetns()
		if err != nil {
			return nil, err
		}
		b.labNS = ns
	}
	return taskSnap(b.labNS)
}

// labCost is the lab-attributed CPU of a spinner window: the lab's tasks'
// run time plus the interrupts and softirq on top of the spinners.
func labCost(labNS int64, us []spinUsage) int64 {
	for _, u := range us {
		if u.IntrNS > 0 {
			labNS += u.IntrNS
		}
	}
	return labNS
}

// exactCost sums a spinner window: all CPUs and the director's.
func exactCost(us []spinUsage, dirCPU int, units float64) (unitCost, int64) {
	stolen, wall := spinTotal(us)
	c := unitCost{NS: stolen, Units: units}
	for _, u := range us {
		if u.CPU == dirCPU {
			c.DirNS = u.Stolen
		}
	}
	return c, wall
}

// caseCPU: CPU per forwarded packet at each of the fixed rates (-cpu-rates),
// far enough below every contender's limit that all of it is forwarded.
//
// The exact figure (exact_net_ns_per_pkt, the headline): all the CPU every
// CPU of the machine did for anyone in the spinner window (spin.go), per
// forwarded packet, minus the same for the generator-alone contender at the
// same rate in the same round (the generator, the client's path to the
// director's ingress and the drop there, and the machine's background). It
// charges the kernel's softirq on the generator's CPU as much as a
// userspace forwarder's own CPU. pkts_per_cpu_s is its inverse: the rate a
// whole CPU of director work would forward at that cost.
//
// The tick-sampled figure (cpu_net_ns_per_pkt, secondary; the method of the
// runs up to 2026-11): softirq+irq ticks of every CPU plus user+system
// ticks of the director's CPU, in a window before the spinners start.
// proc_ns_per_pkt (the forwarder's /proc/PID/stat) counts softirq run
// inside its system calls as its own stime too.
func (b *bench) caseCPU(ctx context.Context, c contender, r *running, round int) error {
	if b.o.gvsdCPUs != b.o.dirCPU && r.proc != nil {
		b.logf("  note: gvsd runs on CPUs %s; the tick-sampled figure counts user/system time on CPU %s only", b.o.gvsdCPUs, b.o.dirCPU)
	}
	dir := b.dirCPUNum()
	if c.kind == kindGen {
		// The machine with no traffic: on a quiet machine about 0; more
		// is other users' load, which the net figures subtract only on
		// average.
		bg, err := b.backgroundCPUs()
		if err != nil {
			return err
		}
		b.add("cpu", c, round, "exact_background_cpus", bg)
		b.logf("  %-10s cpu, no traffic: %.3f CPUs busy (exact)", c.Name, bg)
	}
	for _, rate := range b.o.cpuRates {
		m, err := b.measureCPU(ctx, c, rate, r.proc)
		if err != nil {
			return fmt.Errorf("at %s/s: %w", formatValue(rate), err)
		}
		add := func(metric string, v float64) { b.addAt("cpu", c, round, rate, metric, v) }

		// Tick-sampled (secondary).
		w := m.ticks
		fwd := float64(w.srvRX)
		if c.kind == kindGen {
			fwd = float64(w.dirRX)
		}
		if fwd == 0 {
			return fmt.Errorf("cpu at %s/s: %s forwarded nothing", formatValue(rate), c.Name)
		}
		kern, all := cpuCharge(w.cpu, dir)
		tickPer := float64(kern) * (1e9 / userHZ) / fwd
		if c.kind == kindGen {
			b.genCPUBase[rate] = tickPer
		} else if base, ok := b.genCPUBase[rate]; ok {
			add("cpu_net_ns_per_pkt", tickPer-base)
		}
		add("cpu_ns_per_pkt", tickPer)
		add("cpu_busy_pct", busyPct(w, dir))
		if tot := float64(all.Total()); tot > 0 {
			add("softirq_pct", 100*float64(all.SoftIRQ+all.IRQ)/tot)
		}
		if r.proc != nil {
			add("proc_ns_per_pkt", float64(m.pticks)*(1e9/userHZ)/fwd)
		}

		// Exact (the headline).
		e := m.exact
		fwdRate := e.fwded
		if c.kind == kindGen {
			fwdRate = e.arrived
		}
		cost, wall := exactCost(m.spin, dir, fwdRate*float64(spinWall(m.spin))/1e9)
		if cost.Units <= 0 || wall <= 0 {
			return fmt.Errorf("cpu at %s/s: nothing forwarded in the exact window", formatValue(rate))
		}
		add("fwd_pps", fwdRate)
		add("offered_pps", e.offered)
		add("exact_ns_per_pkt", float64(cost.NS)/cost.Units)
		add("exact_dir_busy_pct", 100*float64(cost.DirNS)/float64(wall))
		add("exact_other_busy_pct", 100*float64(cost.NS-cost.DirNS)/float64(wall))
		// Cross-check of the gap method against the scheduler's exact
		// count of other tasks' time (the spinners' schedstat).
		var intr, task int64
		known := true
		for _, u := range m.spin {
			if u.TaskNS == -1 && u.IntrNS == -1 {
				known = false
			}
			intr += u.IntrNS
			task += u.TaskNS
		}
		if known {
			add("exact_task_ns_per_pkt", float64(task)/cost.Units)
			add("exact_intr_ns_per_pkt", float64(intr)/cost.Units)
			b.logf("  %-10s spinners at %s/s: %.0f ns/packet of gaps = %.0f by other tasks (scheduler's count) + %.0f interrupts and softirq on top of the spinners",
				c.Name, formatValue(rate), float64(cost.NS)/cost.Units, float64(task)/cost.Units, float64(intr)/cost.Units)
		}
		lab := labCost(m.labNS, m.spin)
		add("lab_ns_per_pkt", float64(lab)/cost.Units)
		note := ""
		if c.kind == kindGen {
			b.genLabBase[rate] = unitCost{NS: lab, Units: cost.Units}
		} else if base, ok := b.genLabBase[rate]; ok {
			ln := netPerUnit(lab, cost.Units, base.NS, base.Units)
			add("lab_net_ns_per_pkt", ln)
			note = fmt.Sprintf("; lab-attributed net %.0f ns", ln)
		}
		if c.kind == kindGen {
			b.genSpinBase[rate] = cost
		} else if base, ok := b.genSpinBase[rate]; ok {
			net := netPerUnit(cost.NS, cost.Units, base.NS, base.Units)
			netDir := netPerUnit(cost.DirNS, cost.Units, base.DirNS, base.Units)
			add("exact_net_ns_per_pkt", net)
			add("pkts_per_cpu_s", perCPUSecond(net))
			if net > 0 {
				add("exact_net_dir_share_pct", 100*netDir/net)
			}
			note = fmt.Sprintf(", net of generator-alone %.0f ns (%.0f%% of it on the director's CPU)%s", net, 100*netDir/net, note)
		}
		if dev := e.offered/rate - 1; math.Abs(dev) > 0.05 {
			b.logf("  %-10s WARNING: the generator offered %s/s in the exact window, not %s/s (it fell behind and caught up: is the machine busy?)", c.Name, formatValue(e.offered), formatValue(rate))
		}
		if loss := 1 - fwdRate/math.Max(e.offered, 1); loss > 0.001 {
			b.logf("  %-10s WARNING: %.2f%% of the offered %s/s not forwarded in the exact window: the rate is above this contender's limit", c.Name, 100*loss, formatValue(rate))
		}
		b.logf("  %-10s cpu at %s/s: forwarded %s/s; exact %.0f ns/packet all CPUs%s; director CPU %.0f%% busy, others %.0f%%; tick-sampled %.0f ns/packet",
			c.Name, formatValue(rate), formatValue(fwdRate), float64(cost.NS)/cost.Units, note,
			100*float64(cost.DirNS)/float64(wall), 100*float64(cost.NS-cost.DirNS)/float64(wall), tickPer)
	}
	return nil
}

// backgroundCPUs is how many CPUs' worth of work the machine does with no
// traffic, over one window (exact).
func (b *bench) backgroundCPUs() (float64, error) {
	sp, err := startSpin(b.self, b.o.spinThreshold, b.logDir)
	if err != nil {
		return 0, err
	}
	defer sp.Close()
	time.Sleep(spinSettle)
	z0, err := sp.Snap()
	if err != nil {
		return 0, err
	}
	time.Sleep(b.o.window)
	z1, err := sp.Snap()
	if err != nil {
		return 0, err
	}
	us, err := spinWindow(z0, z1)
	if err != nil {
		return 0, err
	}
	stolen, wall := spinTotal(us)
	return float64(stolen) / float64(wall), nil
}

// spinWall is a spinner window's wall time (ns).
func spinWall(us []spinUsage) int64 {
	_, w := spinTotal(us)
	return w
}

// setDirectorRPS writes mask to the rps_cpus of the director's interfaces
// ("0": RPS off).
func (b *bench) setDirectorRPS(ctx context.Context, mask string) error {
	if mask == "" {
		mask = "0"
	}
	script := fmt.Sprintf("for q in /sys/class/net/%s/queues/rx-*/rps_cpus /sys/class/net/%s/queues/rx-*/rps_cpus; do echo %s > $q; done",
		lab.DirectorVIPIf, lab.DirectorDIPIf, mask)
	return b.sh(ctx, b.dir.NS, script)
}

// vethXDPRing is veth's XDP ring (VETH_RING_SIZE, fixed): the queue in
// front of the director's CPU for the native XDP contenders in the budget
// case (threaded NAPI drains it there).
const vethXDPRing = 256

// backlogSysctl is the input backlog's length (per CPU, global to all
// network namespaces): RPS queues a frame for another CPU there.
const backlogSysctl = "/proc/sys/net/core/netdev_max_backlog"

// setBacklog sets net.core.netdev_max_backlog to n and returns what puts
// the old value back.
func setBacklog(n int) (restore func(), err error) {
	old, err := os.ReadFile(backlogSysctl)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(backlogSysctl, []byte(strconv.Itoa(n)), 0o644); err != nil {
		return nil, fmt.Errorf("netdev_max_backlog %d: %w", n, err)
	}
	return func() { _ = os.WriteFile(backlogSysctl, old, 0o644) }, nil
}

// budgetReach is the rate the generator contender asks of the paced
// generator in the budget case, to learn how far it reaches.
const budgetReach = 1.5e6

// caseBudget: the loss-free rate with all of the director's work on the
// director's CPU, for every contender. RPS on the director's interfaces
// (-budget-rps, default the director CPU's mask) moves the kernel's receive
// processing there: the whole DNAT forwarding of the kernel contender, the
// ring copy of gvs. What the director sends is received by the bridge and
// the real servers in the sender's softirq, on the director's CPU for
// every contender. The client's path to the director stays on the
// generator's CPU, alike for all. So each contender has one CPU for its
// forwarding, and the rate it sustains is the rate at an equal CPU budget.
// RPS does not move native XDP (veth runs it in the receiving interface's
// NAPI poll, on the sender's CPU): for the AF_XDP contenders the
// director's interfaces run threaded NAPI with the threads pinned to the
// director's CPU (directorNAPI).
//
// Equal queue depth: the native XDP contenders' queue in front of the
// director's CPU is veth's XDP ring, 256 frames and fixed; RPS's is the
// input backlog, net.core.netdev_max_backlog (1000 by default). Short
// stalls of the director's vCPU and the generator's catch-up bursts
// overflow the shallower queue first (measured 2026-12-05, see
// docs/PERFORMANCE.md), so the case sets the backlog to veth's ring's
// depth (-budget-backlog) for every contender.
//
// Flat-out trafgen stops on "Flushing TX_RING failed" in this placement,
// so every trial uses the paced generator, whose reach the generator
// contender measures first (budget_gen_pps) and which bounds the search.
func (b *bench) caseBudget(ctx context.Context, c contender, r *running, round int) error {
	if err := b.setDirectorRPS(ctx, b.o.budgetRPS); err != nil {
		return fmt.Errorf("budget: RPS: %w", err)
	}
	if b.o.budgetBacklog > 0 {
		restore, err := setBacklog(b.o.budgetBacklog)
		if err != nil {
			return fmt.Errorf("budget: %w", err)
		}
		defer restore()
	}
	defer func() {
		if err := b.setDirectorRPS(ctx, b.o.rps); err != nil {
			b.logf("  budget: restoring RPS: %v", err)
		}
	}()
	if c.afxdp {
		// RPS does not reach native XDP: veth runs the program in the
		// receiving interface's NAPI poll, on the sender's CPU. Threaded
		// NAPI pinned to the director's CPU puts it (and what it sends on)
		// there.
		n, err := b.directorNAPI(ctx, true)
		defer func() {
			if _, err := b.directorNAPI(ctx, false); err != nil {
				b.logf("  budget: threaded NAPI off: %v", err)
			}
		}()
		if err != nil {
			return fmt.Errorf("budget: %w", err)
		}
		b.logf("  %-10s budget: %d NAPI threads of the director's interfaces pinned to CPU %s", c.Name, n, b.o.dirCPU)
	}
	if c.kind == kindGen {
		t, err := b.trial(ctx, budgetReach)
		if err != nil {
			return err
		}
		b.budgetGenMax = t.Offered
		b.add("budget", c, round, "budget_gen_pps", t.Offered)
		b.logf("  %-10s budget: the paced generator reaches %s/s with RPS %s on the director, input backlog %d (0: the kernel's)", c.Name, formatValue(t.Offered), b.o.budgetRPS, b.o.budgetBacklog)
		return nil
	}
	hi := b.budgetGenMax
	if hi == 0 {
		hi = 1e6
	}
	best, genBound, trials, err := searchLossFree(searchConfig{Hi: hi, Guess: hi / 2, Tolerance: b.o.tolerance, Steps: b.o.steps},
		func(rate float64) (trial, error) { return b.trial(ctx, rate) })
	for _, t := range trials {
		b.logf("    budget trial %s/s: sent %d, received %d, loss %.4f%%, input-backlog drops %d", formatValue(t.Rate), t.Sent, t.Received, 100*t.Loss, t.BacklogDrops)
	}
	if err != nil {
		return err
	}
	note := ""
	if genBound {
		note = "generator-bound: no loss at the highest rate the generator offered"
	}
	b.addSample(sample{Case: "budget", Contender: c.Name, Round: round, Metric: "budget_lossfree_pps", Value: best, Trials: trials, Note: note})
	b.logf("  %-10s budget: loss-free %s/s with all director work on CPU %s %s", c.Name, formatValue(best), b.o.dirCPU, note)
	return nil
}
