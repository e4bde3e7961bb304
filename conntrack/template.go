package conntrack

import (
	"sync/atomic"
	"time"

	"gvs/ipvs"
)

// Persistence templates (IPVS.md §4). A template binds a client network to
// a destination for a service: it is created with the service's persistence
// timeout, re-armed to that timeout each time a new connection is created
// under it (Create with its TemplateRef), and while it controls live
// connections (n_control > 0) it does not die: its timer is extended by 60 s
// steps instead. It counts in its dest's PersistConns.

// tmplAlive reports whether a template is alive at now; a template that is
// due but still controls connections is extended by 60 s steps, exactly as
// the kernel timer would have done on time.
func (s *shard) tmplAlive(slot uint32, e *entry, now int64) bool {
	if now < e.expires {
		return true
	}
	if atomic.LoadUint32(&e.ctl) == 0 {
		return false
	}
	steps := (now-e.expires)/templateBusyRearm + 1
	s.rearm(slot, e, e.expires+steps*templateBusyRearm)
	return true
}

// refEntry returns the template r names in s (locked, r's shard), or nil
// when r is stale: its slot has been freed or reused since.
func (s *shard) refEntry(r TemplateRef) *entry {
	if r.slot >= s.used {
		return nil
	}
	e := s.at(r.slot)
	if e.gen != r.gen || e.flags&(fUsed|fTemplate) != fUsed|fTemplate {
		return nil
	}
	return e
}

// validTemplate is ip_vs_check_template: the dest must still be available
// and, with expire_quiescent_template, have a non-zero weight.
func (t *Table) validTemplate(d *ipvs.Dest) bool {
	if !d.Available() {
		return false
	}
	return !(t.expireQuiescent.Load() && d.Weight() == 0)
}

// unhash makes a template invisible to lookups; it stays in the slab (and
// counted) until it no longer controls connections and its time is up.
func (t *Table) unhash(s *shard, slot uint32, e *entry) {
	if e.flags&fUnhashed != 0 {
		return
	}
	k := TemplateKey{CNet: e.caddr, VAddr: e.vaddr, VPort: e.vport, Proto: e.proto}
	s.ix.remove(uint32(hashTemplate(t.seed, &k)), ref(slot))
	e.flags |= fUnhashed
}

// retire drops an invalid or dead template: freed now when it controls
// nothing, unhashed otherwise. It reports whether the entry was freed.
func (t *Table) retire(s *shard, slot uint32, e *entry) bool {
	if atomic.LoadUint32(&e.ctl) == 0 {
		t.release(s, slot, e, true)
		return true
	}
	t.unhash(s, slot, e)
	return false
}

// Template looks up the persistence template of k. It returns the
// template's destination and a reference for Create. A template whose time
// is up, or whose destination is no longer valid (deleted, or quiesced with
// ExpireQuiescentTemplate) is not returned: the caller schedules a new
// destination and calls CreateTemplate; the invalid one is dropped (or, if
// it still controls connections, hidden until they end).
func (t *Table) Template(k TemplateKey, now int64) (*ipvs.Dest, TemplateRef, bool) {
	h := hashTemplate(t.seed, &k)
	s, si := t.shardOf(h)
	s.mu.Lock()
	slot := s.findTemplate(uint32(h), &k)
	if slot == nilSlot {
		s.mu.Unlock()
		return nil, TemplateRef{}, false
	}
	e := s.at(slot)
	if !s.tmplAlive(slot, e, now) {
		t.release(s, slot, e, true)
		s.expired++
		s.mu.Unlock()
		return nil, TemplateRef{}, false
	}
	if !t.validTemplate(e.dest) {
		if t.retire(s, slot, e) {
			s.removed++
		}
		s.mu.Unlock()
		return nil, TemplateRef{}, false
	}
	ref := TemplateRef{dest: e.dest, slot: slot, gen: e.gen, shard: si}
	s.mu.Unlock()
	return ref.dest, ref, true
}

// CreateTemplate adds the persistence template k -> dest with the service's
// persistence timeout (rounded up to whole seconds, at least 1 s). The
// template's destination port is dest.Port, or 0 when k.VPort is 0 (port-0,
// FTP and fwmark services), as IPVS records it.
//
// If a valid live template for k already exists (another worker made it
// first), that one is returned unchanged; its Dest may differ from dest, and
// the caller should use ref.Dest(). An invalid one is replaced.
func (t *Table) CreateTemplate(k TemplateKey, dest *ipvs.Dest, timeout time.Duration, now int64) (TemplateRef, error) {
	if dest == nil {
		return TemplateRef{}, ErrNoDest
	}
	secs := (timeout + time.Second - 1) / time.Second
	switch {
	case secs < 1:
		secs = 1
	case secs > 1<<31:
		secs = 1 << 31
	}
	h := hashTemplate(t.seed, &k)
	s, si := t.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start(now)
	if slot := s.findTemplate(uint32(h), &k); slot != nilSlot {
		e := s.at(slot)
		switch {
		case !s.tmplAlive(slot, e, now):
			t.release(s, slot, e, true)
			s.expired++
		case t.validTemplate(e.dest):
			return TemplateRef{dest: e.dest, slot: slot, gen: e.gen, shard: si}, nil
		default:
			if t.retire(s, slot, e) {
				s.removed++
			}
		}
	}
	slot, err := t.reserve(s, now)
	if err != nil {
		return TemplateRef{}, err
	}
	e := s.at(slot)
	*e = entry{
		caddr:   k.CNet,
		vaddr:   k.VAddr,
		daddr:   dest.Addr.As16(),
		dest:    dest,
		vport:   k.VPort,
		proto:   k.Proto,
		state:   StateNone,
		method:  dest.Method(),
		flags:   fUsed | fTemplate | fInactive,
		gen:     e.gen + 1,
		aux:     uint32(secs),
		expires: now + int64(secs)*int64(time.Second),
	}
	if k.VPort != 0 {
		e.dport = dest.Port
	}
	dest.Bind(true)
	s.file(slot, e)
	s.ix.insert(uint32(h), ref(slot))
	s.inserts++
	return TemplateRef{dest: dest, slot: slot, gen: e.gen, shard: si}, nil
}

// DropTemplate removes the template ref names (to force rescheduling); one
// that still controls connections is hidden and freed when they end. It
// reports whether ref still named a template.
func (t *Table) DropTemplate(ref TemplateRef) bool {
	if ref.gen == 0 || int(ref.shard) >= len(t.shards) {
		return false
	}
	s := &t.shards[ref.shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.refEntry(ref)
	if e == nil {
		return false
	}
	if t.retire(s, ref.slot, e) {
		s.removed++
	}
	return true
}
