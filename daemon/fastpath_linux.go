package daemon

import (
	"encoding/binary"
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
//     TUN connection (UDP: from the connection's first datagram, unless
//     the service schedules one packet at a time), the flow's plan is made from the transmitted frame
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
//   - counter slots: each entry has its own slot in the program's counter
//     array (xdp.FlowMap.Counters, mapped memory), from its shard's range
//     of slots (MaxFlows/fastShards each; a full shard installs nothing
//     more). A removed entry's slot is reused only after two folds (at
//     least one tick), when no program run that found the entry can
//     still be adding to it;
//   - fold: every housekeeping tick (100 ms) the fold walks each shard's
//     slots in order, in memory (no system call, no walk of the hash
//     map's buckets, no Go map lookup): the packet and byte counters are
//     added to the real servers' and services' statistics and an entry
//     whose real server is gone or that is idle past its timeout is
//     removed. Only a flow seen since its last re-arm whose connection's
//     timer comes due (half its timeout before it runs out, at least
//     fastSoon) costs more: its connection is looked up and its timer
//     re-armed at the time the flow was last seen (the state machine
//     applies an ACK, as for a packet of the flow); a connection gone or
//     changed removes the entry. The kernel re-arms the timer at every
//     packet; gvs's timer runs on until it comes due, and -Lnc lists the
//     expiry the kernel would, from the later of the timer and the
//     flow's last-seen time (the table's SeenFunc, lastSeen). When the
//     table reports a connection removed or changed other than by its
//     packets and timer (conntrack.Table.Changes: Remove, Flush,
//     RemoveDest, drop_entry, a sync record) or the timeouts change, the
//     next fastDue folds look every entry's connection up, a quarter of
//     the slots each (re-armed if seen, only read if not). (Reading the
//     whole hash map every tick, in batches, cost ~8 % of a CPU with 10k
//     flows; the connection lookups, done for all entries every tick,
//     more than the fast path saved at 60 kpps; re-arming every seen
//     flow every fastDue ticks was ~3/4 of the fold.)
//
// Staleness: `-Ln --stats` lags the fast path's packets by at most a tick
// (~100 ms); the `-Lnc` expire column does not lag (it reads the
// last-seen time); a state change made by the other direction and a
// removed real server take at most a tick to reach the program (the
// pipeline's own flow cache lags by up to a second), a connection removed
// or changed otherwise at most fastDue ticks.
const (
	fastShards = 64
	// fastMargin is taken off a connection's timeout for the program's
	// idle check: the connection's timer, re-armed by the fold when it
	// comes due, is then still running whenever the program forwards.
	fastMargin = time.Second
	// fastRetry is how long a worker waits before trying to install the
	// same flow again (a flow the program declines, too big for instance).
	fastRetry = int64(time.Second)
	// fastDue: after a change in the connection table, the fold looks
	// each entry's connection up within fastDue ticks (a quarter of the
	// slots each tick).
	fastDue = 4
	// fastSoon: a seen flow's connection is re-armed by the fold when its
	// timer runs out within half its timeout, at least fastSoon (the
	// ticks to the next fold and the fold's own lag stay below it); so a
	// fold delayed by up to that still finds the timer running.
	fastSoon = int64(fastMargin / 2)
	// fastSlots is a shard's range of counter slots.
	fastSlots = xdp.MaxFlows / fastShards
)

type fastPath struct {
	flows   *xdp.FlowMap
	env     forwarder.Env
	conns   *conntrack.Table
	set     *ipvs.Settings
	ifindex [2]int
	// redirect[side]: the side's interface takes redirected frames
	// (refreshed by the fold; read by the workers).
	redirect  [2]atomic.Bool
	log       *zap.Logger
	checked   bool  // checkEgress ran
	mono0     int64 // CLOCK_MONOTONIC at the daemon clock's zero
	shards    [fastShards]fastShard
	scratch   []fastItem // the fold's, reused
	tick      uint32     // folds so far (which quarter of the slots is due)
	planFlags uint8      // the plan flags (pmtu_disc) of this fold: TUN entries installed under others go
	sums      []fastSum  // the fold's counter deltas per real server and direction
	// changes and timeouts are the connection table's Changes and
	// timeouts (tcp, tcpfin, udp) at the last fold; sweep is the number of
	// folds left that look up the connections of the due quarter of the
	// entries, seen or not (after a change of either).
	changes  uint64
	timeouts [3]time.Duration
	sweep    int
}

// fastSum is what one fold adds to a real server's (and its service's)
// statistics in one direction: one set of atomic adds per real server
// instead of per entry.
type fastSum struct {
	dest        *ipvs.Dest
	out         bool
	pkts, bytes uint64
}

// fastShard: slot base+j (xdp.FlowMap.Counters) is slots[j]'s.
type fastShard struct {
	mu    sync.Mutex
	m     map[xdp.FlowKey]*fastEntry
	base  uint32
	slots []*fastEntry // by slot - base; nil: free
	free  []uint32     // slots - base free for reuse
	// removed: slots - base of entries removed since the last fold;
	// cooling: those of the fold before, free at the next fold.
	removed, cooling []uint32
	detached         bool // the counter slots are going: seenOf reads none
}

type fastEntry struct {
	k       xdp.FlowKey
	out     bool
	flags   uint8 // the plan's (xdp.FlagCopyDF)
	tun     bool
	side    int // the egress side
	slot    uint32
	dest    *ipvs.Dest
	timeout uint64 // the plan's
	pkts    uint64 // folded so far
	bytes   uint64
	seen    uint64 // the last Seen the connection's timer was re-armed at (CLOCK_MONOTONIC)
	// due is when the fold re-arms the connection's timer, if the flow
	// was seen since (setExpires): set from the timer as the fold last
	// set or read it, never later than the real one, unless the table
	// reports a change (conntrack.Table.Changes) or the timeouts change,
	// after which the fold looks every entry's connection up again.
	due int64
}

// setExpires notes the connection's timer exp and when the fold re-arms
// it: half the connection's timeout (at least fastSoon) before it runs
// out.
func (e *fastEntry) setExpires(exp int64, timeout time.Duration) {
	e.due = exp - max(fastSoon, int64(timeout)/2)
}

// fastItem is an entry the fold acts on outside the shard's lock: remove
// it (drop), re-arm its connection's timer at seen, or (check) only look
// its connection up.
type fastItem struct {
	e     *fastEntry
	seen  uint64
	drop  bool
	check bool
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
		f.shards[i].base = uint32(i * fastSlots)
	}
	f.changes, f.timeouts = f.tableState()
	f.checkEgress()
	conns.SetSeen(f.lastSeen)
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
	// murmur3's finalizer: every bit of the tuple reaches the low bits
	// (the shard, the recent slot, the due tick), so that flows differing
	// only in a port spread over the shards (and their counter slots).
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
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
		// A new UDP connection is steady from its first datagram (IPVS
		// has no UDP states): install it now, so that a flow's first
		// datagram is the only one the pipeline sees (not the first two).
		// One-packet scheduling (-o) makes a connection per datagram:
		// none of its flows is installed.
		if !stable || !r.New || k.Proto != rewrite.ProtoUDP || r.Dest.Svc == nil || r.Dest.Svc.State().Config.OnePacket() {
			return
		}
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
	plan.Timeout = uint64(timeout)
	f.install(k, &plan, &fastEntry{out: r.Out, flags: flags, tun: m == xdp.FastTUN, side: r.Link, dest: r.Dest}, uint64(now+f.mono0))
}

