package ipvsadm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"gvs/ipvs"
)

func TestParseRules(t *testing.T) {
	in := "# saved by ipvsadm-save\n\n" +
		"ipvsadm -A -t 10.0.0.1:80 -s rr   # trailing comment\r\n" +
		"   \t\n" +
		"-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 2\n" +
		"ipvsadm\n" +
		"--set 10 20 30\n"
	cmds, err := ParseRules(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 3 {
		t.Fatalf("%d commands, want 3", len(cmds))
	}
	if cmds[0].Kind != CmdAddService || cmds[0].Line != 3 || cmds[0].Service.Scheduler != "rr" {
		t.Errorf("line 3: %+v", cmds[0])
	}
	if cmds[1].Kind != CmdAddServer || cmds[1].Line != 5 || cmds[1].Dest.Weight != 2 {
		t.Errorf("line 5: %+v", cmds[1])
	}
	if cmds[2].Kind != CmdSet || cmds[2].Line != 7 || cmds[2].Timeouts != (ipvs.Timeouts{TCP: 10, TCPFin: 20, UDP: 30}) {
		t.Errorf("line 7: %+v", cmds[2])
	}
}

func TestParseRulesErrors(t *testing.T) {
	tests := []struct {
		in   string
		msg  string
		code int
	}{
		{"-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.1.1 -w x\n", "line 2: illegal weight specified", 2},
		{"\n\n-L -n\n", "line 3: the 'list' command is not allowed in a rules file", 2},
		{"-R\n", "line 1: the 'restore' command is not allowed in a rules file", 2},
		{"-S\n", "line 1: the 'save' command is not allowed in a rules file", 2},
		{"-A -t 10.0.0.1:80 --bogus\n", "line 1: --bogus: unknown option", 255},
		{"-n\n", "line 1: Try `ipvsadm -h' or 'ipvsadm --help' for more information.", 255},
		{strings.Repeat("x", maxRuleLine+10), "line 1: line too long", 2},
	}
	for _, tc := range tests {
		_, err := ParseRules(strings.NewReader(tc.in))
		var e *Error
		if !errors.As(err, &e) || e.Msg != tc.msg || e.Code != tc.code {
			t.Errorf("ParseRules(%.40q) = %v, want %q (exit %d)", tc.in, err, tc.msg, tc.code)
		}
	}
}

// roundTrip applies rules to a new table and saves them.
func roundTrip(t testing.TB, rules string, numeric bool) (string, error) {
	cmds, err := ParseRules(strings.NewReader(rules))
	if err != nil {
		return "", err
	}
	tab := ipvs.NewTable(newFakeSched)
	if err := ApplyAll(tab, cmds); err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := WriteSave(&b, tab.Services(), numeric); err != nil {
		t.Fatal(err)
	}
	return b.String(), nil
}

func TestSaveRoundTrip(t *testing.T) {
	rules := docRules +
		"-A -t [2001:db8::1]:https -s mh -p 60 -M 64 -b mh-fallback\n" +
		"-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 -m -w 3\n" +
		"-A -f 5 -6 -s rr -p\n" +
		"-A -t 10.9.0.1:0 -p 100 -M 255.255.0.0\n" +
		"-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 6080 --tun-remcsum\n" +
		"-a -t 10.0.0.1:80 -r 10.0.1.2 -i --tun-type gre --tun-csum\n" +
		"-a -t 10.0.0.1:80 -r [2001:db8::7]:80 -i\n" +
		"-A --sctp-service 10.0.0.3:amqp -s fo\n" +
		"-A -u 192.168.0.1:domain -s dh -o\n-A -u 10.0.0.1:53 -s lc\n"
	for _, numeric := range []bool{true, false} {
		first, err := roundTrip(t, rules, numeric)
		if err != nil {
			t.Fatal(err)
		}
		second, err := roundTrip(t, first, numeric)
		if err != nil {
			t.Fatalf("re-applying saved rules: %v\n%s", err, first)
		}
		if first != second {
			t.Errorf("numeric=%v: save -> restore -> save differs\nfirst:\n%s\nsecond:\n%s", numeric, first, second)
		}
	}
}
