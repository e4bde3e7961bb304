package conntrack

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"gvs/ipvs"
)

// IPVS's defenses against a full table (ip_vs_ctl.c update_defense_level and
// defense_work_handler, ip_vs_conn.c ip_vs_random_dropentry and
// todrop_entry, ip_vs.h ip_vs_todrop), driven by the table's free room
// instead of the host's free memory, plus one of gvs's own: Create evicts a
// half-open connection of its shard rather than refusing a new one when the
// table is full.
//
// The pressure signal. The kernel compares its free memory, in pages, with
// amemthresh (default 1024 pages, 4 MiB). gvs's connections live in a table
// of fixed capacity, so the memory that matters is the table's free room:
// availmem is the number of free slots (Capacity - Len) divided by
// SlotsPerPage, the number of entries whose memory fills one 4 KiB page (a
// 96-byte entry plus its share of the index and slab, rounded up to 128
// bytes: 32 per page). amemthresh keeps its kernel unit and default: the
// automatic modes engage when fewer than amemthresh*32 slots are free
// (32768 by default), and drop_packet's automatic rate is the kernel's
// amemthresh/(amemthresh-availmem) of those same pages.

// SlotsPerPage is the number of table slots that count as one page of
// available memory for amemthresh.
const SlotsPerPage = 32

// Availmem is the table's free room in pages of SlotsPerPage slots: what
// update_defense_level compares with amemthresh.
func (t *Table) Availmem() int64 {
	free := t.capacity - t.live.Load()
	if free < 0 {
		free = 0
	}
	return free / SlotsPerPage
}

// halfOpen reports whether e is a connection that has not been established:
// TCP in SYN_RECV, SYNACK or NONE. Templates and other protocols never are.
func halfOpen(e *entry) bool {
	if e.flags&fTemplate != 0 || e.proto != ipvs.ProtoTCP {
		return false
	}
	switch e.state {
	case StateSynRecv, StateSynAck, StateNone:
		return true
	}
	return false
}

// evictScan bounds the entries evictHalfOpen examines.
const evictScan = 256

// evictHalfOpen frees the half-open connection of s (locked) that is
// nearest to expiry, among at most evictScan entries examined along the
// timing wheel from the current tick; it reports whether it freed one.
// Established connections and templates are never evicted.
//
// An entry sits on the list of a tick no later than its expiry (re-arms
// to later times are lazy), so once a candidate expires before the next
// tick starts, no entry further on can expire sooner.
func (t *Table) evictHalfOpen(s *shard) bool {
	if !s.started {
		return false
	}
	best, bestExp := uint32(nilSlot), int64(maxInt64)
	budget := evictScan
	for i := int64(0); i < wheelSize && budget > 0; i++ {
		if best != nilSlot && bestExp < (s.cur+i)<<tickShift {
			break
		}
		for slot := s.wheel[uint32(s.cur+i)&wheelMask]; slot != nilSlot && budget > 0; budget-- {
			e := s.at(slot)
			if e.expires < bestExp && halfOpen(e) {
				best, bestExp = slot, e.expires
			}
			slot = e.next
		}
	}
	if best == nilSlot {
		return false
	}
	t.release(s, best, s.at(best), true)
	s.evicted++
	return true
}

// ToDrop is drop_packet's verdict on a first packet that would be
// scheduled for a connection with key k (ip_vs_todrop, which
// tcp_conn_schedule and udp_conn_schedule ask once the service is found,
// before ip_vs_schedule: before the scheduler, a persistence template or
// the new connection): true drops it, counted in Stats.DropPacket. It
// costs one atomic load while drop_packet is off; on, it takes the lock of
// k's shard, whose counter stands for the kernel's one drop_counter (one
// packet in rate is dropped per shard). It does not allocate.
func (t *Table) ToDrop(k InKey) bool {
	rate := t.dropRate.Load()
	if rate == 0 {
		return false
	}
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, _ := t.shardOf(h)
	s.mu.Lock()
	drop := t.toDrop(s, rate)
	if drop {
		s.dropPacket++
	}
	s.mu.Unlock()
	return drop
}

// toDrop is ip_vs_todrop with a counter per shard (s locked): it drops one
// new connection in rate. The shard's counter restarts at rate each time
// update_defense_level resets the kernel's drop_counter.
func (t *Table) toDrop(s *shard, rate int64) bool {
	if ep := t.dropEpoch.Load(); ep != s.dropEpoch {
		s.dropEpoch, s.dropCounter = ep, rate
	}
	s.dropCounter--
	if s.dropCounter > 0 {
		return false
	}
	s.dropCounter = rate
	return true
}

// setDropRate publishes drop_packet's rate (0: off); reset restarts every
// shard's counter at it.
func (t *Table) setDropRate(rate int64, reset bool) {
	t.dropRate.Store(rate)
	if reset {
		t.dropEpoch.Add(1)
	}
}

