package forwarder_test

import (
	"strings"
	"testing"
)

func init() { caseChecks["persist-templates"] = checkPersistTemplates }

// checkPersistTemplates checks the template states and lifetimes of the
// persist-templates case against what the kernel's /proc/net/ip_vs_conn
// shows (ip_vs_conn.c, ip_vs_proto_tcp.c, ip_vs_core.c).
func checkPersistTemplates(t *testing.T, r goldenRun) {
	at := func(cmd string) string {
		t.Helper()
		for _, st := range r.script {
			if st.cmd == cmd {
				return st.out
			}
		}
		t.Fatalf("no %q in script.out", cmd)
		return ""
	}
	has := func(cmd, line string) {
		t.Helper()
		if out := at(cmd); !strings.Contains(out, line+"\n") {
			t.Errorf("output of %q lacks %q:\n%s", cmd, line, out)
		}
	}
	empty := "IPVS connection entries\npro expire state       source             virtual            destination\n"
	t1 := func(exp, state string) string {
		return "TCP " + exp + "  " + state + strings.Repeat(" ", 12-len(state)) + "198.18.1.11:0      198.51.100.10:80   198.18.2.12:8080"
	}
	// NONE after the SYN, ASSURED once the connection is ESTABLISHED.
	has("0.7 -Lnc", t1("01:59", "NONE"))
	has("1.5 -Lnc", t1("01:58", "ASSURED"))
	has("100 -Lnc", t1("00:20", "ASSURED"))
	// Its 120 s ran out at 120 s while it controlled a connection: 60 s
	// more. A new connection at 150 s re-arms it to 60 s, not to 120 s.
	has("121 -Lnc", t1("00:59", "ASSURED"))
	has("150.5 -Lnc", t1("00:59", "ASSURED"))
	// Its connections ended at 170 s; it lives to its deadline, 210 s.
	if got := at("175 -Lnc"); got != empty+t1("00:35", "ASSURED")+"\n" {
		t.Errorf("-Lnc at 175 s:\n%s", got)
	}
	if got := at("211 -Lnc"); got != empty {
		t.Errorf("-Lnc at 211 s:\n%s", got)
	}
	// rs1 deleted at 231 s: client2's template is invalidated at its next
	// SYN (ports 65535, still ASSURED, its timer untouched) and a new one
	// made on rs2 next to it.
	inval := func(exp string) string {
		return "TCP " + exp + "  ASSURED     198.18.1.12:0      198.51.100.10:65535 198.18.2.11:65535"
	}
	has("230.5 -Lnc", "TCP 01:49  ASSURED     198.18.1.12:0      198.51.100.10:80   198.18.2.11:8080")
	has("232.5 -Lnc", inval("01:47"))
	has("232.5 -Lnc", "TCP 01:59  NONE        198.18.1.12:0      198.51.100.10:80   198.18.2.12:8080")
	// The invalidated template still controls the ESTABLISHED connection
	// on rs1 (to 1130 s): 60 s steps from 340 s, the last one at 1120 s.
	has("341 -Lnc", inval("00:59"))
	if strings.Contains(at("353 -Lnc"), "NONE") {
		t.Errorf("the new template outlived its 120 s:\n%s", at("353 -Lnc"))
	}
	has("1121 -Lnc", inval("00:59"))
	if got := at("1131 -Lnc"); got != empty+inval("00:49")+"\n" {
		t.Errorf("-Lnc at 1131 s:\n%s", got)
	}
	if got := at("1181 -Lnc"); got != empty {
		t.Errorf("-Lnc at 1181 s:\n%s", got)
	}
}
