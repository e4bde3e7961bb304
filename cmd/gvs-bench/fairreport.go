package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// The reference contenders of the fair view's ratios.
const (
	kernelRef  = "nft-dnat"
	gvsRef     = "gvs-nat"
	haproxyRef = "haproxy"
)

// quietCPUs is the most background (CPUs busy with no traffic) a run may
// have for its fair figures to count: at 60 kpps, 0.05 CPU that comes and
// goes between windows is about 0.8 µs per packet.
const quietCPUs = 0.05

// target is one goal of the fair comparison, with its measured ratio.
type target struct {
	What   string
	Ratio  summary // median [min–max] over rounds of the per-round ratio
	Want   float64 // the ratio must be ≥ Want (or ≤ Want with AtMost)
	AtMost bool
	Detail string
}

// Met reports whether the median ratio meets the target ("" when there is no
// measurement).
func (t target) Met() string {
	switch {
	case t.Ratio.N == 0:
		return "not measured"
	case t.AtMost && t.Ratio.Median <= t.Want, !t.AtMost && t.Ratio.Median >= t.Want:
		return "yes"
	}
	return "**no**"
}

func ratioCell(sm summary) string {
	if sm.N == 0 {
		return "–"
	}
	if sm.N == 1 || sm.Min == sm.Max {
		return fmt.Sprintf("%.2f ×", sm.Median)
	}
	return fmt.Sprintf("%.2f × [%.2f–%.2f]", sm.Median, sm.Min, sm.Max)
}

// cpuRates lists the cpu case's fixed rates.
func (r *report) cpuRates() []float64 {
	var out []float64
	for _, k := range r.rows("cpu") {
		if k.Rate > 0 && !slices.Contains(out, k.Rate) {
			out = append(out, k.Rate)
		}
	}
	return out
}

// gvsVariants are the gvs NAT contenders the packet targets are taken
// for, with their labels: the default TPACKET data path first (always
// listed), then the AF_XDP ones when the run has them.
var gvsVariants = []struct{ Name, Label string }{
	{gvsRef, "gvs NAT"},
	{"gvs-nat-afxdp", "gvs NAT on AF_XDP"},
	{"gvs-nat-xdpfast", "gvs NAT with the XDP fast path"},
}

// has reports whether the report holds samples of contender cont.
func (r *report) has(cont string) bool {
	return slices.ContainsFunc(r.Samples, func(s sample) bool { return s.Contender == cont })
}

