package conntrack

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvs/ipvs"
	"gvs/lvssync"
)

// Connection synchronisation (IPVS.md §4 "Sync daemon", lvssync).
//
// Master side: while a master sync daemon runs (SetSync with non-nil
// settings), every input packet the table applies to a connection (In,
// InLive, Create) runs the kernel's sync-needed rule (lvssync.Needed) with
// the connection's in_pkts, its state, the state at its last sync
// (old_state) and its sync_endtime, under the shard lock; Conn.Sync
// reports the verdict and the caller hands a record to the sender. The
// controlling template is considered next (SyncTemplate), as
// ip_vs_sync_conn does; a one-packet connection (CreateOnePacket) is never
// synced itself, but its template is, in sync_version 1, at each datagram.
//
// The per-entry facts that do not fit the 96-byte entry (old_state,
// sync_endtime, and a template's in_pkts, which drop_entry reads too)
// live in a side array per shard, chunk by chunk parallel to the slab,
// allocated on first use and tagged with the entry's generation, so a
// reused slot starts afresh without any work on the create path.
//
// Backup side: Synced creates or updates a connection or template from a
// received record, flagged FlagSync, as ip_vs_proc_conn does.

// FlagSync is IP_VS_CONN_F_SYNC: the entry was created from a sync record.
const FlagSync ConnFlags = 0x0020

// fSync is the entry flag of FlagSync.
const fSync uint8 = 1 << 7

// syncFacts are an entry's sync bookkeeping (cp->old_state,
// cp->sync_endtime, and a template's in_pkts).
type syncFacts struct {
	gen      uint32 // the entry generation the facts belong to
	tpkts    uint32 // a template's in_pkts
	endtime  uint64 // sync_endtime, in lvssync ticks
	oldState uint16 // kernel state number at the last sync
}

type syncChunk [chunkSize]syncFacts

// syncState is the table's sync configuration and side arrays.
type syncState struct {
	settings atomic.Pointer[lvssync.SyncSettings] // nil: no master daemon
	version  atomic.Uint32                        // sync_version
	once     sync.Once
	side     [][]*syncChunk // per shard; guarded by the shard's lock
}

// SetSync turns the master's sync-needed rule on (s non-nil: the sysctls
// of the rule) or off (nil). version is sync_version (0 or 1): in version 0
// a template is considered only after its connection was synced.
func (t *Table) SetSync(s *lvssync.SyncSettings, version int) {
	t.syncSide()
	t.sync.version.Store(uint32(version))
	if s != nil {
		cp := *s
		s = &cp
	}
	t.sync.settings.Store(s)
}

// SyncSettings returns the settings of the running master rule (nil: off).
func (t *Table) SyncSettings() *lvssync.SyncSettings { return t.sync.settings.Load() }

func (t *Table) syncSide() {
	t.sync.once.Do(func() { t.sync.side = make([][]*syncChunk, len(t.shards)) })
}

// facts returns the sync facts of slot (entry e) in shard si, whose lock is
// held; they are zeroed when they belonged to an earlier use of the slot.
func (t *Table) facts(si uint16, slot uint32, e *entry) *syncFacts {
	side := &t.sync.side[si]
	ci := int(slot >> chunkBits)
	for len(*side) <= ci {
		*side = append(*side, new(syncChunk))
	}
	f := &(*side)[ci][slot&chunkMask]
	if f.gen != e.gen {
		*f = syncFacts{gen: e.gen}
	}
	return f
}

// tmplPkts is the in_pkts of template e (slot of shard si, whose lock is
// held): the datagrams of one-packet connections scheduled under it, the
// packets SyncTemplate counted, or the sync_threshold a backup set. It
// does not allocate: a template without sync facts has counted nothing.
func (t *Table) tmplPkts(si uint16, slot uint32, e *entry) uint32 {
	t.syncSide()
	side := t.sync.side[si]
	ci := int(slot >> chunkBits)
	if ci >= len(side) {
		return 0
	}
	f := &side[ci][slot&chunkMask]
	if f.gen != e.gen {
		return 0
	}
	return f.tpkts
}

// kernelState is the kernel's state number of an entry: the TCP states are
// the same numbers, UDP's one state is 0, a template's NONE or ASSURED.
func kernelState(e *entry) uint16 {
	if e.flags&fTemplate != 0 {
		if atomic.LoadUint32(&e.ctl)&ctlAssured != 0 {
			return lvssync.TemplateAssured
		}
		return lvssync.TemplateNone
	}
	if e.state == StateUDP {
		return 0
	}
	return uint16(e.state)
}

