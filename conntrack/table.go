package conntrack

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"
	"sync/atomic"
	"time"

	"gvs/ipvs"
)

// Defaults for a zero Config.
const (
	DefaultShards   = 64
	DefaultCapacity = 1 << 22
	// MaxShards bounds Config.Shards (a template reference stores the shard
	// in 16 bits).
	MaxShards = 1 << 16
)

// templateBusyRearm is how long a template that still controls connections
// lives on when its own time runs out (IPVS: 60 s).
const templateBusyRearm = int64(60 * time.Second)

// Exported errors callers branch on.
var (
	// ErrFull is returned by Create and CreateTemplate when the table holds
	// Capacity live entries and none of the shard's entries could be
	// reclaimed: none was due and none was half-open (evicted, counted in
	// Stats.Evicted). Every refusal is counted in Stats.FullDrops.
	ErrFull = errors.New("connection table full")
	// ErrNoDest is returned when Create or CreateTemplate get a nil dest.
	ErrNoDest = errors.New("no destination")
)

// Config configures a Table. The zero value is usable.
type Config struct {
	// Shards is the number of lock shards, rounded up to a power of two
	// (0: DefaultShards; at most MaxShards).
	Shards int
	// Capacity is the maximum number of live entries, templates included
	// (0: DefaultCapacity).
	Capacity int
	// Seed keys the hash (0: a random seed is drawn at New).
	Seed uint64
	// Timeouts overrides the state timeouts; zero fields keep the defaults.
	Timeouts Timeouts
	// SecureTCP selects IPVS's secure_tcp state table (tcp_states_dos).
	SecureTCP bool
	// ExpireQuiescentTemplate makes templates whose destination has weight
	// 0 invalid (the expire_quiescent_template sysctl).
	ExpireQuiescentTemplate bool
}

// Table is the connection table. All methods are safe for concurrent use.
type Table struct {
	shards     []shard
	shardShift uint // hash >> shardShift is the shard index
	seed       uint64
	capacity   int64
	live       atomic.Int64

	timeouts        timeoutTable
	secure          atomic.Bool
	expireQuiescent atomic.Bool
	// drop_packet (defense.go): the rate (0: off) and the epoch of the
	// last counter reset.
	dropRate  atomic.Int64
	dropEpoch atomic.Uint32
	sync      syncState // sync.go
	seenState           // seen.go
}

// New makes an empty table.
func New(cfg Config) *Table {
	n := cfg.Shards
	if n <= 0 {
		n = DefaultShards
	}
	if n > MaxShards {
		n = MaxShards
	}
	sb := bits.Len(uint(n - 1)) // round up to a power of two
	t := &Table{
		shards:     make([]shard, 1<<sb),
		shardShift: uint(64 - sb),
		seed:       cfg.Seed,
		capacity:   int64(cfg.Capacity),
	}
	if t.capacity <= 0 {
		t.capacity = DefaultCapacity
	}
	if t.seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		t.seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	for i := range t.shards {
		t.shards[i].init()
	}
	t.timeouts.store(cfg.Timeouts)
	t.secure.Store(cfg.SecureTCP)
	t.expireQuiescent.Store(cfg.ExpireQuiescentTemplate)
	return t
}

// Conn is a copy of a connection or template, filled into caller-owned
// memory so that nobody holds a pointer into the table.
type Conn struct {
	Proto ipvs.Protocol
	CAddr netip.Addr // client (a template: the masked client network)
	CPort uint16
	VAddr netip.Addr // virtual address (fwmark template: 0.0.0.<mark>)
	VPort uint16
	DAddr netip.Addr // real server
	DPort uint16
	// Dest is the destination the entry is bound to; it stays valid (and
	// counting) after it is removed from its service.
	Dest   *ipvs.Dest
	Method ipvs.Method // copied from Dest when the entry was created
	State  State
	Flags  ConnFlags
	// Expires is the time (on the caller's clock) at which the entry dies.
	Expires int64
	// InPkts counts input packets of a connection (0 for templates).
	InPkts uint32
	// NControl is, for a template, the number of connections it controls.
	NControl uint32
	// Assured is a template's state ASSURED (IP_VS_CTPL_S_ASSURED): a
	// connection under it reached TCP ESTABLISHED or saw a UDP reply.
	Assured bool
	// Sync: the packet that filled c makes the master sync daemon send a
	// record of the connection (sync.go).
	Sync bool

	ctlShard uint16 // the controlling template (FlagControlled)
	ctl      uint32
	// ctlGen is the controlling template's generation for a one-packet
	// connection, which holds no n_control on it (0: a stored connection,
	// whose n_control keeps the template's slot).
	ctlGen   uint32
	tmplSecs uint32 // a template's timeout in seconds
}

