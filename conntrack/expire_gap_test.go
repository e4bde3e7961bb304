package conntrack

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvs/ipvs"
)

// wheelSteps is the number of wheel steps (advance calls) the table's
// shards have taken so far.
func wheelSteps(tb *Table) uint64 {
	var n uint64
	for i := range tb.shards {
		s := &tb.shards[i]
		s.mu.Lock()
		n += s.steps
		s.mu.Unlock()
	}
	return n
}

// TestExpireGapBounded: after a day without an Expire call (an idle
// director), one Expire does not walk the day's 322,000 wheel ticks one by
// one in every shard: it steps only through the ticks that have entries
// (here the 300 s UDP deadline, and a long-lived template's visit once per
// turn of the wheel, 79 turns a day), and removes what it must.
func TestExpireGapBounded(t *testing.T) {
	tb := New(Config{Shards: 8, Seed: 21})
	d := newDest(t, ipvs.Masq, "198.19.0.61", 53)
	var c Conn
	for i := 0; i < 100; i++ {
		if err := tb.Create(inKey(ipvs.ProtoUDP, uint16(2000+i)), d, 53, TemplateRef{}, 0, t0, &c); err != nil {
			t.Fatal(err)
		}
	}
	tk := NewTemplateKey(ipvs.ProtoUDP, client, 32, vip, 53)
	if _, err := tb.CreateTemplate(tk, d, 72*time.Hour, t0); err != nil {
		t.Fatal(err)
	}
	tb.Expire(t0 + sec)
	before := wheelSteps(tb)
	if n := tb.Expire(t0 + 24*3600*sec); n != 100 {
		t.Fatalf("Expire after a day removed %d, want the 100 connections", n)
	}
	steps := wheelSteps(tb) - before
	t.Logf("%d wheel steps for a day-long gap (8 shards)", steps)
	// Per shard holding connections, one step at their 3 s NONE timer
	// (where the wheel finds them re-armed) and one at their 300 s
	// deadline; one per turn (79) for the template's shard; a few more.
	// Walking every tick would be 8 x 322,000.
	if steps > 200 {
		t.Fatalf("%d wheel steps for a day-long gap, want at most 200: empty ticks are walked", steps)
	}
	if tb.Len() != 1 || tb.Stats().Expired != 100 {
		t.Fatalf("after the gap: %d entries, %d expired; want the template alone, 100", tb.Len(), tb.Stats().Expired)
	}
	// An empty table steps nothing at all.
	empty := New(Config{Shards: 8, Seed: 21})
	if err := empty.Create(inKey(ipvs.ProtoUDP, 1), d, 53, TemplateRef{}, 0, t0, &c); err != nil {
		t.Fatal(err)
	}
	empty.Expire(t0 + 400*sec)
	before = wheelSteps(empty)
	empty.Expire(t0 + 30*24*3600*sec)
	if steps := wheelSteps(empty) - before; steps != 0 {
		t.Fatalf("an empty table took %d wheel steps over a month", steps)
	}
	// A connection created after the month (same key: same shard) does
	// not make the wheel catch up with it turn by turn: its shard's clock
	// moved on while the shard was empty.
	later := int64(t0 + 30*24*3600*sec + sec)
	if err := empty.Create(inKey(ipvs.ProtoUDP, 1), d, 53, TemplateRef{}, 0, later, &c); err != nil {
		t.Fatal(err)
	}
	before = wheelSteps(empty)
	if n := empty.Expire(later + 301*sec); n != 1 {
		t.Fatalf("Expire removed %d, want the new connection", n)
	}
	if steps := wheelSteps(empty) - before; steps > 4 {
		t.Fatalf("%d wheel steps to expire a connection made after a month of idleness, want at most 4", steps)
	}
}

// connText is the part of a listed entry that does not depend on where
// the table put it (slot numbers differ between tables that reclaimed
// entries in another order).
func connText(c *Conn) string {
	return fmt.Sprintf("%v %v:%d %v:%d %v:%d %s %#x exp=%d pkts=%d nctl=%d", c.Proto, c.CAddr, c.CPort, c.VAddr, c.VPort,
		c.DAddr, c.DPort, c.StateName(), c.Flags, c.Expires, c.InPkts, c.NControl)
}

func listing(tb *Table, now int64) []string {
	var out []string
	tb.Walk(now, func(c *Conn) { out = append(out, connText(c)) })
	slices.Sort(out)
	return out
}