// wireFlags are the IP_VS_CONN_F_* flags of an entry.
func wireFlags(e *entry) uint32 {
	f := uint32(e.method) & lvssync.FlagFwdMask
	if e.flags&fNoOutput != 0 {
		f |= lvssync.FlagNoOutput
	}
	if e.flags&fInactive != 0 {
		f |= lvssync.FlagInactive
	}
	if e.flags&fTemplate != 0 {
		f |= lvssync.FlagTemplate
	}
	if e.flags&fSync != 0 {
		f |= lvssync.FlagSync
	}
	return f
}

// ticks converts the table's clock to the rule's ticks.
func ticks(ns int64) uint64 {
	if ns < 0 {
		return 0
	}
	return uint64(ns) / uint64(time.Millisecond)
}

// syncIn runs the sync-needed rule for an input packet just applied to
// connection e (slot of shard si, locked) and sets c.Sync. pkts is the
// connection's in_pkts.
func (t *Table) syncIn(si uint16, slot uint32, e *entry, now int64, c *Conn) {
	c.Sync = false
	ss := t.sync.settings.Load()
	if ss == nil {
		return
	}
	f := t.facts(si, slot, e)
	cf := lvssync.ConnFacts{
		Protocol:      uint8(e.proto),
		Flags:         wireFlags(e),
		State:         kernelState(e),
		OldState:      f.oldState,
		Timeout:       ticks(e.expires - now),
		SyncEndtime:   f.endtime,
		InPersistence: e.flags&fControlled != 0,
	}
	v := lvssync.Needed(ss, &cf, int(e.aux), ticks(now))
	if v.Sync {
		f.oldState, f.endtime = cf.State, v.Endtime
		c.Sync = true
	}
}

// SyncTemplate is the second half of ip_vs_sync_conn for the connection c
// (as In, InLive, Create or CreateOnePacket filled it): when c is
// controlled by a template (and, in sync_version 0, only when c itself was
// synced, which a one-packet connection never is), it raises the
// template's in_pkts, runs the sync-needed rule for it and, when a record
// is due, fills tc with the template and returns true. For a one-packet
// connection this is the whole of ip_vs_sync_conn in sync_version 1: the
// connection itself is never synced, its template is considered at every
// datagram.
func (t *Table) SyncTemplate(c *Conn, now int64, tc *Conn) bool {
	ss := t.sync.settings.Load()
	if ss == nil || c.Flags&FlagControlled == 0 || int(c.ctlShard) >= len(t.shards) {
		return false
	}
	if t.sync.version.Load() == 0 && !c.Sync {
		return false
	}
	s := &t.shards[c.ctlShard]
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.ctl >= s.used {
		return false
	}
	e := s.at(c.ctl)
	if e.flags&(fUsed|fTemplate) != fUsed|fTemplate || now >= e.expires ||
		(c.ctlGen != 0 && e.gen != c.ctlGen) {
		return false
	}
	f := t.facts(c.ctlShard, c.ctl, e)
	f.tpkts++
	cf := lvssync.ConnFacts{
		Protocol:    uint8(e.proto),
		Flags:       wireFlags(e),
		State:       kernelState(e),
		OldState:    f.oldState,
		Timeout:     ticks(int64(e.aux) * int64(time.Second)),
		SyncEndtime: f.endtime,
	}
	v := lvssync.Needed(ss, &cf, int(f.tpkts), ticks(now))
	if !v.Sync {
		return false
	}
	f.oldState, f.endtime = cf.State, v.Endtime
	fill(e, tc)
	tc.Sync = true
	return true
}

