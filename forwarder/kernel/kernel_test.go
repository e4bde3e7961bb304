package kernel

import (
	"errors"
	"net/netip"
	"testing"

	"gvs/ipvs"
)

func TestIngressRuleValidate(t *testing.T) {
	v4 := netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		name string
		r    IngressRule
		ok   bool
	}{
		{"addr only", IngressRule{Interface: "eth0", Addr: v4}, true},
		{"addr proto", IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoTCP}, true},
		{"addr proto port", IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoUDP, Port: 53}, true},
		{"sctp port", IngressRule{Interface: "eth0", Addr: v4, Proto: protoSCTP, Port: 80}, true},
		{"icmp no port", IngressRule{Interface: "eth0", Dir: MatchSrc, Addr: v4, Proto: ipvs.ProtoICMP}, true},
		{"v4-mapped", IngressRule{Interface: "eth0", Addr: netip.AddrFrom16(v4.As16())}, true},
		{"15-char name", IngressRule{Interface: "abcdefghijklmno", Addr: v4}, true},
		{"no interface", IngressRule{Addr: v4}, false},
		{"16-char name", IngressRule{Interface: "abcdefghijklmnop", Addr: v4}, false},
		{"bad direction", IngressRule{Interface: "eth0", Dir: 7, Addr: v4}, false},
		{"ipv6", IngressRule{Interface: "eth0", Addr: netip.MustParseAddr("2001:db8::1")}, false},
		{"zero addr", IngressRule{Interface: "eth0"}, false},
		{"port without proto", IngressRule{Interface: "eth0", Addr: v4, Port: 80}, false},
		{"port with icmp", IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoICMP, Port: 80}, false},
		{"port range", IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoTCP, Port: 1024, PortMax: 65535}, true},
		{"range from 0", IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoTCP, PortMax: 1023}, false},
		{"empty range", IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoTCP, Port: 80, PortMax: 80}, false},
		{"reversed range", IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoTCP, Port: 80, PortMax: 79}, false},
		{"range without proto", IngressRule{Interface: "eth0", Addr: v4, Port: 1, PortMax: 2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tt.r, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errInvalidRule) {
				t.Errorf("error %v does not wrap errInvalidRule", err)
			}
		})
	}
}

func TestIngressRuleString(t *testing.T) {
	v4 := netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		r    IngressRule
		want string
	}{
		{IngressRule{Interface: "eth0", Addr: v4}, "eth0: ip daddr 198.51.100.1 drop"},
		{IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoTCP, Port: 80}, "eth0: ip daddr 198.51.100.1 tcp dport 80 drop"},
		{IngressRule{Interface: "eth1", Dir: MatchSrc, Addr: v4, Proto: ipvs.ProtoUDP, Port: 53}, "eth1: ip saddr 198.51.100.1 udp sport 53 drop"},
		{IngressRule{Interface: "eth1", Dir: MatchSrc, Addr: v4, Proto: 47}, "eth1: ip saddr 198.51.100.1 l4proto 47 drop"},
		{IngressRule{Interface: "eth0", Addr: v4, Proto: ipvs.ProtoTCP, Port: 1024, PortMax: 65535}, "eth0: ip daddr 198.51.100.1 tcp dport 1024-65535 drop"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestTableName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"@gvsd", "gvs_gvsd"},
		{"gvsd", "gvs_gvsd"},
		{"@gvsd/a b.c", "gvs_gvsd_a_b_c"},
		{"", "gvs_"},
		{"@" + string(make([]byte, 100)), "gvs_" + string(repeat('_', 60))},
	}
	for _, tt := range tests {
		if got := TableName(tt.in); got != tt.want {
			t.Errorf("TableName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func repeat(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
