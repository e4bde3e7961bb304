package conntrack

import (
	"unsafe"

	"gvs/internal/prefetch"
	"gvs/ipvs"
)

// Expire removes every entry whose time has come (now >= expires), unbinding
// it from its destination, and returns how many it removed. Templates that
// still control connections are extended by 60 s steps instead. Shards with
// nothing due are skipped without taking their lock, so calling Expire
// often (before every replayed frame) is cheap: the cost is O(shards) atomic
// loads plus O(expired + wheel ticks passed that have entries). Empty
// ticks cost nothing: after a long idle gap (a director without traffic
// for a day) Expire goes straight from one tick with entries to the next,
// at most one step per tick with entries and per turn of the wheel (1099 s)
// of each long-lived entry.
//
// Time is walked forward one wheel tick with something due at a time, as
// the kernel's timers would have fired: within a step, connections are
// reclaimed first (pass 1) and due templates decided after (pass 2). So a
// template whose step deadline came while a connection it controls was
// still alive is extended, even if that connection has died by now, and one
// whose connections had all died by its deadline goes at that deadline. The
// order is exact to a tick (268 ms): a connection that dies in the same
// tick as a template's deadline, after it, counts as dead.
func (t *Table) Expire(now int64) int {
	n := 0
	for {
		at, ok := t.nextStep(now)
		if !ok {
			return n
		}
		n += t.expireAt(at)
		if at >= now {
			return n
		}
	}
}

// nextStep is the time of Expire's next step towards now: the end of the
// tick of the earliest deadline due in any shard, at most now; ok is false
// when nothing is due by now. A shard's deadline (nextDue) is the start of
// its next tick with entries, or its current tick's earliest expiry: ticks
// without entries are never stepped through.
func (t *Table) nextStep(now int64) (int64, bool) {
	first := int64(maxInt64)
	for i := range t.shards {
		if d := t.shards[i].nextDue.Load(); d < first {
			first = d
		}
	}
	if first > now {
		return 0, false
	}
	end := (first>>tickShift+1)<<tickShift - 1
	if end > now {
		end = now
	}
	return end, true
}

// expireAt is one step of Expire: connections due by now first, then due
// templates.
func (t *Table) expireAt(now int64) int {
	n, busy := 0, false
	for i := range t.shards {
		s := &t.shards[i]
		if now < s.nextDue.Load() {
			continue
		}
		s.mu.Lock()
		n += t.advance(s, now, true)
		busy = busy || s.nextDue.Load() <= now
		s.mu.Unlock()
	}
	if !busy {
		return n
	}
	for i := range t.shards {
		s := &t.shards[i]
		if now < s.nextDue.Load() {
			continue
		}
		s.mu.Lock()
		n += t.advance(s, now, false)
		s.mu.Unlock()
	}
	return n
}

// advance moves s's wheel (locked) to now, processing every tick passed and
// the current tick's list if something in it may be due. With deferBusy, due
// templates that control connections are left due (on the current tick's
// list) for a second call; without, they are extended.
//
// The ticks passed are taken in order, but only those whose list has
// entries (the filled bitmap): the others have nothing to process.
func (t *Table) advance(s *shard, now int64, deferBusy bool) int {
	s.start(now)
	s.steps++
	nt := now >> tickShift
	n := 0
	switch {
	case nt > s.cur:
		from := s.cur
		if nt-from >= wheelSize {
			from = nt - wheelSize + 1
		}
		s.cur = nt
		s.curMin = maxInt64
		for tk := from; tk <= nt && s.filledSum != 0; tk++ {
			p := uint32(tk) & wheelMask
			w := s.filledFrom(p)
			if tk += int64((w - p) & wheelMask); tk > nt {
				break
			}
			n += t.processList(s, w, now, deferBusy)
		}
	case s.curMin <= now:
		s.curMin = maxInt64
		n += t.processList(s, uint32(s.cur)&wheelMask, now, deferBusy)
	}
	s.publishDue()
	return n
}