// Record fills r with the sync record of c (a connection or template the
// table filled), as the master sends it: flags with the forwarding method,
// the kernel's state number and the timeout in whole seconds.
func (c *Conn) Record(now int64, r *lvssync.Conn) {
	f := uint32(c.Method) & lvssync.FlagFwdMask
	if c.Flags&FlagNoOutput != 0 {
		f |= lvssync.FlagNoOutput
	}
	if c.Flags&FlagInactive != 0 {
		f |= lvssync.FlagInactive
	}
	if c.Flags&FlagSync != 0 {
		f |= lvssync.FlagSync
	}
	var state uint16
	var timeout uint32
	if c.Flags&FlagTemplate != 0 {
		f |= lvssync.FlagTemplate
		if c.Assured {
			state = lvssync.TemplateAssured
		}
		timeout = c.tmplSecs
	} else {
		if c.State != StateUDP {
			state = uint16(c.State)
		}
		timeout = uint32((c.Expires - now + int64(time.Second) - 1) / int64(time.Second))
	}
	*r = lvssync.Conn{
		Protocol: uint8(c.Proto), Flags: f, State: state,
		CPort: c.CPort, VPort: c.VPort, DPort: c.DPort,
		Timeout: timeout,
		CAddr:   c.CAddr, VAddr: c.VAddr, DAddr: c.DAddr,
	}
	if c.Flags&FlagTemplate != 0 && c.Proto == 0 && c.VAddr.Is4() {
		a := c.VAddr.As4()
		r.Fwmark = uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	}
}

// SyncedConn is what a backup learned of one connection or template (a
// decoded lvssync record, IPv4 or IPv6 addresses).
type SyncedConn struct {
	Proto               ipvs.Protocol
	CAddr, VAddr, DAddr netip.Addr
	CPort, VPort, DPort uint16
	// Flags are the backup's IP_VS_CONN_F_* flags (lvssync.BackupFlags).
	Flags uint32
	// State is the kernel's state number.
	State uint16
	// Timeout is the record's timeout; 0 takes the state's timeout (3
	// minutes for a template), as for version 0 records.
	Timeout time.Duration
	// InPkts is what in_pkts is set to (the backup's sync_threshold).
	InPkts uint32
}

// Errors of Synced.
var (
	// ErrSyncState is a record whose state the protocol does not have.
	ErrSyncState = errors.New("sync record: invalid state")
	// ErrSyncStale is an INACTIVE record for a connection that has since
	// been replaced (ip_vs_proc_conn ignores it).
	ErrSyncStale = errors.New("sync record: stale, connection already replaced")
)

// SyncResult says what Synced did.
type SyncResult uint8

// Synced outcomes.
const (
	SyncCreated SyncResult = iota + 1
	SyncUpdated
	SyncReplaced // an existing connection to another real server expired, a new one was created
)

// gvsState is the table's state of a kernel state number for proto.
func gvsState(proto ipvs.Protocol, st uint16, template bool) (State, bool) {
	switch {
	case template:
		return StateNone, true
	case proto == ipvs.ProtoTCP:
		if int(st) >= NumTCPStates {
			return 0, false
		}
		return State(st), true
	default:
		if st != 0 {
			return 0, false
		}
		return StateUDP, true
	}
}

