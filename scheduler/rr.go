package scheduler

import (
	"sync/atomic"

	"gvs/ipvs"
)

// rr is round-robin. As in the kernel, the cursor is the last destination
// picked ("the list head" before the first pick), and a pick walks the
// circular list from the entry after it, taking the first usable one.
//
// The cursor is the index of the last pick in svc.Dests() (-1 for the list
// head), advanced by compare-and-swap so that concurrent picks behave as if
// serialised by the kernel's sched_lock.
type rr struct {
	last atomic.Int64
	// prev is the snapshot seen by the last Update, used to carry the
	// cursor over a list change. Control plane only.
	prev []*ipvs.Dest
}

func (*rr) Name() string { return "rr" }

func (s *rr) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	ds := svc.Dests()
	n := int64(len(ds))
	if n == 0 {
		return nil
	}
retry:
	last := s.last.Load()
	start := last
	if start >= n || start < -1 {
		start = -1 // stale cursor from an older snapshot: restart at the head
	}
	for k := int64(1); k <= n; k++ {
		i := (start + k) % n
		d := ds[i]
		if !d.Usable() {
			continue
		}
		if !s.last.CompareAndSwap(last, i) {
			goto retry
		}
		return d
	}
	return nil
}

// Update carries the cursor over a destination list change the way the
// kernel's list does: it keeps pointing at the same destination (whose index
// moves when destinations are added at the head), and when that destination
// was deleted it moves to the nearest surviving destination before it, or
// the head, so the next pick continues after the deleted one.
func (s *rr) Update(svc *ipvs.Service) {
	ds := svc.Dests()
	last := s.last.Load()
	next := int64(-1)
	if last >= 0 && last < int64(len(s.prev)) {
		for j := last; j >= 0 && next < 0; j-- {
			next = int64(indexOf(ds, s.prev[j]))
		}
	}
	s.last.Store(next)
	s.prev = ds
}

// indexOf is the position of d in ds, or -1.
func indexOf(ds []*ipvs.Dest, d *ipvs.Dest) int {
	for i, x := range ds {
		if x == d {
			return i
		}
	}
	return -1
}
