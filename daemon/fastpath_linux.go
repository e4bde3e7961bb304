package daemon

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/forwarder/xdp"
	"gvs/ipvs"
	"gvs/rewrite"
)

// The XDP fast path for established flows (Config.XDPFastPath, gvsd
// --xdp-fastpath; see package xdp's fast_linux.go). The pipeline stays
// the authority; the daemon keeps the program's flow map in step with it:
//
//   - install: after the pipeline transmitted a steady packet (TCP ACK
//     without SYN, FIN, RST; UDP) of an ESTABLISHED (or UDP) NAT, DR or
//     TUN connection, the flow's plan is made from the transmitted frame
//     (xdp.PlanFor) and installed; later packets of the flow are rewritten
//     (TUN: encapsulated, with IPv4 IDs from the counter of the worker
//     that serves the RX queue, shared with it) and redirected in the
//     driver;
//   - remove: when the pipeline sees the connection leave the steady state
//     (both NAT directions), or a new connection take the tuple; when the
//     fold finds the connection gone, changed (another real server) or its
//     real server removed; when the services change (all entries); an
//     entry idle for longer than its connection's timeout (less
//     fastMargin) is not used by the program any more and is removed too;
//     a TUN entry is removed when net.ipv4.vs.pmtu_disc changed (the
//     outer DF it copies or clears);
//   - egress check: a flow is installed only when its egress interface
//     takes redirected frames (the kernel reports NETDEV_XDP_ACT_NDO_XMIT
//     for it; a veth has it only while its peer has NAPI on: GRO or an
//     XDP program of its own). bpf_redirect to an interface without it
//     drops the frame. The fold re-reads the bit every tick: when an
//     interface loses it, its entries are removed and the pipeline
//     forwards those flows again (AF_XDP), until it is back;
//   - fold: every housekeeping tick (100 ms) the entries' packet and byte
//     counters are added to the real servers' and services' statistics
//     and an entry whose real server is gone or that is idle past its
//     timeout is removed; every fastDue-th tick (a quarter of the entries
//     each tick, by key hash) an entry's connection is looked up: a flow
//     seen since re-arms its connection's timer at the time it was last
//     seen (the state machine applies an ACK, as for a packet of the
//     flow), and a connection gone or changed removes the entry. The
//     lookups were most of the fold's cost (with 10k flows, all looked
//     up every tick, the fold cost more CPU than the fast path saved at
//     60 kpps).
//
// Staleness: `-Ln --stats` lags the fast path's packets by at most a tick
// (~100 ms) and the `-Lnc` expire column by at most fastDue ticks
// (~400 ms; fastMargin covers it); a state change made by the other
// direction and a removed real server take at most a tick to reach the
// program (the pipeline's own flow cache lags by up to a second), a
// connection removed otherwise at most fastDue ticks.
const (
	fastShards = 64
	// fastMargin is taken off a connection's timeout for the program's
	// idle check: the connection's timer, re-armed by the fold, is then
	// still running whenever the program forwards.
	fastMargin = time.Second
	// fastRetry is how long a worker waits before trying to install the
	// same flow again (a flow the program declines, too big for instance).
	fastRetry = int64(time.Second)
	// fastDue: the fold looks an entry's connection up every fastDue-th
	// tick. fastDue ticks and the fold's own lag stay below fastMargin.
	fastDue = 4
)

type fastPath struct {
	flows   *xdp.FlowMap
	env     forwarder.Env
	conns   *conntrack.Table
	set     *ipvs.Settings
	ifindex [2]int
	// redirect[side]: the side's interface takes redirected frames
	// (refreshed by the fold; read by the workers).
	redirect   [2]atomic.Bool
	log        *zap.Logger
	checked    bool  // checkEgress ran
	mono0      int64 // CLOCK_MONOTONIC at the daemon clock's zero
	shards     [fastShards]fastShard
	scratch    []fastItem // the fold's, reused
	keys       []xdp.FlowKey
	plans      []xdp.FlowPlan // the fold's read of the map (ReadAll), reused
	gen        uint64         // fold generation: the entries the last read found
	noBatch    bool           // the kernel has no batch lookup: one Lookup per entry
	readWarned bool           // a batch read failed (logged once)
	tick       uint32         // folds so far (which quarter of the entries is due)
	planFlags  uint8          // the plan flags (pmtu_disc) of this fold: TUN entries installed under others go
	sums       []fastSum      // the fold's counter deltas per real server and direction
}

// fastSum is what one fold adds to a real server's (and its service's)
// statistics in one direction: one set of atomic adds per real server
// instead of per entry.
type fastSum struct {
	dest        *ipvs.Dest
	out         bool
	pkts, bytes uint64
}