// TestExpireGapSameAsDense drives two tables with the same operations;
// one gets Expire at the end of every wheel tick (the old tick-by-tick
// walk), the other only right before each operation, after gaps of up to
// an hour. Jumping over empty ticks must remove the same entries at the
// same times: every answer, the listings (templates extended or not by
// their 60 s steps) and the expiry counts agree.
func TestExpireGapSameAsDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	dense := New(Config{Shards: 4, Seed: 9})
	sparse := New(Config{Shards: 4, Seed: 9})
	d := newDest(t, ipvs.Route, "198.19.0.62", 80)
	tick := int64(1) << tickShift
	now := int64(t0)
	refs := [2]map[int]TemplateRef{{}, {}}
	tables := [2]*Table{dense, sparse}
	flagsOf := []uint8{TCPSyn, TCPAck, TCPFin, TCPRst, TCPAck}
	for op := 0; op < 4000; op++ {
		var gap int64
		switch rng.IntN(20) {
		case 0:
			gap = rng.Int64N(3600 * sec)
		case 1, 2, 3:
			gap = rng.Int64N(400 * sec)
		default:
			gap = rng.Int64N(3 * sec)
		}
		next := now + gap
		for te := (now>>tickShift+1)<<tickShift - 1; te < next; te += tick {
			dense.Expire(te)
		}
		now = next
		na, nb := dense.Expire(now), sparse.Expire(now)
		if dense.Len() != sparse.Len() || dense.Stats().Expired != sparse.Stats().Expired {
			t.Fatalf("op %d at +%ds: dense %d live %d expired (last call %d), sparse %d live %d expired (last call %d)",
				op, (now-t0)/sec, dense.Len(), dense.Stats().Expired, na, sparse.Len(), sparse.Stats().Expired, nb)
		}
		i := rng.IntN(64)
		k := inKey(ipvs.ProtoTCP, uint16(3000+i))
		if i%5 == 0 {
			k.Proto = ipvs.ProtoUDP
		}
		flags := flagsOf[rng.IntN(len(flagsOf))]
		persist := i%3 == 0
		tj := i % 7
		tmo := time.Duration(1+rng.IntN(400)) * time.Second
		var got [2]string
		for x, tb := range tables {
			var c Conn
			if tb.In(k, flags, now, &c) {
				got[x] = "in " + connText(&c)
				continue
			}
			var ref TemplateRef
			if persist {
				tk := NewTemplateKey(ipvs.ProtoTCP, netip.AddrFrom4([4]byte{192, 0, 2, byte(tj)}), 32, vip, 80)
				if _, r, ok := tb.Template(tk, now); ok {
					ref = r
				} else if r, err := tb.CreateTemplate(tk, d, tmo, now); err == nil {
					ref = r
				}
				refs[x][tj] = ref
			}
			if err := tb.Create(k, d, 80, ref, flags, now, &c); err != nil {
				t.Fatal(err)
			}
			got[x] = "new " + connText(&c)
		}
		if got[0] != got[1] {
			t.Fatalf("op %d at +%ds: dense %s\nsparse %s", op, (now-t0)/sec, got[0], got[1])
		}
		if op%97 == 0 {
			if a, b := listing(dense, now), listing(sparse, now); !slices.Equal(a, b) {
				t.Fatalf("op %d at +%ds: listings differ\ndense  %q\nsparse %q", op, (now-t0)/sec, a, b)
			}
		}
	}
	if dense.Stats().Expired == 0 {
		t.Fatal("nothing expired: the test exercises nothing")
	}
}

// BenchmarkExpireGap: one Expire after a day without any, on a table
// holding a long-lived template (one wheel visit per 1099 s turn) and
// nothing else due. Before the wheel skipped empty ticks, this walked the
// day's 322,000 ticks in every shard (about 0.7 s).
func BenchmarkExpireGap(b *testing.B) {
	tb := New(Config{Seed: 5})
	d := newDest(b, ipvs.Masq, "198.19.9.3", 53)
	tk := NewTemplateKey(ipvs.ProtoUDP, client, 32, vip, 53)
	if _, err := tb.CreateTemplate(tk, d, time.Duration(1<<31)*time.Second, t0); err != nil {
		b.Fatal(err)
	}
	tb.Expire(t0)
	now := int64(t0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now += 24 * 3600 * sec
		tb.Expire(now)
	}
}
