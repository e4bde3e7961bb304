package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// cpuTimes is one "cpu" line of /proc/stat, in USER_HZ ticks.
type cpuTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// Busy is the time the CPU spent working for someone on this machine: user,
// nice, system, hard and soft interrupts. Steal (the hypervisor ran another
// guest) and idle/iowait are not busy.
func (c cpuTimes) Busy() uint64 { return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ }

// Total is every tick the CPU accounted, steal included.
func (c cpuTimes) Total() uint64 { return c.Busy() + c.Idle + c.IOWait + c.Steal }

// Sub returns c - o field by field (a counter that went backwards gives 0).
func (c cpuTimes) Sub(o cpuTimes) cpuTimes {
	d := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return cpuTimes{
		User: d(c.User, o.User), Nice: d(c.Nice, o.Nice), System: d(c.System, o.System),
		Idle: d(c.Idle, o.Idle), IOWait: d(c.IOWait, o.IOWait), IRQ: d(c.IRQ, o.IRQ),
		SoftIRQ: d(c.SoftIRQ, o.SoftIRQ), Steal: d(c.Steal, o.Steal),
	}
}

// procStat is a parsed /proc/stat: the per-CPU lines by CPU number and the
// "cpu" summary line.
type procStat struct {
	All  cpuTimes
	CPUs map[int]cpuTimes
}

// parseProcStat parses the cpu lines of /proc/stat. Lines with fewer than
// four numbers (very old kernels) or junk are errors; other lines are
// ignored.
func parseProcStat(b []byte) (procStat, error) {
	ps := procStat{CPUs: map[int]cpuTimes{}}
	seenAll := false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if len(f) < 5 {
			return procStat{}, fmt.Errorf("/proc/stat: short line %q", strings.TrimSpace(line))
		}
		var v [8]uint64
		for i := 0; i < len(v) && i+1 < len(f); i++ {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return procStat{}, fmt.Errorf("/proc/stat: %q: %w", strings.TrimSpace(line), err)
			}
			v[i] = n
		}
		t := cpuTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}
		if f[0] == "cpu" {
			ps.All, seenAll = t, true
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil || n < 0 {
			return procStat{}, fmt.Errorf("/proc/stat: bad cpu name %q", f[0])
		}
		ps.CPUs[n] = t
	}
	if !seenAll {
		return procStat{}, errors.New("/proc/stat: no cpu line")
	}
	return ps, nil
}

// parsePidStat returns utime and stime (fields 14 and 15, USER_HZ ticks) of
// a /proc/PID/stat line. The command name in parentheses may hold spaces
// and parentheses, so fields are counted after the last ')'.
func parsePidStat(b []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("/proc/PID/stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field N is f[N-3].
	if len(f) < 13 {
		return 0, 0, errors.New("/proc/PID/stat: too few fields")
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("/proc/PID/stat utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("/proc/PID/stat stime: %w", err)
	}
	return utime, stime, nil
}

// summary is the median and range of a set of samples.
type summary struct {
	N                int
	Median, Min, Max float64
}

// summarize returns the median (mean of the two middle values for an even
// count), minimum and maximum of xs, ignoring NaNs. No samples give N=0 and
// NaNs.
func summarize(xs []float64) summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return summary{N: len(v), Median: m, Min: v[0], Max: v[len(v)-1]}
}

// percentile returns the p-th percentile (0..100) of sorted samples by the
// nearest-rank method; NaN for none.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// parseSoftnetDrops returns the second column of /proc/net/softnet_stat
// (packets dropped because a CPU's input backlog, netdev_max_backlog, was
// full), one value per line, i.e. per CPU in order.
func parseSoftnetDrops(b []byte) ([]uint64, error) {
	var out []uint64
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("softnet_stat: short line %q", strings.TrimSpace(line))
		}
		n, err := strconv.ParseUint(f[1], 16, 32)
		if err != nil {
			return nil, fmt.Errorf("softnet_stat: %q: %w", f[1], err)
		}
		out = append(out, n)
	}
	return out, nil
}
