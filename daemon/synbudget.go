package daemon

import (
	"encoding/binary"
	"math/rand/v2"
	"time"
)

// DefaultSYNRate is the default per-source budget of new connections a
// second (gvsd --syn-rate): above what this director was measured to
// accept from all clients together (about 16k connections a second, see
// docs/PERFORMANCE.md), so a legitimate single source (a NAT gateway, a
// proxy) is not held back, while one flooding source gets at most this
// share of the workers' time for SYNs.
const DefaultSYNRate = 20000

// synBudgetSlots is the size of a worker's budget table (a power of two).
// Sources are hashed (with a per-worker random key) into it: sources that
// share a slot share a budget; with a few flooding sources, the chance
// that a given other source shares one's slot is 1 in synBudgetSlots.
const synBudgetSlots = 4096

// synBudgetBurst is how far ahead of its rate a source may go: a burst of
// this much time's worth of its budget passes at once.
const synBudgetBurst = 100 * time.Millisecond

// synBudget is a worker's per-source budget of connection openings: a
// token bucket per slot of a fixed table, each kept as the theoretical
// arrival time of the next opening (GCRA). Only its worker uses it; it
// does not allocate.
type synBudget struct {
	interval int64 // ns between two openings of one source; 0: no budget
	tau      int64 // how far the arrival time may run ahead of now
	key      uint32
	tat      []int64
}

// setRate gives the budget rate openings a second per source for one of
// workers workers (the fanout hash spreads a source's connections over
// all of them). rate <= 0 removes the budget.
func (b *synBudget) setRate(rate, workers int) {
	if rate <= 0 {
		b.interval, b.tat = 0, nil
		return
	}
	per := max(float64(rate)/float64(max(workers, 1)), 1e-3)
	b.interval = int64(float64(time.Second) / per)
	b.tau = max(int64(synBudgetBurst)-b.interval, 0)
	b.key = rand.Uint32()
	b.tat = make([]int64, synBudgetSlots)
}

// allow reports whether the opening in frame (an Ethernet frame with an
// IPv4 packet, possibly with one VLAN tag in the data: the SYN ring's
// filter guarantees it) fits its source's budget at now, and takes it.
func (b *synBudget) allow(frame []byte, now int64) bool {
	if b.interval == 0 {
		return true
	}
	l3 := 14
	if len(frame) >= 18 {
		if et := binary.BigEndian.Uint16(frame[12:]); et == 0x8100 || et == 0x88a8 {
			l3 = 18
		}
	}
	if len(frame) < l3+16 {
		return true // not an IPv4 packet: the pipeline drops it
	}
	src := binary.BigEndian.Uint32(frame[l3+12:])
	slot := &b.tat[mix32(src^b.key)&(synBudgetSlots-1)]
	tat := max(*slot, now)
	if tat-now > b.tau {
		return false
	}
	*slot = tat + b.interval
	return true
}

// mix32 is MurmurHash3's 32-bit finalizer: every input bit affects every
// output bit.
func mix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
