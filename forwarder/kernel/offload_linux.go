//go:build linux

package kernel

import (
	"fmt"
	"strings"

	"github.com/safchain/ethtool"
)

// groFeatures are the ethtool feature names (as `ethtool -k` prints them in
// its long form) that make the kernel hand AF_PACKET super-frames larger
// than the MTU: software GRO, LRO and hardware GRO.
var groFeatures = []string{"rx-gro", "rx-lro", "rx-gro-hw"}

// DisableGRO switches off GRO, LRO and hardware GRO on interface ifname in
// the calling goroutine's network namespace, and returns the features it
// switched off (for the log). Features the driver does not have, or that
// are already off, are skipped. A feature that is on and cannot be changed
// (fixed by the driver) gives an error wrapping ErrOffloadStuck; changed is
// valid in that case too.
func DisableGRO(ifname string) (changed []string, err error) {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return nil, fmt.Errorf("ethtool: %w", err)
	}
	defer e.Close()
	before, err := e.FeaturesWithState(ifname)
	if err != nil {
		return nil, fmt.Errorf("ethtool features of %s: %w", ifname, err)
	}
	for _, name := range groFeatures {
		st, ok := before[name]
		if !ok || !st.Active || !st.Available || st.NeverChanged {
			continue // absent, off, or fixed by the driver: found stuck below
		}
		// One feature at a time: a driver refusing one must not hide the
		// others. A refusal is found stuck below, from what the driver reports.
		_ = e.Change(ifname, map[string]bool{name: false})
	}
	after, err := e.Features(ifname)
	if err != nil {
		return nil, fmt.Errorf("ethtool features of %s: %w", ifname, err)
	}
	var stuck []string
	for _, name := range groFeatures {
		switch {
		case before[name].Active && !after[name]:
			changed = append(changed, name)
		case after[name]:
			stuck = append(stuck, name)
		}
	}
	if len(stuck) > 0 {
		return changed, fmt.Errorf("%s: %w: %s", ifname, ErrOffloadStuck, strings.Join(stuck, ", "))
	}
	return changed, nil
}
