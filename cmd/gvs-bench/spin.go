package main

// Exact CPU accounting: idle-priority spinners.
//
// /proc/stat's times on this kernel are tick samples (HZ=250, no
// IRQ_TIME_ACCOUNTING): every 4 ms the CPU's current context is charged a
// whole tick. Work that is aligned with the timer (a paced generator that
// wakes on a timer, a forwarder woken by the same tick) is over- or
// under-counted, and softirq that runs while the CPU's current task is the
// idle task is only seen when a tick lands on it. /proc/schedstat's per-CPU
// run time needs CONFIG_SCHEDSTATS (not set here) and does not count
// softirq run from idle either.
//
// So the harness measures CPU by what is left over: `gvs-bench spin` runs
// one thread per CPU, pinned there, at SCHED_IDLE (it gets the CPU only
// when nothing else on this machine wants it: any task of normal priority
// preempts it at once, and every interrupt and softirq runs on top of it).
// Each thread reads the monotonic clock in a tight loop; a gap between two
// reads longer than the threshold (-threshold, 500 ns; one loop is ~30 ns)
// is time something else had the CPU, and it is added to the CPU's
// "stolen" time whole, to the nanosecond. Everything is charged wherever it
// ran: task time, hard and soft interrupts, softirq on behalf of other
// CPUs, and the hypervisor's steal (netted out by the baselines). What is
// missed: interruptions shorter than the threshold (a VM exit alone costs
// more) and the spinner's share under CFS while a normal task is runnable
// (SCHED_IDLE weight 3 against 1024: ≤ 0.3 %).
//
// The spinners also change the machine a little: a CPU never goes idle
// while they run, so a wake-up never has to bring a halted vCPU back (the
// cost finding 4 of PERFORMANCE.md describes). The latency case therefore
// never runs with spinners.
//
// Protocol: the parent writes a line to stdin; spin answers with one JSON
// line: a snapshot of every CPU's counters (cumulative since start). EOF
// ends it.

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// spinThreshold is the default gap that counts as stolen time.
const spinThreshold = 500 * time.Nanosecond

// gapMeter accumulates the time between clock reads that exceeds the
// threshold. Times are ns on one monotonic clock.
type gapMeter struct {
	threshold int64
	last      int64 // the previous read
	stolen    int64 // sum of gaps > threshold
	iters     int64
}

// observe takes the next clock read.
func (g *gapMeter) observe(now int64) {
	if d := now - g.last; d > g.threshold {
		g.stolen += d
	}
	g.last = now
	g.iters++
}

// pending is the gap in progress at time now (the spinner has not run since
// last): counted when it is already longer than the threshold, so that a
// snapshot taken while something else holds the CPU sees that time.
func (g *gapMeter) pending(now int64) int64 {
	if d := now - g.last; d > g.threshold {
		return d
	}
	return 0
}

// spinSnap is one CPU's counters at one moment, cumulative since the
// spinners started.
type spinSnap struct {
	CPU     int   `json:"cpu"`
	Elapsed int64 `json:"elapsed_ns"` // wall time since start
	Stolen  int64 `json:"stolen_ns"`  // time the CPU worked for others
	Iters   int64 `json:"iters"`
	// Exec is the spinner thread's own run time from
	// /proc/PID/task/TID/schedstat (sched_info; -1 if unreadable). Without
	// IRQ_TIME_ACCOUNTING, interrupts and softirq that ran on top of the
	// spinner are inside it; Elapsed-Exec is therefore the time other
	// tasks had the CPU, and Stolen-(Elapsed-Exec) what interrupts and
	// softirq took from the spinner.
	Exec int64 `json:"exec_ns"`
}

// spinUsage is what the spinners saw over a window on one CPU.
type spinUsage struct {
	CPU             int
	Wall, Stolen    int64 // ns
	TaskNS, IntrNS  int64 // Stolen split: other tasks' time by the scheduler's count; the rest, interrupts+softirq on top of the spinner (both -1 when Exec is unknown)
	NSPerIter       float64
	ThreadUnhealthy bool // the spinner barely ran (or its counters went backwards): the window is not trustworthy on this CPU
}

