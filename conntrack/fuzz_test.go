package conntrack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvs/ipvs"

	"gvs/internal/oracle"
)

// FuzzTableInvariants drives a small table (capacity 1..64, so the
// table-full path is common) over many keys with every operation the data
// path and the control plane use: lookups in both directions, creation
// under persistence templates, template lookups, creation and drops,
// timeout changes (--set), secure_tcp and expire_quiescent_template
// toggles, quiesced and deleted real servers, RemoveDest, Flush, Expire
// and time passing. It has no model (FuzzTableOps has one, for the plain
// connection path); its oracles are the invariants:
//
//   - Len never exceeds Capacity; Create and CreateTemplate fail only with
//     ErrFull, each refusal counted in Stats.FullDrops;
//   - no lookup returns an entry past its expiry, nor a template whose
//     destination is deleted;
//   - at checkpoints: Len equals the number of entries Walk lists, no
//     listed entry is past its expiry, every destination's
//     ActiveConn/InActConn/PersistConn equals a recount over the entries,
//     the templates' NControl add up to the controlled connections, and
//     Stats.Inserts = Live + Expired + Removed;
//   - at the end, after everything has timed out, the table is empty and
//     every counter is back to zero.
func FuzzTableInvariants(f *testing.F) {
	for _, s := range invariantSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			data = data[:4096]
		}
		r := newInvRunner(t, data)
		r.run(data, 0, true)
		r.finish()
	})
}

// invariantSeeds: the first byte sets capacity (1 + b%64) and shards
// (1 << (b>>6)); then 5-byte ops: op key flags arg dt (see invRunner.op).
func invariantSeeds() [][]byte {
	fill := []byte{3} // capacity 4, one shard: fill, refuse, expire, refill
	for i := byte(0); i < 8; i++ {
		fill = append(fill, 0x84, i, TCPSyn, 0, 1)
	}
	fill = append(fill, 0x8f, 0, 0, 10, 0, 0x84, 9, TCPSyn, 0, 1)
	tmpl := []byte{0x47, // capacity 8, two shards
		0x88, 1, 0, 5, 1, // template lookup/create (5 s)
		0x88, 1, 0, 5, 1, // found
		0x84, 1, TCPSyn, 0x80, 1, // create under it
		0x80, 1, TCPAck, 0, 1, // established: assured
		0x89, 1, 0, 0, 1, // drop the template: invalidated, still controlling
		0x8a, 0, 0, 0, 200, // expire
		0x8c, 0, 0, 3, 1, // --set 3 3 3
		0x80, 1, TCPFin, 0, 1,
		0x8d, 0, 0, 0, 1, // secure_tcp on
		0x84, 2, TCPSyn, 0, 1,
		0x8d, 2, 0, 2, 1, // quiesce dest 2, expire_quiescent_template on
		0x88, 2, 0, 2, 1,
		0x8e, 1, 0, 0, 1, // delete dest 1 and remove its entries
		0x88, 1, 0, 5, 1,
		0x83, 1, TCPAck, 0, 1,
		0x8e, 0, 0, 1, 1, // flush
	}
	udp := []byte{0x10, 0x84, 5, 0, 0x80, 0, 0x83, 5, 0, 0, 3, 0x8f, 0, 0, 1, 0, 0x87, 5, 0, 0, 0}
	return [][]byte{fill, tmpl, udp, {}}
}

type invRunner struct {
	t     testing.TB
	tb    *Table
	dests [4]*ipvs.Dest
	tmpls [4]TemplateRef
	now   int64
	prev  Stats
	conc  bool // concurrent mode: no global checks between ops
	base  byte // key space offset of this runner (concurrent mode)
	// clock, in concurrent mode, is the clock all runners share (as the
	// workers share one): each op moves it on and reads it.
	clock *atomic.Int64
	slack int // concurrent mode: callers besides this one
}

func (r *invRunner) advance(d int64) {
	if r.clock != nil {
		r.now = r.clock.Add(d)
		return
	}
	r.now += d
}

func newInvRunner(t testing.TB, data []byte) *invRunner {
	var b byte
	if len(data) > 0 {
		b = data[0]
	}
	tb := New(Config{Seed: 5, Capacity: 1 + int(b%64), Shards: 1 << (b >> 6)})
	return newInvRunnerOn(t, tb)
}

