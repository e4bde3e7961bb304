//go:build linux

package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Resolver answers, for the data path, "where does a packet to this IPv4
// address go": egress interface, next hop and its MAC, source address and
// MTU (see Neighbor). It reads the kernel's routing and neighbour tables
// over netlink and never resolves by itself: when a next hop's MAC is
// unknown or not usable it asks the kernel to resolve it (an RTM_NEWNEIGH
// with NTF_USE, which starts ARP exactly as if the kernel had a packet to
// send) and reports a miss, so the caller drops and counts the packet and
// never sends with a wrong MAC.
//
// Lookups read an immutable snapshot through an atomic pointer: they take
// no lock and do not allocate. One background goroutine rebuilds the
// snapshot on neighbour, route and link notifications (coalesced), on
// resolution requests, and periodically.
//
// A Resolver works in the network namespace of the goroutine that created
// it, whatever thread its background goroutine later runs on.
type Resolver struct {
	log *zap.Logger
	cfg ResolverConfig
	ns  netns.NsHandle
	h   *netlink.Handle

	snap atomic.Pointer[resolverSnapshot]

	// kick carries resolution requests from lookups; sends never block.
	kick chan nhKey
	// reqs carries Want/Unwant to the background goroutine.
	reqs chan wantReq

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// nhKey names a next hop: an address on an interface. Ifindex 0 names a
// wanted destination whose route is not known.
type nhKey struct {
	ifindex int32
	addr    [16]byte
}

// resolverSnapshot is immutable once published.
type resolverSnapshot struct {
	gen    uint64                 // Generation: one more than the snapshot it replaced
	dests  map[[16]byte]destEntry // wanted destinations
	routes []routeLevel           // main-table IPv4 unicast routes, most specific first
	neigh  map[nhKey][6]byte      // usable neighbour entries only
}

type destEntry struct {
	n  Neighbor
	ok bool  // n is complete and usable
	nh nhKey // what to resolve when !ok
}

// routeLevel holds the routes of one prefix length, keyed by the masked
// network address as a host-order uint32: a longest-prefix match costs one
// map lookup per distinct prefix length in the table.
type routeLevel struct {
	mask uint32
	m    map[uint32]routeEntry
}

type routeEntry struct {
	prefix  netip.Prefix
	metric  int
	ifindex int
	gw      netip.Addr // invalid: on-link, the destination is the next hop
	src     netip.Addr
	mtu     int
	linkMAC [6]byte
}

type wantReq struct {
	addrs []netip.Addr
	add   bool
	done  chan struct{}
}

// Defaults for ResolverConfig and the internal debounce of notifications.
const (
	defaultRefresh = 30 * time.Second
	defaultRetry   = time.Second
	debounce       = 10 * time.Millisecond
	resubscribe    = time.Second
)

// NewResolver reads the kernel tables once, publishes the first snapshot
// and starts the background goroutine. Close stops it.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = defaultRefresh
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = defaultRetry
	}
	ns, err := currentNS()
	if err != nil {
		return nil, fmt.Errorf("resolver: current network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("resolver: netlink: %w", err)
	}
	r := &Resolver{
		log:  cfg.Logger,
		cfg:  cfg,
		ns:   ns,
		h:    h,
		kick: make(chan nhKey, 256),
		reqs: make(chan wantReq),
		done: make(chan struct{}),
	}
	st := newResolverState(r)
	if err := st.reload(true, true); err != nil {
		h.Close()
		ns.Close()
		return nil, err
	}
	st.publish()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		st.loop()
	}()
	return r, nil
}

// Lookup returns how to reach addr, a destination registered with Want. It
// reports false when addr is not wanted, has no usable route, or its next
// hop's MAC is not (yet) known; in the last two cases it also asks the
// background goroutine to trigger resolution. It does not allocate or lock.
func (r *Resolver) Lookup(addr netip.Addr) (Neighbor, bool) {
	e, found := r.snap.Load().dests[addr.As16()]
	if !found {
		return Neighbor{}, false
	}
	if !e.ok {
		r.request(e.nh)
		return Neighbor{}, false
	}
	return e.n, true
}