// processList empties one wheel list: due entries are freed, the others
// (re-armed since they were filed) go back on the list of their new tick.
//
// The list is a pointer chase and each freed connection removes cells from
// the index at a random place, two cache misses in a row per entry. So the
// walk looks one entry ahead: while this entry is worked on, the next one
// (loaded a step earlier) is hashed and its index cells are fetched, and
// the one after it is fetched.
func (t *Table) processList(s *shard, w uint32, now int64, deferBusy bool) int {
	slot := s.wheel[w]
	s.wheel[w] = nilSlot
	s.markEmpty(w)
	n := 0
	var tag uint32 // index tag of slot's connection, when ahead says so
	ahead := false
	if slot != nilSlot {
		tag, ahead = s.lookAhead(t.seed, slot, now)
	}
	for slot != nilSlot {
		e := s.at(slot)
		next := e.next
		var nextTag uint32
		nextAhead := false
		if next != nilSlot {
			nextTag, nextAhead = s.lookAhead(t.seed, next, now)
		}
		switch {
		case now < e.expires:
			s.file(slot, e)
		case e.flags&fTemplate != 0 && busy(e):
			if !deferBusy {
				e.expires = stepBusy(e, now)
			}
			s.file(slot, e) // when deferred: still due, on the current tick
		default:
			if !ahead {
				tag = t.tagOf(e)
			}
			t.unlinkTagged(s, slot, e, tag, false)
			s.expired++
			n++
		}
		slot, tag, ahead = next, nextTag, nextAhead
	}
	if n != 0 {
		t.live.Add(-int64(n))
	}
	return n
}

// lookAhead prepares the expiry of slot's entry, which the walk reaches
// next: the entry after it starts loading and, if slot holds a due
// connection, its index tag is computed and its cells start loading.
func (s *shard) lookAhead(seed uint64, slot uint32, now int64) (tag uint32, ok bool) {
	e := s.at(slot)
	if e.next != nilSlot {
		prefetchEntry(s.at(e.next))
	}
	if now < e.expires || e.flags&fTemplate != 0 {
		return 0, false
	}
	tag = uint32(hashConn(seed, e.proto, &e.caddr, e.cport))
	prefetch.Line(unsafe.Pointer(&s.ix.cells[tag&s.ix.mask]))
	return tag, true
}

// Walk calls fn with a copy of every live entry, connections and templates,
// invalidated templates included (ipvsadm -Lnc). It first runs Expire(now),
// so that it lists what the kernel's table holds once its timers have fired
// (in particular, which due templates were extended). Each shard is copied
// under its lock and fn runs after the lock is released, so fn may call
// back into the table; fn must not keep the *Conn. With a SeenFunc
// (SetSeen), an ESTABLISHED TCP or UDP connection's Expires is at least
// its last packet outside the table plus its state's timeout. Walk
// allocates and is for the control plane only.
func (t *Table) Walk(now int64, fn func(*Conn)) {
	t.Expire(now)
	seen := t.seenFn.Load()
	var buf []Conn
	for i := range t.shards {
		s := &t.shards[i]
		buf = buf[:0]
		s.mu.Lock()
		for slot := uint32(0); slot < s.used; slot++ {
			e := s.at(slot)
			if e.flags&fUsed == 0 {
				continue
			}
			if e.flags&fTemplate != 0 {
				// Invalidated templates are listed too, as the kernel's
				// stay in its table until their timer runs out.
				if !s.tmplAlive(slot, e, now) {
					continue
				}
			} else if now >= e.expires {
				continue
			}
			buf = append(buf, Conn{})
			fill(e, &buf[len(buf)-1])
		}
		s.mu.Unlock()
		for j := range buf {
			if seen != nil {
				t.seenExpiry(*seen, &buf[j])
			}
			fn(&buf[j])
		}
	}
}

// Flush removes every entry and returns how many. Connections go first,
// then templates; a template that a concurrently created connection still
// uses is invalidated and freed when its time is up and that connection has
// ended.
func (t *Table) Flush() int { return t.removeWhere(func(*entry) bool { return true }) }

// RemoveDest removes every connection and template bound to d (as the
// kernel's expire_nodest_conn flush does after d is deleted) and returns
// how many.
func (t *Table) RemoveDest(d *ipvs.Dest) int {
	return t.removeWhere(func(e *entry) bool { return e.dest == d })
}

func (t *Table) removeWhere(match func(*entry) bool) int {
	n := 0
	for pass := 0; pass < 2; pass++ {
		templates := pass == 1
		for i := range t.shards {
			s := &t.shards[i]
			s.mu.Lock()
			for slot := uint32(0); slot < s.used; slot++ {
				e := s.at(slot)
				if e.flags&fUsed == 0 || (e.flags&fTemplate != 0) != templates || !match(e) {
					continue
				}
				if templates && !t.retire(s, slot, e) {
					continue
				}
				if !templates {
					t.release(s, slot, e, true)
				}
				s.removed++
				n++
			}
			s.mu.Unlock()
		}
	}
	if n != 0 {
		t.changes.Add(1)
	}
	return n
}
