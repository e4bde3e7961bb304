package control

import (
	"context"
	"sync"
	"time"

	"gvs/ipvs"
)

// EstimatorInterval is how often the rate estimator samples the counters,
// as IPVS's estimator does (ip_vs_est.c: every 2 seconds).
const EstimatorInterval = 2 * time.Second

// Fixed-point scales of the averages, as in ip_vs_est.c: connection and
// packet rates are kept in units of 2^-10 per second, byte rates in 2^-5.
// A sample's difference over the 2 s interval is shifted left by one less
// (9 and 4), which divides it by the interval.
const (
	countShift = 9
	byteShift  = 4
	// maxDiff bounds one interval's difference so the shift cannot overflow.
	maxDiff = 1 << 50
)

// numRates are the estimated values: conns, in packets, out packets, in
// bytes, out bytes (the first three are counts, the last two bytes).
const numRates = 5

// estState is the estimator of one service or destination
// (struct ip_vs_estimator).
type estState struct {
	last [numRates]uint64 // counters at the previous sample
	avg  [numRates]int64  // scaled moving averages
	gen  uint64           // the tick that last saw the object
}

func totals(t ipvs.Totals) [numRates]uint64 {
	return [numRates]uint64{t.Conns, t.InPkts, t.OutPkts, t.InBytes, t.OutBytes}
}

// sample folds one interval into the averages: avg += (rate - avg) / 4.
func (s *estState) sample(cur [numRates]uint64) {
	for i := range cur {
		var diff int64
		if cur[i] > s.last[i] { // a counter that went back (zeroed) adds nothing
			diff = int64(min(cur[i]-s.last[i], maxDiff))
		}
		s.last[i] = cur[i]
		shift := countShift
		if i >= 3 {
			shift = byteShift
		}
		s.avg[i] += (diff<<shift - s.avg[i]) >> 2
	}
}

// rates is ip_vs_read_estimator: the averages rounded to whole units.
func (s *estState) rates() ipvs.Rates {
	r := func(i int) uint64 {
		if i >= 3 {
			return uint64((s.avg[i] + 0xF) >> 5)
		}
		return uint64((s.avg[i] + 0x1FF) >> 10)
	}
	return ipvs.Rates{CPS: r(0), InPPS: r(1), OutPPS: r(2), InBPS: r(3), OutBPS: r(4)}
}

// reset is ip_vs_zero_estimator: rates to zero, baseline at cur.
func (s *estState) reset(cur [numRates]uint64) {
	s.last = cur
	s.avg = [numRates]int64{}
}

// estimator holds the rate estimators of every live service and
// destination. An object is first sampled at the tick after it appears
// (its baseline is the counters at that tick), and forgotten at the first
// tick that does not find it in the table.
type estimator struct {
	mu    sync.Mutex // guards the fields below
	gen   uint64
	svcs  map[*ipvs.Service]*estState
	dests map[*ipvs.Dest]*estState
}

// observe samples one object, creating its estimator on first sight.
func observe[K comparable](m map[K]*estState, k K, cur [numRates]uint64, gen uint64) {
	s := m[k]
	if s == nil {
		m[k] = &estState{last: cur, gen: gen}
		return
	}
	s.sample(cur)
	s.gen = gen
}

// tick samples every service and destination of svcs.
func (es *estimator) tick(svcs []*ipvs.Service) {
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.svcs == nil {
		es.svcs = map[*ipvs.Service]*estState{}
		es.dests = map[*ipvs.Dest]*estState{}
	}
	es.gen++
	for _, svc := range svcs {
		observe(es.svcs, svc, totals(svc.Stats.Sum()), es.gen)
		for _, d := range svc.Dests() {
			observe(es.dests, d, totals(d.Stats.Sum()), es.gen)
		}
	}
	for k, s := range es.svcs {
		if s.gen != es.gen {
			delete(es.svcs, k)
		}
	}
	for k, s := range es.dests {
		if s.gen != es.gen {
			delete(es.dests, k)
		}
	}
}

func (es *estimator) svcRates(svc *ipvs.Service) ipvs.Rates {
	es.mu.Lock()
	defer es.mu.Unlock()
	if s := es.svcs[svc]; s != nil {
		return s.rates()
	}
	return ipvs.Rates{}
}

func (es *estimator) destRates(d *ipvs.Dest) ipvs.Rates {
	es.mu.Lock()
	defer es.mu.Unlock()
	if s := es.dests[d]; s != nil {
		return s.rates()
	}
	return ipvs.Rates{}
}

// zeroService resets the estimators of svc and its destinations (-Z -t ...).
func (es *estimator) zeroService(svc *ipvs.Service) {
	es.mu.Lock()
	defer es.mu.Unlock()
	if s := es.svcs[svc]; s != nil {
		s.reset(totals(svc.Stats.Sum()))
	}
	for _, d := range svc.Dests() {
		if s := es.dests[d]; s != nil {
			s.reset(totals(d.Stats.Sum()))
		}
	}
}

// zeroAll resets every estimator (-Z).
func (es *estimator) zeroAll() {
	es.mu.Lock()
	defer es.mu.Unlock()
	for svc, s := range es.svcs {
		s.reset(totals(svc.Stats.Sum()))
	}
	for d, s := range es.dests {
		s.reset(totals(d.Stats.Sum()))
	}
}

// TickEstimator takes one rate sample of every service and destination, as
// IPVS's estimator timer does every EstimatorInterval. RunEstimator calls
// it; tests call it directly to step time.
func (e *Engine) TickEstimator() {
	e.Table.Read(e.est.tick)
}

// RunEstimator calls TickEstimator every EstimatorInterval until ctx is
// done, and returns ctx.Err().
func (e *Engine) RunEstimator(ctx context.Context) error {
	t := time.NewTicker(EstimatorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			e.TickEstimator()
		}
	}
}
