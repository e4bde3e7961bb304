package scheduler

import (
	"sort"
	"sync"
	"sync/atomic"

	"gvs/ipvs"
)

// maxWRRSequence bounds the precomputed wrr sequence (4 MiB of int32). A
// service whose period sum(weights)/gcd is longer falls back to the
// kernel's walk under a per-service mutex.
const maxWRRSequence = 1 << 20

// wrr is interleaved weighted round-robin (ip_vs_wrr.c).
//
// The kernel keeps a cursor (cl, the last destination picked) and a
// current weight cw that starts at mw = max weight - (di-1), di being the
// gcd of the positive weights. A pick scans the list after cl for the
// first destination with weight >= cw that is not OVERLOAD; each time the
// scan wraps past the list head, cw -= di, and at cw <= 0 it restarts at mw.
//
// With fixed weights and nothing overloaded that walk is periodic. Pass m
// (cw = mw - m*di, m = 0 .. max/di - 1) emits, in list order, every
// destination whose weight is >= cw, so a destination of weight w appears
// w/di times per period and the period is sum(weights)/di. Update
// precomputes that sequence once; Schedule advances an atomic position in
// it with compare-and-swap and skips entries whose destination is not
// usable at pick time. Skipping an entry is exactly what the kernel's scan
// does for an OVERLOAD destination, so the picks equal the kernel's for any
// pattern of OVERLOAD flags.
//
// Differences: the kernel compares the live weight with cw on every pick,
// the sequence uses the weights seen by the last Update (a weight set to 0
// is still skipped at once, since it makes the destination unusable). As in
// the kernel, Update restarts the scan at the list head and keeps the
// current pass: cw is kept if it does not exceed the new mw, else reset to
// mw, and rounded to (cw/di)*di+1 when di > 1. When all destinations are
// unusable, the cursor moves where the kernel's scan leaves it (see fail).
type wrr struct {
	state atomic.Pointer[wrrState]
	// maxSeq overrides maxWRRSequence when non-zero (tests; < 0 forces
	// the walk).
	maxSeq int
}

type wrrState struct {
	dests  []*ipvs.Dest
	di, mw int

	// Sequence mode (seq != nil).
	seq       []int32 // indices into dests, one period
	passStart []int   // offset in seq of pass m
	// cur is the position in seq of the last pick, or -(m+1) when the
	// cursor is at the list head before pass m.
	cur atomic.Int64

	// Walk mode (seq == nil): the kernel's algorithm under a mutex.
	mu sync.Mutex
	cl int // index of the last pick, -1 = list head
	cw int
}

func (*wrr) Name() string { return "wrr" }

func (s *wrr) Schedule(_ *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	st := s.state.Load()
	if st == nil || st.mw <= 0 {
		return nil
	}
	if st.seq == nil {
		return st.walk()
	}
	seq := st.seq
	l := int64(len(seq))
	n := len(st.dests)
retry:
	cur := st.cur.Load()
	var p int64
	if cur < 0 {
		p = int64(st.passStart[-cur-1])
	} else {
		p = cur + 1
	}
	misses := 0
	for j := int64(0); j < l; j++ {
		pos := (p + j) % l
		d := st.dests[seq[pos]]
		if !live(d) {
			// After n consecutive misses, check once that some
			// destination is usable, so that an all-unusable
			// service costs O(n) rather than a whole period.
			if misses++; misses == n && !anyLive(st.dests) {
				break
			}
			continue
		}
		if !st.cur.CompareAndSwap(cur, pos) {
			goto retry
		}
		return d
	}
	st.fail(cur)
	return nil
}

// fail moves the cursor where the kernel's walk leaves it after a scan that
// found nothing: a scan that started in the last pass from a destination
// ends back on that destination in the last pass (cursor unchanged); any
// other scan gives up at the list head with cw = mw.
func (st *wrrState) fail(cur int64) {
	if cur >= 0 && cur >= int64(st.passStart[len(st.passStart)-1]) {
		return
	}
	st.cur.CompareAndSwap(cur, -1)
}

func anyLive(ds []*ipvs.Dest) bool {
	for _, d := range ds {
		if live(d) {
			return true
		}
	}
	return false
}

// walk is the kernel's wrr scan, used when the period is too long to
// precompute.
func (st *wrrState) walk() *ipvs.Dest {
	st.mu.Lock()
	defer st.mu.Unlock()
	ds := st.dests
	n := len(ds)
	last, i, stop := st.cl, st.cl, -2
	lastPass, restarted := false, false
	for {
		for i++; i < n; i++ {
			d := ds[i]
			if !d.Overloaded() && d.Available() && d.Weight() >= st.cw {
				st.cl = i
				return d
			}
			if i == stop {
				st.cl = i
				return nil
			}
		}
		i = -1
		st.cw -= st.di
		if st.cw <= 0 {
			st.cw = st.mw
			if lastPass || last == -1 {
				st.cl = -1
				return nil
			}
			restarted = true
		}
		lastPass = st.cw <= st.di
		if lastPass && restarted && last != -1 {
			stop = last
		}
	}
}

// currentCW is the kernel's cw for the state's cursor.
func (st *wrrState) currentCW() int {
	if st.seq == nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.cw
	}
	cur := st.cur.Load()
	var m int
	if cur < 0 {
		m = int(-cur - 1)
	} else {
		// The pass holding position cur: the last pass starting at or before it.
		m = sort.SearchInts(st.passStart, int(cur)+1) - 1
	}
	return st.mw - m*st.di
}

func (s *wrr) Update(svc *ipvs.Service) {
	ds := svc.Dests()
	st := &wrrState{dests: ds, cl: -1}
	maxW, g := 0, 0
	weights := make([]int, len(ds))
	for i, d := range ds {
		w := d.Weight()
		weights[i] = w
		if w > 0 {
			g = gcd(w, g)
		}
		maxW = max(maxW, w)
	}
	if g == 0 {
		g = 1
	}
	st.di = g
	st.mw = maxW - (g - 1)
	if st.mw < 0 {
		st.mw = 0
	}

	// The kernel's cw carried over the change (ip_vs_wrr_dest_changed).
	cw := 0
	if old := s.state.Load(); old != nil {
		cw = old.currentCW()
	}
	if cw > st.mw || cw <= 0 {
		cw = st.mw
	} else if st.di > 1 {
		cw = (cw/st.di)*st.di + 1
	}
	st.cw = cw

	period := 0
	if st.mw > 0 {
		for _, w := range weights {
			if w > 0 {
				period += w / g
			}
		}
	}
	limit := maxWRRSequence
	if s.maxSeq != 0 {
		limit = s.maxSeq
	}
	if st.mw > 0 && period <= limit {
		st.seq, st.passStart = wrrSequence(weights, st.mw, st.di)
		// Cursor at the head before the pass whose cw is cw.
		st.cur.Store(-int64((st.mw-cw)/st.di) - 1)
	}
	s.state.Store(st)
}

// wrrSequence is one period of the kernel's walk over destinations with the
// given weights (list order) when none is overloaded: for cw = mw, mw-di,
// ... > 0, the indices of the destinations with weight >= cw.
func wrrSequence(weights []int, mw, di int) (seq []int32, passStart []int) {
	for cw := mw; cw > 0; cw -= di {
		passStart = append(passStart, len(seq))
		for i, w := range weights {
			if w >= cw {
				seq = append(seq, int32(i))
			}
		}
	}
	return seq, passStart
}
