package metrics

import (
	"errors"
	"maps"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/scheduler"
)

// fixtureRules is a table with an IPv4 NAT service (one real server with
// thresholds), an IPv6 DR service, and IPv4 and IPv6 fwmark services with
// the same mark (0x10001000, node_exporter's fixture mark).
const fixtureRules = `
-A -t 192.0.2.10:80 -s wlc
-a -t 192.0.2.10:80 -r 198.18.0.11:8080 -m -w 3
-a -t 192.0.2.10:80 -r 198.18.0.12:8080 -m -w 2 -x 100 -y 50
-A -u [2001:db8::1]:53 -s rr
-a -u [2001:db8::1]:53 -r [2001:db8::11]:53 -g -w 1
-A -f 268439552 -s rr -p 300
-a -f 268439552 -r 198.18.0.21:0 -g -w 5
-A -f 268439552 -6 -s rr
-a -f 268439552 -6 -r [2001:db8::21]:0 -g -w 7
`

func newTable(t testing.TB, rules string) *ipvs.Table {
	t.Helper()
	cmds, err := ipvsadm.ParseRules(strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	tab := ipvs.NewTable(scheduler.New)
	if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
		t.Fatal(err)
	}
	return tab
}

func svcOf(t testing.TB, tab *ipvs.Table, sel string) *ipvs.Service {
	t.Helper()
	c, err := ipvsadm.ParseArgs(append([]string{"-D"}, strings.Fields(sel)...))
	if err != nil {
		t.Fatal(err)
	}
	s := tab.Service(c.Service.ServiceKey)
	if s == nil {
		t.Fatalf("no service %s", sel)
	}
	return s
}

func destOf(t testing.TB, s *ipvs.Service, ap string) *ipvs.Dest {
	t.Helper()
	want := netip.MustParseAddrPort(ap)
	for _, d := range s.Dests() {
		if d.AddrPort() == want {
			return d
		}
	}
	t.Fatalf("no real server %s", ap)
	return nil
}

// loadFixture puts traffic into the fixture table: counters in two worker
// slots (the sums are what must show) and connection counts.
func loadFixture(t testing.TB, tab *ipvs.Table) {
	web := svcOf(t, tab, "-t 192.0.2.10:80")
	d11 := destOf(t, web, "198.18.0.11:8080")
	d12 := destOf(t, web, "198.18.0.12:8080")
	add := func(c *ipvs.Counters, w int, conns, inP, outP, inB, outB uint64) {
		c[w].Conns.Add(conns)
		c[w].InPkts.Add(inP)
		c[w].OutPkts.Add(outP)
		c[w].InBytes.Add(inB)
		c[w].OutBytes.Add(outB)
	}
	add(&d11.Stats, 0, 10, 100, 90, 10000, 90000)
	add(&d11.Stats, 3, 5, 50, 40, 5000, 40000)
	add(&d12.Stats, 1, 2, 20, 10, 2000, 10000)
	add(&web.Stats, 0, 10, 100, 90, 10000, 90000)
	add(&web.Stats, 1, 2, 20, 10, 2000, 10000)
	add(&web.Stats, 3, 5, 50, 40, 5000, 40000)
	d11.ActiveConns.Store(4)
	d11.InactConns.Store(2)
	d12.ActiveConns.Store(1)
	d12.PersistConns.Store(0)

	dns := svcOf(t, tab, "-u [2001:db8::1]:53")
	d := destOf(t, dns, "[2001:db8::11]:53")
	add(&d.Stats, 0, 7, 7, 7, 700, 1400)
	add(&dns.Stats, 0, 7, 7, 7, 700, 1400)
	d.InactConns.Store(7)

	fw := svcOf(t, tab, "-f 268439552")
	d = destOf(t, fw, "198.18.0.21:0")
	add(&d.Stats, 2, 1, 3, 0, 180, 0)
	add(&fw.Stats, 2, 1, 3, 0, 180, 0)
	d.ActiveConns.Store(1)
	d.PersistConns.Store(1)
}