// StateName is the state column of ipvsadm -Lnc, ip_vs_state_name: a
// template's NONE or ASSURED, else the protocol state's name.
func (c *Conn) StateName() string {
	if c.Flags&FlagTemplate != 0 {
		if c.Assured {
			return "ASSURED"
		}
		return "NONE"
	}
	return c.State.String()
}

// ConnFlags are the connection flags of Conn, with IPVS's values.
type ConnFlags uint16

// Connection flags.
const (
	FlagNoOutput  ConnFlags = 0x0080 // non-NAT connection, no output packet seen
	FlagInactive  ConnFlags = 0x0100 // counted in InActConn
	FlagTemplate  ConnFlags = 0x1000 // persistence template
	FlagOnePacket ConnFlags = 0x2000 // one-packet scheduling, never stored
	// FlagControlled is gvs's own (IPVS keeps a pointer, cp->control): the
	// connection has a controlling persistence template.
	FlagControlled ConnFlags = 0x8000
)

// Remaining is the time left before the entry expires at now (0 if none).
func (c *Conn) Remaining(now int64) time.Duration {
	if c.Expires <= now {
		return 0
	}
	return time.Duration(c.Expires - now)
}

// TemplateRef names a template for Create (zero: none). It is a plain value;
// a ref to a template that has since gone away is simply ignored.
type TemplateRef struct {
	dest  *ipvs.Dest
	slot  uint32
	gen   uint32
	shard uint16
}

// IsZero reports whether r names no template.
func (r TemplateRef) IsZero() bool { return r.gen == 0 }

// Dest is the template's destination.
func (r TemplateRef) Dest() *ipvs.Dest { return r.dest }

// Stats are the table's counters.
type Stats struct {
	Live      int64  // live entries (templates included)
	Inserts   uint64 // entries created
	Expired   uint64 // entries removed because their time ran out
	Removed   uint64 // entries removed by Remove, Flush, RemoveDest, DropTemplate
	FullDrops uint64 // creations refused with ErrFull
	// Evicted counts half-open connections (TCP SYN_RECV, SYNACK, NONE)
	// freed to make room for a new entry when the table was full.
	Evicted uint64
	// DropEntry counts entries freed by drop_entry's periodic scan
	// (templates included).
	DropEntry uint64
	// DropPacket counts first packets drop_packet dropped (ToDrop).
	DropPacket uint64
}

// SetTimeouts is ipvsadm --set: it changes the TCP ESTABLISHED, TCP FIN_WAIT
// and UDP timeouts; a zero (or negative) value leaves that one unchanged.
// Entries pick the new value up on their next packet.
func (t *Table) SetTimeouts(tcp, tcpFin, udp time.Duration) {
	if tcp > 0 {
		t.timeouts.tcp[StateEstablished].Store(int64(tcp))
	}
	if tcpFin > 0 {
		t.timeouts.tcp[StateFinWait].Store(int64(tcpFin))
	}
	if udp > 0 {
		t.timeouts.udp.Store(int64(udp))
	}
}

// GetTimeouts returns what ipvsadm --timeout prints (tcp tcpfin udp).
func (t *Table) GetTimeouts() (tcp, tcpFin, udp time.Duration) {
	return time.Duration(t.timeouts.tcp[StateEstablished].Load()),
		time.Duration(t.timeouts.tcp[StateFinWait].Load()),
		time.Duration(t.timeouts.udp.Load())
}

// Timeouts returns the whole current timeout table.
func (t *Table) Timeouts() Timeouts { return t.timeouts.load() }

// SetSecureTCP switches between the normal and the secure_tcp state table.
func (t *Table) SetSecureTCP(on bool) { t.secure.Store(on) }

