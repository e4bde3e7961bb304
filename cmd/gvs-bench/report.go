package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// metricDef describes how a metric is shown.
type metricDef struct {
	Case, Metric  string
	Title         string
	LowerIsBetter bool
	// Scale divides the value for display (1e6 for Mpps, ...); Unit is
	// the displayed unit.
	Scale float64
	Unit  string
	// Chart puts the metric in chart.svg.
	Chart bool
}

// metricDefs lists the reported metrics, by case, in column order.
var metricDefs = []metricDef{
	{Case: "pps", Metric: "overload_fwd_pps", Title: "Forwarded at overload (placement-biased)", Scale: 1e6, Unit: "Mpps", Chart: true},
	{Case: "pps", Metric: "lossfree_pps", Title: "Loss-free rate (placement-biased)", Scale: 1e6, Unit: "Mpps"},
	{Case: "pps", Metric: "offered_pps", Title: "Offered at overload", Scale: 1e6, Unit: "Mpps"},
	{Case: "pps", Metric: "overload_cpu_pct", Title: "Director CPU at overload", Scale: 1, Unit: "%"},
	{Case: "pps", Metric: "overload_backlog_drops_pps", Title: "Input-backlog drops at overload", LowerIsBetter: true, Scale: 1e3, Unit: "kpps"},
	{Case: "cpu", Metric: "exact_net_ns_per_pkt", Title: "CPU per packet, all CPUs, exact, minus generator-alone", LowerIsBetter: true, Scale: 1, Unit: "ns", Chart: true},
	{Case: "cpu", Metric: "pkts_per_cpu_s", Title: "Packets per CPU-second (1e9 / the previous)", Scale: 1e3, Unit: "kpps"},
	{Case: "cpu", Metric: "exact_net_dir_share_pct", Title: "Share of it on the director's CPU", Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "lab_net_ns_per_pkt", Title: "Lab-attributed CPU per packet (the lab's threads + ksoftirqd by the scheduler's count, + interrupts on top of the spinners), minus generator-alone", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "lab_ns_per_pkt", Title: "Lab-attributed CPU per packet (gross)", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "exact_ns_per_pkt", Title: "CPU per packet, all CPUs, exact (gross)", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "exact_task_ns_per_pkt", Title: "of which other tasks, by the scheduler's count (cross-check; gross)", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "exact_intr_ns_per_pkt", Title: "of which the rest: interrupts+softirq on top of the spinners (gross; < 0 would mean the gap method missed time)", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "exact_dir_busy_pct", Title: "Director CPU busy, exact", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "exact_other_busy_pct", Title: "Other CPUs busy, exact", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "exact_background_cpus", Title: "Busy with no traffic (other users of the machine), exact", LowerIsBetter: true, Scale: 1, Unit: "CPUs"},
	{Case: "cpu", Metric: "fwd_pps", Title: "Forwarded", Scale: 1e3, Unit: "kpps"},
	{Case: "cpu", Metric: "cpu_net_ns_per_pkt", Title: "tick-sampled: softirq (all CPUs) + director CPU, minus generator-alone", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "cpu_ns_per_pkt", Title: "tick-sampled, gross", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "proc_ns_per_pkt", Title: "tick-sampled forwarder process utime+stime (includes softirq run in its syscalls)", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "cpu_busy_pct", Title: "tick-sampled director CPU busy", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "softirq_pct", Title: "tick-sampled softirq+irq, all CPUs", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "usr_pct", Title: "user, all CPUs", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "sys_pct", Title: "system, all CPUs", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "budget", Metric: "budget_lossfree_pps", Title: "Loss-free rate, all director work on the director's CPU", Scale: 1e6, Unit: "Mpps", Chart: true},
	{Case: "budget", Metric: "budget_gen_pps", Title: "Paced generator's reach", Scale: 1e6, Unit: "Mpps"},
	{Case: "cps", Metric: "exact_net_ns_per_conn", Title: "CPU per connection, all CPUs, exact, minus direct", LowerIsBetter: true, Scale: 1e3, Unit: "µs", Chart: true},
	{Case: "cps", Metric: "conns_per_cpu_s", Title: "Connections per CPU-second (1e9 / the previous)", Scale: 1e3, Unit: "k/s"},
	{Case: "cps", Metric: "lab_net_ns_per_conn", Title: "Lab-attributed CPU per connection, minus direct", LowerIsBetter: true, Scale: 1e3, Unit: "µs"},
	{Case: "cps", Metric: "lab_ns_per_conn", Title: "Lab-attributed CPU per connection (gross)", LowerIsBetter: true, Scale: 1e3, Unit: "µs"},
	{Case: "cps", Metric: "exact_ns_per_conn", Title: "CPU per connection, all CPUs, exact (gross)", LowerIsBetter: true, Scale: 1e3, Unit: "µs"},
	{Case: "cps", Metric: "exact_busy_cpus", Title: "CPUs busy in the exact run", Scale: 1, Unit: "CPUs"},
	{Case: "cps", Metric: "exact_conns", Title: "connections completed in the exact run", Scale: 1e3, Unit: "k"},
	{Case: "cps", Metric: "exact_errors", Title: "connections failed or not started in the exact run", LowerIsBetter: true, Scale: 1, Unit: ""},
	{Case: "cps", Metric: "cps", Title: "Connections per second (placement-biased)", Scale: 1e3, Unit: "k/s", Chart: true},
	{Case: "cps", Metric: "p50_ms", Title: "wrk p50", LowerIsBetter: true, Scale: 1, Unit: "ms"},
	{Case: "cps", Metric: "p99_ms", Title: "wrk p99", LowerIsBetter: true, Scale: 1, Unit: "ms"},
	{Case: "cps", Metric: "errors", Title: "Errors", LowerIsBetter: true, Scale: 1, Unit: ""},
	{Case: "cps", Metric: "cpu_busy_pct", Title: "Director CPU busy", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cps", Metric: "world_cpu_busy_pct", Title: "Client+servers CPU busy", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "latency", Metric: "low_p50_us", Title: "RTT p50, low load", LowerIsBetter: true, Scale: 1, Unit: "µs"},
	{Case: "latency", Metric: "low_p99_us", Title: "RTT p99, low load", LowerIsBetter: true, Scale: 1, Unit: "µs", Chart: true},
	{Case: "latency", Metric: "high_p50_us", Title: "RTT p50, under load", LowerIsBetter: true, Scale: 1, Unit: "µs"},
	{Case: "latency", Metric: "high_p99_us", Title: "RTT p99, under load", LowerIsBetter: true, Scale: 1, Unit: "µs", Chart: true},
	{Case: "latency", Metric: "low_p99_added_us", Title: "added p99 over direct, low load", LowerIsBetter: true, Scale: 1, Unit: "µs"},
	{Case: "latency", Metric: "high_p99_added_us", Title: "added p99 over direct, under load", LowerIsBetter: true, Scale: 1, Unit: "µs"},
	{Case: "latency", Metric: "low_loss_pct", Title: "Lost, low load", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "latency", Metric: "high_loss_pct", Title: "Lost, under load", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "gc", Metric: "allocs_per_pkt", Title: "heap objects allocated per forwarded packet (whole process)", LowerIsBetter: true, Scale: 1, Unit: ""},
	{Case: "gc", Metric: "allocs", Title: "heap objects allocated in the run", LowerIsBetter: true, Scale: 1, Unit: ""},
	{Case: "gc", Metric: "gc_cycles", Title: "GC cycles in the run", LowerIsBetter: true, Scale: 1, Unit: ""},
	{Case: "gc", Metric: "packets", Title: "frames forwarded in the run", Scale: 1e6, Unit: "M"},
	{Case: "gc", Metric: "secs", Title: "run length", Scale: 1, Unit: "s"},
	{Case: "scaling", Metric: "overload_fwd_pps", Title: "Forwarded at overload", Scale: 1e6, Unit: "Mpps", Chart: true},
	{Case: "conntrack", Metric: "bytes_per_conn", Title: "Heap per connection", LowerIsBetter: true, Scale: 1, Unit: "B"},
	{Case: "conntrack", Metric: "insert_per_s", Title: "Inserts", Scale: 1e6, Unit: "M/s"},
	{Case: "conntrack", Metric: "lookup_per_s_1", Title: "Lookups, 1 goroutine", Scale: 1e6, Unit: "M/s", Chart: true},
	{Case: "conntrack", Metric: "lookup_per_s_all", Title: "Lookups, all CPUs", Scale: 1e6, Unit: "M/s"},
}

// caseTitles head the report's sections.
var caseTitles = map[string]string{
	"pps":       "Packet rate: 64-byte UDP, 10k flows (placement-biased: the kernel's forwarding runs on the generator's CPU, a userspace director has its own)",
	"cpu":       "CPU per packet at fixed offered rates",
	"budget":    "Packet rate at an equal CPU budget (RPS: all director work on the director's CPU; paced generator)",
	"cps":       "Connections per second (wrk, Connection: close, nginx)",
	"latency":   "UDP request/response round trip through the VIP",
	"scaling":   "gvs NAT: workers",
	"gc":        "gvsd's heap allocations and GC cycles under a load run at the fixed rate",
	"conntrack": "gvs connection table at size (in-process)",
}

// report is results.json.
type report struct {
	Machine  string            `json:"machine"`
	Load     string            `json:"load"`
	Started  string            `json:"started"`
	Seconds  float64           `json:"seconds"`
	Options  map[string]string `json:"options"`
	Samples  []sample          `json:"samples"`
	Failures []string          `json:"failures,omitempty"`
}

// series gathers the values of one case/contender/metric over rounds (at
// any rate).
func (r *report) series(cs, cont, metric string) []float64 {
	var v []float64
	for _, s := range r.Samples {
		if s.Case == cs && s.Contender == cont && s.Metric == metric {
			v = append(v, s.Value)
		}
	}
	return v
}

// seriesAt is series for the samples at one fixed rate (0: none).
func (r *report) seriesAt(cs string, k rowKey, metric string) []float64 {
	var v []float64
	for _, s := range r.Samples {
		if s.Case == cs && s.Contender == k.Cont && s.Rate == k.Rate && s.Metric == metric {
			v = append(v, s.Value)
		}
	}
	return v
}

// byRound is the value of each round of one case/contender/rate/metric.
func (r *report) byRound(cs string, k rowKey, metric string) map[int]float64 {
	m := map[int]float64{}
	for _, s := range r.Samples {
		if s.Case == cs && s.Contender == k.Cont && s.Rate == k.Rate && s.Metric == metric {
			m[s.Round] = s.Value
		}
	}
	return m
}

// ratio is the median over rounds of a/b of one metric, each round's a
// against the same round's b (ratios within one run, as the targets ask).
// Rounds where either value is not positive (a net cost lost in the
// baseline's noise) give no ratio.
func (r *report) ratio(cs, metric string, a, b rowKey) summary {
	ra, rb := r.byRound(cs, a, metric), r.byRound(cs, b, metric)
	var v []float64
	for round, x := range ra {
		if y, ok := rb[round]; ok && x > 0 && y > 0 {
			v = append(v, x/y)
		}
	}
	return summarize(v)
}

// rowKey is a table row: a contender, at a fixed rate for cases that run at
// several.
type rowKey struct {
	Cont string
	Rate float64
}

func (k rowKey) String() string {
	if k.Rate == 0 {
		return k.Cont
	}
	return fmt.Sprintf("%s @ %s pps", k.Cont, formatValue(k.Rate))
}

// contenders lists the contenders of a case in order of appearance.
func (r *report) contenders(cs string) []string {
	var out []string
	for _, s := range r.Samples {
		if s.Case == cs && !slices.Contains(out, s.Contender) {
			out = append(out, s.Contender)
		}
	}
	return out
}

// rows lists a case's rows: by rate, then contenders in order of
// appearance.
func (r *report) rows(cs string) []rowKey {
	var rates []float64
	for _, s := range r.Samples {
		if s.Case == cs && !slices.Contains(rates, s.Rate) {
			rates = append(rates, s.Rate)
		}
	}
	slices.Sort(rates)
	var out []rowKey
	for _, rate := range rates {
		for _, c := range r.contenders(cs) {
			k := rowKey{c, rate}
			if slices.ContainsFunc(r.Samples, func(s sample) bool { return s.Case == cs && s.Contender == c && s.Rate == rate }) {
				out = append(out, k)
			}
		}
	}
	return out
}

// cell renders "median [min–max]" in the metric's display unit.
func cell(sm summary, d metricDef) string {
	if sm.N == 0 {
		return "–"
	}
	f := func(v float64) string {
		v /= d.Scale
		return fmt.Sprintf("%.*f", sigDecimals(v), v)
	}
	if sm.N == 1 || sm.Min == sm.Max {
		return f(sm.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", f(sm.Median), f(sm.Min), f(sm.Max))
}

// markdown renders one table per case: medians with min–max over rounds.
func (r *report) markdown(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s. Load: %s. Started %s, took %.0f s.\n", r.Machine, r.Load, r.Started, r.Seconds)
	var opts []string
	for _, k := range slices.Sorted(maps.Keys(r.Options)) {
		opts = append(opts, k+"="+r.Options[k])
	}
	fmt.Fprintf(w, "Options: %s.\n", strings.Join(opts, " "))
	fmt.Fprintf(w, "Cells: median [min–max] over rounds.\n")
	r.fairView(w)
	fmt.Fprintf(w, "\n## All tables\n\nThe pps case and the cps case's conn/s are placement-biased: they show what each contender reaches with the CPU the lab happens to leave it (see the fair view above).\n")
	for _, cs := range caseNames {
		rows := r.rows(cs)
		if len(rows) == 0 {
			continue
		}
		var defs []metricDef
		for _, d := range metricDefs {
			if d.Case == cs && slices.ContainsFunc(rows, func(k rowKey) bool { return len(r.seriesAt(cs, k, d.Metric)) > 0 }) {
				defs = append(defs, d)
			}
		}
		fmt.Fprintf(w, "\n### %s\n\n| contender |", caseTitles[cs])
		for _, d := range defs {
			u := d.Unit
			if u != "" {
				u = " (" + u + ")"
			}
			fmt.Fprintf(w, " %s%s |", d.Title, u)
		}
		fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(defs)))
		for _, k := range rows {
			fmt.Fprintf(w, "| %s |", k)
			for _, d := range defs {
				fmt.Fprintf(w, " %s |", cell(summarize(r.seriesAt(cs, k, d.Metric)), d))
			}
			fmt.Fprintln(w)
		}
		// Notes, once per contender and text, with the rounds they hold for.
		type noteKey struct{ cont, note string }
		var order []noteKey
		rounds := map[noteKey][]string{}
		for _, s := range r.Samples {
			if s.Case == cs && s.Note != "" {
				k := noteKey{s.Contender, s.Note}
				if _, ok := rounds[k]; !ok {
					order = append(order, k)
				}
				rounds[k] = append(rounds[k], fmt.Sprint(s.Round))
			}
		}
		if len(order) > 0 {
			fmt.Fprintln(w)
		}
		for _, k := range order {
			fmt.Fprintf(w, "- %s: %s (round %s)\n", k.cont, k.note, strings.Join(rounds[k], ", "))
		}
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(w, "\n### Failures\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(w, "- %s\n", f)
		}
	}
}

// panels builds the chart's panels from the metrics marked Chart.
func (r *report) panels() []chartPanel {
	var ps []chartPanel
	for _, d := range metricDefs {
		if !d.Chart {
			continue
		}
		p := chartPanel{Title: caseTitles[d.Case] + " — " + d.Title, Unit: d.Unit, LowerIsBetter: d.LowerIsBetter}
		for _, k := range r.rows(d.Case) {
			sm := summarize(r.seriesAt(d.Case, k, d.Metric))
			if sm.N == 0 {
				continue
			}
			p.Bars = append(p.Bars, chartBar{
				Label: k.String(), Median: sm.Median / d.Scale, Min: sm.Min / d.Scale, Max: sm.Max / d.Scale,
				Ours: strings.HasPrefix(k.Cont, "gvs") || strings.HasPrefix(k.Cont, "noop"),
			})
		}
		if len(p.Bars) > 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

// write saves results.json, results.md and chart.svg in dir and prints
// the tables.
func (r *report) write(dir string, stdout io.Writer) error {
	// JSON has no NaN: drop samples that could not be computed.
	r.Samples = slices.DeleteFunc(r.Samples, func(s sample) bool { return math.IsNaN(s.Value) || math.IsInf(s.Value, 0) })
	if err := jsonWrite(filepath.Join(dir, "results.json"), r); err != nil {
		return err
	}
	var md strings.Builder
	r.markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s\n", md.String())
	f, err := os.Create(filepath.Join(dir, "chart.svg"))
	if err != nil {
		return err
	}
	if err := writeSVG(f, "gvs-bench: "+r.Machine, r.panels()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s, %s and %s\n", filepath.Join(dir, "results.json"), filepath.Join(dir, "results.md"), filepath.Join(dir, "chart.svg"))
	return nil
}

// render re-reads dir/results.json and rewrites results.md and chart.svg
// (after a change of presentation; the samples are not touched).
func render(dir string, stdout io.Writer) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	return r.write(dir, stdout)
}
