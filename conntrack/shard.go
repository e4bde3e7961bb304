package conntrack

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"gvs/internal/prefetch"
	"gvs/ipvs"
)

// Internal entry flags (entry.flags).
const (
	fUsed       uint8 = 1 << iota // slot holds a live entry
	fTemplate                     // persistence template (IP_VS_CONN_F_TEMPLATE)
	fNoOutput                     // IP_VS_CONN_F_NOOUTPUT: non-NAT, no reply seen
	fInactive                     // counted in dest InactConns (IP_VS_CONN_F_INACTIVE)
	fControlled                   // ctl/ctlShard name the controlling template
	fUnhashed                     // template out of the index (invalidated), kept until its timer
	fReply                        // NAT: also found by its reply key
)

// entry is one slab slot: 96 bytes, one pointer (dest). Addresses are
// v4-mapped 16-byte arrays.
type entry struct {
	caddr   [16]byte // client address; the masked client network for templates
	vaddr   [16]byte // virtual address (or fwmark as 0.0.0.<mark>)
	daddr   [16]byte // real server address
	expires int64    // now >= expires: dead
	dest    *ipvs.Dest
	cport   uint16
	vport   uint16
	dport   uint16
	proto   ipvs.Protocol
	state   State
	method  ipvs.Method
	flags   uint8
	// ctlShard and ctl name the controlling template (shard, slot) of a
	// connection with fControlled. For a template, ctl is n_control (low 31
	// bits) and the ASSURED state (top bit), always accessed atomically
	// because controlled connections in other shards change it without the
	// template shard's lock.
	ctlShard uint16
	ctl      uint32
	// prev and next link the entry into its timing-wheel list (or next
	// links the free list). prev of a list head is headMark|wheel index.
	prev uint32
	next uint32
	// gen changes every time the slot is allocated, so a TemplateRef to a
	// reused slot is recognised as stale.
	gen uint32
	// aux is the count of input packets of a connection, or the timeout in
	// seconds of a template (the persistence timeout, 60 once it has been
	// extended for its connections).
	aux uint32
}

const (
	nilSlot  = math.MaxUint32
	headMark = 1 << 31
	maxSlots = headMark - 1 // slot numbers stay below headMark

	chunkBits = 9 // 512 entries: 48 KiB, a whole number of pages (no size-class waste)
	chunkSize = 1 << chunkBits
	chunkMask = chunkSize - 1

	// The timing wheel: 4096 ticks of 2^28 ns (268 ms) cover 1099 s, more
	// than the longest default timeout; longer ones go round again.
	tickShift = 28
	wheelBits = 12
	wheelSize = 1 << wheelBits
	wheelMask = wheelSize - 1

	maxInt64 = math.MaxInt64
)

type chunk [chunkSize]entry

// cell is one open-addressing index slot: the low 32 bits of the entry's
// hash (which also give its home position) and a reference to the entry,
// slot+1 (0 = empty).
//
// A connection has one cell, found by its in-key and, for NAT, by its
// reply key too: both keys hash only the protocol and the client's
// address and port, so they have the same tag, and the lookup tells them
// apart by comparing the entry. One cell per connection keeps the index
// half the size it would be with a cell per key, and filing or removing a
// connection touches one cell.
type cell struct {
	tag  uint32
	slot uint32
}

// ref is the cell reference of a slot.
func ref(slot uint32) uint32 { return slot + 1 }

// index is a linear-probing hash index of slot numbers with backward-shift
// deletion (no tombstones), kept at most 3/4 full.
type index struct {
	cells []cell
	mask  uint32
	count uint32
}

// insert files a cell reference under tag.
func (ix *index) insert(tag, ref uint32) {
	if (ix.count+1)*4 > uint32(len(ix.cells))*3 {
		ix.grow()
	}
	i := tag & ix.mask
	for ix.cells[i].slot != 0 {
		i = (i + 1) & ix.mask
	}
	ix.cells[i] = cell{tag: tag, slot: ref}
	ix.count++
}

func (ix *index) grow() {
	n := 2 * len(ix.cells)
	if n < 16 {
		n = 16
	}
	old := ix.cells
	ix.cells = make([]cell, n)
	ix.mask = uint32(n - 1)
	for _, c := range old {
		if c.slot == 0 {
			continue
		}
		i := c.tag & ix.mask
		for ix.cells[i].slot != 0 {
			i = (i + 1) & ix.mask
		}
		ix.cells[i] = c
	}
}

