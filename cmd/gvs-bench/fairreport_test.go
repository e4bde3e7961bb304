package main

import (
	"math"
	"strings"
	"testing"
)

// fairSamples is a two-round run with the fair-view metrics.
func fairSamples() []sample {
	var s []sample
	add := func(cs, cont string, round int, rate float64, metric string, v float64) {
		s = append(s, sample{Case: cs, Contender: cont, Round: round, Rate: rate, Metric: metric, Value: v})
	}
	for round, f := range []float64{1, 1.1} {
		r := round + 1
		add("cpu", "generator", r, 60000, "exact_ns_per_pkt", 1500)
		add("cpu", "gvs-nat", r, 60000, "exact_net_ns_per_pkt", 3700*f)
		add("cpu", "nft-dnat", r, 60000, "exact_net_ns_per_pkt", 1100)
		add("cpu", "gvs-nat", r, 150000, "exact_net_ns_per_pkt", 2000)
		add("cpu", "nft-dnat", r, 150000, "exact_net_ns_per_pkt", 2000*f)
		add("cpu", "gvs-nat", r, 150000, "pkts_per_cpu_s", 1e9/2000)
		add("cpu", "nft-dnat", r, 150000, "pkts_per_cpu_s", 1e9/(2000*f))
		add("budget", "gvs-nat", r, 0, "budget_lossfree_pps", 300e3)
		add("budget", "nft-dnat", r, 0, "budget_lossfree_pps", 200e3)
		add("cps", "gvs-nat", r, 0, "conns_per_cpu_s", 10e3)
		add("cps", "haproxy", r, 0, "conns_per_cpu_s", 6e3)
		add("cps", "nft-dnat", r, 0, "conns_per_cpu_s", 12e3)
	}
	return s
}

func TestRatioPerRound(t *testing.T) {
	r := report{Samples: fairSamples()}
	// Round 1: 3700/1100, round 2: 4070/1100: the median of the two.
	sm := r.ratio("cpu", "exact_net_ns_per_pkt", rowKey{"gvs-nat", 60000}, rowKey{"nft-dnat", 60000})
	want := (3700.0/1100 + 4070.0/1100) / 2
	if sm.N != 2 || math.Abs(sm.Median-want) > 1e-9 || math.Abs(sm.Min-3700.0/1100) > 1e-9 {
		t.Errorf("ratio = %+v, want median %v", sm, want)
	}
	// A net cost at or below 0 (lost in the baseline's noise) has no ratio.
	neg := report{Samples: []sample{
		{Case: "cpu", Contender: "gvs-nat", Round: 1, Rate: 1, Metric: "m", Value: -300},
		{Case: "cpu", Contender: "nft-dnat", Round: 1, Rate: 1, Metric: "m", Value: 2500},
		{Case: "cpu", Contender: "gvs-nat", Round: 2, Rate: 1, Metric: "m", Value: 3000},
		{Case: "cpu", Contender: "nft-dnat", Round: 2, Rate: 1, Metric: "m", Value: 2000},
	}}
	if sm := neg.ratio("cpu", "m", rowKey{"gvs-nat", 1}, rowKey{"nft-dnat", 1}); sm.N != 1 || sm.Median != 1.5 {
		t.Errorf("ratio with a negative round: %+v, want round 2's 1.5 alone", sm)
	}
	// A rate the other contender lacks: no ratio.
	if sm := r.ratio("cpu", "exact_net_ns_per_pkt", rowKey{"gvs-nat", 60000}, rowKey{"nft-dnat", 100000}); sm.N != 0 {
		t.Errorf("ratio across rates: %+v", sm)
	}
}