func TestServiceAndBackendMetrics(t *testing.T) {
	tab := newTable(t, fixtureRules)
	loadFixture(t, tab)
	// Overload 198.18.0.12 (-x 100): bind connections up to the threshold.
	d12 := destOf(t, svcOf(t, tab, "-t 192.0.2.10:80"), "198.18.0.12:8080")
	for range 99 {
		d12.Bind(false)
	}
	if !d12.Overloaded() {
		t.Fatal("fixture: 198.18.0.12 should be overloaded")
	}
	c := NewCollector(Source{Table: tab})

	const want = `
# HELP gvs_service_connections_total Connections scheduled to the virtual service.
# TYPE gvs_service_connections_total counter
gvs_service_connections_total{family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 17
gvs_service_connections_total{family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 7
gvs_service_connections_total{family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 1
gvs_service_connections_total{family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 0
# HELP gvs_service_outgoing_bytes_total Bytes of the reply packets from the virtual service forwarded to clients.
# TYPE gvs_service_outgoing_bytes_total counter
gvs_service_outgoing_bytes_total{family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 140000
gvs_service_outgoing_bytes_total{family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 1400
gvs_service_outgoing_bytes_total{family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 0
gvs_service_outgoing_bytes_total{family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 0
# HELP gvs_service_backends Real servers configured in the virtual service.
# TYPE gvs_service_backends gauge
gvs_service_backends{family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 2
gvs_service_backends{family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 1
gvs_service_backends{family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 1
gvs_service_backends{family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 1
# HELP gvs_backend_incoming_packets_total Packets from clients forwarded to the real server.
# TYPE gvs_backend_incoming_packets_total counter
gvs_backend_incoming_packets_total{backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 150
gvs_backend_incoming_packets_total{backend_address="198.18.0.12",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 20
gvs_backend_incoming_packets_total{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 7
gvs_backend_incoming_packets_total{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 3
gvs_backend_incoming_packets_total{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 0
# HELP gvs_backend_connections_active Active connections to the real server (ipvsadm ActiveConn).
# TYPE gvs_backend_connections_active gauge
gvs_backend_connections_active{backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 4
gvs_backend_connections_active{backend_address="198.18.0.12",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 1
gvs_backend_connections_active{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 0
gvs_backend_connections_active{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 1
gvs_backend_connections_active{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 0
# HELP gvs_backend_connections_inactive Inactive connections to the real server (ipvsadm InActConn).
# TYPE gvs_backend_connections_inactive gauge
gvs_backend_connections_inactive{backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 2
gvs_backend_connections_inactive{backend_address="198.18.0.12",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 99
gvs_backend_connections_inactive{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 7
gvs_backend_connections_inactive{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 0
gvs_backend_connections_inactive{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 0
# HELP gvs_backend_persistent_connections Persistence templates pointing at the real server (ipvsadm PersistConn).
# TYPE gvs_backend_persistent_connections gauge
gvs_backend_persistent_connections{backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 0
gvs_backend_persistent_connections{backend_address="198.18.0.12",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 0
gvs_backend_persistent_connections{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 0
gvs_backend_persistent_connections{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 1
gvs_backend_persistent_connections{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 0
# HELP gvs_backend_weight Effective weight of the real server: the weight the scheduler uses (0: quiesced).
# TYPE gvs_backend_weight gauge
gvs_backend_weight{backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 3
gvs_backend_weight{backend_address="198.18.0.12",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 2
gvs_backend_weight{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 1
gvs_backend_weight{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 5
gvs_backend_weight{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 7
# HELP gvs_backend_overloaded 1 while the real server is over its upper connection threshold (IPVS OVERLOAD).
# TYPE gvs_backend_overloaded gauge
gvs_backend_overloaded{backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 0
gvs_backend_overloaded{backend_address="198.18.0.12",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 1
gvs_backend_overloaded{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 0
gvs_backend_overloaded{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 0
gvs_backend_overloaded{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"gvs_service_connections_total", "gvs_service_outgoing_bytes_total", "gvs_service_backends",
		"gvs_backend_incoming_packets_total", "gvs_backend_connections_active",
		"gvs_backend_connections_inactive", "gvs_backend_persistent_connections",
		"gvs_backend_weight", "gvs_backend_overloaded"); err != nil {
		t.Error(err)
	}
	// Without a health engine the configured weight is the model's.
	w, cw := gatherValues(t, c, "gvs_backend_weight"), gatherValues(t, c, "gvs_backend_configured_weight")
	if len(cw) != 5 || !maps.Equal(w, cw) {
		t.Errorf("gvs_backend_configured_weight %v, want the weights %v", cw, w)
	}
	// No metric outside Source's parts: no conntrack, worker, reload or
	// node_ipvs families.
	for _, name := range []string{"gvs_conntrack_entries", "gvs_dataplane_packets_total",
		"gvs_config_reloads_total", "node_ipvs_connections_total", "gvs_backend_up"} {
		if n := testutil.CollectAndCount(c, name); n != 0 {
			t.Errorf("%s: %d series without its source", name, n)
		}
	}
}

// A re-read of the model after a change: an edited weight, a deleted real
// server, a new service.
func TestScrapeFollowsTableChanges(t *testing.T) {
	tab := newTable(t, fixtureRules)
	c := NewCollector(Source{Table: tab})
	cmds, err := ipvsadm.ParseRules(strings.NewReader(`
-e -t 192.0.2.10:80 -r 198.18.0.11:8080 -m -w 0
-d -t 192.0.2.10:80 -r 198.18.0.12:8080
-A -t 192.0.2.20:443 -s rr
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP gvs_backend_weight Effective weight of the real server: the weight the scheduler uses (0: quiesced).
# TYPE gvs_backend_weight gauge
gvs_backend_weight{backend_address="198.18.0.11",backend_port="8080",family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 0
gvs_backend_weight{backend_address="2001:db8::11",backend_port="53",family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 1
gvs_backend_weight{backend_address="198.18.0.21",backend_port="0",family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 5
gvs_backend_weight{backend_address="2001:db8::21",backend_port="0",family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 7
# HELP gvs_service_backends Real servers configured in the virtual service.
# TYPE gvs_service_backends gauge
gvs_service_backends{family="ipv4",fwmark="",port="80",proto="TCP",vip="192.0.2.10"} 1
gvs_service_backends{family="ipv4",fwmark="",port="443",proto="TCP",vip="192.0.2.20"} 0
gvs_service_backends{family="ipv6",fwmark="",port="53",proto="UDP",vip="2001:db8::1"} 1
gvs_service_backends{family="ipv4",fwmark="268439552",port="",proto="FWM",vip=""} 1
gvs_service_backends{family="ipv6",fwmark="268439552",port="",proto="FWM",vip=""} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "gvs_backend_weight", "gvs_service_backends"); err != nil {
		t.Error(err)
	}
}

type fakeConns struct{ st conntrack.Stats }

func (f *fakeConns) Stats() conntrack.Stats { return f.st }
func (f *fakeConns) Capacity() int          { return 4096 }

func TestConntrackWorkersReloadsBuild(t *testing.T) {
	tab := newTable(t, "")
	var p0, p1 forwarder.Counters
	p0.Actions[forwarder.Transmit].Add(1000)
	p0.Actions[forwarder.Drop].Add(7)
	p0.Reasons[forwarder.NoRoute].Add(5)
	p0.Reasons[forwarder.TableFull].Add(2)
	p1.Actions[forwarder.Pass].Add(3)
	p1.Actions[forwarder.Reply].Add(1)
	p1.Reasons[forwarder.TTLExceeded].Add(1)
	var rx0, tx0, over0, full0, err0 atomic.Uint64
	rx0.Store(1010)
	tx0.Store(998)
	over0.Store(1)
	full0.Store(2)
	rel := NewReloads(time.Unix(1700000000, 500000000))
	rel.Observe(errors.New("bad rules"), time.Unix(1700000100, 0))
	rel.Observe(nil, time.Unix(1700000200, 250000000))
	rel.Observe(nil, time.Unix(1700000300, 0))
	rel.Observe(errors.New("bad rules"), time.Unix(1700000400, 0))
	c := NewCollector(Source{
		Table: tab,
		Conns: &fakeConns{conntrack.Stats{Live: 42, Inserts: 100, Expired: 50, Removed: 8, FullDrops: 2, Evicted: 9, DropEntry: 4, DropPacket: 3}},
		Workers: []Worker{
			{Pipeline: &p0, RX: &rx0, TX: &tx0, Oversize: &over0, TXFull: &full0, TXError: &err0},
			{Pipeline: &p1},
		},
		RingDrops: func() (uint64, uint64, uint64) { return 12, 3, 5 },
		Reloads:   rel,
	})
	const want = `
# HELP gvs_conntrack_entries Live entries in the connection table, persistence templates included.
# TYPE gvs_conntrack_entries gauge
gvs_conntrack_entries 42
# HELP gvs_conntrack_entries_limit Capacity of the connection table.
# TYPE gvs_conntrack_entries_limit gauge
gvs_conntrack_entries_limit 4096
# HELP gvs_conntrack_created_total Entries created in the connection table.
# TYPE gvs_conntrack_created_total counter
gvs_conntrack_created_total 100
# HELP gvs_conntrack_expired_total Entries removed because their timeout ran out.
# TYPE gvs_conntrack_expired_total counter
gvs_conntrack_expired_total 50
# HELP gvs_conntrack_removed_total Entries removed before their timeout (real server or service deleted, flush).
# TYPE gvs_conntrack_removed_total counter
gvs_conntrack_removed_total 8
# HELP gvs_conntrack_insert_failures_total Entries not created because the connection table was full.
# TYPE gvs_conntrack_insert_failures_total counter
gvs_conntrack_insert_failures_total 2
# HELP gvs_conntrack_evictions_total Half-open connections evicted to make room in a full connection table.
# TYPE gvs_conntrack_evictions_total counter
gvs_conntrack_evictions_total 9
# HELP gvs_conntrack_drop_entry_total Entries dropped by the drop_entry defense's periodic scan.
# TYPE gvs_conntrack_drop_entry_total counter
gvs_conntrack_drop_entry_total 4
# HELP gvs_conntrack_drop_packet_total New connections dropped by the drop_packet defense.
# TYPE gvs_conntrack_drop_packet_total counter
gvs_conntrack_drop_packet_total 3
# HELP gvs_dataplane_packets_total Frames handled by the data path, by verdict (transmit, drop, reply, pass, control).
# TYPE gvs_dataplane_packets_total counter
gvs_dataplane_packets_total{action="control",worker="0"} 0
gvs_dataplane_packets_total{action="drop",worker="0"} 7
gvs_dataplane_packets_total{action="pass",worker="0"} 0
gvs_dataplane_packets_total{action="reply",worker="0"} 0
gvs_dataplane_packets_total{action="transmit",worker="0"} 1000
gvs_dataplane_packets_total{action="control",worker="1"} 0
gvs_dataplane_packets_total{action="drop",worker="1"} 0
gvs_dataplane_packets_total{action="pass",worker="1"} 3
gvs_dataplane_packets_total{action="reply",worker="1"} 1
gvs_dataplane_packets_total{action="transmit",worker="1"} 0
# HELP gvs_dataplane_rx_packets_total Frames taken from the RX rings.
# TYPE gvs_dataplane_rx_packets_total counter
gvs_dataplane_rx_packets_total{worker="0"} 1010
# HELP gvs_dataplane_tx_packets_total Frames committed to the TX rings.
# TYPE gvs_dataplane_tx_packets_total counter
gvs_dataplane_tx_packets_total{worker="0"} 998
# HELP gvs_dataplane_ring_drops_total Frames the kernel dropped because an RX ring was full, by ring: established traffic, connection openings (syn), or UDP to the VIPs (udp).
# TYPE gvs_dataplane_ring_drops_total counter
gvs_dataplane_ring_drops_total{ring="established"} 12
gvs_dataplane_ring_drops_total{ring="syn"} 3
gvs_dataplane_ring_drops_total{ring="udp"} 5
# HELP gvs_config_reloads_total Configuration reloads (SIGHUP), by result.
# TYPE gvs_config_reloads_total counter
gvs_config_reloads_total{result="failure"} 2
gvs_config_reloads_total{result="success"} 2
# HELP gvs_config_last_reload_success_timestamp_seconds Time of the last successful configuration load (start or reload), in seconds since the Unix epoch.
# TYPE gvs_config_last_reload_success_timestamp_seconds gauge
gvs_config_last_reload_success_timestamp_seconds 1.7000003e+09
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"gvs_conntrack_entries", "gvs_conntrack_entries_limit", "gvs_conntrack_created_total",
		"gvs_conntrack_expired_total", "gvs_conntrack_removed_total", "gvs_conntrack_insert_failures_total",
		"gvs_conntrack_evictions_total", "gvs_conntrack_drop_entry_total", "gvs_conntrack_drop_packet_total",
		"gvs_dataplane_packets_total", "gvs_dataplane_rx_packets_total", "gvs_dataplane_tx_packets_total",
		"gvs_dataplane_ring_drops_total", "gvs_config_reloads_total",
		"gvs_config_last_reload_success_timestamp_seconds"); err != nil {
		t.Error(err)
	}

	// Drops: every reason of every worker is a series (zeros included, so
	// that rate() sees the first drop); the loop's own reasons only where
	// the worker has them.
	drops := gatherValues(t, c, "gvs_dataplane_drops_total")
	for k, v := range map[string]float64{
		`reason="no_route",worker="0"`:        5,
		`reason="table_full",worker="0"`:      2,
		`reason="oversize",worker="0"`:        1,
		`reason="tx_full",worker="0"`:         2,
		`reason="tx_error",worker="0"`:        0,
		`reason="bad_ip_checksum",worker="0"`: 0,
		`reason="ttl_exceeded",worker="1"`:    1,
		`reason="no_dest",worker="1"`:         0,
	} {
		got, ok := drops[k]
		if !ok || got != v {
			t.Errorf("gvs_dataplane_drops_total{%s} = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if _, ok := drops[`reason="oversize",worker="1"`]; ok {
		t.Error("worker 1 has no loop counters, but an oversize series")
	}
	if _, ok := drops[`reason="",worker="0"`]; ok {
		t.Error("a drop series for ReasonNone")
	}
	if n := int(forwarder.NumReasons) - 1 + 3 + int(forwarder.NumReasons) - 1; len(drops) != n {
		t.Errorf("%d drop series, want %d", len(drops), n)
	}

	build := gatherValues(t, c, "gvs_build_info")
	if len(build) != 1 {
		t.Fatalf("gvs_build_info: %v", build)
	}
	for k, v := range build {
		if v != 1 || !strings.Contains(k, `goversion="`+runtime.Version()+`"`) || !strings.Contains(k, `version="`) {
			t.Errorf("gvs_build_info{%s} %v", k, v)
		}
	}
}
