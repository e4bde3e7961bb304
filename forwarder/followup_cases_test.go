package forwarder_test

import (
	"strings"
	"testing"

	"gvs/forwarder/replay"
)

// Semantic checks of the golden cases of the IPVS conformance follow-ups:
// drop_packet's place, schedule_icmp, unreachable real servers.
func init() {
	caseChecks["drop-packet"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "reason", "drop_packet drop_packet -", func(v replay.Verdict) string { return orDash(v.Reason) })
		expectSeq(t, r, "dest", "- - 198.18.2.12:8080", func(v replay.Verdict) string { return orDash(v.Dest) })
		if len(r.script) != 5 {
			t.Fatalf("%d script steps, want 5", len(r.script))
		}
		// The dropped SYNs made no persistence template (and no connection).
		if strings.Contains(r.script[2].out, "TCP") {
			t.Errorf("entries after the dropped SYNs:\n%s", r.script[2].out)
		}
		// rr's first pick for the first scheduled SYN: the drops did not
		// move the scheduler.
		if !strings.Contains(r.script[4].out, "NONE        198.18.1.12:0      198.51.100.10:80   198.18.2.12:8080") {
			t.Errorf("no template to rr's first pick:\n%s", r.script[4].out)
		}
	}
}