// SetExpireQuiescentTemplate sets the expire_quiescent_template behaviour.
func (t *Table) SetExpireQuiescentTemplate(on bool) { t.expireQuiescent.Store(on) }

// Len is the number of live entries, templates included (entries that are
// due but not yet reclaimed count until Expire or a lookup removes them).
func (t *Table) Len() int { return int(t.live.Load()) }

// Capacity is the configured maximum of live entries.
func (t *Table) Capacity() int { return int(t.capacity) }

// Stats sums the shards' counters.
func (t *Table) Stats() Stats {
	st := Stats{Live: t.live.Load()}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Inserts += s.inserts
		st.Expired += s.expired
		st.Removed += s.removed
		st.FullDrops += s.fullDrops
		st.Evicted += s.evicted
		st.DropEntry += s.dropEntry
		st.DropPacket += s.dropPacket
		s.mu.Unlock()
	}
	return st
}

func (t *Table) shardOf(h uint64) (*shard, uint16) {
	i := uint16(h >> t.shardShift)
	return &t.shards[i], i
}

// findConn returns the slot of the connection with key k, or nilSlot.
func (s *shard) findConn(tag uint32, k *InKey) uint32 {
	ix := &s.ix
	if ix.count == 0 {
		return nilSlot
	}
	for i := tag & ix.mask; ; i = (i + 1) & ix.mask {
		c := ix.cells[i]
		if c.slot == 0 {
			return nilSlot
		}
		if c.tag != tag {
			continue
		}
		e := s.at(c.slot - 1)
		if e.cport == k.CPort && e.vport == k.VPort && e.proto == k.Proto &&
			e.flags&fTemplate == 0 && e.caddr == k.CAddr && e.vaddr == k.VAddr {
			return c.slot - 1
		}
	}
}

// findReply returns the slot of the NAT connection with reply key k.
func (s *shard) findReply(tag uint32, k *ReplyKey) uint32 {
	ix := &s.ix
	if ix.count == 0 {
		return nilSlot
	}
	for i := tag & ix.mask; ; i = (i + 1) & ix.mask {
		c := ix.cells[i]
		if c.slot == 0 {
			return nilSlot
		}
		if c.tag != tag {
			continue
		}
		slot := c.slot - 1
		e := s.at(slot)
		if e.cport == k.CPort && e.dport == k.DPort && e.proto == k.Proto &&
			e.flags&fReply != 0 && e.caddr == k.CAddr && e.daddr == k.DAddr {
			return slot
		}
	}
}

// findTemplate returns the slot of the hashed template with key k.
func (s *shard) findTemplate(tag uint32, k *TemplateKey) uint32 {
	ix := &s.ix
	if ix.count == 0 {
		return nilSlot
	}
	for i := tag & ix.mask; ; i = (i + 1) & ix.mask {
		c := ix.cells[i]
		if c.slot == 0 {
			return nilSlot
		}
		if c.tag != tag {
			continue
		}
		e := s.at(c.slot - 1)
		if e.flags&fTemplate != 0 && e.vport == k.VPort && e.proto == k.Proto &&
			e.caddr == k.CNet && e.vaddr == k.VAddr {
			return c.slot - 1
		}
	}
}

// fill copies an entry into c.
func fill(e *entry, c *Conn) {
	// Field by field, every field, for the reason given in Create.
	var flags ConnFlags
	if e.flags&fNoOutput != 0 {
		flags |= FlagNoOutput
	}
	if e.flags&fInactive != 0 {
		flags |= FlagInactive
	}
	if e.flags&fControlled != 0 {
		flags |= FlagControlled
	}
	if e.flags&fSync != 0 {
		flags |= FlagSync
	}
	var inPkts, nControl, tmplSecs, ctlSlot uint32
	assured := false
	if e.flags&fTemplate != 0 {
		flags |= FlagTemplate
		ctl := atomic.LoadUint32(&e.ctl)
		nControl, assured = ctl&ctlCount, ctl&ctlAssured != 0
		tmplSecs = e.aux
	} else {
		inPkts, ctlSlot = e.aux, e.ctl // a connection's ctl is its template's slot
	}
	c.Proto = e.proto
	c.CAddr, c.CPort = addrOf(e.caddr), e.cport
	c.VAddr, c.VPort = addrOf(e.vaddr), e.vport
	c.DAddr, c.DPort = addrOf(e.daddr), e.dport
	c.Dest, c.Method, c.State, c.Flags = e.dest, e.method, e.state, flags
	c.Expires, c.InPkts, c.NControl, c.Assured = e.expires, inPkts, nControl, assured
	c.Sync, c.ctlShard, c.ctl, c.ctlGen, c.tmplSecs = false, e.ctlShard, ctlSlot, 0, tmplSecs
}

