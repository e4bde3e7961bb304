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

// Sub returns t - b field by field: the counts since b was taken.
func (t Totals) Sub(b Totals) Totals {
	return Totals{Conns: t.Conns - b.Conns, InPkts: t.InPkts - b.InPkts, OutPkts: t.OutPkts - b.OutPkts,
		InBytes: t.InBytes - b.InBytes, OutBytes: t.OutBytes - b.OutBytes}
}

// Zeroing describes the last zeroing of a service's or destination's
// counters. Zeroing never writes the counters the workers increment (that
// would race with them): like IPVS's ip_vs_zero_stats, which copies kstats
// to kstats0, it moves a baseline, and ipvsadm --stats prints the sums
// minus the baseline (ip_vs_copy_stats).
type Zeroing struct {
	// Base is the counters' sums at the last zeroing (IPVS's kstats0).
	Base Totals
	// Zeroings counts the zeroings: -Z, and for a destination being taken
	// back by its service created again (ip_vs_zero_stats in
	// __ip_vs_update_dest). Each also zeroes the rate estimator's averages
	// (ip_vs_zero_estimator), not its last sample.
	Zeroings uint64
	// Incarnation is, for a service, how many times it was created (IPVS
	// allocates a new service, with a new estimator, every time); for a
	// destination, the incarnation of its service when it was added to it
	// or last zeroed for it.
	Incarnation uint64
	// Start is, for a service, its counters' sums when this incarnation
	// was created: a new IPVS service's counters (and its estimator's
	// last sample) start at zero.
	Start Totals
}

// zeroState is a service's or destination's current Zeroing, replaced
// whole under the Table's lock (never modified in place) and read with
// one atomic load.
type zeroState struct{ p atomic.Pointer[Zeroing] }

func (z *zeroState) load() Zeroing {
	if p := z.p.Load(); p != nil {
		return *p
	}
	return Zeroing{}
}

func (z *zeroState) store(v Zeroing) { z.p.Store(&v) }

// Zeroed returns the last zeroing of the service's counters.
func (s *Service) Zeroed() Zeroing { return s.zeroed.load() }

// Counts returns the service's counters since they were last zeroed (or
// since it was created): what ipvsadm --stats prints.
func (s *Service) Counts() Totals { return counts(&s.Stats, &s.zeroed) }

// Zeroed returns the last zeroing of the destination's counters.
func (d *Dest) Zeroed() Zeroing { return d.zeroed.load() }

// Counts returns the destination's counters since they were last zeroed
// (or since it was created): what ipvsadm --stats prints.
func (d *Dest) Counts() Totals { return counts(&d.Stats, &d.zeroed) }

// counts loads the baseline before summing the counters, so that a reader
// racing with a zeroing never sees a baseline above the sums it took.
func counts(c *Counters, z *zeroState) Totals {
	base := z.load().Base
	return c.Sum().Sub(base)
}

// zeroStats is ip_vs_zero_stats (control plane, under the Table's lock):
// the baseline moves to the current sums and the estimator is told to
// zero its averages. inc is the incarnation to record (see
// Zeroing.Incarnation).
func (z *zeroState) zeroStats(c *Counters, inc uint64) {
	old := z.load()
	z.store(Zeroing{Base: c.Sum(), Zeroings: old.Zeroings + 1, Incarnation: inc, Start: old.Start})
}

// zero is -Z of one service: it and its current destinations (not the
// trashed ones), as ip_vs_zero_service.
func (s *Service) zero() {
	inc := s.zeroed.load().Incarnation
	for _, d := range s.Dests() {
		d.zeroed.zeroStats(&d.Stats, d.zeroed.load().Incarnation)
	}
	s.zeroed.zeroStats(&s.Stats, inc)
}

// recreate starts a new incarnation of a service object that is reused for
// a service created again: its counters start from zero, as a new IPVS
// service's do.
func (s *Service) recreate() {
	old := s.zeroed.load()
	now := s.Stats.Sum()
	s.zeroed.store(Zeroing{Base: now, Zeroings: old.Zeroings + 1, Incarnation: old.Incarnation + 1, Start: now})
}

// Rates are per-second rates of a service or destination, as IPVS's rate
// estimator computes them: connections, packets in and out, bytes in and
// out.
type Rates struct {
	CPS, InPPS, OutPPS, InBPS, OutBPS uint64
}