// Gateway returns how to reach a client address that is not registered
// (replies to clients): the most specific route of the main table gives
// the interface and gateway (or the client itself when on-link), and the
// neighbour table its MAC. When the MAC is not known it triggers
// resolution and reports false. Policy routing is not consulted. It does
// not allocate or lock.
func (r *Resolver) Gateway(client netip.Addr) (Neighbor, bool) {
	s := r.snap.Load()
	a := client.Unmap()
	if !a.Is4() {
		return Neighbor{}, false
	}
	b := a.As4()
	u := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	for i := range s.routes {
		lv := &s.routes[i]
		rt, ok := lv.m[u&lv.mask]
		if !ok {
			continue
		}
		nh := rt.gw
		if !nh.IsValid() {
			nh = a
		}
		k := nhKey{int32(rt.ifindex), nh.As16()}
		mac, ok := s.neigh[k]
		if !ok {
			r.request(k)
			return Neighbor{}, false
		}
		return Neighbor{IfIndex: rt.ifindex, LinkMAC: rt.linkMAC, NextHop: nh, MAC: mac, Src: rt.src, MTU: rt.mtu}, true
	}
	return Neighbor{}, false
}

// Generation changes every time the resolver publishes new answers, so
// callers may cache Lookup and Gateway results until it does. It does not
// allocate and is safe for concurrent use.
func (r *Resolver) Generation() uint64 {
	if s := r.snap.Load(); s != nil {
		return s.gen
	}
	return 0
}

// request hands a next hop to the background goroutine without blocking;
// when the queue is full the request is dropped (the periodic refresh and
// the next packet retry).
func (r *Resolver) request(k nhKey) {
	select {
	case r.kick <- k:
	default:
	}
}

// Want registers destinations of interest (real servers, a client
// gateway): from now on they are kept in the cache and resolved. It returns
// once the cache has been rebuilt with them (resolved or not yet).
func (r *Resolver) Want(addrs ...netip.Addr) { r.send(wantReq{addrs: addrs, add: true}) }

// Unwant removes destinations registered with Want.
func (r *Resolver) Unwant(addrs ...netip.Addr) { r.send(wantReq{addrs: addrs}) }

func (r *Resolver) send(q wantReq) {
	q.done = make(chan struct{})
	select {
	case r.reqs <- q:
		<-q.done
	case <-r.done:
	}
}

// Close stops the background goroutine and releases the netlink handle.
// Lookups keep answering from the last snapshot. Close is idempotent.
func (r *Resolver) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		r.wg.Wait()
		r.h.Close()
		r.ns.Close()
	})
	return nil
}

// resolverState is owned by the background goroutine.
type resolverState struct {
	r           *Resolver
	wanted      map[netip.Addr]*wantInfo
	links       map[int]linkInfo
	routes      []routeEntry
	neigh       map[nhKey]neighInfo
	lastTrigger map[nhKey]time.Time
}

type wantInfo struct {
	ok      bool // route found
	ifindex int
	nh      netip.Addr
	src     netip.Addr
	mtu     int // route MTU; 0: link MTU
	err     string
}

type linkInfo struct {
	mtu  int
	mac  [6]byte
	addr netip.Addr // first IPv4 address, fallback source
}

type neighInfo struct {
	mac   [6]byte
	state int
}

// usableNUD are the neighbour states whose link-layer address is valid
// (the kernel's NUD_VALID): DELAY and PROBE are a STALE entry being
// re-confirmed, with the MAC still in use by the kernel itself.
const usableNUD = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

func newResolverState(r *Resolver) *resolverState {
	return &resolverState{
		r:           r,
		wanted:      map[netip.Addr]*wantInfo{},
		links:       map[int]linkInfo{},
		neigh:       map[nhKey]neighInfo{},
		lastTrigger: map[nhKey]time.Time{},
	}
}

// subscriptions are the three netlink notification streams.
type subscriptions struct {
	done  chan struct{}
	neigh chan netlink.NeighUpdate
	route chan netlink.RouteUpdate
	link  chan netlink.LinkUpdate
}

func (st *resolverState) subscribe() (*subscriptions, error) {
	r := st.r
	s := &subscriptions{
		done:  make(chan struct{}),
		neigh: make(chan netlink.NeighUpdate, 256),
		route: make(chan netlink.RouteUpdate, 256),
		link:  make(chan netlink.LinkUpdate, 64),
	}
	onErr := func(err error) {
		select {
		case <-s.done: // closing: errors are expected
		default:
			r.log.Warn("netlink subscription failed; will resubscribe", zap.Error(err))
		}
	}
	ns := r.ns
	err := errors.Join(
		netlink.NeighSubscribeWithOptions(s.neigh, s.done, netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}),
		netlink.RouteSubscribeWithOptions(s.route, s.done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}),
		netlink.LinkSubscribeWithOptions(s.link, s.done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}),
	)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("resolver: netlink subscribe: %w", err)
	}
	return s, nil
}

