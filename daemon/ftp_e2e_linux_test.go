package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gvs/internal/lab"
)

// TestFTPDataPorts: a persistent FTP service (TCP port 21, DR: IPVS's FTP
// without the NAT helper) takes its data connections, to the VIP's ports
// 1024-65535 (passive mode), through the service lookup's FTP fallback: a
// GET to VIP:8080 reaches the real server's port 8080, alike on TPACKET
// and AF_XDP (where the XDP program must redirect the whole port range,
// not its first port). NAT is not here: under AF_XDP the real server's
// replies from a data port have no rule on the DIP side (the FTP helper
// for NAT is not implemented either).
func TestFTPDataPorts(t *testing.T) {
	lab.Require(t)
	cases := []struct {
		method string
		opts   lab.Options
		dest   string
	}{
		{"dr", lab.Options{VIPOnServers: true, ClientLegOnServers: true}, "198.18.2.11 -g"},
	}
	for _, c := range cases {
		rules := func(vip string) string {
			return fmt.Sprintf("-A -t %[1]s:21 -s rr -p 300\n-a -t %[1]s:21 -r %[2]s\n", vip, c.dest)
		}
		for _, io := range []string{"tpacket", "afxdp"} {
			t.Run(c.method+"/"+io, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
				defer cancel()
				var d *director
				if io == "tpacket" {
					d = startDirector(t, ctx, c.opts, rules)
				} else {
					d = startXDPDirector(t, ctx, c.opts, rules, nil, "--xdp-mode", "native")
					requireXDP(t, d, "native")
				}
				ns := d.l.Clients()[0].NS
				for _, port := range []int{8080} {
					body, err := httpGet(ctx, ns, fmt.Sprintf("http://%s:%d/", d.l.VIP(), port))
					if err != nil || !strings.HasPrefix(body, "name=r1") {
						t.Errorf("GET VIP:%d (an FTP data port): %q, %v", port, body, err)
					}
				}
				stopAndCheck(t, d)
			})
		}
	}
}
