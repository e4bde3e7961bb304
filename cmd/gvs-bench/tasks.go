package main

// A second exact CPU figure that other users' load does not move: the run
// time the scheduler counts (to the ns, /proc/PID/task/TID/schedstat) for
// every thread of the lab (all processes in the lab's network namespaces:
// generator, forwarder, endpoints, HAProxy, nginx, wrk) and for the
// ksoftirqd threads, plus the interrupts and softirq that ran on top of the
// idle-priority spinners (their gaps beyond other tasks' time). Other
// users' tasks and the harness itself (root namespace) are left out.
//
// What it misses: without IRQ_TIME_ACCOUNTING, softirq the lab causes that
// runs on top of another user's task is charged to that task. On veth
// most of the lab's softirq runs inline in its own tasks' system calls
// (the generator's and the forwarder's sends), so this is small, but it is
// why the spinners' total stays the headline on a quiet machine.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// parseNSLink reads a namespace link's inode ("net:[4026532281]").
func parseNSLink(s string) (uint64, error) {
	v, ok := strings.CutPrefix(s, "net:[")
	if !ok || !strings.HasSuffix(v, "]") {
		return 0, fmt.Errorf("not a net namespace link: %q", s)
	}
	return strconv.ParseUint(strings.TrimSuffix(v, "]"), 10, 64)
}

// taskExecDelta is the run time the threads did between two snapshots (tid
// → cumulative exec ns): a thread in both counts its difference, a thread
// born in between all of its run time. A thread that ended in between is
// not seen (its run time in the window is lost).
func taskExecDelta(a, b map[int]int64) int64 {
	var sum int64
	for tid, e := range b {
		if s, ok := a[tid]; ok {
			if e > s {
				sum += e - s
			}
			continue
		}
		sum += e
	}
	return sum
}

// labNetns returns the inodes of the lab's network namespaces.
func (b *bench) labNetns() (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for _, ns := range b.l.Namespaces() {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/run/netns", ns), &st); err != nil {
			return nil, err
		}
		out[st.Ino] = true
	}
	return out, nil
}

// taskSnap reads the cumulative run time of every thread of the lab and of
// the ksoftirqd threads.
func taskSnap(netns map[uint64]bool) (map[int]int64, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		ours := false
		if l, err := os.Readlink(filepath.Join(dir, "ns", "net")); err == nil {
			if ino, err := parseNSLink(l); err == nil && netns[ino] {
				ours = true
			}
		}
		if !ours {
			comm, err := os.ReadFile(filepath.Join(dir, "comm"))
			if err != nil || !strings.HasPrefix(string(comm), "ksoftirqd/") {
				continue
			}
		}
		tasks, err := os.ReadDir(filepath.Join(dir, "task"))
		if err != nil {
			continue // exited
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, "task", t.Name(), "schedstat"))
			if err != nil {
				continue
			}
			if exec, _, err := parseTaskSchedstat(b); err == nil {
				out[tid] = exec
			}
		}
	}
	return out, nil
}
