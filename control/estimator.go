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
	// inc is, for a service, the incarnation (ipvs.Zeroing.Incarnation)
	// the state belongs to; zeros the object's Zeroings when the averages
	// were last zeroed for them.
	inc, zeros uint64
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
		if cur[i] > s.last[i] { // never negative (the counters only grow)
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

// catchUp applies the zeroings of z the state has not seen: ip_vs_zero_stats
// zeroes the averages (ip_vs_zero_estimator) and leaves the last sample,
// which the kernel's estimation keeps equal to the counters' snapshot, so
// the first sample after a -Z covers a full interval.
func (s *estState) catchUp(z ipvs.Zeroing) {
	if s.zeros != z.Zeroings {
		s.avg = [numRates]int64{}
		s.zeros = z.Zeroings
	}
}

// estimator holds the rate estimators of every service and destination.
// It samples the counters the workers increment (Counters.Sum), which only
// grow: zeroing moves a baseline the listings subtract (ipvs.Zeroing), and
// the estimator learns of it from the object.
//
// It follows IPVS's lifecycle of struct ip_vs_estimator:
//
//   - A new service or destination starts with zero averages and its
//     counters at creation as the last sample (the kernel allocates its
//     estimator zeroed, and its counters start at zero), so its first
//     sample, at the first tick that finds it, is all its traffic since it
//     was created, as if over one interval.
//   - A service that is deleted is forgotten at the first tick that does
//     not find it; created again it is new (IPVS keeps no deleted services).
//     gvs may reuse the Service object, within one interval too: its
//     incarnation (ipvs.Zeroing.Incarnation) tells.
//   - A deleted destination goes to the trash with its estimator stopped
//     (__ip_vs_del_dest: ip_vs_stop_estimator) and its state frozen; added
//     back (ip_vs_add_dest: ip_vs_start_estimator on the trashed dest) it
//     resumes from that state, so its first sample covers everything since
//     the last sample before the delete. The state is kept, through a weak
//     reference, while the Dest object lives.
//   - -Z, and a trashed destination taken back by its service created
//     again (__ip_vs_update_dest, old_svc != svc), are ip_vs_zero_stats:
//     the averages restart from zero (at once: a read between the zeroing
//     and the next tick gives zero rates), the last sample stays.
type estimator struct {
	mu    sync.Mutex // guards the fields below
	gen   uint64
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
		z := svc.Zeroed()
		s := es.svcs[svc]
		if s == nil || s.inc != z.Incarnation {
			s = &estState{last: totals(z.Start), inc: z.Incarnation, zeros: z.Zeroings}
			es.svcs[svc] = s
		}
		s.catchUp(z)
		s.sample(totals(svc.Stats.Sum()))
		s.gen = es.gen
		for _, d := range svc.Dests() {
			z := d.Zeroed()
			k := weak.Make(d)
			ds := es.dests[k]
			if ds == nil {
				ds = &estState{zeros: z.Zeroings}
				es.dests[k] = ds
			}
			ds.catchUp(z)
			ds.sample(totals(d.Stats.Sum()))
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

// svcRates is the service's rates: zero for a service not sampled yet in
// its incarnation, or zeroed since its last sample.
func (es *estimator) svcRates(svc *ipvs.Service) ipvs.Rates {
	es.mu.Lock()
	defer es.mu.Unlock()
	z := svc.Zeroed()
	if s := es.svcs[svc]; s != nil && s.inc == z.Incarnation && s.zeros == z.Zeroings {
		return s.rates()
	}
	return ipvs.Rates{}
}

// destRates is the destination's rates: zero when not sampled yet, or
// zeroed since its last sample.
func (es *estimator) destRates(d *ipvs.Dest) ipvs.Rates {
	es.mu.Lock()
	defer es.mu.Unlock()
	if s := es.dests[weak.Make(d)]; s != nil && s.zeros == d.Zeroed().Zeroings {
		return s.rates()
	}
	return ipvs.Rates{}
}

// TickEstimator takes one rate sample of every service and destination, as
// IPVS's estimator timer does every EstimatorInterval. RunEstimator calls
// it; tests call it directly to step time.
//
// While the run_estimation sysctl is 0 it does nothing, as the kernel
// suspends its estimation: the rates keep the values of the last sample
// (services and destinations added meanwhile show zero; -Z still zeroes
// them), and the first sample after run_estimation is set again covers
// the whole pause as one interval ("the first estimation after re-enable
// is not accurate", the kernel's documentation says).
func (e *Engine) TickEstimator() {
	if e.Settings != nil && e.Settings.Get(ipvs.SysRunEstimation) == 0 {
		return
	}
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
