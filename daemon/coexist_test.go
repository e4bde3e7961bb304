package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"gvs/forwarder/kernel"
	"gvs/forwarder/ring"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/scheduler"
)

func tableFrom(t testing.TB, rules string) *ipvs.Table {
	t.Helper()
	cmds, err := ipvsadm.ParseRules(strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	tb := ipvs.NewTable(scheduler.New)
	if err := ipvsadm.ApplyAll(tb, cmds); err != nil {
		t.Fatal(err)
	}
	return tb
}

const mixedRules = `
-A -t 198.51.100.10:80 -s rr
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m
-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m
-a -t 198.51.100.10:80 -r 198.18.2.13:80 -g
-A -u 198.51.100.10:53 -s wlc
-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m
-A -t 203.0.113.5:443 -s sh
-a -t 203.0.113.5:443 -r 198.18.3.7:443 -i
-A -f 7 -s rr
-a -f 7 -r 198.18.2.14:0 -m
`

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestDerive(t *testing.T) {
	d := Derive(tableFrom(t, mixedRules), "vip0", "dip0")
	if want := addrs("198.51.100.10", "203.0.113.5"); !slices.Equal(d.VIPs, want) {
		t.Errorf("VIPs %v, want %v", d.VIPs, want)
	}
	if want := addrs("198.18.2.11", "198.18.2.12", "198.18.2.14"); !slices.Equal(d.MasqRIPs, want) {
		t.Errorf("MasqRIPs %v, want %v", d.MasqRIPs, want)
	}
	if want := addrs("198.18.2.11", "198.18.2.12", "198.18.2.13", "198.18.2.14", "198.18.3.7"); !slices.Equal(d.RIPs, want) {
		t.Errorf("RIPs %v, want %v", d.RIPs, want)
	}
	if d.FWMarkServices != 1 {
		t.Errorf("FWMarkServices %d", d.FWMarkServices)
	}
	var got []string
	for _, r := range d.Ingress {
		got = append(got, r.String())
	}
	// Each rule's fragments after the first (no ports: gvs reassembles
	// them) have a rule of their own per address and protocol.
	want := []string{
		"dip0: ip saddr 198.18.2.11 tcp frag-off & 0x1fff != 0 drop",
		"dip0: ip saddr 198.18.2.11 tcp sport 8080 drop",
		"dip0: ip saddr 198.18.2.11 udp frag-off & 0x1fff != 0 drop",
		"dip0: ip saddr 198.18.2.11 udp sport 5353 drop",
		"dip0: ip saddr 198.18.2.12 tcp frag-off & 0x1fff != 0 drop",
		"dip0: ip saddr 198.18.2.12 tcp sport 8080 drop",
		"dip0: ip saddr 198.18.2.14 tcp drop", // fwmark, port 0: any port, both protocols
		"dip0: ip saddr 198.18.2.14 tcp frag-off & 0x1fff != 0 drop",
		"dip0: ip saddr 198.18.2.14 udp drop",
		"dip0: ip saddr 198.18.2.14 udp frag-off & 0x1fff != 0 drop",
		"vip0: ip daddr 198.51.100.10 tcp frag-off & 0x1fff != 0 drop",
		"vip0: ip daddr 198.51.100.10 tcp dport 80 drop",
		"vip0: ip daddr 198.51.100.10 udp frag-off & 0x1fff != 0 drop",
		"vip0: ip daddr 198.51.100.10 udp dport 53 drop",
		"vip0: ip daddr 203.0.113.5 tcp frag-off & 0x1fff != 0 drop",
		"vip0: ip daddr 203.0.113.5 tcp dport 443 drop",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ingress rules\n got %q\nwant %q", got, want)
	}
	for _, r := range d.Ingress {
		if err := r.Validate(); err != nil {
			t.Errorf("%v: %v", r, err)
		}
	}
}

func TestDeriveOneArmAndEmpty(t *testing.T) {
	d := Derive(tableFrom(t, mixedRules), "eth0", "eth0")
	for _, r := range d.Ingress {
		if r.Interface != "eth0" {
			t.Errorf("one-arm rule on %s", r.Interface)
		}
	}
	vf, df := d.Filters(true)
	if !vf.Equal(df) || !vf.ICMP || len(vf.DstAddrs) != 2 || len(vf.SrcAddrs) != 3 {
		t.Errorf("one-arm filters %+v %+v", vf, df)
	}
	e := Derive(ipvs.NewTable(scheduler.New), "vip0", "dip0")
	if len(e.VIPs)+len(e.RIPs)+len(e.Ingress) != 0 {
		t.Errorf("empty table derived %+v", e)
	}
}

func TestDeriveFilters(t *testing.T) {
	d := Derive(tableFrom(t, mixedRules), "vip0", "dip0")
	vf, df := d.Filters(false)
	if !vf.Equal(ring.Filter{DstAddrs: addrs("203.0.113.5", "198.51.100.10", "198.51.100.10")}) {
		t.Errorf("VIP filter %+v", vf)
	}
	if !df.Equal(ring.Filter{SrcAddrs: d.MasqRIPs, ICMP: true}) || vf.Equal(df) {
		t.Errorf("DIP filter %+v", df)
	}
}

func TestARPAddrs(t *testing.T) {
	d := Derive(tableFrom(t, mixedRules), "vip0", "dip0")
	onHost := map[netip.Addr]bool{netip.MustParseAddr("203.0.113.5"): true}
	has := func(a netip.Addr) bool { return onHost[a] }
	never := func(netip.Addr) bool { return false }
	if got, want := d.ARPAddrs(ARPAuto, has, never), addrs("198.51.100.10"); !slices.Equal(got, want) {
		t.Errorf("auto: ARP addrs %v, want %v (a VIP held by the host is the kernel's to answer)", got, want)
	}
	// Held earlier (keepalived's master, since demoted): the host's, even
	// gone.
	held := func(a netip.Addr) bool { return a == netip.MustParseAddr("198.51.100.10") }
	if got := d.ARPAddrs(ARPAuto, never, held); !slices.Equal(got, addrs("203.0.113.5")) {
		t.Errorf("auto, 198.51.100.10 held before: %v, want only 203.0.113.5", got)
	}
	if got := d.ARPAddrs(ARPOn, has, held); !slices.Equal(got, d.VIPs) {
		t.Errorf("on: %v, want every VIP %v", got, d.VIPs)
	}
	if got := d.ARPAddrs(ARPOff, never, never); len(got) != 0 {
		t.Errorf("off: %v, want none", got)
	}
	for _, m := range []ARPMode{ARPAuto, ARPOn, ARPOff} {
		if got, err := ParseARPMode(m.String()); got != m || err != nil {
			t.Errorf("ParseARPMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseARPMode("yes"); err == nil {
		t.Error("ParseARPMode accepted yes")
	}
}

func TestDiffAddrs(t *testing.T) {
	got := diffAddrs(addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"), addrs("10.0.0.2", "10.0.0.4"))
	if want := addrs("10.0.0.1", "10.0.0.3"); !slices.Equal(got, want) {
		t.Errorf("diff %v", got)
	}
	if diffAddrs(nil, addrs("10.0.0.1")) != nil {
		t.Error("nothing removed")
	}
}

// TestDeriveIngressMatchesLookup: the VIP-side drops cover exactly the
// packets the pipeline takes for a VIP: those for which the service lookup
// (with its FTP and port-zero fallbacks) finds a service. Every protocol
// and port of every VIP is checked against ipvs.Table.Lookup.
func TestDeriveIngressMatchesLookup(t *testing.T) {
	const rules = `
-A -t 198.51.100.10:21 -s rr -p 300
-a -t 198.51.100.10:21 -r 198.18.2.11:21 -g
-A -t 198.51.100.11:21 -s rr
-a -t 198.51.100.11:21 -r 198.18.2.11:21 -g
-A -t 198.51.100.11:80 -s rr
-a -t 198.51.100.11:80 -r 198.18.2.12:80 -g
-A -u 198.51.100.12:21 -s rr
-a -u 198.51.100.12:21 -r 198.18.2.11:21 -g
-A -t 198.51.100.13:0 -s rr -p 60
-a -t 198.51.100.13:0 -r 198.18.2.11:0 -g
-A -t 198.51.100.13:21 -s rr
-a -t 198.51.100.13:21 -r 198.18.2.11:21 -g
-A -u 198.51.100.14:0 -s rr -p 60
-a -u 198.51.100.14:0 -r 198.18.2.11:0 -g
`
	tb := tableFrom(t, rules)
	d := Derive(tb, "vip0", "dip0")
	for _, r := range d.Ingress {
		if err := r.Validate(); err != nil {
			t.Errorf("%v: %v", r, err)
		}
	}
	dropped := func(vip netip.Addr, proto ipvs.Protocol, port uint16) bool {
		for _, r := range d.Ingress {
			if r.Interface != "vip0" || r.Dir != kernel.MatchDst || r.Addr != vip || r.Frags {
				continue // (fragments after the first carry no port)
			}
			switch {
			case r.Proto == 0:
				return true
			case r.Proto != proto:
			case r.Port == 0:
				return true
			case r.PortMax == 0 && r.Port == port:
				return true
			case r.PortMax != 0 && port >= r.Port && port <= r.PortMax:
				return true
			}
		}
		return false
	}
	for _, vip := range d.VIPs {
		for _, proto := range []ipvs.Protocol{ipvs.ProtoTCP, ipvs.ProtoUDP, protoSCTP} {
			bad := 0
			for p := 0; p <= 65535; p++ {
				port := uint16(p)
				want := tb.Lookup(proto, vip, port, 0) != nil
				if got := dropped(vip, proto, port); got != want {
					if bad++; bad <= 3 {
						t.Errorf("%v %v port %d: dropped at ingress=%v, pipeline takes it=%v", vip, proto, port, got, want)
					}
				}
			}
		}
	}
}

const protoSCTP ipvs.Protocol = 132
