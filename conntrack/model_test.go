package conntrack

import (
	"math/rand/v2"
	"testing"
	"time"

	"gvs/ipvs"
)

// A reference model of the table: a plain map with the documented
// semantics, no shards, no wheel, no indexes. The fuzz test and the random
// test drive both with the same operations and compare every answer, the
// entry count and every destination counter.

type mconn struct {
	dest     *ipvs.Dest
	state    State
	noOut    bool
	inactive bool
	expires  int64
	inPkts   uint32
}

type model struct {
	conns map[InKey]*mconn
	to    Timeouts
}

func (m *model) step(c *mconn, k InKey, dir Direction, flags uint8, now int64) {
	if k.Proto != ipvs.ProtoTCP {
		if dir == DirOutput {
			c.noOut = false
		}
		c.expires = now + int64(m.to.UDP)
		return
	}
	if c.noOut {
		if dir == DirOutput {
			c.noOut = false
		} else {
			dir = DirInputOnly
		}
	}
	next := NextTCPState(c.state, dir, flags, false)
	c.inactive = !next.Active()
	c.state = next
	c.expires = now + int64(m.to.TCP[next])
}

// lookup returns the live conn for k, dropping a dead one.
func (m *model) lookup(k InKey, now int64) *mconn {
	c := m.conns[k]
	if c != nil && now >= c.expires {
		delete(m.conns, k)
		return nil
	}
	return c
}

type opRunner struct {
	t      testing.TB
	tb     *Table
	m      model
	dests  [2]*ipvs.Dest
	now    int64
	maxLen int // most entries seen at once
}

func newOpRunner(t testing.TB) *opRunner {
	r := &opRunner{t: t, tb: New(Config{Shards: 2, Seed: 3}), now: t0}
	r.m = model{conns: map[InKey]*mconn{}, to: DefaultTimeouts()}
	r.dests[0] = newDest(t, ipvs.Masq, "198.19.3.1", 8080)
	r.dests[1] = newDest(t, ipvs.Route, "198.19.3.2", 80)
	return r
}

func (r *opRunner) key(b byte) (InKey, *ipvs.Dest) {
	proto := ipvs.ProtoTCP
	if b%5 == 0 {
		proto = ipvs.ProtoUDP
	}
	return InKeyV4(proto, [4]byte{198, 18, 0, b >> 6}, uint16(b), [4]byte{203, 0, 113, 1}, 80), r.dests[b%2]
}

func (r *opRunner) check(what string, ok bool, mc *mconn, c *Conn) {
	r.t.Helper()
	if ok != (mc != nil) {
		r.t.Fatalf("%s: table found=%v, model found=%v", what, ok, mc != nil)
	}
	if !ok {
		return
	}
	if c.State != mc.state || c.Expires != mc.expires || c.Dest != mc.dest || c.InPkts != mc.inPkts ||
		(c.Flags&FlagNoOutput != 0) != mc.noOut || (c.Flags&FlagInactive != 0) != mc.inactive {
		r.t.Fatalf("%s: table %+v, model %+v", what, *c, *mc)
	}
}

