package ipvsadm

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"gvs/ipvs"
)

// docRules is the example table of IPVS.md §5.
const docRules = `-A -t 207.175.44.110:80 -s rr
-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m -w 1
-a -t 207.175.44.110:80 -r 192.168.10.2:80 -m -w 2
-A -u 207.175.44.110:53 -s sh -p 360 -M 255.255.255.0 -o -b sh-fallback,sh-port
-A -f 1 -s wlc
-a -f 1 -r 172.16.0.2:0 -g -w 1
-a -f 1 -r 172.16.0.3:0 -i -w 0 --tun-type ipip
`

func docTable(t *testing.T) *ipvs.Table {
	t.Helper()
	tab := ipvs.NewTable(newFakeSched)
	cmds, err := ParseRules(strings.NewReader(docRules))
	if err != nil {
		t.Fatal(err)
	}
	if err := ApplyAll(tab, cmds); err != nil {
		t.Fatal(err)
	}
	set := func(svc, dest string, active, inact int32) {
		for _, d := range tab.Service(key(svc)).Dests() {
			if d.AddrPort().String() == dest {
				d.ActiveConns.Store(active)
				d.InactConns.Store(inact)
				return
			}
		}
		t.Fatalf("no dest %s", dest)
	}
	set("-t 207.175.44.110:80", "192.168.10.1:80", 3, 12)
	set("-t 207.175.44.110:80", "192.168.10.2:80", 0, 1)
	set("-f 1", "172.16.0.3:0", 5, 0)
	return tab
}

