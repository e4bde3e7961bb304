package lab

import (
	"net/netip"
	"strings"
	"testing"

	"gvs/internal/frames"
)

func TestOptionsWithDefaults(t *testing.T) {
	tests := []struct {
		name    string
		in      Options
		wantErr string
	}{
		{"zero", Options{}, ""},
		{"max", Options{Clients: 89, Servers: 89, ServerMTU: 9000, VIP: netip.MustParseAddr("203.0.113.200")}, ""},
		{"too many clients", Options{Clients: 90}, "Clients 90"},
		{"negative servers", Options{Servers: -1}, "Servers -1"},
		{"vip outside documentation ranges", Options{VIP: netip.MustParseAddr("10.0.0.1")}, "VIP 10.0.0.1"},
		{"ipv6 vip", Options{VIP: netip.MustParseAddr("2001:db8::1")}, "VIP 2001:db8::1"},
		{"mtu too small", Options{ServerMTU: 500}, "ServerMTU"},
		{"bad prefix char", Options{Prefix: "gvs-x"}, "only a-z"},
		{"long prefix", Options{Prefix: strings.Repeat("a", 17)}, "longer than 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.in.withDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Prefix == "" || o.Clients == 0 || o.Servers == 0 || !o.VIP.IsValid() || o.ServerMTU == 0 {
				t.Fatalf("defaults not filled: %+v", o)
			}
		})
	}
	o, _ := Options{}.withDefaults()
	if o.Prefix != "gvs" || o.Clients != 1 || o.Servers != 3 || o.VIP != defaultVIP || o.ServerMTU != 1500 || o.DirectorForwarding {
		t.Fatalf("defaults %+v", o)
	}
}

func TestPlan(t *testing.T) {
	for _, leg := range []bool{false, true} {
		o, err := Options{Clients: 89, Servers: 89, ClientLegOnServers: leg}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		p, err := newPlan(o, "abcdef")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(p.namespaces()), 2+89+89; got != want {
			t.Fatalf("%d namespaces, want %d", got, want)
		}
		wantLinks := 2 + 89 + 89
		if leg {
			wantLinks += 89
		}
		if len(p.links) != wantLinks {
			t.Fatalf("leg=%v: %d links, want %d", leg, len(p.links), wantLinks)
		}
		seenNS, seenPort, seenAddr, seenMAC := map[string]bool{}, map[string]bool{}, map[netip.Addr]bool{}, map[string]bool{}
		for _, ns := range p.namespaces() {
			if seenNS[ns] || !strings.HasPrefix(ns, "gvs") || !strings.HasSuffix(ns, "-abcdef") {
				t.Fatalf("bad or duplicate namespace %q", ns)
			}
			seenNS[ns] = true
		}
		for _, k := range p.links {
			if len(k.Port) > 15 || len(k.Name) > 15 || seenPort[k.Port] || !strings.HasSuffix(k.Port, "-abcdef") {
				t.Fatalf("bad or duplicate port %q / %q", k.Port, k.Name)
			}
			seenPort[k.Port] = true
			a := k.Addr()
			if seenAddr[a] || !(clientLAN.Contains(a) || serverLAN.Contains(a)) || k.Prefix.Bits() != 24 {
				t.Fatalf("bad or duplicate address %v", k.Prefix)
			}
			seenAddr[a] = true
			if seenMAC[k.MAC.String()] || k.MAC[0] != 0x02 {
				t.Fatalf("bad or duplicate MAC %v", k.MAC)
			}
			// The replay inputs and the forwarder's test environment
			// assume the same MAC convention.
			if want := frames.DerivedMAC(a).HW(); k.MAC.String() != want.String() {
				t.Fatalf("%v has MAC %v, want %v (frames.DerivedMAC)", a, k.MAC, want)
			}
			seenMAC[k.MAC.String()] = true
			wantBr := p.serverBr
			if clientLAN.Contains(a) {
				wantBr = p.clientBr
			}
			if k.Bridge != wantBr {
				t.Fatalf("%v on bridge %s, want %s", a, k.Bridge, wantBr)
			}
		}
		if p.director.VIPSide.Prefix.String() != "198.18.1.1/24" || p.director.DIPSide.Prefix.String() != "198.18.2.1/24" ||
			p.director.VIPSide.Name != "vip0" || p.director.DIPSide.Name != "dip0" {
			t.Fatalf("director %+v", p.director)
		}
		if p.clients[0].NS != "gvsc1-abcdef" || p.clients[0].Prefix.String() != "198.18.1.11/24" || p.clients[0].MAC.String() != "02:00:c6:12:01:0b" {
			t.Fatalf("client 1 %+v", p.clients[0])
		}
		s := p.servers[2]
		if s.NS != "gvsr3-abcdef" || s.LAN.Prefix.String() != "198.18.2.13/24" || s.LAN.Name != "eth0" {
			t.Fatalf("server 3 %+v", s)
		}
		if leg != s.ClientLeg.IsValid() || leg && s.ClientLeg.Prefix.String() != "198.18.1.103/24" {
			t.Fatalf("leg=%v: server 3 client leg %+v", leg, s.ClientLeg)
		}
	}
}

