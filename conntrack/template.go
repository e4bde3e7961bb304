package conntrack

import (
	"sync/atomic"
	"time"

	"gvs/ipvs"
)

// Persistence templates (IPVS.md §4). A template binds a client network to
// a destination for a service: it is created with the service's persistence
// timeout (its cp->timeout), and re-armed to now + that timeout each time a
// new connection is created under it (Create with its TemplateRef). When its
// time runs out while it still controls live connections (n_control > 0) it
// does not die: as ip_vs_conn_expire does, it gets 60 s more and its timeout
// becomes 60 s for good, so later connections under it re-arm it to 60 s
// only. It counts in its dest's PersistConns.
//
// Its state is NONE or ASSURED (ip_vs_ctpl_state_name_table): it turns
// ASSURED when a TCP connection it controls enters ESTABLISHED, or a UDP
// connection it controls sees a reply (ip_vs_control_assure_ct).
//
// A template whose dest is no longer valid is invalidated, not freed, as
// ip_vs_check_template does: its vport and dport become 65535 (cport 0), no
// lookup finds it any more, and it stays listed, bound and counted until
// its own timer (which the failed lookup does not restart) runs out.

// A template's ctl word holds n_control in its low 31 bits and the ASSURED
// state in the top bit, so that controlled connections in other shards can
// update both without the template shard's lock.
const (
	ctlAssured uint32 = 1 << 31
	ctlCount          = ctlAssured - 1
)

// invalidPort is the vport and dport of an invalidated template.
const invalidPort = 0xffff

// busy reports whether template e controls connections.
func busy(e *entry) bool { return atomic.LoadUint32(&e.ctl)&ctlCount != 0 }

// stepBusy extends a due template that controls connections by 60 s steps
// up to the first deadline after now, exactly as the kernel timer would
// have done on time, and makes 60 s its timeout (cp->timeout = 60*HZ).
func stepBusy(e *entry, now int64) int64 {
	steps := (now-e.expires)/templateBusyRearm + 1
	e.aux = uint32(templateBusyRearm / int64(time.Second))
	return e.expires + steps*templateBusyRearm
}

// tmplAlive reports whether a template is alive at now; a template that is
// due but still controls connections is extended (stepBusy).
func (s *shard) tmplAlive(slot uint32, e *entry, now int64) bool {
	if now < e.expires {
		return true
	}
	if !busy(e) {
		return false
	}
	s.rearm(slot, e, stepBusy(e, now))
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
	if d == nil || !d.Available() {
		return false
	}
	return !(t.expireQuiescent.Load() && d.Weight() == 0)
}

// unhash takes a template out of the index; it stays in the slab (listed
// and counted) until its time is up and it controls no connection.
func (t *Table) unhash(s *shard, slot uint32, e *entry) {
	if e.flags&fUnhashed != 0 {
		return
	}
	k := TemplateKey{CNet: e.caddr, VAddr: e.vaddr, VPort: e.vport, Proto: e.proto}
	s.ix.remove(uint32(hashTemplate(t.seed, &k)), ref(slot))
	e.flags |= fUnhashed
}

// invalidate is what ip_vs_check_template does to a template it rejects:
// vport and dport become 65535 and cport 0, so that no lookup finds it, and
// its timer is left alone.
//
// The kernel rehashes it under its new key, where a lookup for a service
// on port 65535 could still meet it; gvs places templates by the hash of
// their whole key, so it leaves it out of the index instead.
func (t *Table) invalidate(s *shard, slot uint32, e *entry) {
	t.unhash(s, slot, e)
	e.cport, e.vport, e.dport = 0, invalidPort, invalidPort
}

// retire drops a template by force (DropTemplate, Flush, RemoveDest): freed
// now when it controls nothing, invalidated otherwise. It reports whether
// the entry was freed.
func (t *Table) retire(s *shard, slot uint32, e *entry) bool {
	if !busy(e) {
		t.release(s, slot, e, true)
		return true
	}
	t.invalidate(s, slot, e)
	return false
}

// assure marks the template (sh, slot) ASSURED. The caller holds a
// connection it controls, so the template cannot go away meanwhile.
func (t *Table) assure(sh uint16, slot uint32) {
	d := *t.shards[sh].dir.Load()
	p := &d[slot>>chunkBits][slot&chunkMask].ctl
	if atomic.LoadUint32(p)&ctlAssured == 0 {
		atomic.OrUint32(p, ctlAssured)
	}
}

// Template looks up the persistence template of k. It returns the
// template's destination and a reference for Create. A template whose time
// is up, or whose destination is no longer valid (deleted, or quiesced with
// ExpireQuiescentTemplate) is not returned: the caller schedules a new
// destination and calls CreateTemplate; the invalid one is invalidated
// (listed with ports 65535 until its timer runs out).
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
		t.invalidate(s, slot, e)
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
// the caller should use ref.Dest(). An invalid one is invalidated and the
// new one created next to it.
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
			t.invalidate(s, slot, e)
		}
	}
	slot, err := t.reserve(s, now)
	if err != nil {
		return TemplateRef{}, err
	}
	e := s.at(slot)
	// ip_vs_bind_dest gives a template the dest's connection flags too:
	// INACTIVE, and NOOUTPUT when the method is not NAT.
	flags := fUsed | fTemplate | fInactive
	if dest.Method() != ipvs.Masq {
		flags |= fNoOutput
	}
	*e = entry{
		caddr:   k.CNet,
		vaddr:   k.VAddr,
		daddr:   dest.Addr.As16(),
		dest:    dest,
		vport:   k.VPort,
		proto:   k.Proto,
		state:   StateNone,
		method:  dest.Method(),
		flags:   flags,
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
// that still controls connections is invalidated instead, and freed when its
// time is up and they have ended. It
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
