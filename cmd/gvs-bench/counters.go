package main

// Per-trial drop counters beyond the interfaces' rx/tx_dropped (linkDrops):
// the drivers' own counters (ethtool -S) of the director's interfaces and
// of their veth peers on the bridges, and the kernel's per-CPU softnet
// counters. They tell where a frame a trial lost was dropped: veth's XDP
// ring (the peer's xmit), a failed XDP redirect (an AF_XDP socket's ring,
// the egress device), the input backlog, a NAPI poll out of budget.

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/safchain/ethtool"

	"gvs/internal/lab"
)

// dropCounterKey reports whether an ethtool statistic is a drop, error or
// overflow count (the ones worth printing when they grow).
func dropCounterKey(k string) bool {
	for _, s := range []string{"drop", "err", "full", "fail", "xdp_redirect", "xdp_tx"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// driverCounters reads ethtool -S of the director's interfaces and of
// their bridge peers, keyed "interface:statistic" (drop-like ones only).
func (b *bench) driverCounters() map[string]uint64 {
	m := map[string]uint64{}
	read := func(ns string, ifs []string) {
		_ = lab.Do(ns, func() error {
			e, err := ethtool.NewEthtool()
			if err != nil {
				return err
			}
			defer e.Close()
			for _, ifn := range ifs {
				st, err := e.Stats(ifn)
				if err != nil {
					continue
				}
				for k, v := range st {
					if dropCounterKey(k) {
						m[ifn+":"+k] = v
					}
				}
			}
			return nil
		})
	}
	read(b.dir.NS, []string{lab.DirectorVIPIf, lab.DirectorDIPIf})
	read(b.l.BridgeNS(), b.peerPorts())
	return m
}

// softnet is /proc/net/softnet_stat per CPU: processed, dropped (input
// backlog full), time_squeeze (a NAPI round out of budget or time).
type softnet struct{ processed, dropped, squeezed uint64 }

func readSoftnet() []softnet {
	f, err := os.Open("/proc/net/softnet_stat")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []softnet
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 {
			continue
		}
		var v [3]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(fs[i], 16, 64)
		}
		out = append(out, softnet{v[0], v[1], v[2]})
	}
	return out
}

// trialCounters is what counterDelta compares.
type trialCounters struct {
	drv     map[string]uint64
	softnet []softnet
}

func (b *bench) trialCounters() trialCounters {
	return trialCounters{drv: b.driverCounters(), softnet: readSoftnet()}
}

// counterDelta lists the driver counters that grew and the softnet drops
// and squeezes per CPU between a and c ("" when none).
func counterDelta(a, c trialCounters) string {
	var out []string
	for k, v := range c.drv {
		if o, ok := a.drv[k]; ok && v > o {
			out = append(out, fmt.Sprintf("%s+%d", k, v-o))
		}
	}
	slices.Sort(out)
	for i := range min(len(a.softnet), len(c.softnet)) {
		d, s := c.softnet[i].dropped-a.softnet[i].dropped, c.softnet[i].squeezed-a.softnet[i].squeezed
		if d > 0 || s > 0 {
			out = append(out, fmt.Sprintf("softnet cpu%d dropped+%d time_squeeze+%d", i, d, s))
		}
	}
	return strings.Join(out, "; ")
}
