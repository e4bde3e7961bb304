package scheduler

import (
	"math/rand/v2"
	"sync/atomic"

	"gvs/ipvs"
)

// twos is power-of-two-choices over weights (ip_vs_twos.c): draw two
// numbers in [0, total] where total is the sum of the usable weights; walk
// the list subtracting weights, the destinations where each number reaches
// <= 0 are choice1 and choice2; return choice2 if it is less loaded
// (weight2*overhead1 > weight1*overhead2), else choice1.
//
// The random numbers come from math/rand/v2's global generator, which is
// safe for concurrent use and does not allocate.
type twos struct {
	// rnd returns a uniform number in [0, n); tests replace it.
	rnd func(n uint32) uint32
}

func newTwos() *twos { return &twos{rnd: rand.Uint32N} }

// newSeededTwos draws from a splitmix64 sequence on an atomic counter: lock-free,
// allocation-free, and reproducible when one goroutine schedules (replays).
func newSeededTwos(seed uint64) *twos {
	state := new(atomic.Uint64)
	state.Store(seed)
	return &twos{rnd: func(n uint32) uint32 {
		z := state.Add(0x9e3779b97f4a7c15)
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		z ^= z >> 31
		return uint32((z >> 32) * uint64(n) >> 32)
	}}
}

func (*twos) Name() string         { return "twos" }
func (*twos) Update(*ipvs.Service) {}

func (s *twos) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	ds := svc.Dests()
	var total int64
	for _, d := range ds {
		if d.Usable() {
			total += int64(d.Weight())
		}
	}
	if total == 0 {
		return nil
	}
	// total+1 so that the draws are in [0, total] inclusive, as the kernel
	// does. total <= n*65535 fits in uint32 for any realistic n; clamp.
	span := uint32(min(total+1, 1<<32-1))
	r1, r2 := int64(s.rnd(span)), int64(s.rnd(span))
	var c1, c2 *ipvs.Dest
	var w1, w2, oh1, oh2 int64
	for _, d := range ds {
		if !d.Usable() {
			continue
		}
		w := int64(d.Weight())
		r1 -= w
		r2 -= w
		if c1 == nil && r1 <= 0 {
			c1, w1, oh1 = d, w, d.Overhead()
		}
		if c2 == nil && r2 <= 0 {
			c2, w2, oh2 = d, w, d.Overhead()
		}
		if c1 != nil && c2 != nil {
			break
		}
	}
	if c1 == nil {
		// Weights dropped between the two scans; nothing is due.
		return c2
	}
	if c2 != nil && w2*oh1 > w1*oh2 {
		return c2
	}
	return c1
}
