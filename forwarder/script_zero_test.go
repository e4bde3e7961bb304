package forwarder_test

import (
	"strings"
	"testing"
)

func init() {
	caseChecks["script-zero"] = checkScriptZero
}

// checkScriptZero checks the script-zero case: -Z moves the counters'
// baseline and zeroes the rate averages but not the estimator's last
// sample; a service deleted and created again lists zero counts for
// itself and for the real server it takes back from the trash; a real
// server deleted and added back to a living service keeps its counts.
func checkScriptZero(t *testing.T, r goldenRun) {
	want := []string{
		"3 -Ln --stats", "3 -Ln --rate", "3 -Z", "3 -Ln --stats", "3 -Ln --rate", "3 -Lnc",
		"4 -Ln --stats", "4 -Ln --rate",
		"5 -D -t 198.51.100.10:80", "5 -A -t 198.51.100.10:80 -s rr", "5 -a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m",
		"5 -Ln --stats", "5 -Ln --rate", "6 -Ln --stats --exact", "6 -Ln --rate",
		"6.5 -d -t 198.51.100.10:80 -r 198.18.2.11:8080", "6.5 -a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m",
		"6.5 -Ln --stats --exact",
	}
	if len(r.script) != len(want) {
		t.Fatalf("%d commands in script.out, want %d: %q", len(r.script), len(want), r.script)
	}
	for i, w := range want {
		if r.script[i].cmd != w {
			t.Errorf("command %d: %q, want %q", i, r.script[i].cmd, w)
		}
	}
	// rows checks a listing's service and real server lines.
	rows := func(i int, svc, rs string) {
		t.Helper()
		out := r.script[i].out
		if !strings.Contains(out, "TCP  198.51.100.10:80               "+svc+"\n") ||
			!strings.Contains(out, "  -> 198.18.2.11:8080               "+rs+"\n") {
			t.Errorf("output of %q:\n%s\nwant the service at %q and the real server at %q", r.script[i].cmd, out, svc, rs)
		}
	}
	zero := "     0        0        0        0        0"
	// Before -Z: the SYN, ACK and request at 0 s (138 bytes in, SYN-ACK
	// and 600-byte reply out: 680), and one exchange at 2.5 s (49 in,
	// 1040 out). The rates are the sample at 2 s: a quarter of 138 and 680
	// bytes over 2 s.
	rows(0, "     1        4        3      187     1720", "     1        4        3      187     1720")
	rows(1, "     0        0        0       17       85", "     0        0        0       17       85")
	if r.script[2].out != "" {
		t.Errorf("-Z printed %q", r.script[2].out)
	}
	// -Z: counts and rates read zero at once; the connection stays.
	rows(3, zero, zero)
	rows(4, zero, zero)
	if !strings.Contains(r.script[5].out, "ESTABLISHED 198.18.1.11:40901") {
		t.Errorf("-Lnc after -Z:\n%s", r.script[5].out)
	}
	// At 4 s: only the exchange at 3.5 s is counted (48 in, 240 out),
	// but the sample at 4 s covers 2..4 s, the exchange before the -Z
	// included: (49+48)<<4>>2 = 388 -> 12 B/s in, (1040+240) -> 160 B/s
	// out. (A -Z that reset the estimator's last sample would give 6 and
	// 30.)
	rows(6, "     0        1        1       48      240", "     0        1        1       48      240")
	rows(7, "     0        0        0       12      160", "     0        0        0       12      160")
	// -D, -A, -a: the new service and the real server it takes back from
	// the trash list zero counts and rates.
	rows(11, zero, zero)
	rows(12, zero, zero)
	// At 6 s: only the exchange at 5.5 s (51 in, 440 out). The service's
	// new estimator samples 5..6 s (6 and 55 B/s); the real server's
	// averages were zeroed but its last sample is from 4 s, so it covers
	// the exchange at 4.5 s too: (49+51) -> 12, (340+440) -> 97.
	rows(13, "     0        1        1       51      440", "     0        1        1       51      440")
	rows(14, "     0        0        0        6       55", "     0        0        0       12       97")
	// -d and -a to the living service: the real server keeps its counts.
	rows(17, "     0        1        1       51      440", "     0        1        1       51      440")
}