// remove deletes the cell of ref (filed under tag); it reports whether it
// was there.
func (ix *index) remove(tag, ref uint32) bool {
	if ix.count == 0 {
		return false
	}
	want := ref
	i := tag & ix.mask
	for {
		c := ix.cells[i]
		if c.slot == 0 {
			return false
		}
		if c.slot == want {
			break
		}
		i = (i + 1) & ix.mask
	}
	// Backward shift: pull later members of the probe run into the hole
	// unless their home lies cyclically in (hole, j].
	j := i
	for {
		j = (j + 1) & ix.mask
		c := ix.cells[j]
		if c.slot == 0 {
			break
		}
		home := c.tag & ix.mask
		if (j-home)&ix.mask < (j-i)&ix.mask {
			continue // home is after the hole: must stay
		}
		ix.cells[i] = c
		i = j
	}
	ix.cells[i] = cell{}
	ix.count--
	return true
}

// shard is one lock's worth of the table. Everything but nextDue and dir is
// guarded by mu.
type shard struct {
	mu sync.Mutex

	chunks []*chunk // the slab; slot s is chunks[s>>chunkBits][s&chunkMask]
	// dir publishes chunks for lock-free readers (the n_control decrement
	// of a template from another shard). Appends write only elements past
	// the published length, so readers never race with them.
	dir  atomic.Pointer[[]*chunk]
	used uint32 // slots handed out so far (high-water mark)
	free uint32 // free-list head
	// ix finds connections by in-key, NAT connections also by reply key
	// (through the same cell), and templates by template key.
	ix index

	wheel [wheelSize]uint32 // list heads by expiry tick
	// filled has a bit per wheel list that is not empty, and filledSum a
	// bit per word of filled that is not zero: nextFilled finds the next
	// tick with entries in a few word operations, so that the wheel (and
	// Expire) can jump over empty ticks.
	filled    [wheelSize / 64]uint64
	filledSum uint64
	cur       int64 // current tick: every earlier tick is done
	curMin    int64 // lower bound of expires in the current tick's list
	started   bool
	// nextDue is the earliest time something in the shard may be due:
	// curMin, or the start of the next tick whose list has entries.
	// Expire may skip the shard while now < nextDue.
	nextDue atomic.Int64
	due     int64  // the value last stored in nextDue (guarded by mu)
	steps   uint64 // calls of advance (wheel steps), for tests

	inserts, expired, removed, fullDrops uint64
	evicted, dropEntry, dropPacket       uint64

	// drop_packet's counter (ip_vs_todrop's drop_counter, one per shard)
	// and the table's counter-reset epoch it was last reset for.
	dropCounter int64
	dropEpoch   uint32

	_ [64]byte // keep neighbouring shards' locks off this cache line
}

func (s *shard) init() {
	s.free = nilSlot
	for i := range s.wheel {
		s.wheel[i] = nilSlot
	}
	s.curMin = maxInt64
	s.due = maxInt64
	s.nextDue.Store(maxInt64)
}

func (s *shard) at(slot uint32) *entry {
	return &s.chunks[slot>>chunkBits][slot&chunkMask]
}

// alloc returns a free slot, growing the slab by one chunk when needed;
// ok is false when the shard has run out of slot numbers.
func (s *shard) alloc() (uint32, bool) {
	if s.free != nilSlot {
		slot := s.free
		s.free = s.at(slot).next
		// The next allocation in this shard is, with many shards, dozens
		// of packets away: start loading its entry now, so that it is in
		// the cache by then.
		if s.free != nilSlot {
			prefetchEntry(s.at(s.free))
		}
		return slot, true
	}
	if s.used >= maxSlots {
		return 0, false
	}
	if s.used>>chunkBits >= uint32(len(s.chunks)) {
		s.chunks = append(s.chunks, new(chunk))
		d := s.chunks
		s.dir.Store(&d)
	}
	slot := s.used
	s.used++
	return slot, true
}

// prefetchEntry starts loading both cache lines of an entry (96 bytes
// span two 64-byte lines whatever their alignment; the free-list link is
// on the second).
func prefetchEntry(e *entry) {
	prefetch.Line(unsafe.Pointer(e))
	prefetch.Line(unsafe.Pointer(&e.aux))
}

// warmFree starts loading the entry alloc will hand out next.
func (s *shard) warmFree() {
	if s.free != nilSlot {
		prefetchEntry(s.at(s.free))
	}
}

// start sets the wheel's clock on first use, and moves it to now when the
// shard holds nothing: Expire does not step a shard with no entries, and
// there is nothing to process on the way.
func (s *shard) start(now int64) {
	nt := now >> tickShift
	switch {
	case !s.started:
		s.started = true
		s.cur = nt
		s.publishDue()
	case nt > s.cur && s.filledSum == 0 && s.curMin == maxInt64:
		s.cur = nt
		s.publishDue()
	}
}

