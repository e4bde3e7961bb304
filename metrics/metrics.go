// Package metrics exposes gvs's state to Prometheus (gvsd --metrics ADDR).
//
// A Collector reads the live model when Prometheus scrapes it: the services'
// and real servers' counters and connection counts (package ipvs), the
// connection table's counters (package conntrack), the data-path workers'
// verdict and drop counters (package forwarder and the daemon's worker loop),
// config reloads and build information. Nothing is updated per packet for
// metrics: the data path keeps the counters it keeps anyway (one slot per
// worker, atomics), and a scrape loads them. A scrape takes no lock a worker
// takes, with one exception: conntrack.Table.Stats visits the shards' locks
// one at a time, as the daemon's 100 ms expiry does.
//
// Native metrics are named gvs_* (see the README's metrics section for the
// list). With Source.NodeIPVS the collector also produces node_exporter's
// node_ipvs_* families with exactly its names, help texts, labels and label
// formats, so dashboards built on node_exporter's ipvs collector keep working.
//
// Health-check metrics come from a Health implementation (the health-check
// engine); the names are defined here.
package metrics

import (
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/ipvs"
)

// Version is gvs's version as gvs_build_info reports it; set it at link
// time (-ldflags "-X gvs/metrics.Version=v1.2.3"). Empty: the main module's
// version from the build information, or "unknown".
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// Conntrack is the part of *conntrack.Table the collector reads.
type Conntrack interface {
	Stats() conntrack.Stats
	Capacity() int
}

// Worker is one data-path worker's counters. The pointers are read with
// atomic loads at scrape time; a nil one is not reported.
type Worker struct {
	// Pipeline holds the forwarder's verdict and reason counters.
	Pipeline *forwarder.Counters
	// RX and TX count the frames the worker took from its RX rings and
	// committed to its TX rings.
	RX, TX *atomic.Uint64
	// Oversize, TXFull and TXError count frames the worker loop dropped
	// (reported as drop reasons "oversize", "tx_full", "tx_error").
	Oversize, TXFull, TXError *atomic.Uint64
	// SYNBudget counts connection openings dropped by the per-source
	// budget (drop reason "syn_budget").
	SYNBudget *atomic.Uint64
}

// Source is what a Collector reads. Only Table is required.
type Source struct {
	Table *ipvs.Table
	// Conns is the connection table (*conntrack.Table); nil: no
	// gvs_conntrack_* metrics.
	Conns Conntrack
	// Workers are the data-path workers, in worker order; the worker label
	// is the index.
	Workers []Worker
	// RingDrops, if not nil, returns the frames the kernel dropped because
	// an RX ring was full, summed over the established traffic's rings and
	// over the rings of connection openings and over the rings of UDP to
	// the VIPs (label ring="established", "syn", "udp").
	RingDrops func() (established, syn, udp uint64)
	// Reloads counts config reloads; nil: no gvs_config_* metrics.
	Reloads *Reloads
	// Health is the health-check engine; nil: no health metrics, and the
	// configured weight is the model's weight.
	Health Health
	// NodeIPVS adds node_exporter's node_ipvs_* families.
	NodeIPVS bool
}

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src  Source
	node *nodeIPVS
}

// NewCollector makes a collector for src.
func NewCollector(src Source) *Collector {
	c := &Collector{src: src}
	if src.NodeIPVS {
		c.node = newNodeIPVS()
	}
	return c
}

