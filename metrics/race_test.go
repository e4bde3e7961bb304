package metrics

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gvs/forwarder"
	"gvs/ipvsadm"
)

// Scrapes while workers count packets and the control plane edits the table
// (weights, real servers coming and going, a service re-created): no data
// race (go test -race), counters never go backwards between scrapes, and
// the last scrape after the workers stop has every increment.
func TestScrapeDuringUpdates(t *testing.T) {
	const (
		workers = 4
		rounds  = 2000
		scrapes = 50
	)
	tab := newTable(t, fixtureRules)
	web := svcOf(t, tab, "-t 192.0.2.10:80")
	d11 := destOf(t, web, "198.18.0.11:8080")
	pipes := make([]forwarder.Counters, workers)
	rx := make([]atomic.Uint64, workers)
	src := Source{Table: tab, NodeIPVS: true, Reloads: NewReloads(t0)}
	for i := range workers {
		src.Workers = append(src.Workers, Worker{Pipeline: &pipes[i], RX: &rx[i]})
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(src))

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range rounds {
				s, ss := &d11.Stats[w], &web.Stats[w]
				s.InPkts.Add(1)
				s.InBytes.Add(100)
				ss.InPkts.Add(1)
				ss.InBytes.Add(100)
				d11.Bind(false)
				d11.SetActive(true)
				d11.Unbind(false, true)
				pipes[w].Actions[forwarder.Transmit].Add(1)
				pipes[w].Reasons[forwarder.NoRoute].Add(1)
				rx[w].Add(1)
			}
		})
	}
	wg.Go(func() {
		for i := range rounds / 10 {
			op := "-a" // a real server comes, and goes in the next round
			if i%2 == 1 {
				op = "-d"
			}
			cmds, err := ipvsadm.ParseRules(strings.NewReader(fmt.Sprintf(`
-e -t 192.0.2.10:80 -r 198.18.0.11:8080 -m -w %d
%s -t 192.0.2.10:80 -r 198.18.0.%d:80
-D -u [2001:db8::1]:53
-A -u [2001:db8::1]:53 -s rr
`, i%5, op, 100+i/2%50)))
			if err != nil {
				t.Error(err)
				return
			}
			if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
				t.Error(err)
				return
			}
			src.Reloads.Observe(nil, t0)
		}
	})

	key := `family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"`
	var last, lastNode, lastTX float64
	for range scrapes {
		v := gatherAll(t, reg)
		in, node, tx := v["gvs_service_incoming_packets_total{"+key+"}"], v["node_ipvs_incoming_packets_total{}"],
			v[`gvs_dataplane_packets_total{action="transmit",worker="2"}`]
		if in < last || node < lastNode || tx < lastTX {
			t.Fatalf("a counter went backwards: service %v -> %v, node %v -> %v, transmit %v -> %v",
				last, in, lastNode, node, lastTX, tx)
		}
		last, lastNode, lastTX = in, node, tx
	}
	wg.Wait()
	v := gatherAll(t, reg)
	for name, want := range map[string]float64{
		"gvs_service_incoming_packets_total{" + key + "}":                                                   workers * rounds,
		"gvs_service_incoming_bytes_total{" + key + "}":                                                     workers * rounds * 100,
		`gvs_backend_incoming_packets_total{backend_address="198.18.0.11",backend_port="8080",` + key + "}": workers * rounds,
		`gvs_backend_connections_active{backend_address="198.18.0.11",backend_port="8080",` + key + "}":     0,
		`gvs_dataplane_drops_total{reason="no_route",worker="3"}`:                                           rounds,
		`gvs_dataplane_rx_packets_total{worker="0"}`:                                                        rounds,
		`gvs_config_reloads_total{result="success"}`:                                                        rounds / 10,
		"node_ipvs_incoming_packets_total{}":                                                                workers * rounds,
	} {
		if v[name] != want {
			t.Errorf("%s = %v, want %v", name, v[name], want)
		}
	}
}

var t0 = time.Unix(1700000000, 0)

// gatherAll gathers reg and returns every counter and gauge series as
// name{sorted labels} -> value.
func gatherAll(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			k := mf.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.Counter != nil:
				out[k] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[k] = m.Gauge.GetValue()
			}
		}
	}
	return out
}