// close ends the subscriptions and drains their channels so that the
// library's receive goroutines, which send without select, can exit.
func (s *subscriptions) close() {
	close(s.done)
	go func() {
		for range s.neigh {
		}
	}()
	go func() {
		for range s.route {
		}
	}()
	go func() {
		for range s.link {
		}
	}()
}

func (st *resolverState) loop() {
	r := st.r
	refresh := time.NewTicker(r.cfg.RefreshInterval)
	defer refresh.Stop()
	pending := time.NewTimer(time.Hour)
	pending.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	var dirtyRoutes, dirtyNeigh, armed bool
	arm := func() {
		if !armed {
			armed = true
			pending.Reset(debounce)
		}
	}

	subs, err := st.subscribe()
	if err != nil {
		r.log.Warn("netlink notifications unavailable; relying on periodic refresh", zap.Error(err))
		retry.Reset(resubscribe)
	}
	// Notifications that arrived between the first reload and subscribing.
	dirtyRoutes, dirtyNeigh = true, true
	arm()
	defer func() {
		if subs != nil {
			subs.close()
		}
	}()
	var neighCh chan netlink.NeighUpdate
	var routeCh chan netlink.RouteUpdate
	var linkCh chan netlink.LinkUpdate
	setChans := func() {
		neighCh, routeCh, linkCh = nil, nil, nil
		if subs != nil {
			neighCh, routeCh, linkCh = subs.neigh, subs.route, subs.link
		}
	}
	setChans()
	lost := func() {
		subs.close()
		subs = nil
		setChans()
		retry.Reset(resubscribe)
		dirtyRoutes, dirtyNeigh = true, true
		arm()
	}

	for {
		select {
		case <-r.done:
			return
		case _, ok := <-neighCh:
			if !ok {
				lost()
				continue
			}
			dirtyNeigh = true
			arm()
		case _, ok := <-routeCh:
			if !ok {
				lost()
				continue
			}
			dirtyRoutes = true
			arm()
		case _, ok := <-linkCh:
			if !ok {
				lost()
				continue
			}
			dirtyRoutes = true
			arm()
		case <-retry.C:
			if subs, err = st.subscribe(); err != nil {
				r.log.Warn("netlink resubscribe failed", zap.Error(err))
				retry.Reset(resubscribe)
			} else {
				dirtyRoutes, dirtyNeigh = true, true
				arm()
			}
			setChans()
		case <-refresh.C:
			st.reloadAndPublish(true, true)
			st.revalidateStale()
		case <-pending.C:
			armed = false
			st.reloadAndPublish(dirtyRoutes, dirtyNeigh)
			dirtyRoutes, dirtyNeigh = false, false
		case k := <-r.kick:
			st.resolve(k)
		case q := <-r.reqs:
			st.apply(q)
			st.reloadAndPublish(q.add, q.add)
			close(q.done)
		}
	}
}

// apply adds or removes wanted destinations.
func (st *resolverState) apply(q wantReq) {
	for _, a := range q.addrs {
		a = a.Unmap()
		if !a.Is4() {
			st.r.log.Warn("resolver: ignoring non-IPv4 destination", zap.Stringer("addr", a))
			continue
		}
		if q.add {
			if st.wanted[a] == nil {
				st.wanted[a] = &wantInfo{err: "not looked up"}
			}
		} else {
			delete(st.wanted, a)
		}
	}
}

func (st *resolverState) reloadAndPublish(routes, neigh bool) {
	if err := st.reload(routes, neigh); err != nil {
		st.r.log.Warn("resolver: reading kernel tables", zap.Error(err))
	}
	st.publish()
}

// reload re-reads links, routes and the route of every wanted destination
// (routes), and the IPv4 neighbour table (neigh).
func (st *resolverState) reload(routes, neigh bool) error {
	h := st.r.h
	if routes {
		if err := st.reloadLinks(); err != nil {
			return err
		}
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes: %w", err)
		}
		st.routes = st.routeEntries(rs)
		for a, w := range st.wanted {
			*w = st.routeGet(a)
		}
	}
	if neigh {
		ns, err := h.NeighList(0, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("listing neighbours: %w", err)
		}
		m := make(map[nhKey]neighInfo, len(ns))
		for _, n := range ns {
			a, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ni := neighInfo{state: n.State}
			if len(n.HardwareAddr) == 6 {
				copy(ni.mac[:], n.HardwareAddr)
			}
			m[nhKey{int32(n.LinkIndex), a.Unmap().As16()}] = ni
		}
		st.neigh = m
	}
	return nil
}

