package scheduler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"gvs/ipvs"
)

// ErrUnknown is returned (wrapped) by New for a scheduler name it does not
// know. "none" (no scheduler at all) is not a scheduler either: the control
// plane handles it itself.
var ErrUnknown = errors.New("unknown scheduler")

// names lists the schedulers in ipvsadm's SCHEDULERS order, then twos.
var names = []string{
	"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
}

// Names returns the names New accepts, in ipvsadm's order.
func Names() []string {
	out := make([]string, len(names))
	copy(out, names)
	return out
}

// NewSeeded is New with a fixed seed for the schedulers that draw random
// numbers (twos), so a replay schedules the same way every time.
func NewSeeded(name string, flags ipvs.SvcFlags, seed uint64) (ipvs.Scheduler, error) {
	if name == "twos" {
		return newSeededTwos(seed), nil
	}
	return New(name, flags)
}

// New makes a scheduler for one service. An empty name means
// ipvs.DefaultScheduler (wlc). flags are the service flags; only the
// scheduler bits (ipvs.SvcSchedMask) are used, by sh and mh. Unknown names
// give an error wrapping ErrUnknown.
//
// The returned scheduler has no derived state until Update is called with
// its service; Schedule before the first Update returns nil for the
// table-driven schedulers (wrr, dh, sh, mh).
func New(name string, flags ipvs.SvcFlags) (ipvs.Scheduler, error) {
	flags &= ipvs.SvcSchedMask
	switch name {
	case "":
		return &wlc{}, nil
	case "rr":
		r := &rr{}
		r.last.Store(-1)
		return r, nil
	case "wrr":
		return &wrr{}, nil
	case "lc":
		return &lc{}, nil
	case "wlc":
		return &wlc{}, nil
	case "sed":
		return &sed{}, nil
	case "nq":
		return &nq{}, nil
	case "fo":
		return &fo{}, nil
	case "ovf":
		return &ovf{}, nil
	case "lblc":
		return newLBLC(), nil
	case "lblcr":
		return newLBLCR(), nil
	case "dh":
		return &dh{}, nil
	case "sh":
		return &sh{flags: flags}, nil
	case "mh":
		return newMH(flags, DefaultMHTableSize)
	case "twos":
		return newTwos(), nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknown, name)
}

// ExpirationSetter is implemented by the lblc and lblcr schedulers: it sets
// the cache expiration (the lblc_expiration / lblcr_expiration sysctls,
// 24 hours by default). Values <= 0 restore the default.
type ExpirationSetter interface {
	SetExpiration(d time.Duration)
}

// goldenRatio32 is the kernel's GOLDEN_RATIO_32 used by hash_32.
const goldenRatio32 = 0x61C88647

// hash32 is the kernel's hash_32(val, bits): multiply by GOLDEN_RATIO_32 and
// keep the high bits. bits must be in 1..32.
func hash32(val uint32, bits uint) uint32 {
	return (val * goldenRatio32) >> (32 - bits)
}

// fold is the kernel's addr_fold in host order: the IPv4 address as a
// number, or the XOR of the four 32-bit words of an IPv6 address.
// IPv4-mapped IPv6 addresses fold as their IPv4 address.
func fold(a netip.Addr) uint32 {
	b := a.As16()
	if a.Is4() || a.Is4In6() {
		return binary.BigEndian.Uint32(b[12:])
	}
	return binary.BigEndian.Uint32(b[0:]) ^ binary.BigEndian.Uint32(b[4:]) ^
		binary.BigEndian.Uint32(b[8:]) ^ binary.BigEndian.Uint32(b[12:])
}

// flowPort is the port sh and mh hash with the sh-port/mh-port flag: the
// source port of TCP, UDP and SCTP packets, 0 for other protocols.
func flowPort(f *ipvs.Flow) uint16 {
	switch f.Proto {
	case ipvs.ProtoTCP, ipvs.ProtoUDP, ipvs.ProtoSCTP:
		return f.SrcPort
	}
	return 0
}

// live reports whether a destination held in a precomputed table or a
// cache may be returned: usable, and not deleted since it was stored.
func live(d *ipvs.Dest) bool {
	return d.Usable() && d.Available()
}

// gcd is the greatest common divisor of two positive numbers.
func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