func TestWriteListGolden(t *testing.T) {
	tab := docTable(t)
	var b bytes.Buffer
	if err := WriteList(&b, tab.Services(), ListOptions{Numeric: true}, nil); err != nil {
		t.Fatal(err)
	}
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  207.175.44.110:80 rr\n" +
		"  -> 192.168.10.1:80              Masq    1      3          12        \n" +
		"  -> 192.168.10.2:80              Masq    2      0          1         \n" +
		"UDP  207.175.44.110:53 sh (sh-fallback,sh-port) persistent 360 mask 255.255.255.0 ops\n" +
		"FWM  1 wlc\n" +
		"  -> 172.16.0.2:0                 Route   1      0          0         \n" +
		"  -> 172.16.0.3:0                 Tunnel  0      5          0         \n"
	if b.String() != want {
		t.Errorf("-Ln\n got:\n%s\nwant:\n%s", b.String(), want)
	}

	// Without -n ports print by name; -L -t has no version line.
	b.Reset()
	if err := WriteService(&b, tab.Service(key("-t 207.175.44.110:80")), ListOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	want = "Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  207.175.44.110:http rr\n" +
		"  -> 192.168.10.1:http            Masq    1      3          12        \n" +
		"  -> 192.168.10.2:http            Masq    2      0          1         \n"
	if b.String() != want {
		t.Errorf("-L -t\n got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteSaveGolden(t *testing.T) {
	tab := docTable(t)
	var b bytes.Buffer
	if err := WriteSave(&b, tab.Services(), true); err != nil {
		t.Fatal(err)
	}
	if b.String() != docRules {
		t.Errorf("-S -n\n got:\n%s\nwant:\n%s", b.String(), docRules)
	}
	b.Reset()
	if err := WriteSave(&b, tab.Services(), false); err != nil {
		t.Fatal(err)
	}
	want := `-A -t 207.175.44.110:http -s rr
-a -t 207.175.44.110:http -r 192.168.10.1:http -m -w 1
-a -t 207.175.44.110:http -r 192.168.10.2:http -m -w 2
-A -u 207.175.44.110:domain -s sh -p 360 -M 255.255.255.0 -o -b sh-fallback,sh-port
-A -f 1 -s wlc
-a -f 1 -r 172.16.0.2:0 -g -w 1
-a -f 1 -r 172.16.0.3:0 -i -w 0 --tun-type ipip
`
	if b.String() != want {
		t.Errorf("-S\n got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteSaveFormats(t *testing.T) {
	tests := []struct{ rules, want string }{
		// IPv6 service with a prefix length, persistence engine, fwmark -6, thresholds not saved
		{"-A -t [2001:db8::1]:443 -s mh -p 60 -M 64 -b mh-fallback\n" +
			"-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 -m -w 3 -x 100 -y 10\n",
			"-A -t [2001:db8::1]:443 -s mh -p 60 -M 64 -b mh-fallback\n" +
				"-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 -m -w 3\n"},
		{"-A -f 5 -6 -s rr -p", "-A -f 5 -6 -s rr -p 360\n"},
		// tunnel types
		{"-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 6080 --tun-remcsum\n" +
			"-a -t 10.0.0.1:80 -r 10.0.1.2 -i --tun-type gre --tun-csum\n-a -t 10.0.0.1:80 -r 10.0.1.3 -i --tun-type gue --tun-port 5555\n",
			"-A -t 10.0.0.1:80 -s wlc\n" +
				"-a -t 10.0.0.1:80 -r 10.0.1.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum\n" +
				"-a -t 10.0.0.1:80 -r 10.0.1.2:80 -i -w 1 --tun-type gre --tun-csum\n" +
				"-a -t 10.0.0.1:80 -r 10.0.1.3:80 -i -w 1 --tun-type gue --tun-port 5555 --tun-nocsum\n"},
		// generic scheduler flags; sh-only flag-3 prints an empty -b (sic)
		{"-A -t 10.0.0.1:80 -s rr -b flag-2,flag-1", "-A -t 10.0.0.1:80 -s rr -b flag-1,flag-2\n"},
		{"-A -t 10.0.0.1:80 -s sh -b flag-3", "-A -t 10.0.0.1:80 -s sh -b \n"},
		// dests sorted by address, with the C wrap-around
		{"-A -u 10.0.0.1:53\n-a -u 10.0.0.1:53 -r 10.0.0.5 -m\n-a -u 10.0.0.1:53 -r 200.0.0.1 -m\n-a -u 10.0.0.1:53 -r 10.0.0.4:54 -m\n",
			"-A -u 10.0.0.1:53 -s wlc\n-a -u 10.0.0.1:53 -r 200.0.0.1:53 -m -w 1\n" +
				"-a -u 10.0.0.1:53 -r 10.0.0.4:54 -m -w 1\n-a -u 10.0.0.1:53 -r 10.0.0.5:53 -m -w 1\n"},
	}
	for _, tc := range tests {
		tab := ipvs.NewTable(newFakeSched)
		cmds, err := ParseRules(strings.NewReader(tc.rules))
		if err != nil {
			t.Fatal(err)
		}
		if err := ApplyAll(tab, cmds); err != nil {
			t.Fatalf("%q: %v", tc.rules, err)
		}
		var b bytes.Buffer
		_ = WriteSave(&b, tab.Services(), true)
		if b.String() != tc.want {
			t.Errorf("rules %q\n got %q\nwant %q", tc.rules, b.String(), tc.want)
		}
	}
}

func TestWriteListVariants(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab,
		"-A -t 207.175.44.110:80 -s rr",
		"-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m -x 100 -y 50",
		"-a -t 207.175.44.110:80 -r 192.168.10.3:80 -i --tun-type gue --tun-port 6080 --tun-csum",
		"-a -t 207.175.44.110:80 -r 192.168.10.4:80 -m",
	)
	svc := tab.Service(key("-t 207.175.44.110:80"))
	var d1 *ipvs.Dest
	for _, d := range svc.Dests() {
		if d.Addr == mustAddr("192.168.10.1") {
			d1 = d
		}
	}
	d1.ActiveConns.Store(3)
	d1.InactConns.Store(12)
	d1.PersistConns.Store(4)
	stats := func(s *ipvs.Service, d *ipvs.Dest) (Stats, Rates) {
		switch {
		case d == nil:
			return Stats{Conns: 15, InPkts: 1234, OutPkts: 1100, InBytes: 81234, OutBytes: 2400000000},
				Rates{CPS: 2, InPPS: 40, OutPPS: 38, InBPS: 3200, OutBPS: 51000}
		case d == d1:
			return Stats{Conns: 10, InPkts: 800, OutPkts: 700, InBytes: 52000, OutBytes: 1600000000},
				Rates{CPS: 1, InPPS: 20, OutPPS: 19, InBPS: 1600, OutBPS: 25500}
		}
		return Stats{InBytes: 123456789012345}, Rates{OutBPS: 999999999}
	}
	list := func(o ListOptions) string {
		var b bytes.Buffer
		if err := WriteService(&b, svc, o, stats); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	tests := []struct {
		name string
		o    ListOptions
		want string
	}{
		{"stats", ListOptions{Numeric: true, Stats: true},
			"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  207.175.44.110:80                  15     1234     1100    81234    2400M\n" +
				"  -> 192.168.10.1:80                    10      800      700    52000    1600M\n" +
				"  -> 192.168.10.3:80                     0        0        0     123T        0\n" +
				"  -> 192.168.10.4:80                     0        0        0     123T        0\n"},
		{"stats exact", ListOptions{Numeric: true, Stats: true, Exact: true},
			"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  207.175.44.110:80                  15     1234     1100    81234 2400000000\n" +
				"  -> 192.168.10.1:80                    10      800      700    52000 1600000000\n" +
				"  -> 192.168.10.3:80                     0        0        0 123456789012345        0\n" +
				"  -> 192.168.10.4:80                     0        0        0 123456789012345        0\n"},
		{"rate", ListOptions{Numeric: true, Rate: true},
			"Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  207.175.44.110:80                   2       40       38     3200    51000\n" +
				"  -> 192.168.10.1:80                     1       20       19     1600    25500\n" +
				"  -> 192.168.10.3:80                     0        0        0        0  999999K\n" +
				"  -> 192.168.10.4:80                     0        0        0        0  999999K\n"},
		{"thresholds", ListOptions{Numeric: true, Thresholds: true},
			"Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  207.175.44.110:80 rr\n" +
				"  -> 192.168.10.1:80              100        50         3          12        \n" +
				"  -> 192.168.10.3:80              0          0          0          0         \n" +
				"  -> 192.168.10.4:80              0          0          0          0         \n"},
		{"persistent-conn", ListOptions{Numeric: true, PersistentConn: true},
			"Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n" +
				"  -> RemoteAddress:Port\n" +
				"TCP  207.175.44.110:80 rr\n" +
				"  -> 192.168.10.1:80              1         4           3          12        \n" +
				"  -> 192.168.10.3:80              1         0           0          0         \n" +
				"  -> 192.168.10.4:80              1         0           0          0         \n"},
		{"tun-info", ListOptions{Numeric: true, TunInfo: true},
			"Prot LocalAddress:Port Scheduler Flags\n" +
				"  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n" +
				"TCP  207.175.44.110:80 rr\n" +
				"  -> 192.168.10.1:80              Masq    n/a           1      3          12        \n" +
				"  -> 192.168.10.3:80              Tunnel  gue:6080:+c   1      0          0         \n" +
				"  -> 192.168.10.4:80              Masq    n/a           1      0          0         \n"},
		{"nosort: IPVS list order", ListOptions{Numeric: true, NoSort: true},
			"Prot LocalAddress:Port Scheduler Flags\n" +
				"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
				"TCP  207.175.44.110:80 rr\n" +
				"  -> 192.168.10.4:80              Masq    1      0          0         \n" +
				"  -> 192.168.10.3:80              Tunnel  1      0          0         \n" +
				"  -> 192.168.10.1:80              Masq    1      3          12        \n"},
	}
	for _, tc := range tests {
		if got := list(tc.o); got != tc.want {
			t.Errorf("%s\n got:\n%q\nwant:\n%q", tc.name, got, tc.want)
		}
	}
}

func TestLargenum(t *testing.T) {
	tests := []struct {
		v     uint64
		exact bool
		want  string
	}{
		{0, false, "        0"},
		{99999999, false, " 99999999"},
		{100000000, false, "  100000K"},
		{999999999, false, "  999999K"},
		{1000000000, false, "    1000M"},
		{99999999999, false, "   99999M"},
		{100000000000, false, "     100G"},
		{99999999999999, false, "   99999G"},
		{100000000000000, false, "     100T"},
		{18446744073709551615, false, "18446744T"},
		{12345678, true, " 12345678"},
		{123456789, true, " 123456789"},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		largenum(&b, tc.v, tc.exact)
		if b.String() != tc.want {
			t.Errorf("largenum(%d, %v) = %q, want %q", tc.v, tc.exact, b.String(), tc.want)
		}
	}
}

func TestWriteConns(t *testing.T) {
	ap := netip.MustParseAddrPort
	conns := []ConnInfo{
		{ipvs.ProtoTCP, 899, "ESTABLISHED", ap("10.0.0.2:41234"), ap("207.175.44.110:80"), ap("192.168.10.1:80"), "", ""},
		{ipvs.ProtoTCP, 98, "FIN_WAIT", ap("10.0.0.2:41236"), ap("207.175.44.110:80"), ap("192.168.10.2:80"), "", ""},
		{ipvs.ProtoUDP, 295, "UDP", ap("10.0.0.2:5353"), ap("207.175.44.110:53"), ap("192.168.10.1:53"), "", ""},
		{ipvs.ProtoTCP, 359, "NONE", ap("10.0.0.2:0"), ap("207.175.44.110:443"), ap("192.168.10.1:443"), "", ""},
		{ipvs.ProtoIP, 359, "NONE", ap("10.0.0.2:0"), ap("0.0.0.1:0"), ap("172.16.0.2:0"), "", ""},
		{ipvs.ProtoUDP, 6000, "UDP", ap("[2001:db8::2]:5060"), ap("[2001:db8::1]:5060"), ap("[2001:db8::10]:5060"), "sip", "abc"},
	}
	var b bytes.Buffer
	if err := WriteConns(&b, conns, ListOptions{Numeric: true}); err != nil {
		t.Fatal(err)
	}
	want := "IPVS connection entries\n" +
		"pro expire state       source             virtual            destination\n" +
		"TCP 14:59  ESTABLISHED 10.0.0.2:41234     207.175.44.110:80  192.168.10.1:80\n" +
		"TCP 01:38  FIN_WAIT    10.0.0.2:41236     207.175.44.110:80  192.168.10.2:80\n" +
		"UDP 04:55  UDP         10.0.0.2:5353      207.175.44.110:53  192.168.10.1:53\n" +
		"TCP 05:59  NONE        10.0.0.2:0         207.175.44.110:443 192.168.10.1:443\n" +
		"IP  05:59  NONE        10.0.0.2:0         0.0.0.1:0          172.16.0.2:0\n" +
		"UDP 100:00 UDP         [2001:db8::2]:5060 [2001:db8::1]:5060 [2001:db8::10]:5060\n"
	if b.String() != want {
		t.Errorf("-Lnc\n got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	_ = WriteConns(&b, conns[2:3], ListOptions{})
	want = "IPVS connection entries\n" +
		"pro expire state       source             virtual            destination\n" +
		"UDP 04:55  UDP         10.0.0.2:mdns      207.175.44.110:domain 192.168.10.1:domain\n"
	if strings.Contains(b.String(), "mdns") {
		// not in the built-in table; the number stays
		t.Errorf("unexpected service name: %s", b.String())
	}
	want = strings.Replace(want, "10.0.0.2:mdns     ", "10.0.0.2:5353     ", 1)
	if b.String() != want {
		t.Errorf("-Lc\n got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	_ = WriteConns(&b, conns[5:], ListOptions{Numeric: true, PersistentConn: true})
	want = "IPVS connection entries\n" +
		"pro expire state       source             virtual            destination        pe name          pe_data\n" +
		"UDP 100:00 UDP         [2001:db8::2]:5060 [2001:db8::1]:5060 [2001:db8::10]:5060 sip                abc\n" // the line pads pe name to 18, the header to 16 (sic)
	if b.String() != want {
		t.Errorf("-Lnc --persistent-conn\n got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteMisc(t *testing.T) {
	var b bytes.Buffer
	_ = WriteTimeouts(&b, ipvs.DefaultTimeouts)
	if b.String() != "Timeout (tcp tcpfin udp): 900 120 300\n" {
		t.Errorf("timeouts: %q", b.String())
	}
	b.Reset()
	_ = WriteVersion(&b)
	if b.String() != "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n" {
		t.Errorf("version: %q", b.String())
	}
	b.Reset()
	_ = WriteUsage(&b, "ipvsadm")
	u := b.String()
	for _, want := range []string{
		"ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\nUsage:\n  ipvsadm -A|E virtual-service [-s scheduler]",
		"  ipvsadm -h\n\nCommands:\n",
		"                                      the default scheduler is wlc.\n",
		"                                      the default tunnel type is ipip.\n",
		"  --mcast-ttl ttl                     Multicast TTL (default=1)\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	if strings.Contains(u, "%") {
		t.Error("usage has an unexpanded verb")
	}
	// IPv4 service names are cut at 33 characters, dest names at 28.
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab, "-A --sctp-service 255.255.255.254:65535", "-a --sctp-service 255.255.255.254:65535 -r 255.255.255.253 -m")
	b.Reset()
	_ = WriteList(&b, tab.Services(), ListOptions{Numeric: true}, nil)
	if !strings.Contains(b.String(), "\nSCTP 255.255.255.254:65535 wlc\n  -> 255.255.255.253:65535        Masq    1      0          0         \n") {
		t.Errorf("sctp listing:\n%s", b.String())
	}
}