// targets are the fair comparison's goals (issue "Honest speed on equal
// footing"), each a ratio within one run.
func (r *report) targets() []target {
	var ts []target
	for i, v := range gvsVariants {
		if i > 0 && !r.has(v.Name) {
			continue
		}
		for _, rate := range r.cpuRates() {
			g, k := rowKey{v.Name, rate}, rowKey{kernelRef, rate}
			ts = append(ts, target{
				What:  fmt.Sprintf("%s CPU per packet ≤ nftables DNAT's, at %s pps", v.Label, formatValue(rate)),
				Ratio: r.ratio("cpu", "exact_net_ns_per_pkt", g, k),
				Want:  1, AtMost: true,
				Detail: fmt.Sprintf("%s vs %s ns", medianText(r.seriesAt("cpu", g, "exact_net_ns_per_pkt")), medianText(r.seriesAt("cpu", k, "exact_net_ns_per_pkt"))),
			})
		}
		if rates := r.cpuRates(); len(rates) > 0 {
			rate := rates[len(rates)-1]
			g, k := rowKey{v.Name, rate}, rowKey{kernelRef, rate}
			ts = append(ts, target{
				What:   fmt.Sprintf("%s packets per CPU-second ≥ 1.5 × nftables DNAT's (from the exact cost at %s pps)", v.Label, formatValue(rate)),
				Ratio:  r.ratio("cpu", "pkts_per_cpu_s", g, k),
				Want:   1.5,
				Detail: fmt.Sprintf("%s vs %s pps per CPU", medianText(r.seriesAt("cpu", g, "pkts_per_cpu_s")), medianText(r.seriesAt("cpu", k, "pkts_per_cpu_s"))),
			})
		}
		how := "RPS"
		if i > 0 {
			how = "RPS, threaded NAPI"
		}
		g, k := rowKey{v.Name, 0}, rowKey{kernelRef, 0}
		ts = append(ts, target{
			What:   fmt.Sprintf("%s loss-free rate at an equal CPU budget (%s) ≥ 1.5 × nftables DNAT's", v.Label, how),
			Ratio:  r.ratio("budget", "budget_lossfree_pps", g, k),
			Want:   1.5,
			Detail: fmt.Sprintf("%s vs %s pps", medianText(r.seriesAt("budget", g, "budget_lossfree_pps")), medianText(r.seriesAt("budget", k, "budget_lossfree_pps"))),
		})
	}
	g, k := rowKey{gvsRef, 0}, rowKey{kernelRef, 0}
	h := rowKey{haproxyRef, 0}
	ts = append(ts, target{
		What:   "gvs NAT connections per CPU-second ≥ 2 × HAProxy's",
		Ratio:  r.ratio("cps", "conns_per_cpu_s", g, h),
		Want:   2,
		Detail: fmt.Sprintf("%s vs %s conn/s per CPU", medianText(r.seriesAt("cps", g, "conns_per_cpu_s")), medianText(r.seriesAt("cps", h, "conns_per_cpu_s"))),
	}, target{
		What:   "gvs NAT connections per CPU-second ≥ nftables DNAT's",
		Ratio:  r.ratio("cps", "conns_per_cpu_s", g, k),
		Want:   1,
		Detail: fmt.Sprintf("%s vs %s conn/s per CPU", medianText(r.seriesAt("cps", g, "conns_per_cpu_s")), medianText(r.seriesAt("cps", k, "conns_per_cpu_s"))),
	})
	return ts
}

func medianText(v []float64) string {
	sm := summarize(v)
	if sm.N == 0 {
		return "–"
	}
	return formatValue(sm.Median)
}

