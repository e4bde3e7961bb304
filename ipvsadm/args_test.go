package ipvsadm

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"gvs/ipvs"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestParseArgsOK(t *testing.T) {
	v4 := mustAddr("207.175.44.110")
	tests := []struct {
		args string
		want Command
	}{
		{"", Command{Kind: CmdList}},
		{"-Ln", Command{Kind: CmdList, Given: OptNumeric, List: ListOptions{Numeric: true}}},
		{"-Lnc", Command{Kind: CmdList, Given: OptNumeric | OptConnection,
			List: ListOptions{Numeric: true, Connections: true}}},
		{"-l --stats --exact --sort", Command{Kind: CmdList, Given: OptStats | OptExact,
			List: ListOptions{Stats: true, Exact: true}}},
		{"--list --timeout", Command{Kind: CmdList, Given: OptTimeout, List: ListOptions{Timeout: true}}},
		{"-A -t 207.175.44.110:80 -s rr", Command{Kind: CmdAddService, Given: OptService | OptScheduler,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4, Port: 80},
				Scheduler: "rr", Netmask: 32}}},
		// default scheduler, port by name, long options with '='
		{"--add-service --udp-service=207.175.44.110:domain", Command{Kind: CmdAddService, Given: OptService,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: v4, Port: 53},
				Scheduler: "wlc", Netmask: 32}}},
		// -p without a value before another option; mask to prefix; flags
		{"-A -u 207.175.44.110:53 -s sh -p -M 255.255.255.0 -o -b sh-fallback,sh-port", Command{
			Kind: CmdAddService, Given: OptService | OptScheduler | OptPersistent | OptNetmask | OptOnePacket | OptSchedFlags,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: v4, Port: 53}, Scheduler: "sh",
				Flags: ipvs.SvcPersistent | ipvs.SvcOnePacket | ipvs.SvcSched1 | ipvs.SvcSched2, Timeout: 360, Netmask: 24}}},
		// -p with a value; port 0 allowed with -p
		{"-A -t 10.0.0.1 -p 600", Command{Kind: CmdAddService, Given: OptService | OptPersistent,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("10.0.0.1")},
				Scheduler: "wlc", Flags: ipvs.SvcPersistent, Timeout: 600, Netmask: 32}}},
		// -p at the end of the line
		{"-E -t 10.0.0.1:80 -p", Command{Kind: CmdEditService, Given: OptService | OptPersistent,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80},
				Scheduler: "wlc", Flags: ipvs.SvcPersistent, Timeout: 360, Netmask: 32}}},
		// attached short argument and -p300
		{"-At10.0.0.1:80 -p300", Command{Kind: CmdAddService, Given: OptService | OptPersistent,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80},
				Scheduler: "wlc", Flags: ipvs.SvcPersistent, Timeout: 300, Netmask: 32}}},
		// fwmark, IPv6, netmask as prefix length
		{"-A -f 1 -6 -p -M 64", Command{Kind: CmdAddService, Given: OptService | OptPersistent | OptNetmask,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{FWMark: 1, V6: true}, Scheduler: "wlc",
				Flags: ipvs.SvcPersistent, Timeout: 360, Netmask: 64}}},
		{"-A -t [2001:db8::1]:443 -s mh -b mh-port", Command{Kind: CmdAddService, Given: OptService | OptScheduler | OptSchedFlags,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("2001:db8::1"), Port: 443},
				Scheduler: "mh", Flags: ipvs.SvcSched2, Netmask: 128}}},
		// NAT dest keeps its own port; weight
		{"-a -t 207.175.44.110:80 -r 192.168.10.1:8080 -m -w 2", Command{Kind: CmdAddServer,
			Given:   OptService | OptServer | OptForward | OptWeight,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4, Port: 80}, Netmask: 32},
			Dest:    ipvs.DestConfig{Addr: mustAddr("192.168.10.1"), Port: 8080, Method: ipvs.Masq, Weight: 2}}},
		// DR dest: port forced to the service port; default weight 1
		{"-a -t 207.175.44.110:80 -r 192.168.10.1:8080", Command{Kind: CmdAddServer, Given: OptService | OptServer,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4, Port: 80}, Netmask: 32},
			Dest:    ipvs.DestConfig{Addr: mustAddr("192.168.10.1"), Port: 80, Method: ipvs.Route, Weight: 1}}},
		// no dest port: the service port
		{"-a -t 207.175.44.110:http -r 192.168.10.1 -m -x 100 -y 50", Command{Kind: CmdAddServer,
			Given:   OptService | OptServer | OptForward | OptUThreshold | OptLThreshold,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4, Port: 80}, Netmask: 32},
			Dest: ipvs.DestConfig{Addr: mustAddr("192.168.10.1"), Port: 80, Method: ipvs.Masq, Weight: 1,
				UThreshold: 100, LThreshold: 50}}},
		// fwmark dest keeps port 0 with -g
		{"-a -f 1 -r 172.16.0.2 -g", Command{Kind: CmdAddServer, Given: OptService | OptServer | OptForward,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{FWMark: 1}, Netmask: 32},
			Dest:    ipvs.DestConfig{Addr: mustAddr("172.16.0.2"), Method: ipvs.Route, Weight: 1}}},
		// tunnel options
		{"-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue --tun-port 6080 --tun-csum", Command{Kind: CmdAddServer,
			Given:   OptService | OptServer | OptForward | OptTunType | OptTunPort | OptTunCsum,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80}, Netmask: 32},
			Dest: ipvs.DestConfig{Addr: mustAddr("10.1.0.1"), Port: 80, Method: ipvs.Tunnel, Weight: 1,
				TunType: ipvs.TunGUE, TunPort: 6080, TunFlags: ipvs.TunCsum}}},
		// tunnel to an IPv6 real server from an IPv4 service
		{"-a -t 10.0.0.1:80 -r [2001:db8::5]:80 -i", Command{Kind: CmdAddServer, Given: OptService | OptServer | OptForward,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80}, Netmask: 32},
			Dest:    ipvs.DestConfig{Addr: mustAddr("2001:db8::5"), Port: 80, Method: ipvs.Tunnel, Weight: 1}}},
		{"-d -t 10.0.0.1:80 -r 10.1.0.1:81", Command{Kind: CmdDeleteServer, Given: OptService | OptServer,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80}, Netmask: 32},
			Dest:    ipvs.DestConfig{Addr: mustAddr("10.1.0.1"), Port: 81, Method: ipvs.Route, Weight: 1}}},
		{"--set 900 120 300", Command{Kind: CmdSet, Timeouts: ipvs.Timeouts{TCP: 900, TCPFin: 120, UDP: 300}}},
		{"--set 0 0 60", Command{Kind: CmdSet, Timeouts: ipvs.Timeouts{TCP: 0, TCPFin: 0, UDP: 60}}},
		{"-Z", Command{Kind: CmdZero}},
		{"-C", Command{Kind: CmdClear}},
		{"-S -n", Command{Kind: CmdSave, Given: OptNumeric, List: ListOptions{Numeric: true}}},
		{"-h -q", Command{Kind: CmdHelp}},
		{"--version", Command{Kind: CmdVersion}},
		// inet_aton forms: 10.1 is 10.0.0.1
		{"-D -t 10.1:80", Command{Kind: CmdDeleteService, Given: OptService,
			Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80}, Netmask: 32}}},
		{"--start-daemon master --syncid 5", Command{Kind: CmdStartDaemon, Given: OptSyncID,
			Daemon: DaemonConfig{State: DaemonMaster, SyncID: 5, McastIfn: "eth0"}}},
	}
	for _, tc := range tests {
		t.Run(tc.args, func(t *testing.T) {
			got, err := ParseArgs(strings.Fields(tc.args))
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tc.args, err)
			}
			if tc.want.Dest == (ipvs.DestConfig{}) {
				tc.want.Dest = ipvs.DestConfig{Method: ipvs.Route, Weight: 1}
			}
			if *got != tc.want {
				t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", tc.args, *got, tc.want)
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		args string
		msg  string
		code int
	}{
		{"-q", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.", 255},
		{"-n -L", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.", 255},
		{"foo", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.", 255},
		{"-L -q", "-q: unknown option", 255},
		{"-Lq", "-Lq: unknown option", 255},
		{"--list --foo", "--foo: unknown option", 255},
		{"-A -t", "-t: missing argument", 255},
		{"-L --numeric=1", "--numeric=1: option does not take an argument", 255},
		{"-L -A", "invalid option `-A'", 2},
		{"-L -h", "invalid option `-h'", 2},
		{"-L -n -n", "multiple 'numeric' options specified", 2},
		{"-A -t 1.2.3.4:80 -f 3", "multiple 'service-address' options specified", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -m -g", "multiple 'forwarding-method' options specified", 2},
		{"-A -s rr", "You need to supply the 'service-address' option for the 'add-service' command", 2},
		{"-a -t 1.2.3.4:80", "You need to supply the 'real-server' option for the 'add-server' command", 2},
		{"-A -t 1.2.3.4:80 -w 3", "Illegal 'weight' option with the 'add-service' command", 2},
		{"-D -t 1.2.3.4:80 -s rr", "Illegal 'scheduler' option with the 'delete-service' command", 2},
		{"-C -n", "Illegal 'numeric' option with the 'flush' command", 2},
		{"-L -c -t 1.2.3.4:80", "The option 'service-address' conflicts with the 'connection' option in the 'list' command", 2},
		{"-L -c --stats", "options conflicts in the list command", 2},
		{"-L --timeout --persistent-conn", "options conflicts in the list command", 2},
		{"-A -t 1.2.3.4", "Zero port specified for non-persistent service", 2},
		{"-A -t 1.2.3.4:80 -o", "One-Packet Scheduling is only for UDP virtual services", 2},
		{"-A -t 1.2.3.4:80 -b sh-port", "incompatible scheduler flag `sh-port'", 2},
		{"-A -t 1.2.3.4:80 -s sh -b mh-port", "incompatible scheduler flag `mh-port'", 2},
		{"-A -t 1.2.3.4:80 -b bogus", "invalid scheduler flag `bogus'", 2},
		{"-A -t 1.2.3.4:80 -p 0", "invalid timeout value `0' specified", 2},
		{"-A -t 1.2.3.4:80 -p 2678401", "invalid timeout value `2678401' specified", 2},
		{"-A -t 1.2.3.4:99999", "illegal virtual server address[:port] specified", 2},
		{"-A -t 1.2.3.4:nosuchport", "illegal virtual server address[:port] specified", 2},
		{"-A -t www.example.com:80", "illegal virtual server address[:port] specified", 2},
		{"-A -t 1234", "illegal virtual server address[:port] specified", 2},
		{"-A -t [2001:db8::1]", "illegal virtual server address[:port] specified", 2},
		{"-A -t 1.2.3.4:80 -p -M 255.0.255.0", "non-contiguous persistent netmask `255.0.255.0' is not supported", 2},
		{"-A -t 1.2.3.4:80 -M x", "illegal virtual server persistent mask specified", 2},
		{"-A -t [::1]:80 -M 129", "illegal ipv6 netmask specified", 2},
		{"-A -f 0", "invalid fwmark value `0' specified", 2},
		{"-A -f 4294967296", "invalid fwmark value `4294967296' specified", 2},
		{"-A -t 1.2.3.4:80 -6", "-6 used before -f\n", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -w 65536", "illegal weight specified", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -w -1", "illegal weight specified", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -x 2147483648", "illegal u_threshold specified", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -y abc", "illegal l_threshold specified", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2:x", "illegal real server address[:port] specified", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 --tun-type gre", "Tunnel options conflict with forward method", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -m --tun-csum", "Tunnel options conflict with forward method", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -i --tun-type gue", "You need to supply the 'tun-port' option for the 'gue' tunnel type", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -i --tun-port 5", "Illegal 'tun-port' option with the 'ipip' tunnel type", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -i --tun-type gre --tun-remcsum", "Illegal 'tun-remcsum' option with the 'gre' tunnel type", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -i --tun-type gue --tun-port 1 --tun-csum --tun-remcsum",
			"The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel type", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -i --tun-type vxlan", "illegal tunnel type specified", 2},
		{"-a -t 1.2.3.4:80 -r 2.2.2.2 -i --tun-type gue --tun-port 0", "illegal tunnel port specified", 2},
		{"-a -t 1.2.3.4:80 -r [2001:db8::1]:80 -m", "Different address family is allowed only for tunneling servers", 2},
		{"--set 1 2", "--set option requires 3 timeout values", 2},
		{"--set 1 2 x", "invalid timeout value `x' specified", 2},
		{"--set 1 2 3 4", "unexpected argument 4", 2},
		{"-L extra", "unexpected argument extra", 2},
		{"-L -- -n", "unexpected argument -n", 2},
		{"--start-daemon foo", "illegal start-daemon parameter specified", 2},
		{"--stop-daemon foo", "illegal start_daemon specified", 2},
		{"--start-daemon master --mcast-group 10.0.0.1", "invalid IPv4 mcast-group `10.0.0.1'", 2},
		{"--start-daemon master --syncid 256", "illegal syncid specified", 2},
	}
	for _, tc := range tests {
		t.Run(tc.args, func(t *testing.T) {
			_, err := ParseArgs(strings.Fields(tc.args))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseArgs(%q) = %v, want *Error", tc.args, err)
			}
			if e.Msg != tc.msg || e.Code != tc.code {
				t.Errorf("ParseArgs(%q) = %q (exit %d), want %q (exit %d)", tc.args, e.Msg, e.Code, tc.msg, tc.code)
			}
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("error does not wrap ErrSyntax")
			}
		})
	}
}

func TestParseArgsProgramName(t *testing.T) {
	_, err := ParseArgsAs("/sbin/ipvsadm", []string{"--bogus"})
	if err == nil || err.Error() != "Try `/sbin/ipvsadm -h' or '/sbin/ipvsadm --help' for more information." {
		t.Fatalf("got %v", err)
	}
}

func TestInetAton(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = invalid
	}{
		{"1.2.3.4", "1.2.3.4"},
		{"10.1", "10.0.0.1"},
		{"10.1.2", "10.1.0.2"},
		{"167772161", "10.0.0.1"},
		{"0x0a000001", "10.0.0.1"},
		{"012.0.0.1", "10.0.0.1"},
		{"255.255.255.255", "255.255.255.255"},
		{"1.2.3.4 junk", "1.2.3.4"},
		{"1.2.3.256", ""},
		{"1.2.3.4.5", ""},
		{"08.1.1.1", ""},
		{"1.2.3.", ""},
		{"", ""},
		{"a.b.c.d", ""},
		{"0x", ""},
		{"4294967296", ""},
		{"10.16777216", ""},
	}
	for _, tc := range tests {
		a, ok := inetAton(tc.in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tc.want {
			t.Errorf("inetAton(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMaskPrefix(t *testing.T) {
	for plen := 0; plen <= 32; plen++ {
		m := prefixToMask(plen).As4()
		v := uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
		got, ok := maskToPrefix(v)
		if !ok || got != plen {
			t.Errorf("maskToPrefix(prefixToMask(%d)) = %d, %v", plen, got, ok)
		}
	}
	if _, ok := maskToPrefix(0xff00ff00); ok {
		t.Error("non-contiguous mask accepted")
	}
}