// install installs flow k's plan with entry e (its out, flags, tun, side
// and dest set), seen at seen (CLOCK_MONOTONIC), in a free counter slot.
func (f *fastPath) install(k *xdp.FlowKey, plan *xdp.FlowPlan, e *fastEntry, seen uint64) {
	s := &f.shards[hashFlowKey(k).shard()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*k]; ok {
		return
	}
	var j uint32
	if n := len(s.free); n > 0 {
		j = s.free[n-1]
		s.free = s.free[:n-1]
	} else if len(s.slots) < fastSlots {
		j = uint32(len(s.slots))
		s.slots = append(s.slots, nil)
	} else {
		return // the shard's slots are all in use
	}
	plan.Slot = s.base + j
	// The slot's counters go on from where they are (a late add of the
	// slot's previous flow is lost to the statistics, not added twice).
	c := f.flows.Counters(plan.Slot)
	e.k, e.slot, e.timeout, e.seen = *k, plan.Slot, plan.Timeout, seen
	// The pipeline has just re-armed the connection at seen, to the
	// timeout the plan's is taken from.
	timeout := time.Duration(plan.Timeout) + fastMargin
	e.setExpires(int64(seen)-f.mono0+int64(timeout), timeout)
	e.pkts, e.bytes = atomic.LoadUint64(&c.Packets), atomic.LoadUint64(&c.Bytes)
	atomic.StoreUint64(&c.Seen, seen)
	if ok, err := f.flows.Install(k, plan); ok && err == nil {
		s.m[*k] = e
		s.slots[j] = e
		return
	}
	s.free = append(s.free, j)
}