func (r *opRunner) run(op, kb, flags, dt byte) {
	r.t.Helper()
	switch dt >> 6 {
	case 0:
		r.now += int64(dt&63) * int64(time.Millisecond)
	case 1:
		r.now += int64(dt&63) * sec
	case 2:
		r.now += int64(dt&63) * 20 * sec
	}
	k, d := r.key(kb)
	var c Conn
	now := r.now
	switch op % 8 {
	case 0, 1:
		ok := r.tb.In(k, flags, now, &c)
		mc := r.m.lookup(k, now)
		if mc != nil {
			mc.inPkts++
			r.m.step(mc, k, DirInput, flags, now)
		}
		r.check("In", ok, mc, &c)
	case 2:
		rk := ReplyKey{Proto: k.Proto, DAddr: d.Addr.As16(), DPort: d.Port, CAddr: k.CAddr, CPort: k.CPort}
		ok := r.tb.Out(rk, flags, now, &c)
		var mc *mconn
		if d.Method() == ipvs.Masq {
			if mc = r.m.lookup(k, now); mc != nil {
				r.m.step(mc, k, DirOutput, flags, now)
			}
		}
		r.check("Out", ok, mc, &c)
	case 3, 4:
		if err := r.tb.Create(k, d, d.Port, TemplateRef{}, flags, now, &c); err != nil {
			r.t.Fatalf("Create: %v", err)
		}
		mc := r.m.lookup(k, now)
		if mc == nil {
			mc = &mconn{dest: d, state: StateNone, inactive: true, noOut: d.Method() != ipvs.Masq}
			if k.Proto != ipvs.ProtoTCP {
				mc.state = StateUDP
			}
			r.m.conns[k] = mc
		}
		mc.inPkts++
		r.m.step(mc, k, DirInput, flags, now)
		r.check("Create", true, mc, &c)
	case 5:
		n := r.tb.Expire(now)
		want := 0
		for mk, mc := range r.m.conns {
			if now >= mc.expires {
				delete(r.m.conns, mk)
				want++
			}
		}
		if n != want {
			r.t.Fatalf("Expire: removed %d, model %d", n, want)
		}
	case 6:
		ok := r.tb.Remove(k)
		_, mok := r.m.conns[k]
		delete(r.m.conns, k)
		if ok != mok {
			r.t.Fatalf("Remove: %v, model %v", ok, mok)
		}
	case 7:
		ok := r.tb.PeekIn(k, now, &c)
		mc := r.m.conns[k]
		if mc != nil && now >= mc.expires {
			mc = nil
		}
		r.check("PeekIn", ok, mc, &c)
	}
	// Counters and size agree at every step (dead entries count in both
	// until reclaimed).
	if l := r.tb.Len(); l > r.maxLen {
		r.maxLen = l
	}
	if r.tb.Len() != len(r.m.conns) {
		r.t.Fatalf("op %d: len %d, model %d", op%8, r.tb.Len(), len(r.m.conns))
	}
	for _, d := range r.dests {
		var a, i int32
		for _, mc := range r.m.conns {
			if mc.dest == d {
				if mc.inactive {
					i++
				} else {
					a++
				}
			}
		}
		if d.ActiveConns.Load() != a || d.InactConns.Load() != i {
			r.t.Fatalf("op %d: dest %s counters %d/%d, model %d/%d", op%8, d.Addr,
				d.ActiveConns.Load(), d.InactConns.Load(), a, i)
		}
	}
}

func (r *opRunner) runBytes(data []byte) {
	for len(data) >= 4 {
		r.run(data[0], data[1], data[2], data[3])
		data = data[4:]
	}
	// Finally everything expires.
	r.run(5, 0, 0, 0)
	r.now += 10000 * sec
	r.run(5, 0, 0, 0)
	if r.tb.Len() != 0 {
		r.t.Fatalf("len %d at the end", r.tb.Len())
	}
}

func FuzzTableOps(f *testing.F) {
	// Seeds: a NAT handshake and teardown with replies.
	f.Add([]byte{3, 2, TCPSyn, 0, 2, 2, TCPSyn | TCPAck, 1, 0, 2, TCPAck, 1, 0, 2, TCPFin, 65, 2, 2, TCPFin, 65, 5, 0, 0, 0xbf})
	// DR connection ending in FIN_WAIT, expiring at exactly 120 s.
	f.Add([]byte{3, 1, TCPSyn, 0, 0, 1, TCPAck, 0, 0, 1, TCPFin, 0, 5, 0, 0, 0x80 | 6, 5, 0, 0, 0x80 | 0})
	// UDP kept alive, then a wheel wrap (> 1099 s) before the next packet.
	f.Add([]byte{3, 5, 0, 0, 0, 5, 0, 0x7f, 5, 0, 0, 0xbf, 5, 0, 0, 0xbf, 0, 5, 0, 0})
	// Remove, re-create, RST without flags, peek at the deadline.
	f.Add([]byte{4, 9, TCPSyn, 0, 6, 9, 0, 0, 4, 9, 0, 0, 7, 9, 0, 0x40 | 10, 1, 9, TCPRst, 0, 7, 9, 0, 0x40 | 10})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			data = data[:4096]
		}
		newOpRunner(t).runBytes(data)
	})
}

// TestModelRandom runs a long random operation sequence against the model,
// over many keys so that index probing, growth and deletion are exercised.
func TestModelRandom(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 20000
	}
	r := newOpRunner(t)
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 4*n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	// Mostly millisecond time steps and well-formed TCP flags, so that the
	// table fills up; some seconds and a few long jumps (wheel wraps) too.
	clean := []byte{TCPSyn, TCPAck, TCPSyn | TCPAck, TCPFin | TCPAck, TCPAck, TCPAck}
	for i := 0; i < len(data); i += 4 {
		if rng.IntN(10) < 7 {
			data[i+2] = clean[rng.IntN(len(clean))]
		}
		switch x := rng.IntN(1000); {
		case x < 993:
			data[i+3] &= 0x3f
		case x < 999:
			data[i+3] = 0x40 | data[i+3]&0x3f
		default:
			data[i+3] = 0x80 | data[i+3]&0x3f
		}
	}
	r.runBytes(data)
	if r.maxLen < 100 {
		t.Fatalf("the table never held more than %d entries", r.maxLen)
	}
}