// NewRegistry returns a registry with c and the Go runtime's and the
// process's standard collectors (go_*, process_*).
func NewRegistry(c *Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg's metrics in the Prometheus text format (or
// OpenMetrics when the scraper asks for it).
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Reloads counts configuration reloads. It is safe for concurrent use.
type Reloads struct {
	ok, failed atomic.Uint64
	lastOK     atomic.Int64 // Unix nanoseconds of the last successful (re)load
}

// NewReloads starts counting; loaded is when the configuration in force was
// loaded (the daemon's start), reported as the last successful reload until
// a reload succeeds.
func NewReloads(loaded time.Time) *Reloads {
	r := &Reloads{}
	r.lastOK.Store(loaded.UnixNano())
	return r
}

// Observe records a reload that ended with err (nil: success) at now.
func (r *Reloads) Observe(err error, now time.Time) {
	if err != nil {
		r.failed.Add(1)
		return
	}
	r.ok.Add(1)
	r.lastOK.Store(now.UnixNano())
}

var (
	svcLabels  = []string{"proto", "vip", "port", "fwmark", "family"}
	destLabels = append(append([]string(nil), svcLabels...), "backend_address", "backend_port")
	chkLabels  = append(append([]string(nil), destLabels...), "checker")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The five traffic counters IPVS keeps per service and per real server.
type trafficDescs struct{ conns, inPkts, outPkts, inBytes, outBytes *prometheus.Desc }

func newTrafficDescs(level, what string, labels []string) trafficDescs {
	p := "gvs_" + level + "_"
	return trafficDescs{
		conns:    desc(p+"connections_total", "Connections scheduled to "+what+".", labels...),
		inPkts:   desc(p+"incoming_packets_total", "Packets from clients forwarded to "+what+".", labels...),
		outPkts:  desc(p+"outgoing_packets_total", "Reply packets from "+what+" forwarded to clients.", labels...),
		inBytes:  desc(p+"incoming_bytes_total", "Bytes of the packets from clients forwarded to "+what+".", labels...),
		outBytes: desc(p+"outgoing_bytes_total", "Bytes of the reply packets from "+what+" forwarded to clients.", labels...),
	}
}

func (d *trafficDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.conns, d.inPkts, d.outPkts, d.inBytes, d.outBytes}
}

func (d *trafficDescs) collect(ch chan<- prometheus.Metric, t ipvs.Totals, lv []string) {
	ch <- prometheus.MustNewConstMetric(d.conns, prometheus.CounterValue, float64(t.Conns), lv...)
	ch <- prometheus.MustNewConstMetric(d.inPkts, prometheus.CounterValue, float64(t.InPkts), lv...)
	ch <- prometheus.MustNewConstMetric(d.outPkts, prometheus.CounterValue, float64(t.OutPkts), lv...)
	ch <- prometheus.MustNewConstMetric(d.inBytes, prometheus.CounterValue, float64(t.InBytes), lv...)
	ch <- prometheus.MustNewConstMetric(d.outBytes, prometheus.CounterValue, float64(t.OutBytes), lv...)
}

var (
	svcTraffic  = newTrafficDescs("service", "the virtual service", svcLabels)
	destTraffic = newTrafficDescs("backend", "the real server", destLabels)

	descServiceBackends = desc("gvs_service_backends", "Real servers configured in the virtual service.", svcLabels...)
	descActive          = desc("gvs_backend_connections_active", "Active connections to the real server (ipvsadm ActiveConn).", destLabels...)
	descInactive        = desc("gvs_backend_connections_inactive", "Inactive connections to the real server (ipvsadm InActConn).", destLabels...)
	descPersistent      = desc("gvs_backend_persistent_connections", "Persistence templates pointing at the real server (ipvsadm PersistConn).", destLabels...)
	descWeight          = desc("gvs_backend_weight", "Effective weight of the real server: the weight the scheduler uses (0: quiesced).", destLabels...)
	descConfWeight      = desc("gvs_backend_configured_weight", "Configured weight of the real server (before health checks change it).", destLabels...)
	descOverloaded      = desc("gvs_backend_overloaded", "1 while the real server is over its upper connection threshold (IPVS OVERLOAD).", destLabels...)

	descConnEntries  = desc("gvs_conntrack_entries", "Live entries in the connection table, persistence templates included.")
	descConnLimit    = desc("gvs_conntrack_entries_limit", "Capacity of the connection table.")
	descConnCreated  = desc("gvs_conntrack_created_total", "Entries created in the connection table.")
	descConnExpired  = desc("gvs_conntrack_expired_total", "Entries removed because their timeout ran out.")
	descConnRemoved  = desc("gvs_conntrack_removed_total", "Entries removed before their timeout (real server or service deleted, flush).")
	descConnFullDrop = desc("gvs_conntrack_insert_failures_total", "Entries not created because the connection table was full.")
	descConnEvicted  = desc("gvs_conntrack_evictions_total", "Half-open connections evicted to make room in a full connection table.")
	descConnDropEnt  = desc("gvs_conntrack_drop_entry_total", "Entries dropped by the drop_entry defense's periodic scan.")
	descConnDropPkt  = desc("gvs_conntrack_drop_packet_total", "New connections dropped by the drop_packet defense.")

	descPackets   = desc("gvs_dataplane_packets_total", "Frames handled by the data path, by verdict (transmit, drop, reply, pass, control).", "worker", "action")
	descDrops     = desc("gvs_dataplane_drops_total", "Frames not forwarded, by reason: dropped, or answered with an ICMP error (ttl_exceeded, no_dest, frag_needed).", "worker", "reason")
	descRX        = desc("gvs_dataplane_rx_packets_total", "Frames taken from the RX rings.", "worker")
	descTX        = desc("gvs_dataplane_tx_packets_total", "Frames committed to the TX rings.", "worker")
	descRingDrops = desc("gvs_dataplane_ring_drops_total", "Frames the kernel dropped because an RX ring was full, by ring: established traffic, connection openings (syn), or UDP to the VIPs (udp).", "ring")

	descReloads    = desc("gvs_config_reloads_total", "Configuration reloads (SIGHUP), by result.", "result")
	descLastReload = desc("gvs_config_last_reload_success_timestamp_seconds", "Time of the last successful configuration load (start or reload), in seconds since the Unix epoch.")

	descBuild = desc("gvs_build_info", "Build information of gvs; the value is 1.", "version", "goversion")
)

// Describe sends every metric description the collector may produce.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range svcTraffic.all() {
		ch <- d
	}
	for _, d := range destTraffic.all() {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{descServiceBackends, descActive, descInactive, descPersistent,
		descWeight, descConfWeight, descOverloaded, descBuild} {
		ch <- d
	}
	if c.src.Conns != nil {
		for _, d := range []*prometheus.Desc{descConnEntries, descConnLimit, descConnCreated,
			descConnExpired, descConnRemoved, descConnFullDrop, descConnEvicted, descConnDropEnt, descConnDropPkt} {
			ch <- d
		}
	}
	if len(c.src.Workers) > 0 {
		ch <- descPackets
		ch <- descDrops
		ch <- descRX
		ch <- descTX
	}
	if c.src.RingDrops != nil {
		ch <- descRingDrops
	}
	if c.src.Reloads != nil {
		ch <- descReloads
		ch <- descLastReload
	}
	if c.src.Health != nil {
		describeHealth(ch)
	}
	if c.node != nil {
		c.node.describe(ch)
	}
}

