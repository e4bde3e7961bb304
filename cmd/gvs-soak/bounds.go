package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The bounds the soak enforces, from the requirements (not from
// any run's numbers).
const (
	// deliveredMin is the share of the requests on established
	// connections that must be answered, outside the gvsd restart window
	// and the connections through the killed real server, in every phase.
	deliveredMin = 0.99
	// linkDownCPUMax is the most CPU (share of one CPU) gvsd may use while
	// its DIP link is down: a worker spinning on ENETDOWN uses all of it.
	// The same bound as daemon's TestLinkDownUp (20 ticks in 2 s).
	linkDownCPUMax = 0.10
	// clockTick is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
	// Linux (fixed by the ABI, whatever the kernel's HZ).
	clockTick = 100
)

// The RSS bound's terms.
const (
	// entryBytes is conntrack's heap bytes per live entry, all indexes
	// included (BenchmarkMemory / gvs-bench's ctsize at 1M entries: about
	// 115 B).
	entryBytes = 115
	// gcFactor: with GOGC=100 the Go heap grows to twice the live heap
	// before a collection, and the runtime returns freed pages to the
	// system lazily, so RSS follows the peak heap, not the live one.
	gcFactor = 2
	// baseMargin covers what does not grow with the table: the binary's
	// text and data, the Go runtime, goroutine stacks, the control
	// socket, the metrics server, the logger, netlink and nftables
	// buffers, the service table. (An idle gvsd is 10-20 MiB.)
	baseMargin = 32 << 20
)

// rssBound is the most resident memory gvsd may use with a connection
// table of capacity entries and rings of ringBytes in all:
// capacity × entryBytes × gcFactor + baseMargin + ringBytes.
func rssBound(capacity int, ringBytes int64) int64 {
	return int64(capacity)*entryBytes*gcFactor + baseMargin + ringBytes
}

// ringBytes is the memory of gvsd's packet rings: per worker an RX and a TX
// ring on each of its two interfaces, and on the VIP interface the RX
// rings of connection openings and of UDP (six rings), frames × frameSize
// bytes each. The kernel maps the rings' pages into the process, where
// they count as resident.
func ringBytes(workers, frames, frameSize int) int64 {
	return int64(workers) * ringsPerWorker * int64(frames) * int64(frameSize)
}

// ringsPerWorker is the number of packet rings a worker holds (see
// ringBytes).
const ringsPerWorker = 2*2 + 2

// parseVmRSS returns VmRSS from the text of /proc/PID/status, in bytes.
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS: unexpected %q", rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("VmRSS: unexpected %q", rest)
		}
		return kb << 10, nil
	}
	// A zombie or kernel thread has no VmRSS line.
	return 0, errors.New("no VmRSS line")
}

// parseCPUTicks returns utime + stime (fields 14 and 15, in clock ticks)
// from the text of /proc/PID/stat.
func parseCPUTicks(stat []byte) (int64, error) {
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses: the fields start after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 (f[0] is field 3)
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil || ut < 0 || st < 0 {
		return 0, fmt.Errorf("stat: bad utime/stime %q %q", f[11], f[12])
	}
	return ut + st, nil
}

// cpuShare is the share of one CPU that ticks of CPU time are over a
// window of length d.
func cpuShare(ticks int64, d time.Duration) float64 {
	if d <= 0 {
		return math.Inf(1)
	}
	return float64(ticks) / clockTick / d.Seconds()
}

// metricSample is one sample of Prometheus' text format: the family name,
// the labels as written ("" for none) and the value.
type metricSample struct {
	Name, Labels string
	Value        float64
}

// parseMetrics reads the samples of the families wanted from a /metrics
// page in Prometheus' text format (gvsd writes no timestamps and no escaped
// quotes in the label values it uses here).
func parseMetrics(page []byte, wanted ...string) ([]metricSample, error) {
	var out []metricSample
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		want := false
		for _, w := range wanted {
			want = want || name == w
		}
		if !want {
			continue
		}
		var labels string
		if strings.HasPrefix(rest, "{") {
			j := strings.IndexByte(rest, '}')
			if j < 0 {
				return nil, fmt.Errorf("metrics: unterminated labels: %q", line)
			}
			labels, rest = rest[1:j], rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) != 1 {
			return nil, fmt.Errorf("metrics: want one value: %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		out = append(out, metricSample{Name: name, Labels: labels, Value: v})
	}
	return out, sc.Err()
}

// label returns the value of label key in labels as written
// (`a="x",b="y"`), or "".
func label(labels, key string) string {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return ""
}

// counters is a set of counters by name: "drop/no_route", "ring_drops",
// "reload/success", ...
type counters map[string]float64

// The metric families the soak reads.
const (
	mDrops       = "gvs_dataplane_drops_total"
	mRingDrops   = "gvs_dataplane_ring_drops_total"
	mReloads     = "gvs_config_reloads_total"
	mEntries     = "gvs_conntrack_entries"
	mFull        = "gvs_conntrack_insert_failures_total"
	mEvicted     = "gvs_conntrack_evictions_total"
	mCreated     = "gvs_conntrack_created_total"
	mDropEntry   = "gvs_conntrack_drop_entry_total"
	mDropPacket  = "gvs_conntrack_drop_packet_total"
	mEntryLimit  = "gvs_conntrack_entries_limit"
	gaugeEntries = "conntrack_entries"
)

var metricFamilies = []string{mDrops, mRingDrops, mReloads, mEntries, mFull, mEvicted, mCreated, mDropEntry, mDropPacket, mEntryLimit}

// toCounters sums a page's samples into counters: drops by reason over the
// workers, reloads by result, the conntrack counters by their short names;
// the conntrack entries gauge is kept apart as gaugeEntries.
func toCounters(samples []metricSample) counters {
	c := counters{}
	for _, s := range samples {
		switch s.Name {
		case mDrops:
			c["drop/"+label(s.Labels, "reason")] += s.Value
		case mRingDrops:
			c["ring_drops"] += s.Value
		case mReloads:
			c["reload/"+label(s.Labels, "result")] += s.Value
		case mEntries:
			c[gaugeEntries] = s.Value
		case mEntryLimit:
			c["conntrack_limit"] = s.Value
		default:
			c[strings.TrimSuffix(strings.TrimPrefix(s.Name, "gvs_"), "_total")] += s.Value
		}
	}
	return c
}

// snapshot is one scrape of gvsd's counters: Gen is the gvsd process it
// came from (1, then 2 after the restart), Phase the index of the phase
// whose traffic the counters accrued since the previous snapshot belong to.
type snapshot struct {
	Gen   int
	Phase int
	C     counters
}

// isGauge tells the keys that are levels, not counters.
func isGauge(k string) bool { return k == gaugeEntries || k == "conntrack_limit" }

// phaseDeltas attributes the growth of every counter between consecutive
// snapshots to the later one's phase. A snapshot from a new gvsd process
// starts from zero: its counters are what the new process counted since it
// started. (What the old process counted between its last scrape and its
// SIGKILL is lost; the soak scrapes it just before the kill.) Gauges are
// left out.
func phaseDeltas(snaps []snapshot, phases int) []counters {
	out := make([]counters, phases)
	for i := range out {
		out[i] = counters{}
	}
	for i, s := range snaps {
		if s.Phase < 0 || s.Phase >= phases {
			continue
		}
		var prev counters
		if i > 0 && snaps[i-1].Gen == s.Gen {
			prev = snaps[i-1].C
		}
		for k, v := range s.C {
			if isGauge(k) {
				continue
			}
			if d := v - prev[k]; d != 0 {
				out[s.Phase][k] += d
			}
		}
	}
	return out
}