func TestOffloadFeature(t *testing.T) {
	for name, want := range map[string]bool{
		"tx-checksum-ip-generic":       true,
		"tx-checksum-ipv4":             true,
		"tx-tcp-segmentation":          true,
		"tx-tcp6-segmentation":         true,
		"tx-tcp-mangleid-segmentation": true,
		"tx-udp-segmentation":          true,
		"tx-generic-segmentation":      true,
		"rx-gro":                       false,
		"tx-gre-segmentation":          false,
		"rx-checksum":                  false,
		"tx-scatter-gather":            false,
		"tx-checksumming":              false, // not a kernel feature name
	} {
		if got := offloadFeature(name); got != want {
			t.Errorf("offloadFeature(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSysctlPath(t *testing.T) {
	if got := sysctlPath("net.ipv4.conf.eth0.rp_filter"); got != "/proc/sys/net/ipv4/conf/eth0/rp_filter" {
		t.Fatal(got)
	}
}

func TestCleanupRefusesEmptyPrefix(t *testing.T) {
	if _, err := Cleanup(""); err == nil {
		t.Fatal("Cleanup(\"\") succeeded")
	}
}

func TestLabName(t *testing.T) {
	tests := []struct {
		prefix, ns, sfx string
		ok              bool
	}{
		{"gvs", "gvsb-0a1b2c", "0a1b2c", true},
		{"gvs", "gvsd-0a1b2c", "0a1b2c", true},
		{"gvs", "gvsc1-0a1b2c", "0a1b2c", true},
		{"gvs", "gvsr89-0a1b2c", "0a1b2c", true},
		{"gvslt", "gvsltr2-ffffff", "ffffff", true},
		{"gvs", "gvsring-d41c2a9e", "", false}, // someone else's namespace
		{"gvs", "gvsr01-0a1b2c", "", false},
		{"gvs", "gvsr0-0a1b2c", "", false},
		{"gvs", "gvsc-0a1b2c", "", false},
		{"gvs", "gvsx-0a1b2c", "", false},
		{"gvs", "gvsd-0A1B2C", "", false},
		{"gvs", "gvsd-0a1b2", "", false},
		{"gvs", "gvsd0a1b2c", "", false},
		{"gvs", "xgvsd-0a1b2c", "", false},
		{"gvslt", "gvsd-0a1b2c", "", false},
	}
	for _, tt := range tests {
		sfx, ok := labName(tt.prefix, tt.ns)
		if ok != tt.ok || ok && sfx != tt.sfx {
			t.Errorf("labName(%q, %q) = %q, %v; want %q, %v", tt.prefix, tt.ns, sfx, ok, tt.sfx, tt.ok)
		}
	}
	// Every name a plan produces is recognised.
	o, _ := Options{Clients: 12, Servers: 12, Prefix: "gvslt"}.withDefaults()
	p, err := newPlan(o, "abc123")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range p.namespaces() {
		if sfx, ok := labName("gvslt", ns); !ok || sfx != "abc123" {
			t.Errorf("plan namespace %q not recognised", ns)
		}
	}
}

func TestString(t *testing.T) {
	o, _ := Options{Servers: 2, ClientLegOnServers: true}.withDefaults()
	p, err := newPlan(o, "abc123")
	if err != nil {
		t.Fatal(err)
	}
	got := (&Lab{opts: o, plan: p}).String()
	want := `lab abc123: VIP 198.51.100.10, bridges brc-abc123/brs-abc123 in gvsb-abc123
  director gvsd-abc123: vip0 198.18.1.1/24 02:00:c6:12:01:01, dip0 198.18.2.1/24 02:00:c6:12:02:01
  client gvsc1-abc123: eth0 198.18.1.11/24 02:00:c6:12:01:0b
  server gvsr1-abc123: eth0 198.18.2.11/24 02:00:c6:12:02:0b, eth1 198.18.1.101/24 02:00:c6:12:01:65
  server gvsr2-abc123: eth0 198.18.2.12/24 02:00:c6:12:02:0c, eth1 198.18.1.102/24 02:00:c6:12:01:66
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