func newInvRunnerOn(t testing.TB, tb *Table) *invRunner {
	r := &invRunner{t: t, tb: tb, now: t0}
	r.dests[0] = newDest(t, ipvs.Masq, "198.19.3.1", 8080)
	r.dests[1] = newDest(t, ipvs.Masq, "198.19.3.2", 8080)
	r.dests[2] = newDest(t, ipvs.Route, "198.19.3.3", 80)
	r.dests[3] = newDest(t, ipvs.Tunnel, "198.19.3.4", 80)
	return r
}

// key: b picks the client (of 256 addresses in the runner's /24; every
// fifth is UDP), arg the destination.
func (r *invRunner) key(b byte, arg byte) (InKey, *ipvs.Dest) {
	proto := ipvs.ProtoTCP
	if b%5 == 0 {
		proto = ipvs.ProtoUDP
	}
	return InKeyV4(proto, [4]byte{198, 18, r.base, b}, 1000+uint16(b%7), [4]byte{203, 0, 113, 1}, 80), r.dests[arg%4]
}

func (r *invRunner) tkey(b byte) TemplateKey {
	return NewTemplateKey(ipvs.ProtoTCP, netip.AddrFrom4([4]byte{198, 18, r.base, b % 8}), 32, vip, 80)
}

func (r *invRunner) fatalf(format string, a ...any) {
	r.t.Helper()
	r.t.Fatalf("t=%ds: "+format, append([]any{(r.now - t0) / sec}, a...)...)
}

// found checks an entry a lookup returned.
func (r *invRunner) found(what string, c *Conn) {
	r.t.Helper()
	if c.Expires <= r.now {
		r.fatalf("%s returned an entry past its expiry (%d <= %d): %+v", what, c.Expires, r.now, *c)
	}
	if c.Dest == nil {
		r.fatalf("%s returned an entry without dest", what)
	}
}

func (r *invRunner) created(what string, err error) {
	r.t.Helper()
	if err != nil && !errors.Is(err, ErrFull) {
		r.fatalf("%s: %v", what, err)
	}
	if !r.conc {
		st := r.tb.Stats()
		if err != nil && st.FullDrops != r.prev.FullDrops+1 {
			r.fatalf("%s: ErrFull, FullDrops %d -> %d", what, r.prev.FullDrops, st.FullDrops)
		}
		if err == nil && st.FullDrops != r.prev.FullDrops {
			r.fatalf("%s: FullDrops moved without ErrFull", what)
		}
	}
}

// op runs one operation: op%16 selects it, op&0x80 asks for a checkpoint.
func (r *invRunner) op(op, kb, flags, arg, dt byte) {
	r.t.Helper()
	switch dt >> 6 {
	case 0:
		r.advance(int64(dt&63) * int64(10*time.Millisecond))
	case 1:
		r.advance(int64(dt&63) * sec)
	default:
		r.advance(int64(dt&63) * 30 * sec)
	}
	if !r.conc {
		r.prev = r.tb.Stats()
	}
	k, d := r.key(kb, arg)
	var c Conn
	now := r.now
	switch op % 16 {
	case 0, 1, 2:
		if r.tb.In(k, flags, now, &c) {
			r.found("In", &c)
		}
	case 3:
		rk := ReplyKey{Proto: k.Proto, DAddr: d.Addr.As16(), DPort: d.Port, CAddr: k.CAddr, CPort: k.CPort}
		if r.tb.Out(rk, flags, now, &c) {
			r.found("Out", &c)
		}
	case 4, 5, 6:
		var tmpl TemplateRef
		if arg&0x80 != 0 {
			tmpl = r.tmpls[kb%4]
		}
		if !tmpl.IsZero() {
			d = tmpl.Dest()
		}
		err := r.tb.Create(k, d, d.Port, tmpl, flags, now, &c)
		r.created("Create", err)
		if err == nil {
			r.found("Create", &c)
		}
	case 7:
		if r.tb.PeekIn(k, now, &c) {
			r.found("PeekIn", &c)
		}
	case 8:
		tk := r.tkey(kb)
		td, ref, ok := r.tb.Template(tk, now)
		if ok {
			if !td.Available() {
				r.fatalf("Template returned a deleted dest %v", td.AddrPort())
			}
			r.tmpls[kb%4] = ref
			break
		}
		ref, err := r.tb.CreateTemplate(tk, d, time.Duration(arg%64)*time.Second, now)
		r.created("CreateTemplate", err)
		if err == nil {
			r.tmpls[kb%4] = ref
		}
	case 9:
		r.tb.DropTemplate(r.tmpls[kb%4])
	case 10:
		r.tb.Expire(now)
	case 11:
		r.tb.Remove(k)
	case 12:
		s := func(b byte) time.Duration { return time.Duration(b%8) * time.Second }
		r.tb.SetTimeouts(s(arg), s(arg>>3), s(kb))
	case 13:
		switch arg % 4 {
		case 0:
			r.tb.SetSecureTCP(kb&1 == 0)
		case 1:
			r.tb.SetExpireQuiescentTemplate(kb&1 == 0)
		case 2:
			cfg := d.Config()
			cfg.Weight = int(kb % 2)
			d.Update(cfg)
		case 3:
			cfg := d.Config()
			cfg.UThreshold, cfg.LThreshold = uint32(kb%4), uint32(kb%4)/2
			d.Update(cfg)
		}
	case 14:
		if arg%2 == 1 {
			if !r.conc {
				r.tb.Flush()
			}
			break
		}
		d.SetUnavailable()
		r.tb.RemoveDest(d)
	case 15:
		r.advance(int64(arg) * 10 * sec)
	}
	// Concurrently, Len may read over Capacity by the reservations other
	// callers are making at that moment (reserve counts first and takes
	// back a refused one); the entries themselves never exceed it, as the
	// checkpoints after the workers show.
	if n := r.tb.Len(); n > r.tb.Capacity()+r.slack || n < 0 {
		r.fatalf("op %d: Len %d, capacity %d", op%16, n, r.tb.Capacity())
	}
	if op&0x80 != 0 && !r.conc {
		r.checkpoint(fmt.Sprintf("op %d", op%16))
	}
}

