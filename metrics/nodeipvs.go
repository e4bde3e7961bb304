package metrics

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"gvs/ipvs"
)

// nodeIPVS produces node_exporter's ipvs collector families
// (collector/ipvs_linux.go) from gvs's table: the same names, help texts,
// types, label names and label value formats as node_exporter produces from
// the kernel's /proc/net/ip_vs_stats and /proc/net/ip_vs (through
// prometheus/procfs):
//
//   - the five node_ipvs_*_total counters are the kernel's global totals;
//     gvs sums its services' counters (the kernel's totals also keep what
//     deleted services counted; here those leave the sum, which Prometheus
//     sees as a counter reset);
//   - per real server: active and inactive connections and weight, labelled
//     local_address, local_port, remote_address, remote_port, proto,
//     local_mark. proto is TCP, UDP or FWM (procfs reads no other service
//     lines, so other protocols are left out); addresses are Go's net.IP
//     text; ports decimal; an fwmark service has local_address "",
//     local_port "0" and local_mark the kernel's %08X of the mark; an
//     address service has local_mark "". Real servers with equal labels are
//     summed, as node_exporter does.
type nodeIPVS struct {
	conns, inPkts, outPkts, inBytes, outBytes *prometheus.Desc
	active, inactive, weight                  *prometheus.Desc
}

// nodeBackendLabels is node_exporter's fullIpvsBackendLabels, in its order.
var nodeBackendLabels = []string{"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}

func newNodeIPVS() *nodeIPVS {
	return &nodeIPVS{
		conns:    desc("node_ipvs_connections_total", "The total number of connections made."),
		inPkts:   desc("node_ipvs_incoming_packets_total", "The total number of incoming packets."),
		outPkts:  desc("node_ipvs_outgoing_packets_total", "The total number of outgoing packets."),
		inBytes:  desc("node_ipvs_incoming_bytes_total", "The total amount of incoming data."),
		outBytes: desc("node_ipvs_outgoing_bytes_total", "The total amount of outgoing data."),
		active:   desc("node_ipvs_backend_connections_active", "The current active connections by local and remote address.", nodeBackendLabels...),
		inactive: desc("node_ipvs_backend_connections_inactive", "The current inactive connections by local and remote address.", nodeBackendLabels...),
		weight:   desc("node_ipvs_backend_weight", "The current backend weight by local and remote address.", nodeBackendLabels...),
	}
}

func (n *nodeIPVS) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{n.conns, n.inPkts, n.outPkts, n.inBytes, n.outBytes, n.active, n.inactive, n.weight} {
		ch <- d
	}
}

type nodeBackend struct {
	labels                   []string
	active, inactive, weight uint64
}

// nodeLocal is the service part of node_exporter's backend labels, and
// false for a service /proc/net/ip_vs shows under a protocol procfs skips.
func nodeLocal(k ipvs.ServiceKey) (addr, port, proto, mark string, ok bool) {
	if k.FWMark != 0 {
		return "", "0", "FWM", fmt.Sprintf("%08X", k.FWMark), true
	}
	switch k.Proto {
	case ipvs.ProtoTCP, ipvs.ProtoUDP:
		return ipString(k.Addr), strconv.Itoa(int(k.Port)), k.Proto.String(), "", true
	}
	return "", "", "", "", false
}

func (n *nodeIPVS) collect(ch chan<- prometheus.Metric, svcs []svcSample) {
	var tot ipvs.Totals
	sums := map[string]*nodeBackend{}
	var order []string
	for _, s := range svcs {
		st := s.stats
		tot.Conns += st.Conns
		tot.InPkts += st.InPkts
		tot.OutPkts += st.OutPkts
		tot.InBytes += st.InBytes
		tot.OutBytes += st.OutBytes
		la, lp, proto, mark, ok := nodeLocal(s.key)
		if !ok {
			continue
		}
		for _, d := range s.dests {
			lv := []string{la, lp, ipString(d.Addr), strconv.Itoa(int(d.Port)), proto, mark}
			key := strings.Join(lv, "-")
			b := sums[key]
			if b == nil {
				b = &nodeBackend{labels: lv}
				sums[key] = b
				order = append(order, key)
			}
			b.active += uint64(max(d.ActiveConns.Load(), 0))
			b.inactive += uint64(max(d.InactConns.Load(), 0))
			b.weight += uint64(max(d.Weight(), 0))
		}
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(n.conns, tot.Conns)
	counter(n.inPkts, tot.InPkts)
	counter(n.outPkts, tot.OutPkts)
	counter(n.inBytes, tot.InBytes)
	counter(n.outBytes, tot.OutBytes)
	for _, k := range order {
		b := sums[k]
		gauge(ch, n.active, float64(b.active), b.labels)
		gauge(ch, n.inactive, float64(b.inactive), b.labels)
		gauge(ch, n.weight, float64(b.weight), b.labels)
	}
}