// remove deletes flow k's entry, folding its last counters.
func (f *fastPath) remove(k *xdp.FlowKey) { f.removeEntry(k, nil) }

// removeEntry deletes flow k's entry if it is e (nil: any), folding its
// last counters.
func (f *fastPath) removeEntry(k *xdp.FlowKey, e *fastEntry) {
	s := &f.shards[hashFlowKey(k).shard()]
	s.mu.Lock()
	cur := s.m[*k]
	if cur == nil || e != nil && cur != e {
		s.mu.Unlock()
		return
	}
	delete(s.m, *k)
	s.slots[cur.slot-s.base] = nil
	s.mu.Unlock()
	var v xdp.FlowPlan
	f.flows.Remove(k, &v)
	f.count(cur)
	s.mu.Lock()
	s.removed = append(s.removed, cur.slot-s.base)
	s.mu.Unlock()
}

// count adds what the entry forwarded since the last fold to its real
// server's and service's statistics (slot 0: the adds are atomic).
func (f *fastPath) count(e *fastEntry) {
	c := f.flows.Counters(e.slot)
	pkts, bytes := atomic.LoadUint64(&c.Packets), atomic.LoadUint64(&c.Bytes)
	dp, db := pkts-e.pkts, bytes-e.bytes
	if dp == 0 {
		return
	}
	e.pkts, e.bytes = pkts, bytes
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
// the daemon clock. It reads the counter slots in memory, shard by shard,
// in slot order; only entries to remove, flows seen since their last
// re-arm whose connection's timer comes due, and (after a change in the
// table) the due quarter of the entries cost more than that.
func (f *fastPath) fold(now int64) {
	f.checkEgress()
	f.foldSlots(now)
}

// foldSlots is fold after the egress check.
func (f *fastPath) foldSlots(now int64) {
	f.planFlags = f.flags()
	f.tick++
	if ch, to := f.tableState(); ch != f.changes || to != f.timeouts {
		f.changes, f.timeouts, f.sweep = ch, to, fastDue
	}
	mono := uint64(now + f.mono0)
	items := f.scratch[:0]
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		// Slots removed two folds ago: no program run still uses them.
		s.free = append(s.free, s.cooling...)
		s.cooling, s.removed = s.removed, s.cooling[:0]
		for j, e := range s.slots {
			if e == nil {
				continue
			}
			c := f.flows.Counters(e.slot)
			seen := atomic.LoadUint64(&c.Seen)
			if pkts := atomic.LoadUint64(&c.Packets); pkts != e.pkts {
				bytes := atomic.LoadUint64(&c.Bytes)
				f.sum(e, pkts-e.pkts, bytes-e.bytes)
				e.pkts, e.bytes = pkts, bytes
			}
			switch {
			case int64(mono-seen) > int64(e.timeout) || !e.dest.Available() || e.tun && e.flags != f.planFlags:
				items = append(items, fastItem{e: e, drop: true})
			case f.sweep > 0 && (uint32(j)+f.tick)%fastDue == 0:
				items = append(items, fastItem{e: e, seen: seen, check: seen <= e.seen})
			case seen > e.seen && now >= e.due:
				items = append(items, fastItem{e: e, seen: seen})
			}
		}
		s.mu.Unlock()
	}
	f.addSums()
	for i := range items {
		switch it := &items[i]; {
		case it.drop:
			f.removeEntry(&it.e.k, it.e)
		case it.check:
			f.check(it.e, now)
		default:
			f.rearm(it.e, it.seen, now)
		}
	}
	clear(items)
	f.scratch = items[:0]
	if f.sweep > 0 {
		f.sweep--
	}
}

// tableState is the connection table's Changes and timeouts (tcp, tcpfin,
// udp).
func (f *fastPath) tableState() (changes uint64, to [3]time.Duration) {
	to[0], to[1], to[2] = f.conns.GetTimeouts()
	return f.conns.Changes(), to
}

// rearm re-arms the timer of entry e's connection at seen (the flow's
// latest packet, CLOCK_MONOTONIC), or removes the entry when the
// connection is gone or changed.
func (f *fastPath) rearm(e *fastEntry, seen uint64, now int64) {
	e.seen = seen
	f.lookup(e, true, min(int64(seen)-f.mono0, now))
}