func TestTargets(t *testing.T) {
	r := report{Samples: fairSamples()}
	got := map[string]string{}
	for _, tg := range r.targets() {
		got[tg.What] = tg.Met()
	}
	for what, want := range map[string]string{
		"gvs NAT CPU per packet ≤ nftables DNAT's, at 60.0k pps":                      "**no**", // 3.4 ×
		"gvs NAT CPU per packet ≤ nftables DNAT's, at 150k pps":                       "yes",    // 1.0 and 0.91 ×
		"gvs NAT loss-free rate at an equal CPU budget (RPS) ≥ 1.5 × nftables DNAT's": "yes",
		"gvs NAT connections per CPU-second ≥ 2 × HAProxy's":                          "**no**", // 1.67 ×
		"gvs NAT connections per CPU-second ≥ nftables DNAT's":                        "**no**",
	} {
		if got[what] != want {
			t.Errorf("%s: %q, want %q (all: %v)", what, got[what], want, got)
		}
	}
	// packets per CPU-second at 150k: 1.0 and 1.1 → median 1.05 < 1.5.
	for what, met := range got {
		if strings.HasPrefix(what, "gvs NAT packets per CPU-second") && met != "**no**" {
			t.Errorf("%s: %s", what, met)
		}
	}
	// The AF_XDP variants get targets of their own when the run has them.
	if _, ok := got["gvs NAT with the XDP fast path CPU per packet ≤ nftables DNAT's, at 60.0k pps"]; ok {
		t.Errorf("a target for a contender the run does not have: %v", got)
	}
	fast := report{Samples: append(fairSamples(),
		sample{Case: "cpu", Contender: "gvs-nat-xdpfast", Round: 1, Rate: 60000, Metric: "exact_net_ns_per_pkt", Value: 800},
		sample{Case: "cpu", Contender: "gvs-nat-xdpfast", Round: 2, Rate: 60000, Metric: "exact_net_ns_per_pkt", Value: 1200},
		sample{Case: "budget", Contender: "gvs-nat-xdpfast", Round: 1, Metric: "budget_lossfree_pps", Value: 150e3},
	)}
	gotFast := map[string]string{}
	for _, tg := range fast.targets() {
		gotFast[tg.What] = tg.Met()
	}
	for what, want := range map[string]string{
		"gvs NAT with the XDP fast path CPU per packet ≤ nftables DNAT's, at 60.0k pps":                                     "yes", // 0.73 and 1.09 ×: median 0.91
		"gvs NAT with the XDP fast path CPU per packet ≤ nftables DNAT's, at 150k pps":                                      "not measured",
		"gvs NAT with the XDP fast path loss-free rate at an equal CPU budget (RPS, threaded NAPI) ≥ 1.5 × nftables DNAT's": "**no**", // 0.75 ×
		"gvs NAT CPU per packet ≤ nftables DNAT's, at 60.0k pps":                                                            "**no**",
	} {
		if gotFast[what] != want {
			t.Errorf("%s: %q, want %q (all: %v)", what, gotFast[what], want, gotFast)
		}
	}
	empty := report{}
	for _, tg := range empty.targets() {
		if tg.Met() != "not measured" {
			t.Errorf("no samples: %s %s", tg.What, tg.Met())
		}
	}
}

func TestFairViewMarkdown(t *testing.T) {
	r := report{Machine: "m", Options: map[string]string{}, Samples: fairSamples()}
	var b strings.Builder
	r.markdown(&b)
	out := b.String()
	fair := strings.Index(out, "## Fair view")
	all := strings.Index(out, "## All tables")
	if fair < 0 || all < fair {
		t.Fatalf("the fair view must come before the other tables:\n%s", out)
	}
	for _, s := range []string{
		"| gvs-nat | 60.0k | 3885 [3700–4070] | 3.53 × [3.36–3.70] |",
		"| gvs-nat | 0.300 | 1.50 × |",
		"**Where gvs is behind (targets not met):** gvs NAT CPU per packet ≤ nftables DNAT's, at 60.0k pps;",
		"| gvs-nat @ 60.0k pps |",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("markdown lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "Not a quiet machine") {
		t.Errorf("no background sample, yet a noise warning:\n%s", out)
	}
	r.Samples = append(r.Samples, sample{Case: "cpu", Contender: "generator", Round: 1, Metric: "exact_background_cpus", Value: 0.3})
	b.Reset()
	r.markdown(&b)
	if !strings.Contains(b.String(), "**Not a quiet machine") {
		t.Errorf("0.3 CPUs of background without a warning:\n%s", b.String())
	}
	if strings.Contains(out[fair:all], "| generator |") {
		t.Errorf("the generator baseline is not a contender of the fair view:\n%s", out[fair:all])
	}
}