// transition runs one packet through a connection: TCP state machine (with
// dest counter moves), NOOUTPUT bookkeeping, the timer re-arm, and the
// ASSURED state of its template (a TCP connection entering ESTABLISHED, a
// UDP reply).
func (t *Table) transition(s *shard, slot uint32, e *entry, dir Direction, tcpFlags uint8, now int64) {
	if e.proto != ipvs.ProtoTCP {
		if dir == DirOutput {
			e.flags &^= fNoOutput
			// udp_state_transition; AH and ESP have no state function.
			if e.flags&fControlled != 0 && e.proto == ipvs.ProtoUDP {
				t.assure(e.ctlShard, e.ctl)
			}
		}
		s.rearm(slot, e, now+t.timeouts.udp.Load())
		return
	}
	if e.flags&fNoOutput != 0 {
		if dir == DirOutput {
			e.flags &^= fNoOutput
		} else {
			dir = DirInputOnly
		}
	}
	next := NextTCPState(e.state, dir, tcpFlags, t.secure.Load())
	if next != e.state {
		if act := next.Active(); act == (e.flags&fInactive != 0) {
			if act {
				e.flags &^= fInactive
			} else {
				e.flags |= fInactive
			}
			e.dest.SetActive(act)
		}
		e.state = next
		if next == StateEstablished && e.flags&fControlled != 0 {
			t.assure(e.ctlShard, e.ctl)
		}
	}
	s.rearm(slot, e, now+t.timeouts.tcp[next].Load())
}

// liveEntry returns the entry of slot (of s, locked) if there is one and it
// is alive. A dead one counts as missing: it is released (counted as
// expired) and nil is returned.
func (t *Table) liveEntry(s *shard, slot uint32, now int64) *entry {
	if slot == nilSlot {
		return nil
	}
	e := s.at(slot)
	if now >= e.expires {
		t.release(s, slot, e, true)
		s.expired++
		return nil
	}
	return e
}

// In handles a packet client -> virtual of an existing connection: if the
// connection exists and is alive, it runs the state machine (INPUT, or
// INPUT_ONLY while NOOUTPUT), re-arms the timer, counts the packet, fills c
// and returns true. A dead entry counts as missing and is removed.
func (t *Table) In(k InKey, tcpFlags uint8, now int64, c *Conn) bool {
	found, _ := t.in(k, tcpFlags, now, c, false)
	return found
}

// in is In and, with checkDest, InLive: found reports a live connection,
// avail that the packet was applied to it.
func (t *Table) in(k InKey, tcpFlags uint8, now int64, c *Conn, checkDest bool) (found, avail bool) {
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, si := t.shardOf(h)
	s.mu.Lock()
	slot := s.findConn(uint32(h), &k)
	e := t.liveEntry(s, slot, now)
	if e == nil {
		s.mu.Unlock()
		return false, false
	}
	if checkDest && !e.dest.Available() {
		fill(e, c)
		s.mu.Unlock()
		return true, false
	}
	e.aux++
	t.transition(s, slot, e, DirInput, tcpFlags, now)
	fill(e, c)
	t.syncIn(si, slot, e, now, c)
	s.mu.Unlock()
	return true, true
}

// Out handles a NAT reply real server -> client: reply-index lookup, OUTPUT
// state table, clears NOOUTPUT, re-arms the timer and fills c.
func (t *Table) Out(k ReplyKey, tcpFlags uint8, now int64, c *Conn) bool {
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, _ := t.shardOf(h)
	s.mu.Lock()
	slot := s.findReply(uint32(h), &k)
	e := t.liveEntry(s, slot, now)
	if e == nil {
		s.mu.Unlock()
		return false
	}
	t.transition(s, slot, e, DirOutput, tcpFlags, now)
	fill(e, c)
	s.mu.Unlock()
	return true
}