// spinWindow returns per-CPU usage between two snapshots (matched by CPU).
func spinWindow(a, b []spinSnap) ([]spinUsage, error) {
	byCPU := map[int]spinSnap{}
	for _, s := range a {
		byCPU[s.CPU] = s
	}
	var out []spinUsage
	for _, e := range b {
		s, ok := byCPU[e.CPU]
		if !ok {
			return nil, fmt.Errorf("spin: cpu %d missing from the first snapshot", e.CPU)
		}
		u := spinUsage{CPU: e.CPU, Wall: e.Elapsed - s.Elapsed, Stolen: e.Stolen - s.Stolen, TaskNS: -1, IntrNS: -1} // -1, -1: unknown
		if u.Wall <= 0 || u.Stolen < 0 || e.Iters < s.Iters {
			return nil, fmt.Errorf("spin: cpu %d counters went backwards", e.CPU)
		}
		if u.Stolen > u.Wall {
			// A gap in progress at the first snapshot is counted again
			// when it ends: bounded by one gap; clamp.
			u.Stolen = u.Wall
		}
		if got := u.Wall - u.Stolen; got > 0 {
			u.NSPerIter = float64(got) / float64(max(e.Iters-s.Iters, 1))
		}
		u.ThreadUnhealthy = e.Iters-s.Iters < 10 && u.Stolen < u.Wall
		if s.Exec >= 0 && e.Exec >= 0 {
			exec := e.Exec - s.Exec
			// Not clamped at 0: a negative IntrNS (gaps short of the
			// scheduler's own count of other tasks' time) would show the
			// gap method missing time, beyond the snapshots' skew.
			u.TaskNS = u.Wall - exec
			u.IntrNS = u.Stolen - u.TaskNS
		}
		out = append(out, u)
	}
	return out, nil
}

// spinTotal sums stolen ns over the CPUs (all of them: the machine's whole
// CPU use in the window) and returns the window's wall time.
func spinTotal(us []spinUsage) (stolen, wall int64) {
	for _, u := range us {
		stolen += u.Stolen
		wall = max(wall, u.Wall)
	}
	return stolen, wall
}

// netPerUnit is a contender's CPU per unit of work (a forwarded packet, a
// connection) net of a baseline's: cNS/cUnits - bNS/bUnits. The baseline
// does the part of the work that is not the contender's (the generator
// alone at the same offered rate; the endpoints alone, with no director).
// NaN when either did nothing.
func netPerUnit(cNS int64, cUnits float64, bNS int64, bUnits float64) float64 {
	if !(cUnits > 0) || !(bUnits > 0) {
		return math.NaN()
	}
	return float64(cNS)/cUnits - float64(bNS)/bUnits
}

// perCPUSecond turns a CPU cost per unit (ns) into units per CPU-second:
// the rate one fully used CPU would sustain at that cost. NaN (no sample)
// for a cost that is not positive: a net cost at or below 0 means the
// baseline's noise exceeded the contender's cost, and it has no rate.
func perCPUSecond(nsPerUnit float64) float64 {
	if !(nsPerUnit > 0) {
		return math.NaN()
	}
	return 1e9 / nsPerUnit
}

// parseTaskSchedstat reads /proc/PID/task/TID/schedstat: "exec_ns
// run_delay_ns timeslices" (Documentation/scheduler/sched-stats.rst,
// "/proc/<pid>/schedstat").
func parseTaskSchedstat(b []byte) (exec, wait int64, err error) {
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return 0, 0, fmt.Errorf("schedstat: want 3 fields, got %q", strings.TrimSpace(string(b)))
	}
	if exec, err = strconv.ParseInt(f[0], 10, 64); err != nil || exec < 0 {
		return 0, 0, fmt.Errorf("schedstat exec %q: bad number", f[0])
	}
	if wait, err = strconv.ParseInt(f[1], 10, 64); err != nil || wait < 0 {
		return 0, 0, fmt.Errorf("schedstat run_delay %q: bad number", f[1])
	}
	return exec, wait, nil
}

