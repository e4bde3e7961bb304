package control

import (
	"context"
	"sync"
	"time"
	"weak"

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
	// inc is, for a service, its incarnation (a number that changes when
	// the service is created again); for a destination, the incarnation of
	// its service when the destination was last sampled.
	inc uint64
}

func totals(t ipvs.Totals) [numRates]uint64 {
	return [numRates]uint64{t.Conns, t.InPkts, t.OutPkts, t.InBytes, t.OutBytes}
}

// sample folds one interval into the averages, as estimation_timer
// (ip_vs_chain_estimation in 6.2+) does: rate = diff << 9 (<< 4 for bytes),
// avg += (rate - avg) >> 2, with an arithmetic shift.
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

// wentBack reports whether any counter is below its last sample: the
// counters were zeroed (-Z, or the service was created again) since.
func (s *estState) wentBack(cur [numRates]uint64) bool {
	for i := range cur {
		if cur[i] < s.last[i] {
			return true
		}
	}
	return false
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

// reset is ip_vs_zero_estimator after gvs's -Z, which zeroes the counters
// themselves: rates to zero, baseline at cur.
func (s *estState) reset(cur [numRates]uint64) {
	s.last = cur
	s.avg = [numRates]int64{}
}

// estimator holds the rate estimators of every service and destination.
//
// It follows IPVS's lifecycle of struct ip_vs_estimator:
//
//   - A new service or destination starts with zero averages and a zero
//     baseline (the kernel allocates its estimator zeroed, and its counters
//     start at zero), so its first sample, at the first tick that finds it,
//     is all its traffic since it was created, as if over one interval.
//   - A service that is deleted is forgotten at the first tick that does
//     not find it; created again it is new (IPVS keeps no deleted services).
//     gvs may reuse the Service object and zero its counters within one
//     interval: a counter found below its baseline marks that.
//   - A deleted destination goes to the trash with its estimator stopped
//     (__ip_vs_del_dest: ip_vs_stop_estimator) and its state frozen; added
//     back (ip_vs_add_dest: ip_vs_start_estimator on the trashed dest) it
//     resumes from that state, so its first sample covers everything since
//     the last sample before the delete. The state is kept, through a weak
//     reference, while the Dest object lives.
//   - A trashed destination added to its service created again gets
//     ip_vs_zero_stats (__ip_vs_update_dest, old_svc != svc): its averages
//     restart from zero, its baseline stays.
type estimator struct {
	mu    sync.Mutex // guards the fields below
	gen   uint64
	inc   uint64 // last service incarnation handed out
	svcs  map[*ipvs.Service]*estState
	dests map[weak.Pointer[ipvs.Dest]]*estState
}

// tick samples every service and destination of svcs.
func (es *estimator) tick(svcs []*ipvs.Service) {
	es.mu.Lock()
	defer es.mu.Unlock()
	es.init()
	es.gen++
	for _, svc := range svcs {
		cur := totals(svc.Stats.Sum())
		s := es.svcs[svc]
		if s == nil || s.wentBack(cur) {
			es.inc++
			s = &estState{inc: es.inc}
			es.svcs[svc] = s
		}
		s.sample(cur)
		s.gen = es.gen
		for _, d := range svc.Dests() {
			cur := totals(d.Stats.Sum())
			k := weak.Make(d)
			ds := es.dests[k]
			switch {
			case ds == nil:
				ds = &estState{inc: s.inc}
				es.dests[k] = ds
			case ds.wentBack(cur):
				// Zeroed by -Z since the last tick (before zeroService
				// reached it): rates restart, the counters count from zero.
				*ds = estState{inc: s.inc}
			case ds.inc != s.inc:
				// ip_vs_zero_stats: averages to zero, baseline kept.
				ds.avg = [numRates]int64{}
				ds.inc = s.inc
			}
			ds.sample(cur)
			ds.gen = es.gen
		}
	}
	for k, s := range es.svcs {
		if s.gen != es.gen {
			delete(es.svcs, k)
		}
	}
	for k := range es.dests {
		if k.Value() == nil {
			delete(es.dests, k)
		}
	}
}

func (es *estimator) init() {
	if es.svcs == nil {
		es.svcs = map[*ipvs.Service]*estState{}
		es.dests = map[weak.Pointer[ipvs.Dest]]*estState{}
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
	if s := es.dests[weak.Make(d)]; s != nil {
		return s.rates()
	}
	return ipvs.Rates{}
}

// zeroService resets the estimators of svc and its destinations (-Z -t ...),
// as ip_vs_zero_service does: trashed destinations are not touched.
func (es *estimator) zeroService(svc *ipvs.Service) {
	es.mu.Lock()
	defer es.mu.Unlock()
	es.zeroLocked(svc)
}

func (es *estimator) zeroLocked(svc *ipvs.Service) {
	es.init()
	if s := es.svcs[svc]; s != nil {
		s.reset(totals(svc.Stats.Sum()))
	}
	for _, d := range svc.Dests() {
		if s := es.dests[weak.Make(d)]; s != nil {
			s.reset(totals(d.Stats.Sum()))
		}
	}
}

// zeroAll resets the estimators of every service and of their
// destinations (-Z, ip_vs_zero_all).
func (es *estimator) zeroAll() {
	es.mu.Lock()
	defer es.mu.Unlock()
	for svc := range es.svcs {
		es.zeroLocked(svc)
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
