package daemon

import (
	"fmt"
	"slices"
	"testing"

	"gvs/forwarder/xdp"
)

// TestXDPRules: the XDP programs' rules follow the ingress drops, port
// ranges included, and a drop of fragments (Frags) stays a fragment rule:
// as a port-0 rule it would redirect every port of the protocol on a VIP
// (the host's own services on it too), which the worker then drops.
func TestXDPRules(t *testing.T) {
	d := Derive(tableFrom(t, mixedRules), "vip0", "dip0")
	str := func(rs []xdp.Rule) []string {
		var out []string
		for _, r := range rs {
			s := fmt.Sprintf("dst=%v frags=%v %v proto %d port %d", r.Dst, r.Frags, r.Addr, r.Proto, r.Port)
			if r.PortMax != 0 {
				s += fmt.Sprintf("-%d", r.PortMax)
			}
			out = append(out, s)
		}
		slices.Sort(out)
		return out
	}
	rules := xdpRules(&d, "dip0")
	wantVIP := []string{
		"dst=true frags=false 198.51.100.10 proto 1 port 0",
		"dst=true frags=false 198.51.100.10 proto 17 port 53",
		"dst=true frags=false 198.51.100.10 proto 6 port 80",
		"dst=true frags=false 203.0.113.5 proto 1 port 0",
		"dst=true frags=false 203.0.113.5 proto 6 port 443",
		"dst=true frags=true 198.51.100.10 proto 17 port 0",
		"dst=true frags=true 198.51.100.10 proto 6 port 0",
		"dst=true frags=true 203.0.113.5 proto 6 port 0",
	}
	wantDIP := []string{
		"dst=false frags=false 198.18.2.11 proto 17 port 5353",
		"dst=false frags=false 198.18.2.11 proto 6 port 8080",
		"dst=false frags=false 198.18.2.12 proto 6 port 8080",
		"dst=false frags=false 198.18.2.14 proto 17 port 0", // fwmark: any port
		"dst=false frags=false 198.18.2.14 proto 6 port 0",
		"dst=false frags=true 198.18.2.11 proto 17 port 0",
		"dst=false frags=true 198.18.2.11 proto 6 port 0",
		"dst=false frags=true 198.18.2.12 proto 6 port 0",
		"dst=false frags=true 198.18.2.14 proto 17 port 0",
		"dst=false frags=true 198.18.2.14 proto 6 port 0",
	}
	if got := str(rules[0]); !slices.Equal(got, wantVIP) {
		t.Errorf("VIP side\n got %q\nwant %q", got, wantVIP)
	}
	if got := str(rules[1]); !slices.Equal(got, wantDIP) {
		t.Errorf("DIP side\n got %q\nwant %q", got, wantDIP)
	}
	// One arm: everything on one program.
	d1 := Derive(tableFrom(t, mixedRules), "eth0", "eth0")
	one := xdpRules(&d1, "")
	if len(one[1]) != 0 || len(one[0]) != len(wantVIP)+len(wantDIP) {
		t.Errorf("one arm: %d and %d rules, want %d and 0", len(one[0]), len(one[1]), len(wantVIP)+len(wantDIP))
	}
	// A port-21 service: the FTP data ports (20, and 1024-65535, one
	// nftables range) stay a range, not its first port.
	ftp := Derive(tableFrom(t, `
-A -t 198.51.100.21:21 -s rr -p 300
-a -t 198.51.100.21:21 -r 198.18.2.11 -m
`), "vip0", "dip0")
	wantFTP := []string{
		"dst=true frags=false 198.51.100.21 proto 1 port 0",
		"dst=true frags=false 198.51.100.21 proto 6 port 1024-65535",
		"dst=true frags=false 198.51.100.21 proto 6 port 20",
		"dst=true frags=false 198.51.100.21 proto 6 port 21",
		"dst=true frags=true 198.51.100.21 proto 6 port 0",
	}
	if got := str(xdpRules(&ftp, "dip0")[0]); !slices.Equal(got, wantFTP) {
		t.Errorf("FTP service, VIP side\n got %q\nwant %q", got, wantFTP)
	}
}