type fastShard struct {
	mu sync.Mutex
	m  map[xdp.FlowKey]*fastEntry
}

type fastEntry struct {
	out   bool
	flags uint8 // the plan's (xdp.FlagCopyDF)
	tun   bool
	side  int // the egress side
	dest  *ipvs.Dest
	pkts  uint64 // folded so far
	bytes uint64
	seen  uint64 // the last Seen folded (CLOCK_MONOTONIC)
	gen   uint64 // the fold that last found it in the map
}

type fastItem struct {
	k xdp.FlowKey
	e *fastEntry
}

// fastRecent is a worker's memory of its latest install attempts
// (direct-mapped), so that packets the program declines do not cost a
// lock and a system call each.
type fastRecent [256]struct {
	k  xdp.FlowKey
	at int64
}

func newFastPath(flows *xdp.FlowMap, env forwarder.Env, conns *conntrack.Table, set *ipvs.Settings, ifindex [2]int, clock func() int64, log *zap.Logger) *fastPath {
	f := &fastPath{flows: flows, env: env, conns: conns, set: set, ifindex: ifindex, log: log}
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	f.mono0 = ts.Nano() - clock()
	for i := range f.shards {
		f.shards[i].m = map[xdp.FlowKey]*fastEntry{}
	}
	f.checkEgress()
	return f
}

// checkEgress re-reads whether each side's interface takes redirected
// frames, logs a change (and the state at start) and removes the entries
// of a side that no longer does.
func (f *fastPath) checkEgress() {
	oneArm := f.ifindex[forwarder.DIPSide] == f.ifindex[forwarder.VIPSide]
	for side, ifx := range f.ifindex {
		if side == forwarder.DIPSide && oneArm {
			f.redirect[side].Store(f.redirect[forwarder.VIPSide].Load())
			break
		}
		ok, err := xdp.RedirectTarget(ifx)
		was := f.redirect[side].Swap(ok)
		if (was != ok || !f.checked) && f.log != nil {
			if ok {
				f.log.Info("XDP fast path: interface takes redirected frames", zap.Int("ifindex", ifx))
			} else {
				f.log.Warn("XDP fast path off for flows leaving this interface: it does not take redirected frames"+
					" (a veth needs GRO on or an XDP program on its peer); the pipeline forwards them",
					zap.Int("ifindex", ifx), zap.Error(err))
			}
		}
	}
	f.checked = true
	for side := range f.redirect {
		if !f.redirect[side].Load() {
			f.removeSide(side)
		}
	}
}

// removeSide removes the entries whose egress is side.
func (f *fastPath) removeSide(side int) {
	var keys []xdp.FlowKey
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if e.side == side {
				keys = append(keys, k)
			}
		}
		s.mu.Unlock()
	}
	for j := range keys {
		f.remove(&keys[j])
	}
}

func (k fastKeyHash) shard() int { return int(k % fastShards) }

type fastKeyHash uint32

func hashFlowKey(k *xdp.FlowKey) fastKeyHash {
	h := uint32(k.Src[0])<<24 | uint32(k.Src[1])<<16 | uint32(k.Src[2])<<8 | uint32(k.Src[3])
	h ^= uint32(k.Dst[0])<<24 | uint32(k.Dst[1])<<16 | uint32(k.Dst[2])<<8 | uint32(k.Dst[3])
	h ^= uint32(k.SrcPort[0])<<24 | uint32(k.SrcPort[1])<<16 | uint32(k.DstPort[0])<<8 | uint32(k.DstPort[1])
	h *= 0x9e3779b1
	return fastKeyHash(h >> 8)
}

func (f *fastPath) has(k *xdp.FlowKey) bool {
	s := &f.shards[hashFlowKey(k).shard()]
	s.mu.Lock()
	_, ok := s.m[*k]
	s.mu.Unlock()
	return ok
}

// fastMethod is the fast-path method of a Result (0: none).
func fastMethod(r *forwarder.Result) uint8 {
	switch {
	case r.Method == ipvs.Masq && r.Out:
		return xdp.FastNATOut
	case r.Method == ipvs.Masq:
		return xdp.FastNATIn
	case r.Method == ipvs.Route && !r.Out:
		return xdp.FastDR
	case r.Method == ipvs.Tunnel && !r.Out:
		return xdp.FastTUN
	}
	return 0
}

// flags are the plan flags the settings give (xdp.FlagCopyDF: IPVS's
// tunnel copies the inner DF only with pmtu_disc).
func (f *fastPath) flags() uint8 {
	if f.set != nil && f.set.Get(ipvs.SysPmtuDisc) == 0 {
		return 0
	}
	return xdp.FlagCopyDF
}