// PeekIn looks a connection up by its in-key without changing it (no state
// change, no re-arm): for ICMP errors related to a connection.
func (t *Table) PeekIn(k InKey, now int64, c *Conn) bool {
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, _ := t.shardOf(h)
	s.mu.Lock()
	// A SYN looks here before Create: start loading the slot Create will
	// most likely take, so that its cache miss overlaps the index probe's
	// instead of following it.
	s.warmFree()
	slot := s.findConn(uint32(h), &k)
	ok := slot != nilSlot && now < s.at(slot).expires
	if ok {
		fill(s.at(slot), c)
	}
	s.mu.Unlock()
	return ok
}

// PeekOut looks a NAT connection up by its reply key without changing it.
func (t *Table) PeekOut(k ReplyKey, now int64, c *Conn) bool {
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, _ := t.shardOf(h)
	s.mu.Lock()
	slot := s.findReply(uint32(h), &k)
	ok := slot != nilSlot && now < s.at(slot).expires
	if ok {
		fill(s.at(slot), c)
	}
	s.mu.Unlock()
	return ok
}

// Create adds a connection for the first packet of a flow, bound to dest
// with real port dport: the dest counts it in InActConn (dest.Bind), its
// method is copied from dest, non-NAT connections get NOOUTPUT, and the
// packet's state transition is applied (a SYN leaves it SYN_RECV and
// active). UDP (and any non-TCP protocol) has the one state UDP. NAT
// connections are also filed under their reply key.
//
// A non-zero tmpl makes the new connection controlled by that template: the
// template's n_control is raised and its timer re-armed to its persistence
// timeout. A stale tmpl (the template went away) is ignored.
//
// If a live connection with key k already exists (another worker created it
// first), the packet is applied to it as In would, c is filled from it and
// the error is nil. When the table is full, the shard's due entries are
// reclaimed first, then a half-open connection of the shard is evicted;
// if there is none Create returns ErrFull. drop_packet is not Create's:
// the caller asks ToDrop before it schedules, as IPVS does.
func (t *Table) Create(k InKey, dest *ipvs.Dest, dport uint16, tmpl TemplateRef, tcpFlags uint8, now int64, c *Conn) error {
	return t.create(k, dest, dport, tmpl, tcpFlags, now, c, true)
}

// CreateNoState adds a connection as Create does but applies no packet to
// it: the connection IPVS schedules for an ICMP error whose quoted packet
// matched none (ip_vs_in_icmp with schedule_icmp), which ip_vs_conn_new
// leaves in state NONE (TCP; UDP's one state otherwise) with its 3 s
// timer, no input packet counted and no sync record. A live connection
// that already has key k (another worker was first) is only copied into c.
func (t *Table) CreateNoState(k InKey, dest *ipvs.Dest, dport uint16, tmpl TemplateRef, now int64, c *Conn) error {
	return t.create(k, dest, dport, tmpl, 0, now, c, false)
}

