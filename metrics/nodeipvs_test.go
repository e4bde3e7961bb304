package metrics

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

var nodeFamilies = []string{
	"node_ipvs_connections_total", "node_ipvs_incoming_packets_total", "node_ipvs_outgoing_packets_total",
	"node_ipvs_incoming_bytes_total", "node_ipvs_outgoing_bytes_total",
	"node_ipvs_backend_connections_active", "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight",
}

// The node_ipvs_* families match, name for name, help text for help text,
// label for label, what node_exporter would expose for the same IPVS table
// (testdata/node_ipvs.prom, written from node_exporter's code).
func TestNodeIPVSGolden(t *testing.T) {
	tab := newTable(t, fixtureRules+`
-A -f 1 -s rr
-a -f 1 -r 198.18.0.31 -g -w 1
`)
	loadFixture(t, tab)
	want, err := os.Open("testdata/node_ipvs.prom")
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	c := NewCollector(Source{Table: tab, NodeIPVS: true})
	if err := testutil.CollectAndCompare(c, want, nodeFamilies...); err != nil {
		t.Error(err)
	}
}

// Without the option there is no node_ipvs_* family; with an empty table
// the totals are there (as node_exporter's while the kernel has IPVS) and
// no backend series.
func TestNodeIPVSOptIn(t *testing.T) {
	tab := newTable(t, fixtureRules)
	if n := testutil.CollectAndCount(NewCollector(Source{Table: tab}), nodeFamilies...); n != 0 {
		t.Errorf("%d node_ipvs_* series without NodeIPVS", n)
	}
	c := NewCollector(Source{Table: newTable(t, ""), NodeIPVS: true})
	const want = `
# HELP node_ipvs_connections_total The total number of connections made.
# TYPE node_ipvs_connections_total counter
node_ipvs_connections_total 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "node_ipvs_connections_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "node_ipvs_backend_weight"); n != 0 {
		t.Errorf("%d backend series for an empty table", n)
	}
}