// after keeps the map in step with the pipeline's Result for a frame of
// flow k (steady: a steady packet), processed at now by a worker with
// memory recent.
func (f *fastPath) after(k *xdp.FlowKey, steady bool, r *forwarder.Result, now int64, recent *fastRecent) {
	stable := r.State == conntrack.StateEstablished || r.State == conntrack.StateUDP
	m := fastMethod(r)
	if !stable || r.New {
		if f.has(k) {
			f.remove(k)
		}
		if r.Action == forwarder.Transmit && (m == xdp.FastNATIn || m == xdp.FastNATOut) {
			if o, _, ok := xdp.FrameKey(r.Frame); ok {
				if o = o.Reverse(); f.has(&o) {
					f.remove(&o)
				}
			}
		}
		return
	}
	if r.Action != forwarder.Transmit || r.Frags != 0 || !steady || m == 0 {
		return
	}
	slot := &recent[hashFlowKey(k)&0xff]
	if slot.k == *k && now-slot.at < fastRetry && now >= slot.at {
		return
	}
	slot.k, slot.at = *k, now
	if f.has(k) {
		return
	}
	dst := r.Dest.Addr
	if r.Out {
		dst = netip.AddrFrom4(k.Dst)
	}
	if uint(r.Link) > 1 || !f.redirect[r.Link].Load() {
		return
	}
	hop, ok := f.env.Route(dst)
	if !ok {
		return
	}
	timeout := f.conns.Timeouts().UDP
	if k.Proto == rewrite.ProtoTCP {
		timeout = f.conns.Timeouts().TCP[conntrack.StateEstablished]
	}
	if timeout -= fastMargin; timeout <= 0 {
		return
	}
	flags := f.flags()
	plan, ok := xdp.PlanFor(k, r.Frame, m, f.ifindex[r.Link], hop.MTU, flags)
	if !ok {
		return
	}
	plan.Seen, plan.Timeout = uint64(now+f.mono0), uint64(timeout)
	s := &f.shards[hashFlowKey(k).shard()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*k]; ok {
		return
	}
	if ok, err := f.flows.Install(k, &plan); ok && err == nil {
		s.m[*k] = &fastEntry{out: r.Out, flags: flags, tun: m == xdp.FastTUN, side: r.Link, dest: r.Dest, seen: plan.Seen}
	}
}

// remove deletes flow k's entry, folding its last counters.
func (f *fastPath) remove(k *xdp.FlowKey) {
	s := &f.shards[hashFlowKey(k).shard()]
	s.mu.Lock()
	e := s.m[*k]
	delete(s.m, *k)
	s.mu.Unlock()
	var v xdp.FlowPlan
	if f.flows.Remove(k, &v) && e != nil {
		f.count(e, &v)
	}
}

// count adds what the entry forwarded since the last fold to its real
// server's and service's statistics (slot 0: the adds are atomic).
func (f *fastPath) count(e *fastEntry, v *xdp.FlowPlan) {
	dp, db := v.Packets-e.pkts, v.Bytes-e.bytes
	if dp == 0 {
		return
	}
	e.pkts, e.bytes = v.Packets, v.Bytes
	ds, ss := &e.dest.Stats[0], &e.dest.Svc.Stats[0]
	if e.out {
		ds.OutPkts.Add(dp)
		ds.OutBytes.Add(db)
		ss.OutPkts.Add(dp)
		ss.OutBytes.Add(db)
		return
	}
	ds.InPkts.Add(dp)
	ds.InBytes.Add(db)
	ss.InPkts.Add(dp)
	ss.InBytes.Add(db)
}

// fold folds every entry's counters and last-seen time into the
// statistics and the connection table, and removes the entries whose
// connection is gone, changed or idle past the program's timeout; now is
// the daemon clock. It reads the map in a few batch lookups (ReadAll)
// where the kernel has them, one lookup per entry otherwise: with 10k
// flows, the lookups one by one cost more CPU than the fast path saved at
// 60 kpps.
func (f *fastPath) fold(now int64) {
	f.checkEgress()
	items := f.scratch[:0]
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			items = append(items, fastItem{k, e})
		}
		s.mu.Unlock()
	}
	f.scratch = items
	f.planFlags = f.flags()
	defer clear(items)
	f.tick++
	defer f.addSums()
	if !f.noBatch {
		keys, plans, err := f.flows.ReadAll(f.keys[:0], f.plans[:0])
		f.keys, f.plans = keys, plans
		if err == nil {
			f.gen++
			for i := range keys {
				k := &keys[i]
				s := &f.shards[hashFlowKey(k).shard()]
				s.mu.Lock()
				e := s.m[*k]
				s.mu.Unlock()
				if e != nil {
					e.gen = f.gen
					f.foldEntry(k, e, &plans[i], now)
				}
			}
			// Listed before the read, not in the map: gone.
			for i := range items {
				if items[i].e.gen != f.gen {
					f.remove(&items[i].k)
				}
			}
			return
		}
		if errors.Is(err, xdp.ErrNoBatch) {
			f.noBatch = true
		} else if !f.readWarned && f.log != nil {
			f.readWarned = true
			f.log.Warn("XDP fast path: reading the flow map in batches failed; reading it entry by entry", zap.Error(err))
		}
	}
	for i := range items {
		k, e := &items[i].k, items[i].e
		var v xdp.FlowPlan
		if !f.flows.Lookup(k, &v) {
			f.remove(k)
			continue
		}
		f.foldEntry(k, e, &v, now)
	}
}

