package ipvs

import "sync/atomic"

// MaxWorkers bounds the number of data-path workers; each service and
// destination has one counter slot per worker, so workers count without
// sharing a cache line and readers sum the slots.
const MaxWorkers = 32

// CounterSlot is one worker's share of a service's or destination's traffic
// counters (IPVS's per-CPU ip_vs_stats). Only its worker writes it; readers
// load the atomics. It is padded to a cache line.
type CounterSlot struct {
	Conns    atomic.Uint64
	InPkts   atomic.Uint64
	OutPkts  atomic.Uint64
	InBytes  atomic.Uint64
	OutBytes atomic.Uint64
	_        [24]byte
}

// Counters is a set of per-worker counter slots.
type Counters [MaxWorkers]CounterSlot

// Totals is the sum of every worker's counters.
type Totals struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
}

// Sum adds up every worker's slot.
func (c *Counters) Sum() Totals {
	var t Totals
	for i := range c {
		s := &c[i]
		t.Conns += s.Conns.Load()
		t.InPkts += s.InPkts.Load()
		t.OutPkts += s.OutPkts.Load()
		t.InBytes += s.InBytes.Load()
		t.OutBytes += s.OutBytes.Load()
	}
	return t
}

// Reset zeroes every slot (ipvsadm -Z). Concurrent increments may survive.
func (c *Counters) Reset() {
	for i := range c {
		s := &c[i]
		s.Conns.Store(0)
		s.InPkts.Store(0)
		s.OutPkts.Store(0)
		s.InBytes.Store(0)
		s.OutBytes.Store(0)
	}
}

// Rates are per-second rates of a service or destination, as IPVS's rate
// estimator computes them: connections, packets in and out, bytes in and
// out.
type Rates struct {
	CPS, InPPS, OutPPS, InBPS, OutBPS uint64
}