func (r *invRunner) run(data []byte, off int, skipFirst bool) {
	if skipFirst && len(data) > 0 {
		data = data[1:]
	}
	for len(data) >= 5 {
		r.op(data[0], data[1], data[2], data[3], data[4])
		data = data[5:]
	}
}

// checkpoint checks the whole table against a recount of Walk.
func (r *invRunner) checkpoint(what string) {
	r.t.Helper()
	checkTableInvariants(r.t, r.tb, r.now, r.dests[:], what)
}

func checkTableInvariants(t testing.TB, tb *Table, now int64, dests []*ipvs.Dest, what string) {
	t.Helper()
	type count struct{ active, inact, persist int32 }
	counts := map[*ipvs.Dest]*count{}
	for _, d := range dests {
		counts[d] = &count{}
	}
	n, controlled := 0, 0
	var ncontrol uint32
	tb.Walk(now, func(c *Conn) {
		n++
		if c.Expires <= now {
			t.Fatalf("%s: Walk lists an entry past its expiry: %+v", what, *c)
		}
		k := counts[c.Dest]
		if k == nil {
			t.Fatalf("%s: entry of an unknown dest %+v", what, *c)
		}
		switch {
		case c.Flags&FlagTemplate != 0:
			k.persist++
			ncontrol += c.NControl
		case c.Flags&FlagInactive != 0:
			k.inact++
		default:
			k.active++
		}
		if c.Flags&FlagControlled != 0 {
			controlled++
		}
	})
	if l := tb.Len(); l != n {
		t.Fatalf("%s: Len %d, Walk lists %d", what, l, n)
	}
	for d, k := range counts {
		if a, i, p := d.ActiveConns.Load(), d.InactConns.Load(), d.PersistConns.Load(); a != k.active || i != k.inact || p != k.persist {
			t.Fatalf("%s: %v ActiveConn/InActConn/PersistConn %d/%d/%d, recount %d/%d/%d", what, d.AddrPort(),
				a, i, p, k.active, k.inact, k.persist)
		}
	}
	if int(ncontrol) != controlled {
		t.Fatalf("%s: templates control %d connections, %d are controlled", what, ncontrol, controlled)
	}
	st := tb.Stats()
	// Entries leave by expiry, removal, eviction of a half-open entry
	// from a full table, or drop_entry's scan.
	if st.Inserts != uint64(st.Live)+st.Expired+st.Removed+st.Evicted+st.DropEntry {
		t.Fatalf("%s: stats %+v: inserts != live + expired + removed + evicted + dropped", what, st)
	}
}