func (st *resolverState) reloadLinks() error {
	h := st.r.h
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	m := make(map[int]linkInfo, len(links))
	for _, l := range links {
		at := l.Attrs()
		li := linkInfo{mtu: at.MTU}
		if len(at.HardwareAddr) == 6 {
			copy(li.mac[:], at.HardwareAddr)
		}
		m[at.Index] = li
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	for _, ad := range addrs {
		li, ok := m[ad.LinkIndex]
		a, aok := netip.AddrFromSlice(ad.IP)
		if ok && aok && !li.addr.IsValid() {
			li.addr = a.Unmap()
			m[ad.LinkIndex] = li
		}
	}
	st.links = m
	return nil
}

// routeEntries turns the kernel's main table into the Gateway table.
func (st *resolverState) routeEntries(rs []netlink.Route) []routeEntry {
	out := make([]routeEntry, 0, len(rs))
	for _, rt := range rs {
		if rt.Type != unix.RTN_UNICAST {
			continue
		}
		e := routeEntry{prefix: netip.PrefixFrom(netip.IPv4Unspecified(), 0), metric: rt.Priority, ifindex: rt.LinkIndex, mtu: rt.MTU}
		if rt.Dst != nil {
			p, ok := prefixFromIPNet(rt.Dst)
			if !ok {
				continue
			}
			e.prefix = p
		}
		gw := rt.Gw
		if gw == nil && len(rt.MultiPath) > 0 { // ECMP: the first path
			gw, e.ifindex = rt.MultiPath[0].Gw, rt.MultiPath[0].LinkIndex
		}
		if gw != nil {
			a, ok := netip.AddrFromSlice(gw)
			if !ok {
				continue
			}
			e.gw = a.Unmap()
		}
		li, ok := st.links[e.ifindex]
		if !ok {
			continue
		}
		e.linkMAC = li.mac
		if e.mtu == 0 {
			e.mtu = li.mtu
		}
		e.src = li.addr
		if a, ok := netip.AddrFromSlice(rt.Src); ok {
			e.src = a.Unmap()
		}
		out = append(out, e)
	}
	sortRoutes(out)
	return out
}

// sortRoutes orders routes most specific first, then by metric.
func sortRoutes(rs []routeEntry) {
	slices.SortStableFunc(rs, func(a, b routeEntry) int {
		if a.prefix.Bits() != b.prefix.Bits() {
			return b.prefix.Bits() - a.prefix.Bits()
		}
		return a.metric - b.metric
	})
}

// routeLevels groups routes sorted by (prefix length desc, metric asc)
// into lookup levels, keeping the best metric per prefix.
func routeLevels(rs []routeEntry) []routeLevel {
	var out []routeLevel
	for _, e := range rs {
		bits := e.prefix.Bits()
		mask := uint32(0)
		if bits > 0 {
			mask = ^uint32(0) << (32 - bits)
		}
		if len(out) == 0 || out[len(out)-1].mask != mask {
			out = append(out, routeLevel{mask: mask, m: map[uint32]routeEntry{}})
		}
		b := e.prefix.Addr().As4()
		key := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) & mask
		if _, dup := out[len(out)-1].m[key]; !dup {
			out[len(out)-1].m[key] = e
		}
	}
	return out
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits).Masked(), true
}

// routeGet asks the kernel (policy routing included) how it would send to a.
func (st *resolverState) routeGet(a netip.Addr) wantInfo {
	rs, err := st.r.h.RouteGet(a.AsSlice())
	if err != nil {
		return wantInfo{err: err.Error()}
	}
	if len(rs) == 0 {
		return wantInfo{err: "no route"}
	}
	rt := rs[0]
	if rt.Type != unix.RTN_UNICAST {
		return wantInfo{err: fmt.Sprintf("route type %d is not unicast (local address?)", rt.Type)}
	}
	w := wantInfo{ok: true, ifindex: rt.LinkIndex, nh: a, mtu: rt.MTU}
	if g, ok := netip.AddrFromSlice(rt.Gw); ok {
		w.nh = g.Unmap()
	}
	if s, ok := netip.AddrFromSlice(rt.Src); ok {
		w.src = s.Unmap()
	}
	return w
}

