package metrics

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"gvs/ipvs"
	"gvs/ipvsadm"
)

type fakeHealth []BackendHealth

func (f fakeHealth) HealthSnapshot() []BackendHealth { return f }

// fixtureHealth: 198.18.0.11 is down (inhibited: effective weight 0 in the
// model, configured 3) with an HTTP and a TCP checker; 198.18.0.12 is up.
// A backend the table does not have is ignored.
func fixtureHealth() []BackendHealth {
	web := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("192.0.2.10"), Port: 80}
	return []BackendHealth{
		{
			Service: web, Backend: netip.MustParseAddrPort("198.18.0.11:8080"), Up: false, ConfiguredWeight: 3,
			Checkers: []CheckerHealth{
				{
					Name: "HTTP_GET", Successes: 10, Failures: 3, Timeouts: 1, UpTransitions: 1, DownTransitions: 1,
					LastSuccess:   time.Unix(1700000000, 500000000),
					DurationCount: 14, DurationSum: 0.5,
					DurationBuckets: []uint64{0, 0, 2, 9, 12, 13, 13, 13, 13, 13, 14, 14, 14},
				},
				{Name: "TCP_CHECK", Successes: 14, DurationCount: 14, DurationSum: 0.014,
					DurationBuckets: []uint64{14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14}},
			},
		},
		{Service: web, Backend: netip.MustParseAddrPort("198.18.0.12:8080"), Up: true, ConfiguredWeight: -1},
		{Service: web, Backend: netip.MustParseAddrPort("198.18.0.99:8080"), Up: true, ConfiguredWeight: 9},
	}
}

func TestHealthMetrics(t *testing.T) {
	tab := newTable(t, fixtureRules)
	// The engine took 198.18.0.11 out with inhibit_on_failure: weight 0.
	cmds, err := ipvsadm.ParseRules(strings.NewReader("-e -t 192.0.2.10:80 -r 198.18.0.11:8080 -m -w 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
		t.Fatal(err)
	}
	c := NewCollector(Source{Table: tab, Health: fakeHealth(fixtureHealth())})
	const b11 = `backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"`
	const b12 = `backend_address="198.18.0.12",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"`
	want := sortLabels(strings.NewReplacer("B11", b11, "B12", b12).Replace(`
# HELP gvs_backend_up 1 while every health checker of the real server is up, 0 while one is down.
# TYPE gvs_backend_up gauge
gvs_backend_up{B11} 0
gvs_backend_up{B12} 1
# HELP gvs_backend_weight Effective weight of the real server: the weight the scheduler uses (0: quiesced).
# TYPE gvs_backend_weight gauge
gvs_backend_weight{B11} 0
gvs_backend_weight{B12} 2
gvs_backend_weight{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 1
gvs_backend_weight{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 5
gvs_backend_weight{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 7
# HELP gvs_backend_configured_weight Configured weight of the real server (before health checks change it).
# TYPE gvs_backend_configured_weight gauge
gvs_backend_configured_weight{B11} 3
gvs_backend_configured_weight{B12} 2
gvs_backend_configured_weight{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 1
gvs_backend_configured_weight{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 5
gvs_backend_configured_weight{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 7
# HELP gvs_healthcheck_checks_total Health checks run, by result (success, failure, timeout).
# TYPE gvs_healthcheck_checks_total counter
gvs_healthcheck_checks_total{B11,checker="HTTP_GET",result="failure"} 3
gvs_healthcheck_checks_total{B11,checker="HTTP_GET",result="success"} 10
gvs_healthcheck_checks_total{B11,checker="HTTP_GET",result="timeout"} 1
gvs_healthcheck_checks_total{B11,checker="TCP_CHECK",result="failure"} 0
gvs_healthcheck_checks_total{B11,checker="TCP_CHECK",result="success"} 14
gvs_healthcheck_checks_total{B11,checker="TCP_CHECK",result="timeout"} 0
# HELP gvs_healthcheck_transitions_total Changes of the checker's state, by the state it went to (up, down).
# TYPE gvs_healthcheck_transitions_total counter
gvs_healthcheck_transitions_total{B11,checker="HTTP_GET",to="down"} 1
gvs_healthcheck_transitions_total{B11,checker="HTTP_GET",to="up"} 1
gvs_healthcheck_transitions_total{B11,checker="TCP_CHECK",to="down"} 0
gvs_healthcheck_transitions_total{B11,checker="TCP_CHECK",to="up"} 0
# HELP gvs_healthcheck_last_success_timestamp_seconds Time of the checker's last successful check, in seconds since the Unix epoch.
# TYPE gvs_healthcheck_last_success_timestamp_seconds gauge
gvs_healthcheck_last_success_timestamp_seconds{B11,checker="HTTP_GET"} 1.7000000005e+09
# HELP gvs_healthcheck_duration_seconds Duration of the health checks.
# TYPE gvs_healthcheck_duration_seconds histogram
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.001"} 0
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.0025"} 0
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.005"} 2
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.01"} 9
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.025"} 12
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.05"} 13
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.1"} 13
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.25"} 13
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="0.5"} 13
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="1"} 13
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="2.5"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="5"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="10"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="HTTP_GET",le="+Inf"} 14
gvs_healthcheck_duration_seconds_sum{B11,checker="HTTP_GET"} 0.5
gvs_healthcheck_duration_seconds_count{B11,checker="HTTP_GET"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.001"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.0025"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.005"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.01"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.025"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.05"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.1"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.25"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="0.5"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="1"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="2.5"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="5"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="10"} 14
gvs_healthcheck_duration_seconds_bucket{B11,checker="TCP_CHECK",le="+Inf"} 14
gvs_healthcheck_duration_seconds_sum{B11,checker="TCP_CHECK"} 0.014
gvs_healthcheck_duration_seconds_count{B11,checker="TCP_CHECK"} 14
`))
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"gvs_backend_up", "gvs_backend_weight", "gvs_backend_configured_weight",
		"gvs_healthcheck_checks_total", "gvs_healthcheck_transitions_total",
		"gvs_healthcheck_last_success_timestamp_seconds", "gvs_healthcheck_duration_seconds"); err != nil {
		t.Error(err)
	}
}