// finish lets everything time out and checks that nothing is left.
func (r *invRunner) finish() {
	r.t.Helper()
	r.checkpoint("end")
	r.now += 2000 * sec
	r.checkpoint("all expired")
	if n := r.tb.Len(); n != 0 {
		r.fatalf("%d entries left after every timeout", n)
	}
}

// TestTableInvariantsConcurrent runs the fuzz seeds and random sequences
// from several goroutines at once on one small table, each on its own
// clients and its own real servers, all on one shared clock (as the
// workers are). Run under -race (make race). The per-op oracles hold
// throughout; the global ones are checked once all are done.
func TestTableInvariantsConcurrent(t *testing.T) {
	const workers = 4
	seqs := invariantSeeds()
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 2; i++ {
		s := make([]byte, 1+5*1500)
		for j := range s {
			s[j] = byte(rng.Uint32())
		}
		for j := 1; j+4 < len(s); j += 5 {
			s[j] &^= 0x80 // no checkpoints
			s[j+4] &= 0x3f
			if s[j]%16 == 14 || s[j]%16 == 15 {
				s[j] = 4 // no deletes, no big jumps: keep the table busy
			}
		}
		seqs = append(seqs, s)
	}
	for _, capacity := range []int{8, 64, 1024} {
		tb := New(Config{Seed: 9, Capacity: capacity, Shards: 4})
		var clock atomic.Int64
		clock.Store(t0)
		runners := make([]*invRunner, workers)
		var wg sync.WaitGroup
		for w := range runners {
			r := newInvRunnerOn(t, tb)
			r.conc, r.base, r.clock, r.slack = true, byte(w), &clock, workers-1
			runners[w] = r
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, s := range seqs {
					r.run(s, 0, true)
				}
			}()
		}
		wg.Wait()
		var dests []*ipvs.Dest
		for _, r := range runners {
			dests = append(dests, r.dests[:]...)
		}
		now := clock.Load()
		checkTableInvariants(t, tb, now, dests, fmt.Sprintf("capacity %d, after the workers", capacity))
		checkTableInvariants(t, tb, now+2000*sec, dests, fmt.Sprintf("capacity %d, all expired", capacity))
		if n := tb.Len(); n != 0 {
			t.Fatalf("capacity %d: %d entries left", capacity, n)
		}
		for _, d := range dests {
			if a, i, p := d.ActiveConns.Load(), d.InactConns.Load(), d.PersistConns.Load(); a|i|p != 0 {
				t.Fatalf("capacity %d: %v counters %d/%d/%d with an empty table", capacity, d.AddrPort(), a, i, p)
			}
		}
	}
}

// TestTableInvariantOraclesFail: the oracles notice a destination counter
// that disagrees with the entries, an entry returned past its expiry, an
// ErrFull not counted and an error other than ErrFull.
func TestTableInvariantOraclesFail(t *testing.T) {
	rec := &oracle.Recorder{T: t}
	r := newInvRunnerOn(rec, New(Config{Seed: 1, Capacity: 4, Shards: 1}))
	r.run([]byte{0, 4, 1, TCPSyn, 0, 1, 8, 2, 0, 5, 1, 4, 2, TCPSyn, 0x80, 1}, 0, true)
	if msg := rec.Catch(func() { r.checkpoint("clean") }); msg != "" {
		t.Fatalf("clean table: %s", msg)
	}
	for _, c := range []*atomic.Int32{&r.dests[0].ActiveConns, &r.dests[0].InactConns, &r.dests[0].PersistConns} {
		c.Add(1)
		if msg := rec.Catch(func() { r.checkpoint("fault") }); !strings.Contains(msg, "recount") {
			t.Errorf("counter fault: %q", msg)
		}
		c.Add(-1)
	}
	c := Conn{Dest: r.dests[0], Expires: r.now}
	if msg := rec.Catch(func() { r.found("In", &c) }); !strings.Contains(msg, "past its expiry") {
		t.Errorf("expired entry: %q", msg)
	}
	r.prev = r.tb.Stats()
	if msg := rec.Catch(func() { r.created("Create", ErrFull) }); !strings.Contains(msg, "FullDrops") {
		t.Errorf("uncounted ErrFull: %q", msg)
	}
	if msg := rec.Catch(func() { r.created("Create", ErrNoDest) }); !strings.Contains(msg, "no destination") {
		t.Errorf("other error: %q", msg)
	}
}