// Collect reads the source and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, version(), runtime.Version())
	svcs := c.collectTable(ch)
	if c.node != nil {
		c.node.collect(ch, svcs)
	}
	c.collectConntrack(ch)
	c.collectWorkers(ch)
	if r := c.src.Reloads; r != nil {
		ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.ok.Load()), "success")
		ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.failed.Load()), "failure")
		ch <- prometheus.MustNewConstMetric(descLastReload, prometheus.GaugeValue, float64(r.lastOK.Load())/1e9)
	}
}

// svcSample is one service as read at scrape time.
type svcSample struct {
	key    ipvs.ServiceKey
	labels []string
	dests  []*ipvs.Dest
	stats  ipvs.Totals
}

// serviceLabels are the label values of a service: proto (ipvsadm's TCP,
// UDP, or FWM), vip and port (empty for fwmark services), fwmark (empty for
// address services), family (ipv4, ipv6).
func serviceLabels(k ipvs.ServiceKey) []string {
	if k.FWMark != 0 {
		fam := "ipv4"
		if k.V6 {
			fam = "ipv6"
		}
		return []string{"FWM", "", "", strconv.FormatUint(uint64(k.FWMark), 10), fam}
	}
	fam := "ipv4"
	if k.Addr.Is6() {
		fam = "ipv6"
	}
	return []string{k.Proto.String(), k.Addr.String(), strconv.Itoa(int(k.Port)), "", fam}
}

