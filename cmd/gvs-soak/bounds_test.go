package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestRSSBound(t *testing.T) {
	// 1M entries: 115 B each, twice for the GC, 32 MiB, and one worker's
	// six rings of 2048 frames of 2 KiB (24 MiB: RX and TX on both
	// interfaces, the SYN and UDP rings).
	rings := ringBytes(1, 2048, 2048)
	if rings != 24<<20 {
		t.Fatalf("ringBytes(1, 2048, 2048) = %d, want 24 MiB", rings)
	}
	got := rssBound(1<<20, rings)
	want := int64(1<<20)*230 + 32<<20 + 24<<20
	if got != want {
		t.Fatalf("rssBound(1M) = %d, want %d", got, want)
	}
	if rssBound(2<<20, rings)-got != int64(1<<20)*230 {
		t.Error("the bound does not grow by 230 B per entry of capacity")
	}
	if ringBytes(2, 2048, 2048) != 2*rings {
		t.Error("the rings do not grow with the workers")
	}
}

const statusText = `Name:	gvsd
Umask:	0022
State:	S (sleeping)
VmPeak:	 1733956 kB
VmSize:	 1733956 kB
VmHWM:	  121312 kB
VmRSS:	  120880 kB
RssAnon:	   99872 kB
Threads:	9
`

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS([]byte(statusText))
	if err != nil || got != 120880*1024 {
		t.Fatalf("parseVmRSS = %d, %v; want %d", got, err, 120880*1024)
	}
	for _, bad := range []string{
		"Name:\tgvsd\nState:\tZ (zombie)\n", // no VmRSS
		"VmRSS:\t  12 MB\n",
		"VmRSS:\t  x kB\n",
		"VmRSS:\t  -5 kB\n",
		"VmRSS:\n",
	} {
		if v, err := parseVmRSS([]byte(bad)); err == nil {
			t.Errorf("parseVmRSS(%q) = %d, want an error", bad, v)
		}
	}
}

func TestParseCPUTicks(t *testing.T) {
	// A command name with spaces and a parenthesis; utime 1234, stime 56.
	stat := "4242 (gv sd) x) S 1 4242 4242 0 -1 4194560 1523 0 0 0 1234 56 0 0 20 0 9 0 12345 1733956 30220\n"
	got, err := parseCPUTicks([]byte(stat))
	if err != nil || got != 1290 {
		t.Fatalf("parseCPUTicks = %d, %v; want 1290", got, err)
	}
	for _, bad := range []string{"4242 gvsd S 1", "4242 (gvsd) S 1 2 3", "4242 (gvsd) S 1 4242 4242 0 -1 4194560 1523 0 0 0 x 56 0"} {
		if v, err := parseCPUTicks([]byte(bad)); err == nil {
			t.Errorf("parseCPUTicks(%q) = %d, want an error", bad, v)
		}
	}
}

func TestCPUShare(t *testing.T) {
	// A spinning worker: 200 ticks in 2 s is one whole CPU.
	if got := cpuShare(200, 2*time.Second); got != 1 {
		t.Errorf("cpuShare(200, 2s) = %v, want 1", got)
	}
	if got := cpuShare(20, 2*time.Second); got > linkDownCPUMax {
		t.Errorf("cpuShare(20, 2s) = %v, over the bound %v: TestLinkDownUp's 20 ticks in 2 s must pass", got, linkDownCPUMax)
	}
	if got := cpuShare(21, 2*time.Second); got <= linkDownCPUMax {
		t.Errorf("cpuShare(21, 2s) = %v, within the bound", got)
	}
	if got := cpuShare(0, 0); !math.IsInf(got, 1) {
		t.Errorf("cpuShare over no time = %v, want +Inf (fails the bound)", got)
	}
}

const metricsPage = `# HELP gvs_dataplane_drops_total Frames not forwarded, by reason.
# TYPE gvs_dataplane_drops_total counter
gvs_dataplane_drops_total{worker="0",reason="no_route"} 400
gvs_dataplane_drops_total{worker="1",reason="no_route"} 3
gvs_dataplane_drops_total{worker="0",reason="no_conn"} 81
gvs_dataplane_ring_drops_total 3.948923e+06
gvs_config_reloads_total{result="success"} 4
gvs_config_reloads_total{result="failure"} 0
gvs_conntrack_entries 764796
gvs_conntrack_entries_limit 1.048576e+06
gvs_conntrack_evictions_total 12
gvs_dataplane_packets_total{worker="0",action="transmit"} 99
`

func TestParseMetrics(t *testing.T) {
	s, err := parseMetrics([]byte(metricsPage), metricFamilies...)
	if err != nil {
		t.Fatal(err)
	}
	c := toCounters(s)
	want := counters{
		"drop/no_route": 403, "drop/no_conn": 81, "ring_drops": 3948923,
		"reload/success": 4, "reload/failure": 0, gaugeEntries: 764796,
		"conntrack_limit": 1048576, "conntrack_evictions": 12,
	}
	if len(c) != len(want) {
		t.Errorf("counters %v, want %v", c, want)
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s = %v, want %v", k, c[k], v)
		}
	}
	for _, bad := range []string{
		"gvs_conntrack_entries\n",
		"gvs_conntrack_entries x\n",
		`gvs_dataplane_drops_total{reason="x" 1` + "\n",
	} {
		if _, err := parseMetrics([]byte(bad), metricFamilies...); err == nil {
			t.Errorf("parseMetrics(%q) accepted", bad)
		}
	}
}

// Counters grow per phase; a restarted gvsd starts again from zero; the
// gauges are no deltas.
func TestPhaseDeltas(t *testing.T) {
	snaps := []snapshot{
		{Gen: 1, Phase: -1, C: counters{"drop/a": 5, gaugeEntries: 10}},
		{Gen: 1, Phase: 0, C: counters{"drop/a": 7, gaugeEntries: 900}},
		{Gen: 1, Phase: 1, C: counters{"drop/a": 10, "drop/b": 1}},
		{Gen: 1, Phase: 1, C: counters{"drop/a": 15, "drop/b": 1}}, // just before the kill
		{Gen: 2, Phase: 1, C: counters{"drop/a": 2, "reload/success": 1}},
		{Gen: 2, Phase: 2, C: counters{"drop/a": 2, "reload/success": 3}},
	}
	d := phaseDeltas(snaps, 3)
	check := func(ph int, k string, want float64) {
		t.Helper()
		if d[ph][k] != want {
			t.Errorf("phase %d %s = %v, want %v (%v)", ph, k, d[ph][k], want, d[ph])
		}
	}
	check(0, "drop/a", 2)
	check(1, "drop/a", 3+5+2)
	check(1, "drop/b", 1)
	check(1, "reload/success", 1)
	check(2, "drop/a", 0)
	check(2, "reload/success", 2)
	for ph := range d {
		if _, ok := d[ph][gaugeEntries]; ok {
			t.Errorf("phase %d has a delta of the entries gauge", ph)
		}
	}
	if _, ok := d[2]["drop/a"]; ok {
		t.Error("a counter that did not move is listed")
	}
}

func TestLabel(t *testing.T) {
	if got := label(`worker="0",reason="no_route"`, "reason"); got != "no_route" {
		t.Errorf("label = %q", got)
	}
	if got := label(`worker="0"`, "reason"); got != "" {
		t.Errorf("label of a missing key = %q", got)
	}
	if !strings.Contains(mib(3<<20), "3.0 MiB") {
		t.Errorf("mib(3 MiB) = %q", mib(3<<20))
	}
}
