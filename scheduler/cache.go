package scheduler

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvs/ipvs"
)

// The lblc and lblcr caches map a packet's destination address to a
// destination (lblc) or a set of destinations (lblcr).
//
// IPVS uses a hash table of 1024 buckets (CONFIG_IP_VS_LBLC_TAB_BITS 10)
// with dynamically allocated entries, a soft limit of 16*1024 entries, a
// timer that every 60 s removes entries idle for 6 minutes when over the
// limit, and a full sweep every ~30 minutes removing entries idle for
// longer than the lblc(r)_expiration sysctl (24 h by default).
//
// gvs keeps the 1024 buckets but gives each a fixed array of 16 slots
// (so the 16*1024 limit is exact and Schedule never allocates) and one
// mutex per bucket (no lock shared by all workers). Instead of timers:
//
//   - an entry idle for longer than the expiration is treated as absent
//     and its slot reused (the full sweep's rule, applied lazily);
//   - inserting into a full bucket evicts the least recently used entry
//     (the over-limit GC, applied per bucket).
//
// Time is a monotonic clock read with time.Now when a cache is used; it is
// used for nothing but expiry.
const (
	cacheTabBits     = 10
	cacheTabSize     = 1 << cacheTabBits
	cacheBucketSlots = 16

	// DefaultCacheExpiration is lblc_expiration / lblcr_expiration.
	DefaultCacheExpiration = 24 * time.Hour

	// lblcrSetMax bounds an lblcr destination set; when full, adding a
	// member replaces the most loaded one.
	lblcrSetMax = 8
)

var clockEpoch = time.Now()

// monotonicNow is nanoseconds since clockEpoch, at least 1 (0 marks an
// empty slot).
func monotonicNow() int64 { return int64(time.Since(clockEpoch)) + 1 }

// cacheClock holds what both caches share: the clock and the expiration.
type cacheClock struct {
	now        func() int64
	expiration atomic.Int64 // nanoseconds
}

func (c *cacheClock) init() {
	c.now = monotonicNow
	c.expiration.Store(int64(DefaultCacheExpiration))
}

// SetExpiration sets the cache expiration (<= 0: the 24 h default).
func (c *cacheClock) SetExpiration(d time.Duration) {
	if d <= 0 {
		d = DefaultCacheExpiration
	}
	c.expiration.Store(int64(d))
}

// cacheBucket is the bucket of a destination address.
func cacheBucket(a netip.Addr) uint32 {
	return hash32(fold(a), cacheTabBits)
}

// lblcOverloaded is the lblc/lblcr "overloaded" test: more active
// connections than weight while some destination of the service has fewer
// than half its weight.
func lblcOverloaded(d *ipvs.Dest, ds []*ipvs.Dest) bool {
	if int64(d.ActiveConns.Load()) <= int64(d.Weight()) {
		return false
	}
	for _, x := range ds {
		if int64(x.ActiveConns.Load())*2 < int64(x.Weight()) {
			return true
		}
	}
	return false
}

// destSet is the set of destinations present in ds, for purging.
func destSet(ds []*ipvs.Dest) map[*ipvs.Dest]struct{} {
	m := make(map[*ipvs.Dest]struct{}, len(ds))
	for _, d := range ds {
		m[d] = struct{}{}
	}
	return m
}

// lblc is locality-based least-connection (ip_vs_lblc.c): a cache of
// destination address -> destination. A cached destination is reused while
// it is available, usable and not "overloaded" (lblcOverloaded); otherwise
// wlc picks one and the cache is updated.
//
// Unlike the kernel, which checks only weight > 0 on a cache hit, a cached
// destination flagged OVERLOAD is not reused (OVERLOAD is skipped by every
// scheduler, IPVS.md §4).
type lblc struct {
	cacheClock
	buckets []lblcBucket
}

type lblcBucket struct {
	mu    sync.Mutex
	slots [cacheBucketSlots]lblcSlot
}

type lblcSlot struct {
	key     [16]byte
	dest    *ipvs.Dest
	lastUse int64 // 0: empty
}

func newLBLC() *lblc {
	s := &lblc{buckets: make([]lblcBucket, cacheTabSize)}
	s.init()
	return s
}

func (*lblc) Name() string { return "lblc" }

// Update drops cache entries whose destination left the service.
func (s *lblc) Update(svc *ipvs.Service) {
	keep := destSet(svc.Dests())
	for i := range s.buckets {
		b := &s.buckets[i]
		b.mu.Lock()
		for j := range b.slots {
			if sl := &b.slots[j]; sl.lastUse != 0 {
				if _, ok := keep[sl.dest]; !ok {
					*sl = lblcSlot{}
				}
			}
		}
		b.mu.Unlock()
	}
}

func (s *lblc) Schedule(svc *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	ds := svc.Dests()
	key := f.DstAddr.As16()
	now, exp := s.now(), s.expiration.Load()
	b := &s.buckets[cacheBucket(f.DstAddr)]
	b.mu.Lock()
	defer b.mu.Unlock()

	var hit *lblcSlot
	for j := range b.slots {
		if sl := &b.slots[j]; sl.lastUse != 0 && sl.key == key && now-sl.lastUse <= exp {
			hit = sl
			break
		}
	}
	if hit != nil {
		hit.lastUse = now
		if d := hit.dest; d.Available() && d.Usable() && !lblcOverloaded(d, ds) {
			return d
		}
	}
	d := leastWeighted(ds)
	if d == nil {
		return nil
	}
	if hit == nil {
		hit = b.victim(now, exp)
		hit.key = key
	}
	hit.dest, hit.lastUse = d, now
	return d
}

