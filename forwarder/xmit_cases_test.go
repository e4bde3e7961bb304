package forwarder_test

import (
	"testing"

	"gvs/forwarder/replay"
)

// Semantic checks of the golden cases about transmission, ICMP errors,
// martians and the sysctls acted on there.
func init() {
	caseChecks["martians"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "reason", "martian_source martian_source martian_source martian_source martian_source "+
			"martian_source martian_source martian_source - - martian_mac -",
			func(v replay.Verdict) string { return orDash(v.Reason) })
		expectSeq(t, r, "action", "drop drop drop drop drop drop drop drop transmit transmit drop pass",
			func(v replay.Verdict) string { return v.Action })
	}
}
