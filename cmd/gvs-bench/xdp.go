package main

// What the AF_XDP contenders (gvs-nat-afxdp, gvs-nat-xdpfast) need of the
// lab: GRO on the director's veth peers (the fast path's redirect), and, in
// the budget case, the director's NAPI on the director's CPU.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"

	"gvs/internal/lab"
)

// peerPorts are the bridge ports that are the director's veth peers (the
// lab's naming, internal/lab plan.go).
func (b *bench) peerPorts() []string {
	return []string{"dv-" + b.l.Suffix(), "dd-" + b.l.Suffix()}
}

// setPeerGRO turns GRO on or off on the director's veth peers (a no-op
// when they are already so). With GRO on, a veth peer receives through
// NAPI, which is what makes the director's veth take XDP-redirected frames
// (NETDEV_XDP_ACT_NDO_XMIT); without it bpf_redirect to vip0/dip0 drops
// the frame and gvsd keeps the fast path off. The lab starts with GRO off
// (the veth default).
func (b *bench) setPeerGRO(on bool) error {
	if b.peerGRO == on {
		return nil
	}
	err := lab.Do(b.l.BridgeNS(), func() error {
		e, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer e.Close()
		for _, p := range b.peerPorts() {
			if err := e.Change(p, map[string]bool{"rx-gro": on}); err != nil {
				return fmt.Errorf("ethtool -K %s gro %v: %w", p, on, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.peerGRO = on
	return nil
}

// checkXDP reports an error unless gvsd's log shows the AF_XDP data path
// (not the TPACKET fallback) and, for the fast path, both interfaces
// taking redirected frames.
func checkXDP(c contender, out string) error {
	if strings.Contains(out, "AF_XDP unavailable") || !strings.Contains(out, "AF_XDP data path") {
		return fmt.Errorf("gvsd is not on AF_XDP: %s", lastLines(out, 5))
	}
	if c.fastPath && (strings.Contains(out, "XDP fast path off") || strings.Count(out, "XDP fast path: interface takes redirected frames") < 2) {
		return fmt.Errorf("gvsd's XDP fast path is off on an interface: %s", lastLines(out, 5))
	}
	return nil
}

// napiThreads lists the NAPI kernel threads of an interface name ("napi/"
// + name + "-" + NAPI id), by PID.
func napiThreads(ifname string) (map[int]bool, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[int]bool{}
	prefix := "napi/" + ifname + "-"
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(comm)), prefix) {
			out[pid] = true
		}
	}
	return out, nil
}

// directorNAPI moves the NAPI processing of the director's interfaces to
// the director's CPU, or back: threaded NAPI (/sys/class/net/IF/threaded)
// with the new kernel threads pinned to -director-cpu at SCHED_FIFO. It is RPS's
// counterpart for a native XDP program: veth runs XDP in the NAPI poll of
// the receiving interface, which without threads runs on the sender's CPU
// (the generator's), where RPS does not reach. The threads are told from
// other labs' by appearing when threaded NAPI goes on. It returns how
// many threads it pinned.
func (b *bench) directorNAPI(ctx context.Context, on bool) (int, error) {
	ifs := []string{lab.DirectorVIPIf, lab.DirectorDIPIf}
	before := map[int]bool{}
	for _, ifn := range ifs {
		t, err := napiThreads(ifn)
		if err != nil {
			return 0, err
		}
		for pid := range t {
			before[pid] = true
		}
	}
	v := "0"
	if on {
		v = "1"
	}
	var script strings.Builder
	for _, ifn := range ifs {
		fmt.Fprintf(&script, "echo %s > /sys/class/net/%s/threaded; ", v, ifn)
	}
	if err := b.sh(ctx, b.dir.NS, script.String()); err != nil {
		return 0, fmt.Errorf("threaded NAPI %s: %w", v, err)
	}
	if !on {
		return 0, nil
	}
	var pids []int
	for _, ifn := range ifs {
		t, err := napiThreads(ifn)
		if err != nil {
			return 0, err
		}
		for pid := range t {
			if !before[pid] {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	var set unix.CPUSet
	set.Set(b.dirCPUNum())
	// SCHED_FIFO: softirq (where RPS puts the kernel contender's work)
	// preempts any task at once; a NAPI thread at normal priority waits
	// for its time slice behind the forwarder and other users' tasks, and
	// veth's 256-frame ring overflows meanwhile.
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 50}
	for _, pid := range pids {
		if err := unix.SchedSetaffinity(pid, &set); err != nil {
			return 0, fmt.Errorf("pinning NAPI thread %d to CPU %s: %w", pid, b.o.dirCPU, err)
		}
		if err := unix.SchedSetAttr(pid, &attr, 0); err != nil {
			return 0, fmt.Errorf("NAPI thread %d: SCHED_FIFO: %w", pid, err)
		}
	}
	if len(pids) == 0 {
		return 0, fmt.Errorf("threaded NAPI on %s: no NAPI thread appeared", strings.Join(ifs, ", "))
	}
	return len(pids), nil
}

// perfEvents are the tracepoints `-perf` counts in the cpu case's first
// window (perf stat -a): per forwarded packet they show how many skbs the
// machine frees, how many NAPI polls and softirqs run, and how many frames
// XDP redirects.
var perfEvents = []string{
	"skb:consume_skb", "skb:kfree_skb", "net:netif_receive_skb", "net:net_dev_xmit", "napi:napi_poll",
	"irq:softirq_entry", "xdp:xdp_redirect", "xdp:xdp_redirect_err", "xdp:xdp_devmap_xmit", "sched:sched_switch",
}

// perfRun is a running `perf record` + `perf stat` pair.
type perfRun struct {
	rec, stat *exec.Cmd
}

// startPerf profiles the whole machine for d (-perf): perf record -a -g
// into logs/perf-NAME.data and perf stat of perfEvents into
// logs/perf-NAME.txt. Diagnostic: perf's own cost lands in the
// tick-sampled window it runs in, not in the exact (spinner) window.
func (b *bench) startPerf(name string, d time.Duration) (*perfRun, error) {
	secs := fmt.Sprintf("%.2f", d.Seconds())
	base := filepath.Join(b.logDir, "perf-"+name)
	rec := exec.Command("perf", "record", "-q", "-a", "-g", "-o", base+".data", "--", "sleep", secs)
	args := []string{"stat", "-a", "-x", ",", "-o", base + ".txt"}
	for _, e := range perfEvents {
		args = append(args, "-e", e)
	}
	stat := exec.Command("perf", append(args, "--", "sleep", secs)...)
	if err := rec.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	if err := stat.Start(); err != nil {
		_ = rec.Process.Kill()
		_ = rec.Wait()
		return nil, fmt.Errorf("perf stat: %w", err)
	}
	return &perfRun{rec: rec, stat: stat}, nil
}

// wait waits for both perf processes (bounded by their sleep).
func (p *perfRun) wait() error {
	if p == nil {
		return nil
	}
	return errors.Join(p.rec.Wait(), p.stat.Wait())
}

// attachClientXDPPass attaches an XDP program that passes every frame to
// the client's bridge port (-client-xdp-pass). veth then receives the
// generator's frames through NAPI and copies each into a page-pool buffer
// with XDP_PACKET_HEADROOM in front (its skb → xdp_buff conversion), as a
// NIC's receive buffer has it: the director's veth takes them into XDP
// without a copy of its own. Every contender and the generator baseline
// pay that copy alike, so the net figures leave it out for all.
func (b *bench) attachClientXDPPass() (io.Closer, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "gvsbench_pass", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	})
	if err != nil {
		return nil, fmt.Errorf("XDP_PASS program: %w", err)
	}
	defer prog.Close()
	var l link.Link
	port := "c1-" + b.l.Suffix()
	err = lab.Do(b.l.BridgeNS(), func() error {
		ifc, err := net.InterfaceByName(port)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("XDP_PASS on %s: %w", port, err)
	}
	return l, nil
}
