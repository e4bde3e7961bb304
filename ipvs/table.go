package ipvs

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// trashPeriod is IP_VS_DEST_TRASH_PERIOD: how long a deleted destination
// (or service) is kept for reuse when nothing refers to it any more.
const trashPeriod = 120 * time.Second

// Table is the set of live virtual services: IPVS's service table.
//
// The control plane changes it with typed changes: Update runs a
// transaction (Tx) and Apply a list of Change values, each all or nothing;
// those calls are serialized by the Table's mutex. The data path finds
// services with Lookup, which reads an immutable map published through an
// atomic pointer and never locks or allocates.
//
// Object identity follows IPVS: an edit (EditService, EditDest) changes a
// Service or Dest in place; a deleted Dest is marked unavailable and kept
// in a trash for reuse, so deleting and re-adding a real server (also
// across Flush, and always inside one transaction) brings back the same
// Dest object with its counters and connections. A re-created service
// likewise reuses its old Service object, but its counters start from zero
// as a new IPVS service's do, and so do those of the destinations it takes
// back (ip_vs_zero_stats). Zeroing (-Z included) moves a baseline
// (Service.Counts, Dest.Counts); the counters the workers increment are
// never written by the control plane.
//
// EditService writes Service.Config and Service.Sched in place under the
// Table's lock and then publishes them (Service.Publish): the data path
// reads Service.State, and other readers that need a consistent view of
// the table use Read.
type Table struct {
	mu       sync.Mutex // serializes control-plane calls; guards the fields below
	newSched func(name string, flags SvcFlags) (Scheduler, error)
	pes      map[string]bool
	svcs     []*Service // in creation order
	byKey    map[ServiceKey]*Service
	trashSvc map[ServiceKey]trashedSvc
	trashDst map[destKey]trashedDest
	timeouts Timeouts
	now      func() time.Time

	snap atomic.Pointer[lookupSnap]
}

type destKey struct {
	svc ServiceKey
	ap  netip.AddrPort
}

type trashedSvc struct {
	svc *Service
	at  time.Time
}

type trashedDest struct {
	d  *Dest
	at time.Time
}

// lookupSnap is the immutable lookup state the data path reads.
type lookupSnap struct {
	byAddr map[addrKey]*Service
	// byAddr4 holds the IPv4 services of byAddr again under a packed
	// key (addr4Key): a word-sized map key hashes and compares in a few
	// instructions, a 20-byte struct key goes through the generic hash.
	byAddr4 map[uint64]*Service
	byMark  map[markKey]*Service
	// vips holds every service address (IPv4 as v4-mapped), for IsVIP;
	// few4 lists the IPv4 ones when there are at most 16 (a linear scan of
	// a few words beats hashing 16 bytes on every packet).
	vips  map[[16]byte]struct{}
	few4  []uint32
	many4 bool
}

// addrKey is a packed, pointer-free <protocol, VIP, port> key (IPv4 as
// v4-mapped IPv6).
type addrKey struct {
	addr  [16]byte
	port  uint16
	proto Protocol
	v6    bool
}

// addr4Key packs an IPv4 <protocol, VIP, port> for lookupSnap.byAddr4.
func addr4Key(a [4]byte, port uint16, proto Protocol) uint64 {
	return uint64(binary.BigEndian.Uint32(a[:]))<<32 | uint64(port)<<8 | uint64(proto)
}

type markKey struct {
	mark uint32
	v6   bool
}

// NewTable makes an empty table. newSched makes a scheduler instance for a
// service (package scheduler provides it); an error from it makes the
// change fail with ErrNoScheduler.
func NewTable(newSched func(name string, flags SvcFlags) (Scheduler, error)) *Table {
	t := &Table{
		newSched: newSched,
		pes:      map[string]bool{},
		byKey:    map[ServiceKey]*Service{},
		trashSvc: map[ServiceKey]trashedSvc{},
		trashDst: map[destKey]trashedDest{},
		timeouts: DefaultTimeouts,
		now:      time.Now,
	}
	t.snap.Store(&lookupSnap{byAddr: map[addrKey]*Service{}, byAddr4: map[uint64]*Service{},
		byMark: map[markKey]*Service{}, vips: map[[16]byte]struct{}{}})
	return t
}

// AllowPE makes a persistence engine name (--pe) acceptable. None is by
// default: gvs implements no persistence engine, and IPVS refuses unknown
// ones (ErrNoPE).
func (t *Table) AllowPE(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pes[name] = true
}

