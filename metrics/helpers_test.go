package metrics

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gatherValues collects c and returns the series of one family as
// `a="x",b="y"` (labels sorted by name) -> value. Histograms map to their
// sample count.
func gatherValues(t testing.TB, c prometheus.Collector, name string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			slices.Sort(ls)
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Histogram != nil:
				v = float64(m.Histogram.GetSampleCount())
			}
			out[strings.Join(ls, ",")] = v
		}
	}
	return out
}

// sortLabels rewrites every sample line of an exposition with its labels
// sorted by name ("le" last), the order client_golang writes them in, so
// that expected texts can be written with placeholders.
func sortLabels(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		open, end := strings.IndexByte(l, '{'), strings.LastIndexByte(l, '}')
		if strings.HasPrefix(l, "#") || open < 0 || end < open {
			continue
		}
		ls := labelRE.FindAllString(l[open+1:end], -1)
		slices.SortFunc(ls, func(a, b string) int {
			if strings.HasPrefix(a, "le=") != strings.HasPrefix(b, "le=") {
				if strings.HasPrefix(a, "le=") {
					return 1
				}
				return -1
			}
			return strings.Compare(a, b)
		})
		lines[i] = l[:open+1] + strings.Join(ls, ",") + l[end:]
	}
	return strings.Join(lines, "\n")
}

var labelRE = regexp.MustCompile(`[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"`)
