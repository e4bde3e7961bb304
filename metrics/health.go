package metrics

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gvs/ipvs"
)

// Health is what the health-check engine implements for the metrics: a
// snapshot, taken at scrape time, of every checked real server. The engine
// keeps its counters itself (per check, not per packet); HealthSnapshot
// copies them and may allocate.
//
// The metrics it feeds, all with the backend labels (proto, vip, port,
// fwmark, family, backend_address, backend_port):
//
//	gvs_backend_up                                  gauge    1 while every checker of the real server is up
//	gvs_backend_configured_weight                   gauge    BackendHealth.ConfiguredWeight (else the model's weight)
//	gvs_healthcheck_checks_total{checker,result}    counter  result: success, failure, timeout
//	gvs_healthcheck_duration_seconds{checker}       histogram of check durations, buckets HealthDurationBuckets
//	gvs_healthcheck_transitions_total{checker,to}   counter  to: up, down
//	gvs_healthcheck_last_success_timestamp_seconds{checker}  gauge (absent before the first success)
type Health interface {
	HealthSnapshot() []BackendHealth
}

// HealthDurationBuckets are the upper bounds, in seconds, of the check
// duration histogram. CheckerHealth.DurationBuckets counts per bound.
var HealthDurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// BackendHealth is the health of one real server of one service.
type BackendHealth struct {
	Service ipvs.ServiceKey
	Backend netip.AddrPort
	// Up is the real server's state: alive when all its checkers are up.
	Up bool
	// ConfiguredWeight is the weight the configuration gives the real
	// server (the model's weight is the effective one, which the engine
	// sets to 0 on failure with inhibit_on_failure); negative: unknown.
	ConfiguredWeight int
	Checkers         []CheckerHealth
}

// CheckerHealth is one checker of a real server. Name tells checkers of one
// real server apart ("TCP_CHECK", "HTTP_GET", "HTTP_GET#2" for a second one
// of the same kind).
type CheckerHealth struct {
	Name                           string
	Successes, Failures, Timeouts  uint64
	UpTransitions, DownTransitions uint64
	// LastSuccess is the time of the last successful check; zero: never.
	LastSuccess time.Time
	// DurationCount and DurationSum (seconds) summarise every check's
	// duration; DurationBuckets[i] is the number of checks that took at
	// most HealthDurationBuckets[i] (cumulative, as Prometheus buckets).
	DurationCount   uint64
	DurationSum     float64
	DurationBuckets []uint64
}

type healthKey struct {
	svc ipvs.ServiceKey
	ap  netip.AddrPort
}

var (
	descBackendUp   = desc("gvs_backend_up", "1 while every health checker of the real server is up, 0 while one is down.", destLabels...)
	descChecks      = desc("gvs_healthcheck_checks_total", "Health checks run, by result (success, failure, timeout).", append(append([]string(nil), chkLabels...), "result")...)
	descCheckDur    = desc("gvs_healthcheck_duration_seconds", "Duration of the health checks.", chkLabels...)
	descTransitions = desc("gvs_healthcheck_transitions_total", "Changes of the checker's state, by the state it went to (up, down).", append(append([]string(nil), chkLabels...), "to")...)
	descLastSuccess = desc("gvs_healthcheck_last_success_timestamp_seconds", "Time of the checker's last successful check, in seconds since the Unix epoch.", chkLabels...)
)

func describeHealth(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBackendUp, descChecks, descCheckDur, descTransitions, descLastSuccess} {
		ch <- d
	}
}

// collectBackendHealth sends one real server's health metrics; lv are its
// backend label values.
func collectBackendHealth(ch chan<- prometheus.Metric, h *BackendHealth, lv []string) {
	gauge(ch, descBackendUp, b2f(h.Up), lv)
	for i := range h.Checkers {
		c := &h.Checkers[i]
		cl := append(append(make([]string, 0, len(lv)+2), lv...), c.Name)
		with := func(v string) []string { return append(cl[:len(cl):len(cl)], v) }
		ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(c.Successes), with("success")...)
		ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(c.Failures), with("failure")...)
		ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(c.Timeouts), with("timeout")...)
		ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(c.UpTransitions), with("up")...)
		ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(c.DownTransitions), with("down")...)
		if !c.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue,
				float64(c.LastSuccess.UnixNano())/1e9, cl...)
		}
		buckets := make(map[float64]uint64, len(HealthDurationBuckets))
		for j, ub := range HealthDurationBuckets {
			var n uint64
			if j < len(c.DurationBuckets) {
				n = c.DurationBuckets[j]
			}
			buckets[ub] = n
		}
		ch <- prometheus.MustNewConstHistogram(descCheckDur, c.DurationCount, c.DurationSum, buckets, cl...)
	}
}
