package metrics

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"gvs/conntrack"
	"gvs/forwarder"
)

// fullSource is a Source with every part: the fixture table with traffic,
// conntrack, two workers, reloads, a health engine and node_ipvs_*.
func fullSource(t testing.TB) Source {
	tab := newTable(t, fixtureRules)
	loadFixture(t, tab)
	var p forwarder.Counters
	p.Actions[forwarder.Transmit].Add(10)
	p.Reasons[forwarder.NoRoute].Add(1)
	var rx, tx, over, full, txErr atomic.Uint64
	rx.Store(11)
	tx.Store(10)
	return Source{
		Table:     tab,
		Conns:     &fakeConns{conntrack.Stats{Live: 3, Inserts: 4, Expired: 1}},
		Workers:   []Worker{{Pipeline: &p, RX: &rx, TX: &tx, Oversize: &over, TXFull: &full, TXError: &txErr}, {Pipeline: new(forwarder.Counters)}},
		RingDrops: func() (uint64, uint64, uint64) { return 0, 0, 0 },
		Reloads:   NewReloads(time.Unix(1700000000, 0)),
		Health:    fakeHealth(fixtureHealth()),
		NodeIPVS:  true,
	}
}

// scrape serves the collector as gvsd does and returns the /metrics body
// in the Prometheus text format.
func scrape(t testing.TB, src Source) []byte {
	t.Helper()
	srv := httptest.NewServer(Handler(NewRegistry(NewCollector(src))))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	return body
}

// promtool is the real promtool (Debian package prometheus, installed by
// make deps). Under CI a missing promtool fails the test.
func promtool(t *testing.T) string {
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not installed (make deps installs the Debian package prometheus)")
		}
		t.Skip("promtool not installed; make deps installs it")
	}
	return p
}

// The whole exposition, gvs_*, node_ipvs_*, health, go_* and process_*,
// passes promtool check metrics (format and Prometheus's naming lint).
func TestPromtoolCheckMetrics(t *testing.T) {
	bin := promtool(t)
	body := scrape(t, fullSource(t))
	for _, fam := range []string{"gvs_backend_connections_active", "gvs_healthcheck_duration_seconds_bucket",
		"node_ipvs_backend_weight", "gvs_dataplane_drops_total", "gvs_build_info", "go_goroutines"} {
		if !bytes.Contains(body, []byte("\n"+fam)) {
			t.Errorf("exposition lacks %s", fam)
		}
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// The check above can fail: promtool rejects a counter without _total.
func TestPromtoolRejectsBadNames(t *testing.T) {
	bin := promtool(t)
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader("# HELP gvs_bad_connections Bad.\n# TYPE gvs_bad_connections counter\ngvs_bad_connections 1\n")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("promtool accepted a counter without _total: %s", out)
	}
}

// client_golang's own lint (promlint, the rules promtool applies) over the
// collector, without the external tool.
func TestPromlint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(fullSource(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