// Synced creates or updates the entry a backup learned of, as
// ip_vs_proc_conn does, bound to dest (the backup's own real server with the
// record's address and port in the record's service; required, gvs keeps no
// unbound connections). A connection found by its in-key with another real
// server is expired and replaced, unless the record is INACTIVE (an old
// record: ignored, ErrSyncStale). An existing entry takes the record's
// INACTIVE bit (moving between its dest's ActiveConn and InActConn), state
// and timeout; a new one counts in ActiveConn or InActConn by its INACTIVE
// bit (a template in PersistConn), takes its forwarding method from dest
// and is flagged FlagSync. Its sync facts take the state (old_state =
// state), so that a backup turned master re-syncs it on its next change.
func (t *Table) Synced(sc *SyncedConn, dest *ipvs.Dest, now int64) (SyncResult, error) {
	if dest == nil {
		return 0, ErrNoDest
	}
	tmpl := sc.Flags&lvssync.FlagTemplate != 0
	state, ok := gvsState(sc.Proto, sc.State, tmpl)
	if !ok {
		return 0, ErrSyncState
	}
	timeout := sc.Timeout
	if timeout <= 0 {
		if tmpl {
			timeout = 3 * time.Minute
		} else if sc.Proto == ipvs.ProtoTCP {
			timeout = time.Duration(t.timeouts.tcp[state].Load())
		} else {
			timeout = time.Duration(t.timeouts.udp.Load())
		}
	}
	t.syncSide()
	if tmpl {
		return t.syncedTemplate(sc, dest, state, timeout, now)
	}
	k := InKey{Proto: sc.Proto, CAddr: sc.CAddr.As16(), CPort: sc.CPort, VAddr: sc.VAddr.As16(), VPort: sc.VPort}
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, si := t.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start(now)
	inactive := sc.Flags&lvssync.FlagInactive != 0
	res := SyncCreated
	if slot := s.findConn(uint32(h), &k); slot != nilSlot {
		e := s.at(slot)
		switch {
		case now >= e.expires:
			t.release(s, slot, e, true)
			s.expired++
		case e.dport != sc.DPort || e.daddr != sc.DAddr.As16():
			if inactive {
				return 0, ErrSyncStale
			}
			t.release(s, slot, e, true)
			t.changes.Add(1)
			s.expired++
			res = SyncReplaced
		default:
			if (e.flags&fInactive != 0) != inactive {
				e.dest.SetActive(!inactive)
				if inactive {
					e.flags |= fInactive
				} else {
					e.flags &^= fInactive
				}
			}
			e.state = state
			e.aux = sc.InPkts
			s.rearm(slot, e, now+int64(timeout))
			t.changes.Add(1) // the timer may be earlier now
			f := t.facts(si, slot, e)
			f.oldState = sc.State
			return SyncUpdated, nil
		}
	}
	slot, err := t.reserve(s, now)
	if err != nil {
		return 0, err
	}
	e := s.at(slot)
	method := dest.Method()
	flags := fUsed | fSync
	if inactive {
		flags |= fInactive
	}
	if method != ipvs.Masq {
		flags |= fNoOutput
	}
	gen := e.gen + 1
	*e = entry{
		caddr: k.CAddr, vaddr: k.VAddr, daddr: sc.DAddr.As16(),
		expires: now + int64(timeout), dest: dest,
		cport: k.CPort, vport: k.VPort, dport: sc.DPort,
		proto: k.Proto, state: state, method: method, flags: flags,
		gen: gen, aux: sc.InPkts,
	}
	dest.Bind(false)
	if !inactive {
		dest.SetActive(true)
	}
	s.file(slot, e)
	if method == ipvs.Masq {
		e.flags |= fReply
	}
	s.ix.insert(uint32(h), ref(slot))
	s.inserts++
	t.facts(si, slot, e).oldState = sc.State
	return res, nil
}

// syncedTemplate is Synced for a template: looked up by its whole key
// (ip_vs_ct_in_get), updated (timeout, ASSURED) or created.
func (t *Table) syncedTemplate(sc *SyncedConn, dest *ipvs.Dest, _ State, timeout time.Duration, now int64) (SyncResult, error) {
	k := TemplateKey{CNet: sc.CAddr.As16(), VAddr: sc.VAddr.As16(), VPort: sc.VPort, Proto: sc.Proto}
	h := hashTemplate(t.seed, &k)
	s, si := t.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start(now)
	secs := uint32(max(1, (timeout+time.Second-1)/time.Second))
	assured := sc.State == lvssync.TemplateAssured
	if slot := s.findTemplate(uint32(h), &k); slot != nilSlot {
		e := s.at(slot)
		if s.tmplAlive(slot, e, now) && e.dport == sc.DPort && e.daddr == sc.DAddr.As16() {
			e.aux = secs
			if assured {
				atomic.OrUint32(&e.ctl, ctlAssured)
			}
			s.rearm(slot, e, now+int64(secs)*int64(time.Second))
			f := t.facts(si, slot, e)
			f.oldState, f.tpkts = sc.State, sc.InPkts
			return SyncUpdated, nil
		}
		if now >= e.expires && !busy(e) {
			t.release(s, slot, e, true)
			s.expired++
		} else {
			t.unhash(s, slot, e)
		}
	}
	slot, err := t.reserve(s, now)
	if err != nil {
		return 0, err
	}
	e := s.at(slot)
	flags := fUsed | fTemplate | fInactive | fSync
	if dest.Method() != ipvs.Masq {
		flags |= fNoOutput
	}
	var ctl uint32
	if assured {
		ctl = ctlAssured
	}
	*e = entry{
		caddr: k.CNet, vaddr: k.VAddr, daddr: sc.DAddr.As16(), dest: dest,
		vport: k.VPort, dport: sc.DPort, proto: k.Proto, state: StateNone,
		method: dest.Method(), flags: flags, gen: e.gen + 1, aux: secs, ctl: ctl,
		expires: now + int64(secs)*int64(time.Second),
	}
	dest.Bind(true)
	s.file(slot, e)
	s.ix.insert(uint32(h), ref(slot))
	s.inserts++
	f := t.facts(si, slot, e)
	f.oldState, f.tpkts = sc.State, sc.InPkts
	return SyncCreated, nil
}
