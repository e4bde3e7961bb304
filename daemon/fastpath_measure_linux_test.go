//go:build measure

package daemon_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safchain/ethtool"

	"gvs/internal/lab"
)

// serviceUDP53Pkts is the UDP :53 service's InPkts+OutPkts (-Ln --stats):
// counts the fast path's packets too (folded every 100 ms).
func serviceUDP53Pkts(t *testing.T, ctx context.Context, d *director) uint64 {
	t.Helper()
	stats, err := d.l.Run(ctx, d.l.Director().NS, adminBin, "-Ln", "--stats", "--exact")
	if err != nil {
		t.Fatalf("%v: %s", err, stats)
	}
	for _, line := range strings.Split(stats, "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == "UDP" && strings.HasSuffix(f[1], ":53") {
			in, _ := strconv.ParseUint(f[3], 10, 64)
			out, _ := strconv.ParseUint(f[4], 10, 64)
			return in + out
		}
	}
	t.Fatalf("no UDP :53 service in\n%s", stats)
	return 0
}

// go test -tags measure -run TestMeasureFastPath -v ./daemon/ : CPU per
// forwarded packet of gvsd --io afxdp with and without --xdp-fastpath
// (NAT, UDP echo at RATE requests/s, 1024 flows). GRO is on on the
// director's veth peers in both (the fast path needs it).
//
// METHOD=tun measures TUN instead: the same datagrams encapsulated for
// one real server (which drops them: no decapsulator runs, the director's
// work is what is measured; replies do not pass the director in TUN).
func TestMeasureFastPath(t *testing.T) {
	lab.Require(t)
	rate := 30000.0
	if v := os.Getenv("RATE"); v != "" {
		rate, _ = strconv.ParseFloat(v, 64)
	}
	rules := natRules
	if os.Getenv("METHOD") == "tun" {
		rules = func(vip string) string {
			return fmt.Sprintf("-A -u %[1]s:53 -s rr\n-a -u %[1]s:53 -r 198.18.2.11 -i\n", vip)
		}
	}
	ctx := context.Background()
	benchBin, err := lab.Build(ctx, t.TempDir(), "gvs/cmd/gvs-bench")
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		for _, fast := range []bool{false, true} {
			args := []string{"--xdp-mode", "native"}
			if fast {
				args = append(args, "--xdp-fastpath")
			}
			d := startXDPDirector(t, ctx, lab.Options{}, rules, func(d *director) {
				for _, name := range []string{"dv-" + d.l.Suffix(), "dd-" + d.l.Suffix()} {
					err := lab.Do(d.l.BridgeNS(), func() error {
						e, err := ethtool.NewEthtool()
						if err != nil {
							return err
						}
						defer e.Close()
						return e.Change(name, map[string]bool{"rx-gro": true})
					})
					if err != nil {
						t.Fatal(err)
					}
				}
			}, args...)
			if os.Getenv("METHOD") != "tun" {
				udpEcho(t, ctx, d, 53, "warm") // TUN: no answer without a decapsulator
			}
			c := d.l.Clients()[0]
			gen, err := d.l.Start(c.NS, benchBin, "gen", "-dev", lab.ClientIf, "-rate", fmt.Sprint(rate),
				"-src-mac", c.MAC.String(), "-dst-mac", d.l.Director().VIPSide.MAC.String(),
				"-src", c.Addr().String(), "-dst", d.l.VIP().String(), "-sport-lo", "1024", "-sport-hi", "2047", "-dport", "53")
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			p0, rx0, s0 := serviceUDP53Pkts(t, ctx, d), lastRX(d.gvsd.Output()), schedNS(d.gvsd.Pid())
			b0, si0 := cpuBusy()
			t0 := time.Now()
			time.Sleep(8 * time.Second)
			p1, rx1, s1 := serviceUDP53Pkts(t, ctx, d), lastRX(d.gvsd.Output()), schedNS(d.gvsd.Pid())
			b1, si1 := cpuBusy()
			el := time.Since(t0)
			gen.Stop()
			la, _ := os.ReadFile("/proc/loadavg")
			pk := float64(p1 - p0)
			hz := 100.0
			t.Logf("fastpath=%v round=%d forwarded=%.0f pps (gvsd's sockets %.0f pps) gvsd=%.2f µs/pkt all-CPU busy=%.2f µs/pkt softirq=%.2f µs/pkt (window %v, loadavg %s)",
				fast, round, pk/el.Seconds(), float64(rx1-rx0)/el.Seconds(), float64(s1-s0)/pk/1000,
				float64(b1-b0)/hz*1e6/pk, float64(si1-si0)/hz*1e6/pk, el.Round(time.Millisecond), strings.TrimSpace(string(la)))
			stopAndCheck(t, d)
			d.l.Close()
		}
	}
}

func lastRX(out string) uint64 {
	i := strings.LastIndex(out, `"msg":"stats"`)
	if i < 0 {
		return 0
	}
	_, rest, _ := strings.Cut(out[i:], `"rx":`)
	v, _, _ := strings.Cut(rest, ",")
	n, _ := strconv.ParseUint(v, 10, 64)
	return n
}