// create is Create, with the packet's transition applied when apply is set.
func (t *Table) create(k InKey, dest *ipvs.Dest, dport uint16, tmpl TemplateRef, tcpFlags uint8, now int64, c *Conn, apply bool) error {
	if dest == nil {
		return ErrNoDest
	}
	controlled := t.holdTemplate(tmpl, now)
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, si := t.shardOf(h)
	s.mu.Lock()
	s.start(now)
	if slot := s.findConn(uint32(h), &k); slot != nilSlot {
		e := s.at(slot)
		if now < e.expires {
			if apply {
				e.aux++
				t.transition(s, slot, e, DirInput, tcpFlags, now)
			}
			fill(e, c)
			if apply {
				t.syncIn(si, slot, e, now, c)
			}
			s.mu.Unlock()
			if controlled {
				t.dropControl(tmpl.shard, tmpl.slot)
			}
			return nil
		}
		t.release(s, slot, e, true)
		s.expired++
	}
	slot, err := t.reserve(s, now)
	if err != nil {
		s.mu.Unlock()
		if controlled {
			t.dropControl(tmpl.shard, tmpl.slot)
		}
		return err
	}
	e := s.at(slot)
	method := dest.Method()
	// Field by field, every field (file sets prev and next): a composite
	// literal is built on the stack and copied in, and the copy's wide
	// loads of the literal's narrow stores stall.
	state := StateNone
	if k.Proto != ipvs.ProtoTCP {
		state = StateUDP
	}
	flags := fUsed | fInactive
	if method != ipvs.Masq {
		flags |= fNoOutput
	}
	var ctlShard uint16
	var ctl uint32
	if controlled {
		flags |= fControlled
		ctlShard, ctl = tmpl.shard, tmpl.slot
	}
	e.caddr, e.vaddr, e.daddr = k.CAddr, k.VAddr, dest.Addr.As16()
	// A new connection starts in NONE with a 3 s timer (IPVS); the
	// transition below sets the real one.
	e.expires = now + int64(3*time.Second)
	e.dest = dest
	e.cport, e.vport, e.dport = k.CPort, k.VPort, dport
	e.proto, e.state, e.method, e.flags = k.Proto, state, method, flags
	e.ctlShard, e.ctl = ctlShard, ctl
	e.gen++
	e.aux = 0 // in_pkts
	dest.Bind(false)
	s.file(slot, e)
	if method == ipvs.Masq {
		e.flags |= fReply
	}
	s.ix.insert(uint32(h), ref(slot))
	if apply {
		e.aux = 1
		t.transition(s, slot, e, DirInput, tcpFlags, now)
	}
	s.inserts++
	fill(e, c)
	if apply {
		t.syncIn(si, slot, e, now, c)
	}
	s.mu.Unlock()
	return nil
}

// CreateOnePacket handles a one-packet-scheduled (-o) datagram: the
// connection is bound and unbound at once and never stored, as IPVS does
// with IP_VS_CONN_F_ONE_PACKET; a non-zero tmpl is re-armed as for Create.
// c describes the would-be connection, with FlagOnePacket, and, when tmpl
// still names its template, FlagControlled: a master then hands the
// template to SyncTemplate, as ip_vs_sync_conn goes from a one-packet
// connection straight to its controller.
func (t *Table) CreateOnePacket(k InKey, dest *ipvs.Dest, dport uint16, tmpl TemplateRef, now int64, c *Conn) error {
	if dest == nil {
		return ErrNoDest
	}
	held := t.holdOnePacket(tmpl, now)
	dest.Bind(false)
	dest.Unbind(false, false)
	*c = Conn{
		Proto: k.Proto, CAddr: addrOf(k.CAddr), CPort: k.CPort, VAddr: addrOf(k.VAddr), VPort: k.VPort,
		DAddr: dest.Addr, DPort: dport, Dest: dest, Method: dest.Method(), State: StateUDP,
		Flags: FlagOnePacket | FlagInactive, Expires: now, InPkts: 1,
	}
	if held {
		c.Flags |= FlagControlled
		c.ctlShard, c.ctl, c.ctlGen = tmpl.shard, tmpl.slot, tmpl.gen
	}
	if k.Proto == ipvs.ProtoTCP {
		c.State = StateNone
	}
	if c.Method != ipvs.Masq {
		c.Flags |= FlagNoOutput
	}
	return nil
}

// reserve takes one unit of capacity and a slot in s (locked). When the
// table is full it first reclaims s's due entries, then evicts a half-open
// connection of s (whose unit it takes over).
func (t *Table) reserve(s *shard, now int64) (uint32, error) {
	if t.live.Add(1) > t.capacity {
		t.live.Add(-1)
		t.advance(s, now, true)
		t.advance(s, now, false)
		if t.live.Add(1) > t.capacity && !t.evictHalfOpen(s) {
			t.live.Add(-1)
			s.fullDrops++
			return 0, ErrFull
		}
	}
	slot, ok := s.alloc()
	if !ok {
		t.live.Add(-1)
		s.fullDrops++
		return 0, ErrFull
	}
	return slot, nil
}