// spinner is one CPU's spinning thread's shared counters.
type spinner struct {
	cpu    int
	tid    atomic.Int64
	stolen atomic.Int64
	last   atomic.Int64
	iters  atomic.Int64
}

func (s *spinner) run(base time.Time, threshold time.Duration, ready chan<- error, stop *atomic.Bool) {
	runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
	var set unix.CPUSet
	set.Set(s.cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		ready <- fmt.Errorf("cpu %d: affinity: %w", s.cpu, err)
		return
	}
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0); err != nil {
		ready <- fmt.Errorf("cpu %d: SCHED_IDLE: %w", s.cpu, err)
		return
	}
	s.tid.Store(int64(unix.Gettid()))
	g := gapMeter{threshold: int64(threshold), last: int64(time.Since(base))}
	s.last.Store(g.last)
	ready <- nil
	for !stop.Load() {
		g.observe(int64(time.Since(base)))
		// Stolen before last: a reader that loads stolen and then last
		// never counts a finished gap twice (see snap).
		s.stolen.Store(g.stolen)
		s.last.Store(g.last)
		s.iters.Store(g.iters)
	}
}

// snap reads the counters, adding a gap in progress.
func (s *spinner) snap(base time.Time, threshold time.Duration, pid int) spinSnap {
	now := int64(time.Since(base))
	stolen := s.stolen.Load()
	g := gapMeter{threshold: int64(threshold), last: s.last.Load()}
	out := spinSnap{CPU: s.cpu, Elapsed: now, Stolen: stolen + g.pending(now), Iters: s.iters.Load(), Exec: -1}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, s.tid.Load())); err == nil {
		if e, _, err := parseTaskSchedstat(b); err == nil {
			out.Exec = e
		}
	}
	return out
}

// runSpin is `gvs-bench spin`.
func runSpin(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gvs-bench spin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	threshold := fs.Duration("threshold", spinThreshold, "a gap between clock reads longer than this is time the CPU worked for someone else")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *threshold < 100*time.Nanosecond || *threshold > time.Millisecond {
		return errors.New("-threshold must be 100ns..1ms")
	}
	n := runtime.NumCPU()
	runtime.GOMAXPROCS(n + 2) // a P for the reader besides the spinners
	base := time.Now()
	var stop atomic.Bool
	defer stop.Store(true)
	sp := make([]*spinner, n)
	ready := make(chan error, n)
	for i := range sp {
		sp[i] = &spinner{cpu: i}
		go sp[i].run(base, *threshold, ready, &stop)
	}
	for range sp {
		if err := <-ready; err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, "spin ready")
	pid := os.Getpid()
	sc := bufio.NewScanner(stdin)
	enc := json.NewEncoder(stdout)
	for sc.Scan() {
		out := make([]spinSnap, len(sp))
		for i, s := range sp {
			out[i] = s.snap(base, *threshold, pid)
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	return sc.Err()
}

// spinClient drives a `gvs-bench spin` child.
type spinClient struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startSpin starts the spinners (in the root namespace: CPU is machine-wide).
func startSpin(self string, threshold time.Duration, logDir string) (*spinClient, error) {
	cmd := exec.Command(self, "spin", "-threshold", threshold.String())
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if f, err := os.OpenFile(filepath.Join(logDir, "spin.stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		cmd.Stderr = f
		defer f.Close()
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &spinClient{cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := c.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "spin ready" {
		c.Close()
		return nil, fmt.Errorf("gvs-bench spin did not start: %q %v", line, err)
	}
	return c, nil
}

// Snap asks for a snapshot of every CPU.
func (c *spinClient) Snap() ([]spinSnap, error) {
	if _, err := io.WriteString(c.in, "\n"); err != nil {
		return nil, err
	}
	line, err := c.out.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var s []spinSnap
	if err := json.Unmarshal(line, &s); err != nil {
		return nil, fmt.Errorf("gvs-bench spin: %w", err)
	}
	return s, nil
}

// Close ends the spinners and waits for the child.
func (c *spinClient) Close() {
	_ = c.in.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}
