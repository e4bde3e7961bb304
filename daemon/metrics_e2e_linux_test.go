package daemon_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"gvs/internal/lab"
)

// metricsAddr is where gvsd --metrics listens inside the director's
// namespace (its own loopback).
const metricsAddr = "127.0.0.1:9475"

// TestMetrics runs gvsd --metrics --metrics-node-ipvs on the NAT lab: after
// traffic, the per-real-server counters scraped from /metrics are the ones
// gvsadm -Ln --stats --exact prints, and SIGHUP reloads are counted.
func TestMetrics(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	gvsd, _ := binaries(t)
	d := newDirectorLab(t, ctx, lab.Options{}, natRules)
	l, rules := d.l, d.rules
	vip := l.VIP().String()
	dns := l.Director().NS
	p, err := l.Start(dns, gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--rules", rules, "--metrics", metricsAddr, "--metrics-node-ipvs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gvsd output:\n%s", p.Output())
		}
	})
	if _, err := p.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	d.gvsd = p
	serverNames(t, ctx, d, 6)

	m, stats := settledBackendStats(t, ctx, l, dns, "-Ln", "--stats", "--exact")
	checked := checkBackendCounters(t, m, stats, vip, func(f []string, _ string) {
		if f[2] != "2" {
			t.Errorf("rr over 3 servers, 6 GETs: %s has %s connections", f[1], f[2])
		}
		addr, port, _ := strings.Cut(f[1], ":")
		nodeKey := `node_ipvs_backend_weight{local_address="` + vip + `",local_mark="",local_port="80",proto="TCP",remote_address="` +
			addr + `",remote_port="` + port + `"}`
		if m[nodeKey] != 1 {
			t.Errorf("%s = %v, want 1", nodeKey, m[nodeKey])
		}
	})
	if checked != 3 {
		t.Fatalf("%d real servers in gvsadm -Ln --stats --exact:\n%s", checked, stats)
	}
	if m["node_ipvs_connections_total"] < 6 || m[`gvs_dataplane_packets_total{action="transmit",worker="0"}`] == 0 {
		t.Errorf("totals: connections %v, transmitted %v", m["node_ipvs_connections_total"],
			m[`gvs_dataplane_packets_total{action="transmit",worker="0"}`])
	}

	// A good and a bad reload.
	if err := syscall.Kill(p.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor(ctx, "rules reloaded"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rules, []byte("-A -t nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor(ctx, "reload failed"); err != nil {
		t.Fatal(err)
	}
	m = scrapeMetrics(t, ctx, dns)
	if ok, bad := m[`gvs_config_reloads_total{result="success"}`], m[`gvs_config_reloads_total{result="failure"}`]; ok != 1 || bad != 1 {
		t.Errorf("reloads: %v succeeded, %v failed; want 1 and 1", ok, bad)
	}
	stopAndCheck(t, d)
}

// settledBackendStats runs gvsadm with args in ns between two scrapes of
// /metrics until both scrapes agree on the backend counters (connections
// end with a few more packets: FIN, ACK), and returns the last scrape and
// gvsadm's output.
func settledBackendStats(t *testing.T, ctx context.Context, l *lab.Lab, ns string, args ...string) (map[string]float64, string) {
	t.Helper()
	for try := 0; ; try++ {
		a := scrapeMetrics(t, ctx, ns)
		stats, err := l.Output(ctx, ns, adminBin, args...)
		if err != nil {
			t.Fatal(err)
		}
		m := scrapeMetrics(t, ctx, ns)
		if fmt.Sprint(backendSamples(a)) == fmt.Sprint(backendSamples(m)) {
			return m, stats
		}
		if try == 20 {
			t.Fatal("the counters do not settle")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkBackendCounters compares, for every real server on port 8080 that
// stats (gvsadm -Ln --stats --exact) lists, its five counters with the
// gvs_backend_*_total samples of m for the service vip:80/TCP. It calls
// more with the line's fields and the server's label set for further
// checks, and returns how many real servers it checked.
func checkBackendCounters(t *testing.T, m map[string]float64, stats, vip string, more func(f []string, lv string)) int {
	t.Helper()
	svcLabels := `family="ipv4",fwmark="",port="80",proto="TCP",vip="` + vip + `"`
	checked := 0
	for _, line := range strings.Split(stats, "\n") {
		f := strings.Fields(line)
		// "  -> 198.18.2.11:8080   Conns InPkts OutPkts InBytes OutBytes"
		if len(f) != 7 || f[0] != "->" || !strings.HasSuffix(f[1], ":8080") {
			continue
		}
		addr, port, _ := strings.Cut(f[1], ":")
		lv := `{backend_address="` + addr + `",backend_port="` + port + `",` + svcLabels + `}`
		for i, name := range []string{"connections", "incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes"} {
			key := "gvs_backend_" + name + "_total" + lv
			if got, ok := m[key]; !ok || fmt.Sprint(got) != f[2+i] {
				t.Errorf("%s = %v (present %v), gvsadm says %s", key, got, ok, f[2+i])
			}
		}
		more(f, lv)
		checked++
	}
	return checked
}

// scrapeMetrics GETs /metrics in ns and returns its samples, keyed by the
// text before the value (name and labels as written).
func scrapeMetrics(t *testing.T, ctx context.Context, ns string) map[string]float64 {
	t.Helper()
	body, err := httpGet(ctx, ns, "http://"+metricsAddr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// backendSamples are the gvs_backend_* samples of m (the process's own
// go_* and process_* metrics change with every scrape).
func backendSamples(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, "gvs_backend_") {
			out[k] = v
		}
	}
	return out
}
