package control

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvs/conntrack"
	"gvs/ipvs"
)

// TestListConnsTemplateStates: -Lnc shows a template's state as the
// kernel's /proc/net/ip_vs_conn does: ASSURED once a connection under it is
// ESTABLISHED, and an invalidated template (its dest deleted) with vport
// and dport 65535 until its timer runs out, next to the client's new one.
func TestListConnsTemplateStates(t *testing.T) {
	te := newTestEngine(t)
	te.mustRun(t, "-A", "-t", "198.51.100.10:80", "-s", "rr", "-p", "300")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11:8080", "-m")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.12:8080", "-m")
	dests := te.Table.Service(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80}).Dests()
	var d1, d2 *ipvs.Dest
	for _, d := range dests {
		if d.Addr == netip.MustParseAddr("198.18.2.11") {
			d1 = d
		} else {
			d2 = d
		}
	}
	ap := netip.MustParseAddrPort
	tk := conntrack.NewTemplateKey(ipvs.ProtoTCP, netip.MustParseAddr("10.0.0.2"), 32, netip.MustParseAddr("198.51.100.10"), 80)
	now := te.clock
	ref, err := te.Conns.CreateTemplate(tk, d1, 300*time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	k := conntrack.NewInKey(ipvs.ProtoTCP, ap("10.0.0.2:41234"), ap("198.51.100.10:80"))
	var c conntrack.Conn
	if err := te.Conns.Create(k, d1, 8080, ref, conntrack.TCPSyn, now, &c); err != nil {
		t.Fatal(err)
	}
	te.clock += int64(time.Second)
	if got := te.mustRun(t, "-Lnc"); !strings.Contains(got, "TCP 04:59  NONE        10.0.0.2:0         198.51.100.10:80   198.18.2.11:8080\n") {
		t.Errorf("-Lnc after SYN:\n%s", got)
	}
	te.Conns.In(k, conntrack.TCPAck, te.clock, &c) // ESTABLISHED
	if got := te.mustRun(t, "-Lnc"); !strings.Contains(got, "TCP 04:59  ASSURED     10.0.0.2:0         198.51.100.10:80   198.18.2.11:8080\n") {
		t.Errorf("-Lnc after ESTABLISHED:\n%s", got)
	}
	// d1 goes away: the next lookup invalidates the template.
	d1.SetUnavailable()
	te.clock += int64(9 * time.Second)
	if _, _, ok := te.Conns.Template(tk, te.clock); ok {
		t.Fatal("template of an unavailable dest accepted")
	}
	if _, err := te.Conns.CreateTemplate(tk, d2, 300*time.Second, te.clock); err != nil {
		t.Fatal(err)
	}
	te.clock += int64(time.Second)
	got := te.mustRun(t, "-Lnc")
	for _, line := range []string{
		"TCP 04:49  ASSURED     10.0.0.2:0         198.51.100.10:65535 198.18.2.11:65535\n",
		"TCP 04:59  NONE        10.0.0.2:0         198.51.100.10:80   198.18.2.12:8080\n",
	} {
		if !strings.Contains(got, line) {
			t.Errorf("-Lnc after invalidation: no %q in\n%s", line, got)
		}
	}
}
