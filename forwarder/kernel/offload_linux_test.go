//go:build linux

package kernel

import (
	"errors"
	"slices"
	"testing"

	"github.com/safchain/ethtool"
)

func TestDisableGROInNetNS(t *testing.T) {
	requireNetNS(t)
	a, b := newNS(t, "oa"), newNS(t, "ob")
	vethPair(t, a, "a0", "198.18.0.1/24", b, "b0", "198.18.0.2/24")
	a.do(t, func() {
		e, err := ethtool.NewEthtool()
		if err != nil {
			t.Fatalf("ethtool: %v", err)
		}
		defer e.Close()
		st, err := e.FeaturesWithState("a0")
		if err != nil {
			t.Fatalf("features: %v", err)
		}
		for _, f := range groFeatures {
			t.Logf("before: %s %+v", f, st[f])
		}
		// veth can switch GRO; make sure it is on so there is something to do.
		if !st["rx-gro"].Available {
			t.Skip("this kernel's veth cannot change rx-gro")
		}
		if err := e.Change("a0", map[string]bool{"rx-gro": true}); err != nil {
			t.Fatalf("enabling rx-gro: %v", err)
		}

		changed, err := DisableGRO("a0")
		if err != nil && !errors.Is(err, ErrOffloadStuck) {
			t.Fatalf("DisableGRO: %v", err)
		}
		if !slices.Contains(changed, "rx-gro") {
			t.Errorf("changed = %q, want it to contain rx-gro", changed)
		}
		after, err := e.Features("a0")
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range groFeatures {
			if after[f] {
				t.Errorf("%s still on after DisableGRO (err %v)", f, err)
			}
		}

		// Idempotent: nothing left to change, no error.
		changed, err = DisableGRO("a0")
		if err != nil || len(changed) != 0 {
			t.Errorf("second DisableGRO = %q, %v; want nothing, nil", changed, err)
		}

		if _, err := DisableGRO("nosuch0"); err == nil {
			t.Error("DisableGRO on a missing interface succeeded")
		}
	})
}