// collectTable sends the per-service and per-backend metrics and returns
// the services it read. The list is copied under the table's control-plane
// lock; each service's configuration, destination list and counters are
// then read through the published snapshots and atomics.
func (c *Collector) collectTable(ch chan<- prometheus.Metric) []svcSample {
	var health map[healthKey]*BackendHealth
	if c.src.Health != nil {
		hs := c.src.Health.HealthSnapshot()
		health = make(map[healthKey]*BackendHealth, len(hs))
		for i := range hs {
			h := &hs[i]
			health[healthKey{h.Service.Norm(), h.Backend}] = h
		}
	}
	live := c.src.Table.Services()
	out := make([]svcSample, 0, len(live))
	for _, svc := range live {
		key := svc.State().Config.ServiceKey.Norm()
		s := svcSample{key: key, labels: serviceLabels(key), dests: svc.Dests(), stats: svc.Stats.Sum()}
		out = append(out, s)
		svcTraffic.collect(ch, s.stats, s.labels)
		ch <- prometheus.MustNewConstMetric(descServiceBackends, prometheus.GaugeValue, float64(len(s.dests)), s.labels...)
		for _, d := range s.dests {
			lv := append(append(make([]string, 0, len(destLabels)+1), s.labels...),
				d.Addr.String(), strconv.Itoa(int(d.Port)))
			destTraffic.collect(ch, d.Stats.Sum(), lv)
			gauge(ch, descActive, float64(d.ActiveConns.Load()), lv)
			gauge(ch, descInactive, float64(d.InactConns.Load()), lv)
			gauge(ch, descPersistent, float64(d.PersistConns.Load()), lv)
			w := d.Weight()
			gauge(ch, descWeight, float64(w), lv)
			h := health[healthKey{key, d.AddrPort()}]
			if h != nil && h.ConfiguredWeight >= 0 {
				w = h.ConfiguredWeight
			}
			gauge(ch, descConfWeight, float64(w), lv)
			gauge(ch, descOverloaded, b2f(d.Overloaded()), lv)
			if h != nil {
				collectBackendHealth(ch, h, lv)
			}
		}
	}
	return out
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, lv []string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *Collector) collectConntrack(ch chan<- prometheus.Metric) {
	if c.src.Conns == nil {
		return
	}
	st := c.src.Conns.Stats()
	ch <- prometheus.MustNewConstMetric(descConnEntries, prometheus.GaugeValue, float64(st.Live))
	ch <- prometheus.MustNewConstMetric(descConnLimit, prometheus.GaugeValue, float64(c.src.Conns.Capacity()))
	ch <- prometheus.MustNewConstMetric(descConnCreated, prometheus.CounterValue, float64(st.Inserts))
	ch <- prometheus.MustNewConstMetric(descConnExpired, prometheus.CounterValue, float64(st.Expired))
	ch <- prometheus.MustNewConstMetric(descConnRemoved, prometheus.CounterValue, float64(st.Removed))
	ch <- prometheus.MustNewConstMetric(descConnFullDrop, prometheus.CounterValue, float64(st.FullDrops))
	ch <- prometheus.MustNewConstMetric(descConnEvicted, prometheus.CounterValue, float64(st.Evicted))
	ch <- prometheus.MustNewConstMetric(descConnDropEnt, prometheus.CounterValue, float64(st.DropEntry))
	ch <- prometheus.MustNewConstMetric(descConnDropPkt, prometheus.CounterValue, float64(st.DropPacket))
}

func (c *Collector) collectWorkers(ch chan<- prometheus.Metric) {
	for i, w := range c.src.Workers {
		id := strconv.Itoa(i)
		if p := w.Pipeline; p != nil {
			for a := range p.Actions {
				ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue,
					float64(p.Actions[a].Load()), id, forwarder.Action(a).String())
			}
			for r := range p.Reasons {
				if forwarder.Reason(r) == forwarder.ReasonNone {
					continue
				}
				ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue,
					float64(p.Reasons[r].Load()), id, forwarder.Reason(r).String())
			}
		}
		for _, x := range []struct {
			reason string
			v      *atomic.Uint64
		}{{"oversize", w.Oversize}, {"tx_full", w.TXFull}, {"tx_error", w.TXError}, {"syn_budget", w.SYNBudget}} {
			if x.v != nil {
				ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(x.v.Load()), id, x.reason)
			}
		}
		if w.RX != nil {
			ch <- prometheus.MustNewConstMetric(descRX, prometheus.CounterValue, float64(w.RX.Load()), id)
		}
		if w.TX != nil {
			ch <- prometheus.MustNewConstMetric(descTX, prometheus.CounterValue, float64(w.TX.Load()), id)
		}
	}
	if c.src.RingDrops != nil {
		est, syn, udp := c.src.RingDrops()
		ch <- prometheus.MustNewConstMetric(descRingDrops, prometheus.CounterValue, float64(est), "established")
		ch <- prometheus.MustNewConstMetric(descRingDrops, prometheus.CounterValue, float64(syn), "syn")
		ch <- prometheus.MustNewConstMetric(descRingDrops, prometheus.CounterValue, float64(udp), "udp")
	}
}

// ipString formats an address as Go's net.IP.String does (node_exporter's
// label format): IPv4 dotted, IPv6 compressed, IPv4-mapped IPv6 dotted.
func ipString(a netip.Addr) string { return net.IP(a.AsSlice()).String() }
