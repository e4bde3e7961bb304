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

// cache is what lblc and lblcr share: buckets of slots caching a value V
// (a destination, a destination set) for a destination address.
type cache[V any] struct {
	cacheClock
	buckets []bucket[V]
}

// bucket is one bucket of a cache, with its own lock.
type bucket[V any] struct {
	mu    sync.Mutex
	slots [cacheBucketSlots]cacheSlot[V]
}

// cacheSlot caches val for the destination address key; lastUse 0 marks an
// empty slot.
type cacheSlot[V any] struct {
	key     [16]byte
	lastUse int64
	val     V
}

func (c *cache[V]) init() {
	c.buckets = make([]bucket[V], cacheTabSize)
	c.cacheClock.init()
}

// purge calls stale with the destinations of svc and each cached value,
// bucket by bucket under the bucket's lock, and empties the slots for which
// it returns true.
func (c *cache[V]) purge(svc *ipvs.Service, stale func(keep map[*ipvs.Dest]struct{}, v *V) bool) {
	keep := destSet(svc.Dests())
	for i := range c.buckets {
		b := &c.buckets[i]
		b.mu.Lock()
		for j := range b.slots {
			if sl := &b.slots[j]; sl.lastUse != 0 && stale(keep, &sl.val) {
				*sl = cacheSlot[V]{}
			}
		}
		b.mu.Unlock()
	}
}

// lookup returns the slot caching key, or nil if none does or its entry has
// been idle for longer than exp.
func (b *bucket[V]) lookup(key [16]byte, now, exp int64) *cacheSlot[V] {
	for j := range b.slots {
		if sl := &b.slots[j]; sl.lastUse != 0 && sl.key == key && now-sl.lastUse <= exp {
			return sl
		}
	}
	return nil
}

// claim returns a slot for a new entry for key, used now and holding the
// zero value: an empty or expired slot, else the least recently used.
func (b *bucket[V]) claim(key [16]byte, now, exp int64) *cacheSlot[V] {
	v := &b.slots[0]
	for j := range b.slots {
		sl := &b.slots[j]
		if sl.lastUse == 0 || now-sl.lastUse > exp {
			v = sl
			break
		}
		if sl.lastUse < v.lastUse {
			v = sl
		}
	}
	*v = cacheSlot[V]{key: key, lastUse: now}
	return v
}

// lblc is locality-based least-connection (ip_vs_lblc.c): a cache of
// destination address -> destination. As in ip_vs_lblc_schedule, a cached
// destination is reused while it is available, has weight > 0 and is not
// "overloaded" (lblcOverloaded); the OVERLOAD flag of the -x threshold is
// not looked at there. Otherwise wlc picks one (skipping OVERLOAD, like
// the kernel's __ip_vs_lblc_schedule) and the cache is updated.
type lblc struct {
	cache[*ipvs.Dest]
}

func newLBLC() *lblc {
	s := new(lblc)
	s.init()
	return s
}

func (*lblc) Name() string { return "lblc" }

// Update drops cache entries whose destination left the service.
func (s *lblc) Update(svc *ipvs.Service) {
	s.purge(svc, func(keep map[*ipvs.Dest]struct{}, d **ipvs.Dest) bool {
		_, ok := keep[*d]
		return !ok
	})
}

func (s *lblc) Schedule(svc *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	ds := svc.Dests()
	key := f.DstAddr.As16()
	now, exp := s.now(), s.expiration.Load()
	b := &s.buckets[cacheBucket(f.DstAddr)]
	b.mu.Lock()
	defer b.mu.Unlock()

	hit := b.lookup(key, now, exp)
	if hit != nil {
		hit.lastUse = now
		if d := hit.val; d.Available() && d.Weight() > 0 && !lblcOverloaded(d, ds) {
			return d
		}
	}
	d := leastWeighted(ds)
	if d == nil {
		return nil
	}
	if hit == nil {
		hit = b.claim(key, now, exp)
	}
	hit.val, hit.lastUse = d, now
	return d
}

// lblcr is locality-based least-connection with replication
// (ip_vs_lblcr.c): a cache of destination address -> set of destinations.
// The least loaded member (overhead/weight) is used unless none is usable
// (ip_vs_dest_set_min skips OVERLOAD and weight 0) or it is "overloaded",
// in which case wlc over the whole service (skipping OVERLOAD) picks a
// destination that joins the set. When the set has more than one member
// and has not changed for the expiration, its most loaded member is
// removed. Sets hold at most 8 members here (unbounded in IPVS); adding to
// a full set replaces its most loaded member.
type lblcr struct {
	cache[lblcrSet]
}

// lblcrSet is the destination set cached in one slot and its last change.
type lblcrSet struct {
	lastMod int64
	n       int
	// set[:n], oldest first; scans go newest first as the kernel's list
	// (list_add_rcu at the head) does.
	set [lblcrSetMax]*ipvs.Dest
}

func newLBLCR() *lblcr {
	s := new(lblcr)
	s.init()
	return s
}

func (*lblcr) Name() string { return "lblcr" }

// Update removes destinations that left the service from every set, and
// the sets left empty.
func (s *lblcr) Update(svc *ipvs.Service) {
	s.purge(svc, func(keep map[*ipvs.Dest]struct{}, set *lblcrSet) bool {
		for k := set.n - 1; k >= 0; k-- {
			if _, ok := keep[set.set[k]]; !ok {
				set.remove(k)
			}
		}
		return set.n == 0
	})
}

func (s *lblcr) Schedule(svc *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	ds := svc.Dests()
	key := f.DstAddr.As16()
	now, exp := s.now(), s.expiration.Load()
	b := &s.buckets[cacheBucket(f.DstAddr)]
	b.mu.Lock()
	defer b.mu.Unlock()

	hit := b.lookup(key, now, exp)
	if hit != nil {
		hit.lastUse = now
		set := &hit.val
		d := set.min()
		if set.n > 1 && now-set.lastMod > exp {
			if m := set.max(); m != nil {
				set.remove(indexOf(set.set[:set.n], m))
				set.lastMod = now
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
		hit = b.claim(key, now, exp)
	}
	hit.val.insert(d, now)
	return d
}

// min is ip_vs_dest_set_min: the available, usable member with the least
// overhead/weight, newest first on ties.
func (st *lblcrSet) min() *ipvs.Dest {
	var least *ipvs.Dest
	var loh, lw int64
	for k := st.n - 1; k >= 0; k-- {
		d := st.set[k]
		if !live(d) {
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
func (st *lblcrSet) max() *ipvs.Dest {
	var most *ipvs.Dest
	var moh, mw int64
	for k := st.n - 1; k >= 0; k-- {
		d := st.set[k]
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
func (st *lblcrSet) insert(d *ipvs.Dest, now int64) {
	if indexOf(st.set[:st.n], d) >= 0 {
		return
	}
	if st.n == lblcrSetMax {
		k := 0 // the oldest, when no member has weight > 0
		if m := st.max(); m != nil {
			k = indexOf(st.set[:st.n], m)
		}
		st.remove(k)
	}
	st.set[st.n] = d
	st.n++
	st.lastMod = now
}

// remove deletes member k, keeping the order of the others.
func (st *lblcrSet) remove(k int) {
	copy(st.set[k:st.n], st.set[k+1:st.n])
	st.n--
	st.set[st.n] = nil
}