// Lookup finds the service for a packet the way ip_vs_service_find does:
// the fwmark service when fwmark is non-zero and one exists for the
// packet's address family, else the exact <proto, addr, port> service,
// else (TCP to port 20 or to an unprivileged port) the FTP service on port
// 21 of that address, else the port-0 service of that address. It returns
// nil when none matches. It is safe for concurrent use and does not
// allocate.
func (t *Table) Lookup(proto Protocol, addr netip.Addr, port uint16, fwmark uint32) *Service {
	s := t.snap.Load()
	v6 := addr.Is6()
	if fwmark != 0 {
		if svc := s.byMark[markKey{fwmark, v6}]; svc != nil {
			return svc
		}
	}
	if addr.Is4() {
		return s.lookup4(proto, addr.As4(), port)
	}
	k := addrKey{addr: addr.As16(), port: port, proto: proto, v6: v6}
	if svc := s.byAddr[k]; svc != nil {
		return svc
	}
	if proto == ProtoTCP && (port == 20 || port >= 1024) {
		k.port = 21
		if svc := s.byAddr[k]; svc != nil {
			return svc
		}
	}
	if port != 0 {
		k.port = 0
		if svc := s.byAddr[k]; svc != nil {
			return svc
		}
	}
	return nil
}

// lookup4 is Lookup's address part for an IPv4 address, with the same
// fallbacks (FTP, port 0) over byAddr4.
func (s *lookupSnap) lookup4(proto Protocol, a [4]byte, port uint16) *Service {
	if svc := s.byAddr4[addr4Key(a, port, proto)]; svc != nil {
		return svc
	}
	if proto == ProtoTCP && (port == 20 || port >= 1024) {
		if svc := s.byAddr4[addr4Key(a, 21, proto)]; svc != nil {
			return svc
		}
	}
	if port != 0 {
		if svc := s.byAddr4[addr4Key(a, 0, proto)]; svc != nil {
			return svc
		}
	}
	return nil
}

// IsVIP reports whether addr is the address of any (non-fwmark) service.
// Like Lookup it is lock-free and does not allocate.
func (t *Table) IsVIP(addr netip.Addr) bool {
	s := t.snap.Load()
	if addr.Is4() && !s.many4 {
		b := addr.As4()
		a := binary.BigEndian.Uint32(b[:])
		for _, v := range s.few4 {
			if v == a {
				return true
			}
		}
		return false
	}
	_, ok := s.vips[addr.As16()]
	return ok
}

// VIPs lists the addresses of the (non-fwmark) services, for the control
// path (ARP replies, ingress filters).
func (t *Table) VIPs() []netip.Addr {
	s := t.snap.Load()
	out := make([]netip.Addr, 0, len(s.vips))
	for a := range s.vips {
		out = append(out, netip.AddrFrom16(a).Unmap())
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// Service returns the service with exactly this key, or nil.
func (t *Table) Service(k ServiceKey) *Service {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byKey[k.Norm()]
}

// Services returns the services sorted as ipvsadm sorts them (see
// SortServices).
func (t *Table) Services() []*Service {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]*Service(nil), t.svcs...)
	SortServices(out)
	return out
}

// Read calls fn with the services in creation order while holding the
// control-plane lock, so that no change runs meanwhile (for listings).
// fn must not call other Table methods.
func (t *Table) Read(fn func(svcs []*Service)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fn(t.svcs)
}

// Timeouts returns the current protocol timeouts (SetTimeouts).
func (t *Table) Timeouts() Timeouts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.timeouts
}

// unicast is the kernel's check that a destination address is unicast
// (inet_addr_type RTN_UNICAST/RTN_LOCAL; ipv6_addr_type unicast).
func unicast(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	if a.Is4() {
		b := a.As4()
		return b[0] != 0 && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return true
}

func (tx *Tx) checkPE(pe string) error {
	if pe != "" && !tx.t.pes[pe] {
		return fmt.Errorf("%w: %q", ErrNoPE, pe)
	}
	return nil
}

func (tx *Tx) newScheduler(c ServiceConfig) (Scheduler, error) {
	var s Scheduler
	var err error
	if tx.t.newSched != nil {
		s, err = tx.t.newSched(c.Scheduler, c.Flags)
	}
	if err != nil || s == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoScheduler, c.Scheduler)
	}
	if err := tx.checkPE(c.PE); err != nil {
		return nil, err
	}
	return s, nil
}