// check looks entry e's connection up without changing it (no packet of
// the flow since its last re-arm) and removes the entry when the
// connection is gone or changed.
func (f *fastPath) check(e *fastEntry, now int64) { f.lookup(e, false, now) }

// lookup finds entry e's connection at time at, as a packet of the flow
// (an ACK for TCP: re-arming its timer) when packet is set, without
// touching it otherwise, and keeps or removes the entry (keep).
func (f *fastPath) lookup(e *fastEntry, packet bool, at int64) {
	k := &e.k
	sp, dp := k.Ports()
	proto := ipvs.Protocol(k.Proto)
	var c conntrack.Conn
	var alive bool
	switch {
	case packet:
		var flags uint8
		if proto == ipvs.ProtoTCP {
			flags = rewrite.TCPAck
		}
		if e.out {
			alive = f.conns.Out(conntrack.ReplyKeyV4(proto, k.Src, sp, k.Dst, dp), flags, at, &c)
		} else {
			alive, _ = f.conns.InLive(conntrack.InKeyV4(proto, k.Src, sp, k.Dst, dp), flags, at, &c)
		}
	case e.out:
		alive = f.conns.PeekOut(conntrack.ReplyKeyV4(proto, k.Src, sp, k.Dst, dp), at, &c)
	default:
		alive = f.conns.PeekIn(conntrack.InKeyV4(proto, k.Src, sp, k.Dst, dp), at, &c)
	}
	f.keep(e, alive, &c)
}

// keep removes entry e when its connection c (alive: found) is gone or
// changed, and otherwise notes its timer.
func (f *fastPath) keep(e *fastEntry, alive bool, c *conntrack.Conn) {
	if !alive || c.Dest != e.dest || !c.Dest.Available() ||
		c.State != conntrack.StateEstablished && c.State != conntrack.StateUDP {
		f.removeEntry(&e.k, e)
		return
	}
	timeout := f.timeouts[2] // udp
	if e.k.Proto == rewrite.ProtoTCP {
		timeout = f.timeouts[0]
	}
	e.setExpires(c.Expires, timeout)
}

// lastSeen is the connection table's SeenFunc: the latest packet the
// program forwarded of connection c (either direction of a NAT one), for
// the expiry -Lnc lists.
func (f *fastPath) lastSeen(c *conntrack.Conn) (int64, bool) {
	if !c.CAddr.Is4() || !c.VAddr.Is4() || !c.DAddr.Is4() {
		return 0, false
	}
	k := flowKeyV4(c.Proto, c.CAddr, c.CPort, c.VAddr, c.VPort)
	at, ok := f.seenOf(&k, c.Dest)
	if c.Method == ipvs.Masq {
		k = flowKeyV4(c.Proto, c.DAddr, c.DPort, c.CAddr, c.CPort)
		if o, ok2 := f.seenOf(&k, c.Dest); ok2 && (!ok || o > at) {
			at, ok = o, true
		}
	}
	return at, ok
}

// flowKeyV4 is the program's key of the IPv4 flow src:sport -> dst:dport.
func flowKeyV4(proto ipvs.Protocol, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) xdp.FlowKey {
	k := xdp.FlowKey{Src: src.As4(), Dst: dst.As4(), Proto: uint8(proto)}
	binary.BigEndian.PutUint16(k.SrcPort[:], sport)
	binary.BigEndian.PutUint16(k.DstPort[:], dport)
	return k
}

// seenOf is the last-seen time (daemon clock) of flow k's entry, if it
// has one for real server d.
func (f *fastPath) seenOf(k *xdp.FlowKey, d *ipvs.Dest) (int64, bool) {
	s := &f.shards[hashFlowKey(k).shard()]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[*k]
	if e == nil || e.dest != d || s.detached {
		return 0, false
	}
	return int64(atomic.LoadUint64(&f.flows.Counters(e.slot).Seen)) - f.mono0, true
}

// sum adds what entry e forwarded since the last fold (dp packets, db
// bytes) to the fold's sums.
func (f *fastPath) sum(e *fastEntry, dp, db uint64) {
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

// detach stops the connection table's Walk from reading the counter
// slots (before the flow map closes): a Walk under way holds a shard's
// lock while it reads one.
func (f *fastPath) detach() {
	f.conns.SetSeen(nil)
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		s.detached = true
		s.mu.Unlock()
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