// fairView writes the headline section of results.md: every contender
// charged all the CPU its forwarding causes, wherever it ran.
func (r *report) fairView(w io.Writer) {
	cpuRows, budRows, cpsRows := r.rows("cpu"), r.rows("budget"), r.rows("cps")
	if len(cpuRows)+len(budRows)+len(cpsRows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Fair view (the headline)\n\n")
	fmt.Fprintf(w, "Every contender is charged all the CPU its work causes, on every CPU, measured exactly: by what idle-priority spinners on every CPU did not get (no tick sampling). Ratios are taken per round and their median is shown.\n")
	if bg := r.seriesAt("cpu", rowKey{"generator", 0}, "exact_background_cpus"); len(bg) > 0 {
		sm := summarize(bg)
		fmt.Fprintf(w, "\nWith no traffic the machine was %.3f CPUs busy (exact; median over rounds, max %.3f). Anything well above 0 is other users' load: it is subtracted with the generator-alone baseline only on average, and the figures below are then noisy.\n", sm.Median, sm.Max)
		if sm.Max > quietCPUs {
			fmt.Fprintf(w, "\n**Not a quiet machine (more than %.2f CPUs busy with no traffic): the fair figures of this run are not valid; rerun on a quiet machine.**\n", quietCPUs)
		}
	}
	fmt.Fprintf(w, "\n| target | measured | ratio | met |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", t.What, t.Detail, ratioCell(t.Ratio), t.Met())
	}
	if len(cpuRows) > 0 {
		fmt.Fprintf(w, "\n### CPU per forwarded packet, all CPUs, exact, minus the generator alone at the same rate\n\n")
		fmt.Fprintf(w, "| contender | offered (pps) | ns per packet | vs %s | packets per CPU-second | share on the director's CPU | lab-attributed ns per packet (cross-check, robust to other users' tasks) | tick-sampled ns per packet (old method) |\n|---|---|---|---|---|---|---|---|\n", kernelRef)
		for _, k := range cpuRows {
			if k.Cont == "generator" {
				continue
			}
			net := r.seriesAt("cpu", k, "exact_net_ns_per_pkt")
			rate := "–" // a run from before the cpu case had rates
			if k.Rate > 0 {
				rate = formatValue(k.Rate)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", k.Cont, rate,
				cellOf(net, 1), ratioCell(r.ratio("cpu", "exact_net_ns_per_pkt", k, rowKey{kernelRef, k.Rate})),
				cellOf(r.seriesAt("cpu", k, "pkts_per_cpu_s"), 1e3, " k"),
				cellOf(r.seriesAt("cpu", k, "exact_net_dir_share_pct"), 1, " %"),
				cellOf(r.seriesAt("cpu", k, "lab_net_ns_per_pkt"), 1),
				cellOf(r.seriesAt("cpu", k, "cpu_net_ns_per_pkt"), 1))
		}
	}
	if len(budRows) > 0 {
		fmt.Fprintf(w, "\n### Loss-free rate at an equal CPU budget: all of the director's work on the director's CPU (RPS; threaded NAPI for native XDP), paced generator\n\n")
		fmt.Fprintf(w, "| contender | loss-free (Mpps) | vs %s |\n|---|---|---|\n", kernelRef)
		for _, k := range budRows {
			if k.Cont == "generator" {
				fmt.Fprintf(w, "| (paced generator's reach) | %s | – |\n", cellOf(r.seriesAt("budget", k, "budget_gen_pps"), 1e6))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s |\n", k.Cont, cellOf(r.seriesAt("budget", k, "budget_lossfree_pps"), 1e6),
				ratioCell(r.ratio("budget", "budget_lossfree_pps", k, rowKey{kernelRef, 0})))
		}
	}
	if len(cpsRows) > 0 {
		fmt.Fprintf(w, "\n### Connections: CPU per connection at a fixed connection rate, all CPUs, exact, minus the endpoints alone at that rate (client straight to nginx)\n\n")
		fmt.Fprintf(w, "| contender | µs per connection | connections per CPU-second | vs %s | vs %s | lab-attributed µs per connection (cross-check) | conn/s as placed (placement-biased) |\n|---|---|---|---|---|---|---|\n", kernelRef, haproxyRef)
		for _, k := range cpsRows {
			if k.Cont == "generator" {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", k.Cont, cellOf(r.seriesAt("cps", k, "exact_net_ns_per_conn"), 1e3),
				cellOf(r.seriesAt("cps", k, "conns_per_cpu_s"), 1e3, " k"),
				ratioCell(r.ratio("cps", "conns_per_cpu_s", k, rowKey{kernelRef, 0})),
				ratioCell(r.ratio("cps", "conns_per_cpu_s", k, rowKey{haproxyRef, 0})),
				cellOf(r.seriesAt("cps", k, "lab_net_ns_per_conn"), 1e3),
				cellOf(r.seriesAt("cps", k, "cps"), 1e3, " k"))
		}
	}
	var behind []string
	for _, t := range r.targets() {
		if strings.HasPrefix(t.Met(), "**no") {
			behind = append(behind, t.What)
		}
	}
	if len(behind) > 0 {
		fmt.Fprintf(w, "\n**Where gvs is behind (targets not met):** %s.\n", strings.Join(behind, "; "))
	}
}

// cellOf renders median [min–max] of v divided by scale, then the unit
// suffixes ("–" alone when there is no value).
func cellOf(v []float64, scale float64, suffix ...string) string {
	sm := summarize(v)
	if sm.N == 0 {
		return "–"
	}
	return cell(sm, metricDef{Scale: scale}) + strings.Join(suffix, "")
}