// DefenseSysctls are the sysctls update_defense_level reads; it rewrites
// DropEntry, DropPacket and SecureTCP between 1 and 2.
type DefenseSysctls struct {
	DropEntry, DropPacket, SecureTCP int64 // 0..3
	AmDroprate                       int64
	Amemthresh                       int64 // pages (see SlotsPerPage)
}

// defenseLevel is what update_defense_level decides beyond the sysctls.
type defenseLevel struct {
	dropEntry bool  // ipvs->dropentry: the periodic scan runs
	dropRate  int64 // ipvs->drop_rate
	// resetCounter: drop_counter = drop_rate (automatic modes under
	// pressure).
	resetCounter bool
	// toChange is the kernel's to_change: -1 nothing, else the state
	// table is switched to secure (SecureTCP > 1) or normal.
	toChange int
}

// updateDefenseLevel is the kernel's update_defense_level over v (rewritten
// in place) with availmem pages free; oldSecure is its old_secure_tcp.
func updateDefenseLevel(v *DefenseSysctls, availmem int64, oldSecure *int64) defenseLevel {
	var l defenseLevel
	l.toChange = -1
	amemthresh := max(v.Amemthresh, 0)
	nomem := availmem < amemthresh

	switch v.DropEntry {
	case 1:
		if nomem {
			l.dropEntry = true
			v.DropEntry = 2
		}
	case 2:
		if nomem {
			l.dropEntry = true
		} else {
			v.DropEntry = 1
		}
	case 3:
		l.dropEntry = true
	}

	switch v.DropPacket {
	case 1, 2:
		if nomem {
			l.dropRate = amemthresh / (amemthresh - availmem)
			l.resetCounter = true
			v.DropPacket = 2
		} else {
			v.DropPacket = 1
		}
	case 3:
		l.dropRate = v.AmDroprate
	}

	switch v.SecureTCP {
	case 0:
		if *oldSecure >= 2 {
			l.toChange = 0
		}
	case 1, 2:
		if nomem {
			if *oldSecure < 2 {
				l.toChange = 1
			}
			v.SecureTCP = 2
		} else {
			if *oldSecure >= 2 {
				l.toChange = 0
			}
			v.SecureTCP = 1
		}
	case 3:
		if *oldSecure < 2 {
			l.toChange = 1
		}
	}
	*oldSecure = v.SecureTCP
	return l
}

// Defense runs IPVS's defenses on a table from the sysctls in an
// ipvs.Settings: Update is update_defense_level (run after a write to
// drop_entry, drop_packet or secure_tcp, and by Tick), Tick is
// defense_work_handler (every second: Update, then the drop_entry scan
// when it is on). Safe for concurrent use.
type Defense struct {
	t   *Table
	set *ipvs.Settings

	mu        sync.Mutex
	oldSecure int64     // old_secure_tcp
	dropEntry bool      // ipvs->dropentry
	counters  [8]int64  // dropentry_counters, by in_pkts-1
	rng       *rand.PCG // where each scan starts
}

// NewDefense binds t's defenses to set. The scan's random start is seeded
// from the table's hash seed, so a replay (fixed seed) is deterministic.
func NewDefense(t *Table, set *ipvs.Settings) *Defense {
	return &Defense{t: t, set: set, rng: rand.NewPCG(t.seed, 0x64656665)}
}

// Update is update_defense_level: it decides the defense levels from the
// sysctls and the table's free room, rewrites the automatic modes (1 <-> 2)
// in the settings as the kernel rewrites its sysctls, and applies the
// levels to the table.
func (d *Defense) Update() {
	d.mu.Lock()
	d.update()
	d.mu.Unlock()
}

func (d *Defense) update() {
	s := d.set
	v := DefenseSysctls{
		DropEntry:  s.Get(ipvs.SysDropEntry),
		DropPacket: s.Get(ipvs.SysDropPacket),
		SecureTCP:  s.Get(ipvs.SysSecureTCP),
		AmDroprate: s.Get(ipvs.SysAmDroprate),
		Amemthresh: s.Get(ipvs.SysAmemthresh),
	}
	old := v
	l := updateDefenseLevel(&v, d.t.Availmem(), &d.oldSecure)
	// A write that came in meanwhile wins over the rewrite (and runs
	// Update again).
	s.Rewrite(ipvs.SysDropEntry, old.DropEntry, v.DropEntry)
	s.Rewrite(ipvs.SysDropPacket, old.DropPacket, v.DropPacket)
	s.Rewrite(ipvs.SysSecureTCP, old.SecureTCP, v.SecureTCP)
	d.dropEntry = l.dropEntry
	d.t.setDropRate(l.dropRate, l.resetCounter)
	if l.toChange >= 0 {
		d.t.SetSecureTCP(v.SecureTCP > 1)
	}
}

// Tick is defense_work_handler, to be run every second (now on the
// table's clock): Update, then, when drop_entry is on, the random scan.
// It returns how many entries the scan dropped.
func (d *Defense) Tick(now int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.update()
	if !d.dropEntry {
		return 0
	}
	return d.randomDropEntry(now)
}