// publish builds and stores a snapshot from the state, logs changes of
// wanted destinations and triggers resolution of the unresolved ones.
func (st *resolverState) publish() {
	r := st.r
	s := &resolverSnapshot{
		dests:  make(map[[16]byte]destEntry, len(st.wanted)),
		routes: routeLevels(st.routes),
		neigh:  make(map[nhKey][6]byte, len(st.neigh)),
	}
	for k, n := range st.neigh {
		if n.state&usableNUD != 0 && n.mac != ([6]byte{}) {
			s.neigh[k] = n.mac
		}
	}
	var unresolved []nhKey
	for a, w := range st.wanted {
		e := destEntry{nh: nhKey{0, a.As16()}}
		if w.ok {
			e.nh = nhKey{int32(w.ifindex), w.nh.As16()}
			li := st.links[w.ifindex]
			e.n = Neighbor{IfIndex: w.ifindex, LinkMAC: li.mac, NextHop: w.nh, Src: w.src, MTU: w.mtu}
			if e.n.MTU == 0 {
				e.n.MTU = li.mtu
			}
			if !e.n.Src.IsValid() {
				e.n.Src = li.addr
			}
			e.n.MAC, e.ok = s.neigh[e.nh]
		}
		if !e.ok {
			unresolved = append(unresolved, e.nh)
		}
		s.dests[a.As16()] = e
	}
	if prev := r.snap.Load(); prev != nil {
		s.gen = prev.gen + 1
	}
	old := r.snap.Swap(s)
	if old != nil {
		st.logChanges(old, s)
	}
	for _, k := range unresolved {
		st.resolve(k)
	}
}

func (st *resolverState) logChanges(old, cur *resolverSnapshot) {
	log := st.r.log
	for k, e := range cur.dests {
		o, had := old.dests[k]
		if had && o.ok == e.ok && o.n == e.n {
			continue
		}
		a := netip.AddrFrom16(k).Unmap()
		if e.ok {
			log.Info("next hop resolved", zap.Stringer("dest", a), zap.Stringer("nexthop", e.n.NextHop),
				zap.Stringer("mac", net.HardwareAddr(e.n.MAC[:])), zap.Int("ifindex", e.n.IfIndex), zap.Int("mtu", e.n.MTU))
		} else if !had || o.ok {
			log.Info("next hop unresolved", zap.Stringer("dest", a), zap.String("reason", st.reason(a)))
		}
	}
}

func (st *resolverState) reason(a netip.Addr) string {
	w := st.wanted[a]
	if w == nil {
		return "not wanted"
	}
	if !w.ok {
		return w.err
	}
	return "neighbour " + w.nh.String() + " not resolved"
}

// resolve asks the kernel to resolve next hop k (rate-limited per next
// hop). For a wanted destination without a route (ifindex 0) it looks the
// route up again first.
func (st *resolverState) resolve(k nhKey) {
	now := time.Now()
	if t, ok := st.lastTrigger[k]; ok && now.Sub(t) < st.r.cfg.RetryInterval {
		return
	}
	st.lastTrigger[k] = now
	if len(st.lastTrigger) > 4096 {
		for kk, t := range st.lastTrigger {
			if now.Sub(t) > time.Minute {
				delete(st.lastTrigger, kk)
			}
		}
	}
	if k.ifindex == 0 {
		a := netip.AddrFrom16(k.addr).Unmap()
		w := st.wanted[a]
		if w == nil {
			return
		}
		if *w = st.routeGet(a); w.ok {
			st.publish() // publishes, then resolves the next hop
		}
		return
	}
	if n, ok := st.neigh[k]; ok && n.state&usableNUD != 0 && n.mac != ([6]byte{}) {
		return // resolved meanwhile; the notification is on its way
	}
	st.trigger(k)
}

// trigger makes the kernel start (or restart) neighbour resolution for k,
// as if it had a packet to send there.
func (st *resolverState) trigger(k nhKey) {
	a := netip.AddrFrom16(k.addr).Unmap()
	err := st.r.h.NeighSet(&netlink.Neigh{
		LinkIndex: int(k.ifindex),
		Family:    netlink.FAMILY_V4,
		IP:        a.AsSlice(),
		Flags:     netlink.NTF_USE,
	})
	if err != nil {
		st.r.log.Debug("resolver: neighbour trigger failed", zap.Stringer("addr", a), zap.Int("ifindex", int(k.ifindex)), zap.Error(err))
	}
}

// revalidateStale makes the kernel re-confirm wanted next hops in STALE
// state. The kernel only does that when it sends through the entry itself,
// and gvs's traffic bypasses it, so without this a next hop whose MAC
// changed silently would keep its old MAC.
func (st *resolverState) revalidateStale() {
	for _, w := range st.wanted {
		if !w.ok {
			continue
		}
		k := nhKey{int32(w.ifindex), w.nh.As16()}
		if n, ok := st.neigh[k]; ok && n.state == netlink.NUD_STALE {
			st.trigger(k)
		}
	}
}