// commit publishes the staged state. It cannot fail.
func (st *Tx) commit() {
	t := st.t
	now := t.now()
	t.pruneTrash(now)
	t.timeouts = st.timeouts

	var keep, removed []*Service
	for _, svc := range t.svcs {
		k := svc.Config.ServiceKey.Norm()
		s := st.svcs[k]
		switch {
		case s == nil && st.cleared, s != nil && !s.present:
			removed = append(removed, svc)
		case s == nil:
			keep = append(keep, svc)
			if st.zeroAll {
				svc.zero()
			}
		default:
			keep = append(keep, st.commitService(s, svc, now))
		}
	}
	for _, k := range st.newOrder {
		s := st.svcs[k]
		if !s.present || s.obj != nil {
			continue
		}
		var svc *Service
		if tr, ok := t.trashSvc[k]; ok {
			svc = tr.svc
			delete(t.trashSvc, k)
		}
		keep = append(keep, st.commitService(s, svc, now))
	}

	t.svcs = keep
	t.byKey = make(map[ServiceKey]*Service, len(keep))
	snap := &lookupSnap{byAddr: make(map[addrKey]*Service), byAddr4: make(map[uint64]*Service),
		byMark: make(map[markKey]*Service), vips: make(map[[16]byte]struct{})}
	for _, svc := range keep {
		k := svc.Config.ServiceKey.Norm()
		t.byKey[k] = svc
		if k.FWMark != 0 {
			snap.byMark[markKey{k.FWMark, k.V6}] = svc
		} else {
			snap.byAddr[addrKey{addr: k.Addr.As16(), port: k.Port, proto: k.Proto, v6: k.Addr.Is6()}] = svc
			if k.Addr.Is4() {
				snap.byAddr4[addr4Key(k.Addr.As4(), k.Port, k.Proto)] = svc
			}
			snap.vips[k.Addr.As16()] = struct{}{}
		}
	}
	for a := range snap.vips {
		if m := netip.AddrFrom16(a); m.Is4In6() {
			b := m.Unmap().As4()
			snap.few4 = append(snap.few4, binary.BigEndian.Uint32(b[:]))
		}
	}
	if len(snap.few4) > 16 {
		snap.few4, snap.many4 = nil, true
	}
	t.snap.Store(snap)

	// Only now that no lookup can return them: retire removed services.
	for _, svc := range removed {
		k := svc.Config.ServiceKey.Norm()
		for _, d := range svc.Dests() {
			t.trashDest(k, d, now)
		}
		svc.SetDests(nil)
		t.trashSvc[k] = trashedSvc{svc: svc, at: now}
	}
}

// commitService makes svc (the live or trashed object, or nil for a new
// one) match the staged service s, and returns it.
func (st *Tx) commitService(s *stSvc, svc *Service, now time.Time) *Service {
	t := st.t
	if svc == nil {
		svc = NewService(s.cfg)
	}
	if !s.touched && !st.zeroAll && !s.zero {
		return svc
	}
	if s.fresh {
		// A new IPVS service starts with zero counters and a new
		// estimator.
		svc.recreate()
	}
	inc := svc.zeroed.load().Incarnation
	svc.Config = s.cfg

	old := map[netip.AddrPort]*Dest{}
	for _, d := range svc.Dests() {
		old[d.AddrPort()] = d
	}
	n := len(s.dests)
	list := make([]*Dest, n)
	isNew := make([]bool, n)
	for i := range list {
		cfg := s.dests[n-1-i] // newest first
		ap := cfg.AddrPort()
		d := old[ap]
		delete(old, ap)
		if d == nil {
			dk := destKey{s.key, ap}
			if tr, ok := t.trashDst[dk]; ok && tr.d.Svc == svc {
				d = tr.d
				delete(t.trashDst, dk)
				d.available.Store(true)
				d.Update(cfg)
			}
		}
		switch {
		case d == nil:
			d = NewDest(svc, cfg)
			isNew[i] = true
		case d.Config() != cfg:
			d.Update(cfg)
		}
		if lw, ok := s.lastW[ap]; ok {
			d.lastWeight.Store(int32(lw))
		}
		if d.zeroed.load().Incarnation != inc {
			// A destination taken back (from the trash, or kept
			// through a delete and add in this batch) by its service
			// created again: __ip_vs_update_dest finds old_svc != svc
			// and zeroes its stats. One deleted and added back to a
			// service that lived on keeps them.
			d.zeroed.zeroStats(&d.Stats, inc)
		}
		list[i] = d
	}
	// Kept destinations keep their Index unless it collides; new ones
	// take the smallest free numbers.
	used := map[int]bool{}
	var needIndex []*Dest
	for i, d := range list {
		if isNew[i] || used[d.Index] {
			needIndex = append(needIndex, d)
			continue
		}
		used[d.Index] = true
	}
	next := 0
	for _, d := range needIndex {
		for used[next] {
			next++
		}
		d.Index = next
		used[next] = true
	}
	for _, d := range old {
		t.trashDest(s.key, d, now)
	}
	svc.SetDests(list)
	if s.zero || st.zeroAll {
		svc.zero()
	}
	if s.sched != nil {
		s.sched.Update(svc)
		svc.Sched = s.sched
	} else if svc.Sched != nil && s.touched {
		svc.Sched.Update(svc)
	}
	svc.Publish()
	return svc
}

