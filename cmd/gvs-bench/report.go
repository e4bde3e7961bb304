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
	{Case: "pps", Metric: "overload_fwd_pps", Title: "Forwarded at overload", Scale: 1e6, Unit: "Mpps", Chart: true},
	{Case: "pps", Metric: "lossfree_pps", Title: "Loss-free rate", Scale: 1e6, Unit: "Mpps", Chart: true},
	{Case: "pps", Metric: "offered_pps", Title: "Offered at overload", Scale: 1e6, Unit: "Mpps"},
	{Case: "pps", Metric: "overload_cpu_pct", Title: "Director CPU at overload", Scale: 1, Unit: "%"},
	{Case: "pps", Metric: "overload_backlog_drops_pps", Title: "Input-backlog drops at overload", LowerIsBetter: true, Scale: 1e3, Unit: "kpps"},
	{Case: "cpu", Metric: "cpu_ns_per_pkt", Title: "softirq+irq (all CPUs) + director CPU, per packet", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "cpu_net_ns_per_pkt", Title: "Forwarding CPU per packet (minus generator-alone)", LowerIsBetter: true, Scale: 1, Unit: "ns", Chart: true},
	{Case: "cpu", Metric: "proc_ns_per_pkt", Title: "forwarder process utime+stime (includes softirq run in its syscalls)", LowerIsBetter: true, Scale: 1, Unit: "ns"},
	{Case: "cpu", Metric: "fwd_pps", Title: "Forwarded", Scale: 1e3, Unit: "kpps"},
	{Case: "cpu", Metric: "cpu_busy_pct", Title: "Director CPU busy (all processes)", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "usr_pct", Title: "user, all CPUs", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "sys_pct", Title: "system, all CPUs", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cpu", Metric: "softirq_pct", Title: "softirq+irq, all CPUs", LowerIsBetter: true, Scale: 1, Unit: "%"},
	{Case: "cps", Metric: "cps", Title: "Connections per second", Scale: 1e3, Unit: "k/s", Chart: true},
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
	"pps":       "Packet rate: 64-byte UDP, 10k flows",
	"cpu":       "CPU per packet at a fixed offered rate",
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

// series gathers the values of one case/contender/metric over rounds.
func (r *report) series(cs, cont, metric string) []float64 {
	var v []float64
	for _, s := range r.Samples {
		if s.Case == cs && s.Contender == cont && s.Metric == metric {
			v = append(v, s.Value)
		}
	}
	return v
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
	for _, cs := range caseNames {
		conts := r.contenders(cs)
		if len(conts) == 0 {
			continue
		}
		var defs []metricDef
		for _, d := range metricDefs {
			if d.Case == cs && slices.ContainsFunc(conts, func(c string) bool { return len(r.series(cs, c, d.Metric)) > 0 }) {
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
		for _, c := range conts {
			fmt.Fprintf(w, "| %s |", c)
			for _, d := range defs {
				fmt.Fprintf(w, " %s |", cell(summarize(r.series(cs, c, d.Metric)), d))
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
		for _, c := range r.contenders(d.Case) {
			sm := summarize(r.series(d.Case, c, d.Metric))
			if sm.N == 0 {
				continue
			}
			p.Bars = append(p.Bars, chartBar{
				Label: c, Median: sm.Median / d.Scale, Min: sm.Min / d.Scale, Max: sm.Max / d.Scale,
				Ours: strings.HasPrefix(c, "gvs") || strings.HasPrefix(c, "noop"),
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
