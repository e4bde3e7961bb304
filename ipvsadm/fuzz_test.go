package ipvsadm

import (
	"errors"
	"strings"
	"testing"

	"gvs/ipvs"
)

// FuzzParseArgs: ParseArgs never panics, fails only with *Error carrying an
// ipvsadm exit status, and whatever parses can be applied without panic.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"-Lnc",
		"-A -t 10.0.0.1:80 -s rr -p",
		"-A -u [2001:db8::1]:53 -s sh -b sh-fallback,sh-port -o",
		"-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 3 -x 10 -y 5",
		"-a -f 1 -r 10.0.1.1 -i --tun-type gue --tun-port 6080 --tun-csum",
		"--set 1 2 3",
		"-A -f 1 -6 -M 64 -p",
		"-L --stats --exact --nosort",
		"-A --tcp-service=1.2.3.4:http --persistent=60",
		"-p",                    // seed: option first is not a command
		"-L -- -n",              // seed: "--" ends the options
		"-A -t [",               // seed: unterminated bracket
		"-A -t 1.2.3.4:80 -b ,", // seed: ipvsadm crashes on an empty flag list
		"-At",
		"-L -",
		"--start-daemon backup --mcast-group ff02::1 --mcast-port 1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		if s == "" {
			args = nil
		}
		c, err := ParseArgs(args)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Code != ExitParse && e.Code != ExitFailure) || e.Msg == "" {
				t.Fatalf("ParseArgs(%q): bad error %#v", s, err)
			}
			return
		}
		tab := ipvs.NewTable(newFakeSched)
		mustApply(t, tab, "-A -t 10.0.0.1:80", "-a -t 10.0.0.1:80 -r 10.0.1.1 -m", "-A -f 1")
		_ = Apply(tab, c)
	})
}

// FuzzRules: rules that parse and apply survive save -> parse -> apply ->
// save unchanged.
func FuzzRules(f *testing.F) {
	f.Add(docRules)
	for _, s := range []string{
		"-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 1 --tun-remcsum\n",
		"ipvsadm -A -u 10.0.0.1:domain -s sh -b sh-port -p 1 -M 255.255.255.128 # c\n",
		"-A -f 9 -6 -s mh -p -M 100\n-a -f 9 -6 -r [2001:db8::3]:99 -m -w 0\n-d -f 9 -6 -r [2001:db8::3]:99\n",
		"-A -t 10.0.0.1:80\n-C\n-A -t 10.0.0.2:0 -p\n-E -t 10.0.0.2:0 -p 7 -s rr\n",
		"-A -t 10.1:80\n-a -t 10.1:80 -r 0x0a000002\n-e -t 10.1:80 -r 10.0.0.2 -w 9\n",
		"-A -t 10.0.0.1:80 -s sh -b flag-3\n", // seed: ipvsadm saves an empty -b
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rules string) {
		for _, numeric := range []bool{true, false} {
			first, err := roundTrip(t, rules, numeric)
			if err != nil {
				return
			}
			if strings.Contains(first, " -b \n") {
				return // ipvsadm itself cannot read this back
			}
			second, err := roundTrip(t, first, numeric)
			if err != nil {
				t.Fatalf("saved rules do not load: %v\n%s", err, first)
			}
			if first != second {
				t.Fatalf("round trip differs\nfirst:\n%s\nsecond:\n%s", first, second)
			}
		}
	})
}
