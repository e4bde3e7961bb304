package keepalived

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gvs/ipvs"
)

func load(t *testing.T, dir string) *Config {
	t.Helper()
	c, err := LoadFS(os.DirFS("testdata/"+dir), "keepalived.conf", nil, Options{ConfigID: "lb1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parseString(t *testing.T, s string) *Config {
	t.Helper()
	return Parse("test.conf", []byte(s), nil, Options{})
}

// The NAT example of OPS.md §1.6: the typed configuration gvsd runs.
func TestNATExample(t *testing.T) {
	c := load(t, "nat")
	g := c.Global
	if g.RouterID != "lb1" || !g.HasTimeouts || g.Timeouts != (ipvs.Timeouts{TCP: 900, TCPFin: 120, UDP: 300}) {
		t.Errorf("global = %+v", g)
	}
	if len(c.VirtualServers) != 1 {
		t.Fatalf("%d virtual servers", len(c.VirtualServers))
	}
	vs := c.VirtualServers[0]
	wantSvc := ipvs.ServiceConfig{
		ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("203.0.113.10"), Port: 80},
		Scheduler:  "wlc", Flags: ipvs.SvcPersistent, Timeout: 300, Netmask: 32,
	}
	if vs.Service != wantSvc {
		t.Errorf("service = %+v, want %+v", vs.Service, wantSvc)
	}
	if !vs.Alpha || !vs.Omega || vs.Quorum != 3 || vs.Hysteresis != 1 || vs.DelayLoop != 5*time.Second {
		t.Errorf("vs = alpha %v omega %v quorum %d hysteresis %d delay %v", vs.Alpha, vs.Omega, vs.Quorum, vs.Hysteresis, vs.DelayLoop)
	}
	if vs.QuorumUp == nil || vs.QuorumUp.Cmd != "/usr/local/sbin/vip-announce 203.0.113.10" ||
		vs.QuorumDown == nil || vs.QuorumDown.Cmd != "/usr/local/sbin/vip-withdraw 203.0.113.10" {
		t.Errorf("quorum scripts = %+v %+v", vs.QuorumUp, vs.QuorumDown)
	}
	if s := vs.Sorry; s == nil || s.Dest != (ipvs.DestConfig{Addr: netip.MustParseAddr("10.0.0.99"), Port: 8080, Method: ipvs.Masq, Weight: 1}) || s.Inhibit {
		t.Errorf("sorry = %+v", vs.Sorry)
	}
	rs1, rs2 := vs.RealServers[0], vs.RealServers[1]
	if rs1.Dest != (ipvs.DestConfig{Addr: netip.MustParseAddr("10.0.0.11"), Port: 8080, Method: ipvs.Masq, Weight: 3}) ||
		!rs1.Inhibit || !rs1.Alpha || rs1.NotifyDown == nil || rs1.NotifyDown.Cmd != "/usr/local/sbin/page-oncall 10.0.0.11 down" {
		t.Errorf("rs1 = %+v", rs1)
	}
	if rs2.Dest != (ipvs.DestConfig{Addr: netip.MustParseAddr("10.0.0.12"), Port: 8080, Method: ipvs.Masq, Weight: 2, UThreshold: 2000, LThreshold: 1500}) || rs2.Inhibit {
		t.Errorf("rs2 = %+v", rs2)
	}
	http := rs1.Checkers[0]
	wantHTTP := &HTTPCheckConfig{Protocol: "1.0", VirtualHost: "www.example.com", URLs: []URL{
		{Path: "/healthz", StatusCodes: []StatusRange{{200, 204}}},
		{Path: "/ready", Digest: "9b3a0c85a887a256d6939da88aabd8cd", StatusCodes: []StatusRange{{200, 299}}},
	}}
	for i := range http.HTTP.URLs {
		http.HTTP.URLs[i].Pos = Pos{}
	}
	if http.Kind != HTTPGet || !reflect.DeepEqual(http.HTTP, wantHTTP) {
		t.Errorf("HTTP_GET = %+v", http.HTTP)
	}
	// retry 2 and delay_before_retry 1 as given; delay_loop and warmup
	// from the VS; alpha inherited.
	if want := (Timing{DelayLoop: 5 * time.Second, ConnectTimeout: 2 * time.Second, Retry: 2, DelayBeforeRetry: time.Second, Warmup: 5 * time.Second, Rise: 1}); http.Timing != want || !http.Alpha {
		t.Errorf("HTTP_GET timing = %+v alpha %v, want %+v", http.Timing, http.Alpha, want)
	}
	if http.ConnectIP != rs1.Dest.Addr || http.ConnectPort != 8080 {
		t.Errorf("HTTP_GET connects to %v:%d", http.ConnectIP, http.ConnectPort)
	}
	tcp := rs2.Checkers[0]
	// TCP_CHECK: retry 1 and delay_before_retry 1 s by default.
	if want := (Timing{DelayLoop: 5 * time.Second, ConnectTimeout: 2 * time.Second, Retry: 1, DelayBeforeRetry: time.Second, Warmup: 5 * time.Second, Rise: 1}); tcp.Kind != TCPCheck || tcp.Timing != want || tcp.ConnectPort != 8080 {
		t.Errorf("TCP_CHECK = %+v", tcp)
	}
}

// The DR example of OPS.md §1.7: group, MISC_CHECK and DNS_CHECK defaults.
func TestDRExample(t *testing.T) {
	c := load(t, "dr")
	if len(c.VirtualServers) != 2 {
		t.Fatalf("%d virtual servers", len(c.VirtualServers))
	}
	web, dns := c.VirtualServers[0], c.VirtualServers[1]
	if len(c.ServicesOf(web)) != 3 || web.Group != "WEB_DR" {
		t.Errorf("group services = %d", len(c.ServicesOf(web)))
	}
	if web.Service.Netmask != 24 || web.Service.Flags != ipvs.SvcPersistent|ipvs.SvcSched2 {
		t.Errorf("web service = %+v", web.Service)
	}
	rs := web.RealServers[0]
	if !rs.Inhibit || rs.PortGiven || rs.Dest.Port != 0 || len(rs.Checkers) != 2 {
		t.Fatalf("rs = %+v", rs)
	}
	tcp, misc := rs.Checkers[0], rs.Checkers[1]
	if want := (Timing{DelayLoop: 3 * time.Second, ConnectTimeout: time.Second, Retry: 3, DelayBeforeRetry: 500 * time.Millisecond, Warmup: 3 * time.Second, Rise: 1}); tcp.Timing != want ||
		tcp.BindTo != netip.MustParseAddr("192.0.2.2") || tcp.ConnectPort != 80 {
		t.Errorf("TCP_CHECK = %+v", tcp)
	}
	// MISC_CHECK: retry 0, delay_before_retry 1 s, no connect timeout.
	if want := (Timing{DelayLoop: 3 * time.Second, Retry: 0, DelayBeforeRetry: time.Second, Warmup: 3 * time.Second, Rise: 1}); misc.Timing != want {
		t.Errorf("MISC_CHECK timing = %+v, want %+v", misc.Timing, want)
	}
	if want := (MiscCheckConfig{Script: Script{Cmd: "/usr/local/libexec/check_app 192.0.2.31"}, Timeout: 5 * time.Second, Dynamic: true}); *misc.Misc != want {
		t.Errorf("MISC_CHECK = %+v", misc.Misc)
	}
	// DNS_CHECK: retry 3 and delay_before_retry = delay_loop by default.
	d1, d2 := dns.RealServers[0].Checkers[0], dns.RealServers[1].Checkers[0]
	if want := (Timing{DelayLoop: 10 * time.Second, ConnectTimeout: 2 * time.Second, Retry: 3, DelayBeforeRetry: 10 * time.Second, Warmup: 10 * time.Second, Rise: 1}); d1.Timing != want ||
		*d1.DNS != (DNSCheckConfig{Type: "A", Name: "health.example."}) {
		t.Errorf("DNS_CHECK 1 = %+v %+v", d1.Timing, d1.DNS)
	}
	if *d2.DNS != (DNSCheckConfig{Type: "SOA"}) || d2.ConnectTimeout != DefaultConnectTimeout || d2.ConnectPort != 53 {
		t.Errorf("DNS_CHECK 2 = %+v %+v", d2.Timing, d2.DNS)
	}
}

func TestQuotingCommentsIncludes(t *testing.T) {
	c := load(t, "unknown-blocks")
	rs := c.VirtualServers[0].RealServers[0]
	if rs.NotifyUp == nil || *rs.NotifyUp != (Script{Cmd: "/usr/local/bin/notify up #1", User: "nobody", Group: "nogroup"}) {
		t.Errorf("notify_up = %+v", rs.NotifyUp)
	}
	h := rs.Checkers[0]
	if h.Retry != 4 || len(h.HTTP.URLs) != 1 || h.HTTP.URLs[0].Path != "/health check" || h.DelayBeforeRetry != DefaultHTTPRetryDelay {
		t.Errorf("HTTP_GET = %+v %+v", h.Timing, h.HTTP)
	}
	if !c.Global.Flush || !c.Global.ScriptSecurity {
		t.Errorf("global = %+v", c.Global)
	}

	c = load(t, "includes")
	if c.Global.RouterID != "lb1-main" {
		t.Errorf("@ lines: router_id = %q", c.Global.RouterID)
	}
	a := c.VirtualServers[2].RealServers[0]
	if a.NotifyDown == nil || a.NotifyDown.Cmd != "/bin/echo#x" {
		t.Errorf(`"\#" outside quotes: %+v`, a.NotifyDown)
	}
	web := c.VirtualServers[0]
	if len(web.RealServers) != 2 || web.RealServers[0].Checkers[0].ConnectTimeout != 3*time.Second {
		t.Errorf("included real servers = %+v", web.RealServers)
	}
	if got := web.RealServers[0].Pos; got != (Pos{File: "rs/web1.rs", Line: 1}) {
		t.Errorf("position of an included line = %v", got)
	}
}

func TestDiagnostics(t *testing.T) {
	for _, tc := range []struct {
		conf string
		want []string // substrings of the diagnostics, in order
		exit int
	}{
		{"virtual_server 1.2.3.4 80 { protocol TCP\n lvs_sched rr\n lvs_method NAT\n}\n",
			[]string{"(test.conf: Line 4) Virtual server [1.2.3.4]:tcp:80 has no real servers - ignoring"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { protocol TCP\n lvs_sched foo\n real_server 10.0.0.1 80 {\n weight 70000 }\n}\n",
			[]string{"Invalid lvs_scheduler 'foo' - ignoring", "no forwarding method set"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { real_server 10.0.0.1 80 { weight -1 } }\n",
			[]string{"negative number '-1'", "Real server weight -1 is outside range 0-2147483647"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { real_server 10.0.0.1 80 { HTTP_GET { url { digest 00 } } } }\n",
			[]string{"digest '00' character length should be 32 rather than 2", "HTTP/SSL_GET checker url has no path - ignoring", "HTTP/SSL_GET checker has no urls specified - ignoring"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { real_server 10.0.0.1 80 { delay_loop 1.0000005 } }\n",
			[]string{"number '1.0000005' has too many decimal places"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { real_server 10.0.0.1 80 { TCP_CHECK { bindto 10.0.0.9\n connect_ip 2001:db8::1\n connect_ip x\n connect_port 0 } } }\n",
			[]string{"connect_ip address 2001:db8::1 does not match address family of bindto - skipping", "Invalid connect_ip address x - ignoring", "Invalid checker connect_port '0'"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { hysteresis -2\n real_server 10.0.0.1 80 { TCP_CHECK { connect_ip 10.0.0.9\n bindto 2001:db8::1 } } }\n",
			[]string{"Hysteresis -2 must be in [0, 4294967295] - ignoring", "bindto address 2001:db8::1 does not match address family of connect_ip - skipping"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { delay_loop 0 }\n", []string{"virtual server delay loop '0' invalid - ignoring"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 {\n", []string{"There are 1 missing '}'s or extra '{'s"}, ExitFixedUp},
		{"}\n", []string{"Extra '}' found"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 { real_server 10.0.0.1 80 { FILE_CHECK { } } }\n", []string{"gvs: FILE_CHECK is not supported"}, ExitFixedUp},
		{"virtual_server_group G {\n}\n", []string{"virtual server group G has no entries - removing"}, ExitFixedUp},
		{"virtual_server_group G {\n 10.0.0.5-3 80\n}\n", []string{"Address range end is not greater than address range start - 10.0.0.5-3 - skipping"}, ExitFixedUp},
		{"~SEQ(i, 1, 1, 3) real_server 10.0.0.$i 80\n", []string{"gvs: ~SEQ lines are not supported"}, ExitFatal},
		{`virtual_server 1.2.3.4 80 { notify_up "/bin/x` + "\n}\n", []string{"Unterminated quote"}, ExitFixedUp},
		{"virtual_server 1.2.3.4 80 {\n protocol TCP\n lvs_sched rr\n lvs_method DR\n real_server 10.0.0.1 80 {\n }\n}\n", nil, ExitOK},
	} {
		c := parseString(t, tc.conf)
		var all []string
		for _, d := range c.Diags {
			all = append(all, d.String())
		}
		text := strings.Join(all, "\n")
		i := 0
		for _, w := range tc.want {
			j := strings.Index(text[i:], w)
			if j < 0 {
				t.Errorf("%q: no %q in order in\n%s", tc.conf, w, text)
				break
			}
			i += j + len(w)
		}
		if tc.want == nil && len(c.Diags) != 0 {
			t.Errorf("%q: unexpected diagnostics\n%s", tc.conf, text)
		}
		if got := c.ExitCode(); got != tc.exit {
			t.Errorf("%q: exit %d, want %d\n%s", tc.conf, got, tc.exit, text)
		}
	}
}

// keepalived keeps the numerically largest config_err_t, so a fix-up
// after a fatal error turns exit 4 into 5; Abort always wins.
func TestExitCodeOrder(t *testing.T) {
	d := func(s ...Severity) []Diagnostic {
		var out []Diagnostic
		for _, v := range s {
			out = append(out, Diagnostic{Severity: v})
		}
		return out
	}
	for _, tc := range []struct {
		s    []Severity
		want int
	}{
		{nil, 0}, {[]Severity{Notice}, 0}, {[]Severity{Fatal}, 4}, {[]Severity{FixedUp}, 5},
		{[]Severity{Fatal, FixedUp}, 5}, {[]Severity{FixedUp, Security}, 6}, {[]Severity{Security, Fatal}, 6},
		{[]Severity{Security, Abort}, 2},
	} {
		if got := ExitCode(d(tc.s...)); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.s, got, tc.want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	c, err := Load("testdata/does-not-exist.conf", Options{})
	if err == nil || c.ExitCode() != ExitFatal || !strings.HasPrefix(c.Diags[0].Msg, "Unable to find configuration file /") {
		t.Fatalf("err %v, diags %v", err, c.Diags)
	}
	c, err = Load("testdata/includes/keepalived.conf", Options{ConfigID: "lb1"})
	if err != nil || c.ExitCode() != ExitOK || len(c.VirtualServers) != 3 {
		t.Fatalf("Load: %v %v", err, c.Diags)
	}
}