// victim is the slot to (re)use for a new entry: an empty or expired one,
// else the least recently used.
func (b *lblcBucket) victim(now, exp int64) *lblcSlot {
	v := &b.slots[0]
	for j := range b.slots {
		sl := &b.slots[j]
		if sl.lastUse == 0 || now-sl.lastUse > exp {
			return sl
		}
		if sl.lastUse < v.lastUse {
			v = sl
		}
	}
	return v
}

// lblcr is locality-based least-connection with replication
// (ip_vs_lblcr.c): a cache of destination address -> set of destinations.
// The least loaded member (overhead/weight) is used unless none is usable
// or it is "overloaded", in which case wlc over the whole service picks a
// destination that joins the set. When the set has more than one member
// and has not changed for the expiration, its most loaded member is
// removed. Sets hold at most 8 members here (unbounded in IPVS); adding to
// a full set replaces its most loaded member.
type lblcr struct {
	cacheClock
	buckets []lblcrBucket
}

type lblcrBucket struct {
	mu    sync.Mutex
	slots [cacheBucketSlots]lblcrSlot
}

type lblcrSlot struct {
	key     [16]byte
	lastUse int64 // 0: empty
	lastMod int64
	n       int
	// set[:n], oldest first; scans go newest first as the kernel's list
	// (list_add_rcu at the head) does.
	set [lblcrSetMax]*ipvs.Dest
}

func newLBLCR() *lblcr {
	s := &lblcr{buckets: make([]lblcrBucket, cacheTabSize)}
	s.init()
	return s
}

func (*lblcr) Name() string { return "lblcr" }

// Update removes destinations that left the service from every set.
func (s *lblcr) Update(svc *ipvs.Service) {
	keep := destSet(svc.Dests())
	for i := range s.buckets {
		b := &s.buckets[i]
		b.mu.Lock()
		for j := range b.slots {
			sl := &b.slots[j]
			if sl.lastUse == 0 {
				continue
			}
			for k := sl.n - 1; k >= 0; k-- {
				if _, ok := keep[sl.set[k]]; !ok {
					sl.remove(k)
				}
			}
			if sl.n == 0 {
				*sl = lblcrSlot{}
			}
		}
		b.mu.Unlock()
	}
}

func (s *lblcr) Schedule(svc *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	ds := svc.Dests()
	key := f.DstAddr.As16()
	now, exp := s.now(), s.expiration.Load()
	b := &s.buckets[cacheBucket(f.DstAddr)]
	b.mu.Lock()
	defer b.mu.Unlock()

	var hit *lblcrSlot
	for j := range b.slots {
		if sl := &b.slots[j]; sl.lastUse != 0 && sl.key == key && now-sl.lastUse <= exp {
			hit = sl
			break
		}
	}
	if hit != nil {
		hit.lastUse = now
		d := hit.min()
		if hit.n > 1 && now-hit.lastMod > exp {
			if m := hit.max(); m != nil {
				hit.remove(indexOf(hit.set[:hit.n], m))
				hit.lastMod = now
			}
		}
		if d != nil && !lblcOverloaded(d, ds) {
			return d
		}
	}
	d := leastWeighted(ds)
	if d == nil {
		return nil
	}
	if hit == nil {
		hit = b.victim(now, exp)
		*hit = lblcrSlot{key: key, lastUse: now}
	}
	hit.insert(d, now)
	return d
}

func (b *lblcrBucket) victim(now, exp int64) *lblcrSlot {
	v := &b.slots[0]
	for j := range b.slots {
		sl := &b.slots[j]
		if sl.lastUse == 0 || now-sl.lastUse > exp {
			return sl
		}
		if sl.lastUse < v.lastUse {
			v = sl
		}
	}
	return v
}

// min is ip_vs_dest_set_min: the available, usable member with the least
// overhead/weight, newest first on ties.
func (sl *lblcrSlot) min() *ipvs.Dest {
	var least *ipvs.Dest
	var loh, lw int64
	for k := sl.n - 1; k >= 0; k-- {
		d := sl.set[k]
		if !d.Usable() || !d.Available() {
			continue
		}
		doh, dw := d.Overhead(), int64(d.Weight())
		if least == nil || loh*dw > doh*lw {
			least, loh, lw = d, doh, dw
		}
	}
	return least
}

// max is ip_vs_dest_set_max: the member with weight > 0 and the most
// overhead/weight, newest first on ties.
func (sl *lblcrSlot) max() *ipvs.Dest {
	var most *ipvs.Dest
	var moh, mw int64
	for k := sl.n - 1; k >= 0; k-- {
		d := sl.set[k]
		dw := int64(d.Weight())
		if dw <= 0 {
			continue
		}
		doh := d.Overhead()
		if most == nil || moh*dw < doh*mw {
			most, moh, mw = d, doh, dw
		}
	}
	return most
}

// insert adds d to the set unless present (ip_vs_dest_set_insert).
func (sl *lblcrSlot) insert(d *ipvs.Dest, now int64) {
	if indexOf(sl.set[:sl.n], d) >= 0 {
		return
	}
	if sl.n == lblcrSetMax {
		k := 0 // the oldest, when no member has weight > 0
		if m := sl.max(); m != nil {
			k = indexOf(sl.set[:sl.n], m)
		}
		sl.remove(k)
	}
	sl.set[sl.n] = d
	sl.n++
	sl.lastMod = now
}

// remove deletes member k, keeping the order of the others.
func (sl *lblcrSlot) remove(k int) {
	copy(sl.set[k:sl.n], sl.set[k+1:sl.n])
	sl.n--
	sl.set[sl.n] = nil
}