// publishDue recomputes nextDue: the current tick's lower bound (curMin)
// or the start of the next tick with entries, whichever comes first
// (maxInt64 when the shard is empty).
func (s *shard) publishDue() {
	d := s.curMin
	if tk, ok := s.nextFilled(); ok && tk<<tickShift < d {
		d = tk << tickShift
	}
	s.due = d
	s.nextDue.Store(d)
}

// lowerDue makes nextDue at most d.
func (s *shard) lowerDue(d int64) {
	if d < s.due {
		s.due = d
		s.nextDue.Store(d)
	}
}

// markFilled records that wheel list w has entries.
func (s *shard) markFilled(w uint32) {
	s.filled[w>>6] |= 1 << (w & 63)
	s.filledSum |= 1 << (w >> 6)
}

// markEmpty records that wheel list w is empty.
func (s *shard) markEmpty(w uint32) {
	s.filled[w>>6] &^= 1 << (w & 63)
	if s.filled[w>>6] == 0 {
		s.filledSum &^= 1 << (w >> 6)
	}
}

// visit is the tick at which the wheel next processes list w: the first
// tick after the current one that maps to w (the current tick's own list
// is visited again a whole turn later, cur+wheelSize).
func (s *shard) visit(w uint32) int64 {
	return s.cur + 1 + int64((w-uint32(s.cur+1))&wheelMask)
}

// nextFilled returns the first tick after the current one, at most a
// whole turn later, whose list has entries; ok is false when every list
// is empty. Every entry on that list expires at that tick or later (an
// entry sits on the list of a tick no later than its expiry, and the list
// of tick t also holds entries of t+wheelSize, t+2*wheelSize, ...), so
// nothing in the shard but the current tick's list is due before it.
func (s *shard) nextFilled() (int64, bool) {
	if s.filledSum == 0 {
		return 0, false
	}
	return s.visit(s.filledFrom(uint32(s.cur+1) & wheelMask)), true
}

// filledFrom returns the first list with entries at or after wheel
// position p, going round; some list must have entries.
func (s *shard) filledFrom(p uint32) uint32 {
	wi := p >> 6
	if m := s.filled[wi] >> (p & 63); m != 0 {
		return p + uint32(bits.TrailingZeros64(m))
	}
	if m := s.filledSum >> wi >> 1; m != 0 {
		i := wi + 1 + uint32(bits.TrailingZeros64(m))
		return i<<6 + uint32(bits.TrailingZeros64(s.filled[i]))
	}
	// Round to the first list with entries from 0 on (possibly in word
	// wi, below p).
	i := uint32(bits.TrailingZeros64(s.filledSum))
	return i<<6 + uint32(bits.TrailingZeros64(s.filled[i]))
}

// file puts the entry on the wheel list of its expiry tick (never earlier
// than the current tick).
func (s *shard) file(slot uint32, e *entry) {
	t := e.expires >> tickShift
	if t <= s.cur {
		t = s.cur
		if e.expires < s.curMin {
			s.curMin = e.expires
			s.publishDue()
		}
	}
	w := uint32(t) & wheelMask
	head := s.wheel[w]
	e.prev = headMark | w
	e.next = head
	if head != nilSlot {
		s.at(head).prev = slot
	} else {
		s.markFilled(w)
		if t > s.cur {
			s.lowerDue(s.visit(w) << tickShift)
		}
	}
	s.wheel[w] = slot
}

// unfile takes the entry off its wheel list.
func (s *shard) unfile(e *entry) {
	if e.prev&headMark != 0 {
		w := e.prev & wheelMask
		s.wheel[w] = e.next
		if e.next == nilSlot {
			s.markEmpty(w)
		}
	} else {
		s.at(e.prev).next = e.next
	}
	if e.next != nilSlot {
		s.at(e.next).prev = e.prev
	}
}

// rearm sets a new expiry. Later expiries are lazy (the wheel re-files the
// entry when it reaches the old tick); earlier ones are re-filed at once so
// the entry is reclaimed on time.
func (s *shard) rearm(slot uint32, e *entry, exp int64) {
	old := e.expires
	e.expires = exp
	if exp>>tickShift < old>>tickShift {
		s.unfile(e)
		s.file(slot, e)
	} else if exp < s.curMin && exp>>tickShift <= s.cur {
		s.curMin = exp
		s.publishDue()
	}
}
