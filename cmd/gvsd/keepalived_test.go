package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testConf = `global_defs {
    router_id lb1
}
virtual_server 203.0.113.10 80 {
    delay_loop 5
    lvs_sched wlc
    lvs_method NAT
    protocol TCP
    sorry_server 10.0.0.99 8080
    real_server 10.0.0.11 8080 {
        weight 3
        inhibit_on_failure
        TCP_CHECK {
            connect_timeout 2
            alpha
        }
    }
    real_server 10.0.0.12 8080 {
        weight 2
        TCP_CHECK {
            connect_timeout 2
        }
    }
}
`

func writeConf(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// --config-test prints keepalived's diagnostics and what gvsd would program
// at start, with keepalived's binary's exit codes, without any interface.
func TestConfigTest(t *testing.T) {
	conf := writeConf(t, "keepalived.conf", testConf)
	var out, errb bytes.Buffer
	if code := configTest(conf, "lb1", "", &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	// .11 has an alpha checker and inhibit_on_failure: weight 0 until its
	// first success; the quorum (1) is met by .12.
	want := "-A -t 203.0.113.10:80 -s wlc\n" +
		"-a -t 203.0.113.10:80 -r 10.0.0.11:8080 -m -w 0\n" +
		"-a -t 203.0.113.10:80 -r 10.0.0.12:8080 -m -w 2\n"
	if out.String() != want {
		t.Errorf("save lines:\n%s\nwant\n%s", out.String(), want)
	}

	// An unknown keyword: keepalived runs it after fixing up: 5.
	bad := writeConf(t, "bad.conf", strings.Replace(testConf, "    lvs_sched wlc\n", "    lvs_sched wlc\n    bogus_keyword 1\n", 1))
	out.Reset()
	errb.Reset()
	if code := configTest(bad, "lb1", "", &out, &errb); code != 5 || !strings.Contains(errb.String(), "Unknown keyword 'bogus_keyword'") {
		t.Errorf("unknown keyword: exit %d, stderr %q", code, errb.String())
	}
	// A missing parameter: keepalived stops at once: 2.
	miss := writeConf(t, "miss.conf", strings.Replace(testConf, "delay_loop 5", "delay_loop", 1))
	if code := configTest(miss, "lb1", "", &out, &errb); code != 2 {
		t.Errorf("missing parameter: exit %d", code)
	}
	// A missing file: cannot run: 4.
	if code := configTest(filepath.Join(t.TempDir(), "none.conf"), "lb1", "", &out, &errb); code != 4 {
		t.Errorf("missing file: exit %d", code)
	}
	// A service also in --rules: cannot run (4), one line.
	rules := writeConf(t, "rules", "-A -t 203.0.113.10:80 -s rr\n")
	errb.Reset()
	if code := configTest(conf, "lb1", rules, &out, &errb); code != 4 ||
		strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), "defined both in") {
		t.Errorf("conflict: exit %d, stderr %q", code, errb.String())
	}
	// Through the command line: no interface needed.
	if o, err := parseFlags([]string{"--keepalived-conf", conf, "--config-test"}, &errb); err != nil || !o.configTest {
		t.Errorf("flags: %v", err)
	}
	if _, err := parseFlags([]string{"--config-test"}, &errb); err == nil {
		t.Error("--config-test without --keepalived-conf accepted")
	}
}