// todropEntry is todrop_entry: an entry idle for at least 60 s (its timer
// was last set at least 60 s ago; timeout is its cp->timeout) with 1..8
// input packets is dropped one time in n for n packets, so that entries
// with fewer packets go first. pkts is a connection's in_pkts, or the
// in_pkts of a template (tmplPkts).
func (d *Defense) todropEntry(e *entry, timeout int64, pkts uint32, now int64) bool {
	// time_before(cp->timeout + jiffies, cp->timer.expires + 60*HZ)
	if timeout+now < e.expires+int64(60e9) {
		return false
	}
	i := int64(pkts)
	if i > 8 || i < 1 {
		return false
	}
	i--
	if d.counters[i]--; d.counters[i] > 0 {
		return false
	}
	d.counters[i] = i + 1
	return true
}

// dropBatch is how many controlling templates randomDropEntry collects
// under a shard's lock before it lets go of the lock to look at them.
const dropBatch = 16

// randomDropEntry is ip_vs_random_dropentry: 1/32 of every shard's slots
// (at least one), from a random place, wrapping; see verdict for what is
// dropped. A dropped connection's controlling template goes too when it
// then controls nothing and is not ASSURED, as ip_vs_conn_del's expiry
// does. Templates usually live in another shard, whose lock cannot be
// taken while this one is held: they are collected, dropBatch at a time,
// and looked at (dropIdleTemplate) with the shard unlocked, after which
// the scan goes on where it stopped. It does not allocate.
func (d *Defense) randomDropEntry(now int64) int {
	t := d.t
	n := 0
	var tmpls [dropBatch]TemplateRef // controlling templates to look at after unlocking
	for i := range t.shards {
		s := &t.shards[i]
		r := d.rng.Uint64()
		s.mu.Lock()
		used := s.used
		count := (used + 31) / 32
		start := uint32(0)
		if used > 0 {
			start = uint32(r % uint64(used))
		}
		for j := uint32(0); ; {
			nt := 0
			for ; j < count && nt < len(tmpls); j++ {
				slot := (start + j) % used
				e := s.at(slot)
				if e.flags&fUsed == 0 || now >= e.expires || !d.verdict(t, uint16(i), slot, e, now) {
					continue
				}
				if e.flags&(fTemplate|fControlled) == fControlled {
					tmpls[nt] = TemplateRef{shard: e.ctlShard, slot: e.ctl}
					nt++
				}
				t.release(s, slot, e, true)
				s.dropEntry++
				n++
				t.changes.Add(1)
			}
			s.mu.Unlock()
			for _, r := range tmpls[:nt] {
				n += d.dropIdleTemplate(r)
			}
			if j >= count {
				break
			}
			s.mu.Lock()
		}
	}
	return n
}

// verdict is the body of ip_vs_random_dropentry's loop for one live entry
// e (slot of shard si, locked): templates that control connections stay;
// a template of a one-packet service (ip_vs_conn_ops_mode) goes by
// todrop_entry with its own in_pkts, which each datagram scheduled under
// it raises (tmplPkts); other templates go unless ASSURED; TCP SYN_RECV
// and SYNACK go; ESTABLISHED goes by todrop_entry; other TCP states stay;
// UDP and other protocols go by todrop_entry.
func (d *Defense) verdict(t *Table, si uint16, slot uint32, e *entry, now int64) bool {
	if e.flags&fTemplate != 0 {
		if busy(e) {
			return false
		}
		if sv := e.dest.Svc; sv != nil && sv.State().Config.OnePacket() {
			return d.todropEntry(e, int64(e.aux)*int64(time.Second), t.tmplPkts(si, slot, e), now)
		}
		return atomic.LoadUint32(&e.ctl)&ctlAssured == 0
	}
	if e.proto == ipvs.ProtoTCP {
		switch e.state {
		case StateSynRecv, StateSynAck:
			return true
		case StateEstablished:
			return d.todropEntry(e, t.timeouts.tcp[StateEstablished].Load(), e.aux, now)
		}
		return false
	}
	return d.todropEntry(e, t.timeouts.udp.Load(), e.aux, now)
}

// dropIdleTemplate frees the template (r.shard, r.slot) if it is still a
// template that controls nothing and is not ASSURED (ip_vs_conn_expire:
// "drop CTL or non-assured TPL if not used anymore"). Between the
// connection's release and this look the slot may have been freed and
// reused by another template; that one is then dropped only if it is
// idle and not ASSURED, which the scan would drop anyway.
func (d *Defense) dropIdleTemplate(r TemplateRef) int {
	s := &d.t.shards[r.shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.slot >= s.used {
		return 0
	}
	e := s.at(r.slot)
	if e.flags&(fUsed|fTemplate) != fUsed|fTemplate || busy(e) || atomic.LoadUint32(&e.ctl)&ctlAssured != 0 {
		return 0
	}
	d.t.release(s, r.slot, e, true)
	s.dropEntry++
	return 1
}