// foldEntry folds one entry's counters v (read from the map) and removes
// it when it is idle or its real server gone; when the entry is due
// (fastDue), it re-arms the connection's timer or, the connection gone or
// changed, removes the entry.
func (f *fastPath) foldEntry(k *xdp.FlowKey, e *fastEntry, v *xdp.FlowPlan, now int64) {
	f.sum(e, v)
	idle := now+f.mono0-int64(v.Seen) > int64(v.Timeout)
	if idle || !e.dest.Available() || e.tun && e.flags != f.planFlags {
		f.remove(k)
		return
	}
	if (uint32(hashFlowKey(k))+f.tick)%fastDue != 0 {
		return
	}
	sp, dp := k.Ports()
	proto := ipvs.Protocol(k.Proto)
	var flags uint8
	if proto == ipvs.ProtoTCP {
		flags = rewrite.TCPAck
	}
	var c conntrack.Conn
	alive := false
	if v.Seen > e.seen {
		// Seen since the last fold: the flow's packet at that time.
		e.seen = v.Seen
		at := min(int64(v.Seen)-f.mono0, now)
		if e.out {
			alive = f.conns.Out(conntrack.ReplyKeyV4(proto, k.Src, sp, k.Dst, dp), flags, at, &c)
		} else {
			alive, _ = f.conns.InLive(conntrack.InKeyV4(proto, k.Src, sp, k.Dst, dp), flags, at, &c)
		}
	} else if e.out {
		alive = f.conns.PeekOut(conntrack.ReplyKeyV4(proto, k.Src, sp, k.Dst, dp), now, &c)
	} else {
		alive = f.conns.PeekIn(conntrack.InKeyV4(proto, k.Src, sp, k.Dst, dp), now, &c)
	}
	if !alive || c.Dest != e.dest || !c.Dest.Available() ||
		c.State != conntrack.StateEstablished && c.State != conntrack.StateUDP {
		f.remove(k)
	}
}

// sum adds what entry e forwarded since the last fold (v: its counters
// now) to the fold's sums.
func (f *fastPath) sum(e *fastEntry, v *xdp.FlowPlan) {
	dp, db := v.Packets-e.pkts, v.Bytes-e.bytes
	if dp == 0 {
		return
	}
	e.pkts, e.bytes = v.Packets, v.Bytes
	for i := range f.sums {
		if s := &f.sums[i]; s.dest == e.dest && s.out == e.out {
			s.pkts += dp
			s.bytes += db
			return
		}
	}
	f.sums = append(f.sums, fastSum{dest: e.dest, out: e.out, pkts: dp, bytes: db})
}

// addSums adds the fold's sums to the statistics and clears them.
func (f *fastPath) addSums() {
	for i := range f.sums {
		s := &f.sums[i]
		ds, ss := &s.dest.Stats[0], &s.dest.Svc.Stats[0]
		if s.out {
			ds.OutPkts.Add(s.pkts)
			ds.OutBytes.Add(s.bytes)
			ss.OutPkts.Add(s.pkts)
			ss.OutBytes.Add(s.bytes)
		} else {
			ds.InPkts.Add(s.pkts)
			ds.InBytes.Add(s.bytes)
			ss.InPkts.Add(s.pkts)
			ss.InBytes.Add(s.bytes)
		}
	}
	clear(f.sums)
	f.sums = f.sums[:0]
}

// flush removes every entry (the services changed).
func (f *fastPath) flush() {
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		keys := make([]xdp.FlowKey, 0, len(s.m))
		for k := range s.m {
			keys = append(keys, k)
		}
		s.mu.Unlock()
		for j := range keys {
			f.remove(&keys[j])
		}
	}
}

// entries is the number of flows in the map.
func (f *fastPath) entries() int {
	n := 0
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