// holdTemplate validates tmpl and, if it still names the same template,
// raises its n_control and re-arms it to its persistence timeout.
func (t *Table) holdTemplate(r TemplateRef, now int64) bool {
	if r.gen == 0 || int(r.shard) >= len(t.shards) {
		return false
	}
	s := &t.shards[r.shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.refEntry(r)
	if e == nil {
		return false
	}
	atomic.AddUint32(&e.ctl, 1)
	if e.flags&fUnhashed == 0 {
		// ip_vs_conn_put(ct): now + its timeout, the persistence timeout
		// or, once it has outlived it, 60 s.
		s.rearm(r.slot, e, now+int64(e.aux)*int64(time.Second))
	}
	return true
}

// holdOnePacket is what a one-packet-scheduled datagram does to its
// template r, if r still names it (reported): the connection takes and
// releases control of it at once (ip_vs_control_add, then the immediate
// expiry), which re-arms it as holdTemplate does. Without a master sync
// daemon the datagram counts in the template's in_pkts here (ip_vs_in's
// atomic_inc(&cp->control->in_pkts)); on a master it is ip_vs_sync_conn
// that counts it (SyncTemplate, sync_version 1), or nothing does
// (sync_version 0 returns at once for a one-packet connection).
// drop_entry reads that count (Defense.verdict).
func (t *Table) holdOnePacket(r TemplateRef, now int64) bool {
	if r.gen == 0 || int(r.shard) >= len(t.shards) {
		return false
	}
	s := &t.shards[r.shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.refEntry(r)
	if e == nil {
		return false
	}
	if e.flags&fUnhashed == 0 {
		s.rearm(r.slot, e, now+int64(e.aux)*int64(time.Second))
	}
	if t.sync.settings.Load() == nil {
		t.syncSide()
		t.facts(r.shard, r.slot, e).tpkts++
	}
	return true
}

// dropControl lowers a template's n_control. It takes no lock: the template
// cannot be freed while n_control > 0, and the chunk directory is read
// through its published copy.
func (t *Table) dropControl(sh uint16, slot uint32) {
	d := *t.shards[sh].dir.Load()
	atomic.AddUint32(&d[slot>>chunkBits][slot&chunkMask].ctl, ^uint32(0))
}

// release frees an entry of s (locked): it leaves its indexes and (if
// inWheel) its wheel list, is unbound from its dest, and lets go of its
// controlling template.
func (t *Table) release(s *shard, slot uint32, e *entry, inWheel bool) {
	t.unlink(s, slot, e, inWheel)
	t.live.Add(-1)
}

// unlink is release without the live count, for callers that free many
// entries and settle the count once (one shared atomic add per batch
// instead of one per entry).
func (t *Table) unlink(s *shard, slot uint32, e *entry, inWheel bool) {
	var tag uint32
	if e.flags&fTemplate == 0 {
		tag = t.tagOf(e)
	}
	t.unlinkTagged(s, slot, e, tag, inWheel)
}

// tagOf is the index tag of a connection entry's cells.
func (t *Table) tagOf(e *entry) uint32 {
	return uint32(hashConn(t.seed, e.proto, &e.caddr, e.cport))
}

// unlinkTagged is unlink with the index tag of a connection already known
// (unused for a template).
func (t *Table) unlinkTagged(s *shard, slot uint32, e *entry, tag uint32, inWheel bool) {
	if inWheel {
		s.unfile(e)
	}
	if e.flags&fTemplate != 0 {
		t.unhash(s, slot, e)
		e.dest.Unbind(true, false)
	} else {
		s.ix.remove(tag, ref(slot))
		e.dest.Unbind(false, e.flags&fInactive == 0)
		if e.flags&fControlled != 0 {
			t.dropControl(e.ctlShard, e.ctl)
		}
	}
	gen := e.gen
	*e = entry{gen: gen, next: s.free}
	s.free = slot
}

// Remove deletes the connection with key k (for instance when its dest is
// gone and expire_nodest_conn is on). It reports whether there was one.
func (t *Table) Remove(k InKey) bool {
	h := hashConn(t.seed, k.Proto, &k.CAddr, k.CPort)
	s, _ := t.shardOf(h)
	s.mu.Lock()
	slot := s.findConn(uint32(h), &k)
	if slot != nilSlot {
		t.release(s, slot, s.at(slot), true)
		s.removed++
	}
	s.mu.Unlock()
	if slot != nilSlot {
		t.changes.Add(1)
	}
	return slot != nilSlot
}
