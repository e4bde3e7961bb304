package lab

import (
	"fmt"
	"slices"
	"strings"

	"github.com/safchain/ethtool"
)

// offloadFeature reports whether an ethtool feature name is one that
// DisableOffloads turns off: every tx checksum offload ("ethtool -K tx off"),
// TCP segmentation offload ("tso off"), UDP segmentation offload and
// generic segmentation offload ("gso off").
func offloadFeature(name string) bool {
	switch {
	case strings.HasPrefix(name, "tx-checksum-"):
		return true
	case strings.HasPrefix(name, "tx-tcp") && strings.HasSuffix(name, "-segmentation"):
		return true
	case name == "tx-udp-segmentation", name == "tx-generic-segmentation":
		return true
	}
	return false
}

// DisableOffloads turns off tx checksum offload, TSO and GSO on interface
// ifname in namespace ns, like `ethtool -K IF tx off tso off gso off`, through
// the ethtool ioctl (no ethtool binary needed), and checks that they are off.
//
// Why the lab does this on every sender (PACKET-IO.md §5.3): over veth, a
// sender with tx checksumming on hands over CHECKSUM_PARTIAL skbs whose L4
// checksum holds only the pseudo-header sum; AF_PACKET shows them to gvsd
// with TP_STATUS_CSUMNOTREADY, and forwarded as they are they arrive at the
// real server with bad checksums. With TSO/GSO on, a sender passes
// super-frames of up to 64 KiB, which gvsd cannot transmit on a 1500-byte
// MTU (EMSGSIZE). Real NICs deliver complete, MTU-sized frames; this makes
// the veths behave the same way.
func DisableOffloads(ns, ifname string) error {
	return withFeatures(ns, ifname, func(e *ethtool.Ethtool, feats map[string]bool) error {
		change := map[string]bool{}
		for name, on := range feats {
			if on && offloadFeature(name) {
				change[name] = false
			}
		}
		if len(change) == 0 {
			return nil
		}
		if err := e.Change(ifname, change); err != nil {
			return fmt.Errorf("ethtool -K %s (in %s) %v: %w", ifname, ns, change, err)
		}
		after, err := e.Features(ifname)
		if err != nil {
			return fmt.Errorf("ethtool features of %s in %s: %w", ifname, ns, err)
		}
		var still []string
		for name := range change {
			if after[name] {
				still = append(still, name)
			}
		}
		if len(still) > 0 {
			slices.Sort(still)
			return fmt.Errorf("%s in %s: offloads still on: %s", ifname, ns, strings.Join(still, ", "))
		}
		return nil
	})
}

// Offloads returns the ethtool features of ifname in ns that
// DisableOffloads manages, with their current state.
func Offloads(ns, ifname string) (map[string]bool, error) {
	m := map[string]bool{}
	err := withFeatures(ns, ifname, func(_ *ethtool.Ethtool, feats map[string]bool) error {
		for name, on := range feats {
			if offloadFeature(name) {
				m[name] = on
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// withFeatures runs fn inside namespace ns with an ethtool handle and the
// current features of ifname.
func withFeatures(ns, ifname string, fn func(e *ethtool.Ethtool, feats map[string]bool) error) error {
	return Do(ns, func() error {
		e, err := ethtool.NewEthtool()
		if err != nil {
			return fmt.Errorf("ethtool: %w", err)
		}
		defer e.Close()
		feats, err := e.Features(ifname)
		if err != nil {
			return fmt.Errorf("ethtool features of %s in %s: %w", ifname, ns, err)
		}
		return fn(e, feats)
	})
}