// trashDest retires a destination: unavailable for scheduling, kept for
// reuse by a later AddDest.
func (t *Table) trashDest(k ServiceKey, d *Dest, now time.Time) {
	d.SetUnavailable()
	t.trashDst[destKey{k, d.AddrPort()}] = trashedDest{d: d, at: now}
}

// pruneTrash forgets trashed destinations that have been unused for the
// trash period and have no connections, and trashed services without
// trashed destinations.
func (t *Table) pruneTrash(now time.Time) {
	keys := map[ServiceKey]bool{}
	for k, tr := range t.trashDst {
		d := tr.d
		idle := d.ActiveConns.Load() == 0 && d.InactConns.Load() == 0 && d.PersistConns.Load() == 0
		if idle && now.Sub(tr.at) >= trashPeriod {
			delete(t.trashDst, k)
			continue
		}
		keys[k.svc] = true
	}
	for k, tr := range t.trashSvc {
		if !keys[k] && now.Sub(tr.at) >= trashPeriod {
			delete(t.trashSvc, k)
		}
	}
}

// SortServices sorts services as ipvsadm does (ipvs_cmp_services with
// glibc's merge sort): by fwmark, address family, protocol, address and
// port, with the C comparator's 32-bit wrap-around kept, so that for
// example 192.168.0.1 sorts before 10.0.0.1 exactly as ipvsadm prints it.
func SortServices(svcs []*Service) {
	msort(svcs, make([]*Service, len(svcs)), cmpServices)
}

// SortDests sorts destinations as ipvsadm does (ipvs_cmp_dests): by
// address then port, with the same wrap-around.
func SortDests(ds []*Dest) {
	msort(ds, make([]*Dest, len(ds)), func(a, b *Dest) int { return cmpAddrPort(a.Addr, a.Port, b.Addr, b.Port) })
}

// msort is glibc's msort_with_tmp: a top-down merge sort that takes from
// the left run while cmp <= 0. The comparator is not transitive, so the
// algorithm matters for the output order.
func msort[T any](b, tmp []T, cmp func(a, b T) int) {
	n := len(b)
	if n <= 1 {
		return
	}
	n1 := n / 2
	b1, b2 := b[:n1], b[n1:]
	msort(b1, tmp, cmp)
	msort(b2, tmp, cmp)
	i, j, k := 0, 0, 0
	for i < len(b1) && j < len(b2) {
		if cmp(b1[i], b2[j]) <= 0 {
			tmp[k] = b1[i]
			i++
		} else {
			tmp[k] = b2[j]
			j++
		}
		k++
	}
	k += copy(tmp[k:], b1[i:])
	copy(b, tmp[:k])
}

// addrWords is the address as the C union nf_inet_addr's four big-endian
// words (IPv4 in the first).
func addrWords(a netip.Addr) (w [4]uint32, v6 bool) {
	if a.Is4() {
		b := a.As4()
		w[0] = binary.BigEndian.Uint32(b[:])
		return w, false
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.BigEndian.Uint32(b[4*i:])
	}
	return w, true
}

// cmpAddrPort compares like ipvs_cmp_dests: the first argument's family
// decides how many words are compared, each difference is an unsigned
// 32-bit subtraction read as a signed int.
func cmpAddrPort(a netip.Addr, ap uint16, b netip.Addr, bp uint16) int {
	wa, v6 := addrWords(a)
	wb, _ := addrWords(b)
	n := 1
	if v6 {
		n = 4
	}
	for i := 0; i < n; i++ {
		if r := int32(wa[i] - wb[i]); r != 0 {
			return int(r)
		}
	}
	return int(ap) - int(bp)
}

// svcSortFields are what ipvs_cmp_services compares.
func svcSortFields(s *Service) (mark uint32, af int, proto int) {
	k := s.Config.ServiceKey
	af = 2 // AF_INET
	if k.FWMark != 0 {
		if k.V6 {
			af = 10 // AF_INET6
		}
		return k.FWMark, af, int(ProtoTCP) // ipvsadm gives fwmark services TCP
	}
	if k.Addr.Is6() {
		af = 10
	}
	return 0, af, int(k.Proto)
}

func cmpServices(a, b *Service) int {
	ma, afa, pa := svcSortFields(a)
	mb, afb, pb := svcSortFields(b)
	if r := int32(ma - mb); r != 0 {
		return int(r)
	}
	if afa != afb {
		return afa - afb
	}
	if pa != pb {
		return pa - pb
	}
	ka, kb := a.Config.ServiceKey, b.Config.ServiceKey
	if ka.FWMark != 0 {
		return 0
	}
	return cmpAddrPort(ka.Addr, ka.Port, kb.Addr, kb.Port)
}
