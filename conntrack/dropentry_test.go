package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"gvs/ipvs"
	"gvs/lvssync"
)

// opsDest is a real server of a UDP one-packet (-o) service.
func opsDest(t testing.TB, rip string) *ipvs.Dest {
	t.Helper()
	svc := ipvs.NewService(ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53},
		Flags: ipvs.SvcOnePacket | ipvs.SvcPersistent, Timeout: 300})
	d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: netip.MustParseAddr(rip), Port: 53, Method: ipvs.Masq, Weight: 1})
	svc.SetDests([]*ipvs.Dest{d})
	return d
}

// TestDropEntryOnePacketTemplates: the template of a one-packet service
// goes by todrop_entry with its own in_pkts, which every datagram
// scheduled under it raises (ip_vs_random_dropentry's "connection
// template of OPS": try_drop). After 60 s idle, one with 1 datagram goes
// at the first scan, one with 9 never; a template that counted nothing
// stays (in_pkts 0), as does one idle for less than 60 s. A synced
// template counts the backup's sync_threshold.
func TestDropEntryOnePacketTemplates(t *testing.T) {
	tb := New(Config{Shards: 1, Seed: 13})
	def := NewDefense(tb, ipvs.NewSettings())
	d := opsDest(t, "198.19.0.70")
	start := int64(t0)
	tmpl := func(i byte, datagrams int, at int64) TemplateRef {
		t.Helper()
		tk := NewTemplateKey(ipvs.ProtoUDP, netip.AddrFrom4([4]byte{192, 0, 2, i}), 32, vip, 53)
		ref, err := tb.CreateTemplate(tk, d, 300*time.Second, at)
		if err != nil {
			t.Fatal(err)
		}
		var c Conn
		for j := 0; j < datagrams; j++ {
			k := InKeyV4(ipvs.ProtoUDP, [4]byte{192, 0, 2, i}, uint16(5000+j), [4]byte{203, 0, 113, 10}, 53)
			if err := tb.CreateOnePacket(k, d, 53, ref, at, &c); err != nil {
				t.Fatal(err)
			}
		}
		return ref
	}
	one := tmpl(1, 1, start)
	nine := tmpl(2, 9, start)
	none := tmpl(3, 0, start)
	recent := tmpl(4, 1, start+30*sec)
	// A backup's template, synced with sync_threshold 3 as in_pkts.
	sc := SyncedConn{Proto: ipvs.ProtoUDP, CAddr: netip.AddrFrom4([4]byte{192, 0, 2, 5}), VAddr: vip, VPort: 53,
		DAddr: d.Addr, DPort: 53, Flags: lvssync.FlagTemplate, Timeout: 300 * time.Second, InPkts: 3}
	if _, err := tb.Synced(&sc, d, start); err != nil {
		t.Fatal(err)
	}
	live := func(r TemplateRef) bool { return tb.shards[r.shard].refEntry(r) != nil }

	syncedRef := func() bool {
		found := false
		tb.Walk(start+61*sec, func(c *Conn) { found = found || c.CAddr == sc.CAddr })
		return found
	}
	scan := func(now int64, times int) int {
		n := 0
		for i := 0; i < times; i++ {
			def.mu.Lock()
			n += def.randomDropEntry(now) // one slot of the few per scan, at random
			def.mu.Unlock()
		}
		return n
	}
	// 61 s after the datagrams: the 1-datagram template goes at once (one
	// in 1), the synced one too (its counter starts at 0, as the
	// kernel's); 9 datagrams, none, or 31 s idle: kept.
	if n := scan(start+61*sec, 200); n != 2 || live(one) || syncedRef() {
		t.Fatalf("scans at 61 s dropped %d; 1-datagram template live %v, synced live %v; want both gone", n, live(one), syncedRef())
	}
	if !live(nine) || !live(none) || !live(recent) {
		t.Fatalf("templates with 9 / no datagrams / idle 31 s live: %v %v %v; want all", live(nine), live(none), live(recent))
	}
	// 60 s after its datagram the recent one goes too.
	if n := scan(start+91*sec, 200); n != 1 || live(recent) || !live(nine) || !live(none) {
		t.Fatalf("scans at 91 s dropped %d, recent live %v", n, live(recent))
	}
	if st := tb.Stats(); st.DropEntry != 3 {
		t.Fatalf("Stats.DropEntry %d, want 3", st.DropEntry)
	}
}

// TestDropEntryManyTemplates: a scan pass over one shard that drops more
// connections with controlling templates than it can collect under the
// lock at once (dropBatch) still looks at every one of those templates:
// each idle, non-ASSURED template goes with its connection.
func TestDropEntryManyTemplates(t *testing.T) {
	tb := New(Config{Shards: 1, Seed: 17})
	def := NewDefense(tb, ipvs.NewSettings())
	d := newDest(t, ipvs.Masq, "198.19.0.71", 8080)
	start := int64(t0)
	// 600 templates, each controlling one UDP connection (1 packet):
	// slots alternate template, connection. A scan covers 1/32 of the
	// 1200 slots, 38 in a row: about 19 connections, each with its own
	// template.
	const n = 600
	var c Conn
	for i := 0; i < n; i++ {
		a := [4]byte{192, 0, byte(2 + i>>8), byte(i)}
		tk := NewTemplateKey(ipvs.ProtoUDP, netip.AddrFrom4(a), 32, vip, 80)
		ref, err := tb.CreateTemplate(tk, d, 300*time.Second, start)
		if err != nil {
			t.Fatal(err)
		}
		if err := tb.Create(InKeyV4(ipvs.ProtoUDP, a, 4000, [4]byte{203, 0, 113, 10}, 80), d, 8080, ref, 0, start, &c); err != nil {
			t.Fatal(err)
		}
	}
	now := start + 61*sec
	def.mu.Lock()
	dropped := def.randomDropEntry(now)
	def.mu.Unlock()
	var conns, tmpls int
	tb.Walk(now, func(c *Conn) {
		if c.Flags&FlagTemplate != 0 {
			tmpls++
		} else {
			conns++
		}
	})
	gone := n - conns
	if gone <= dropBatch {
		t.Fatalf("the scan dropped %d connections: the test needs more than %d", gone, dropBatch)
	}
	if tmpls != conns || dropped != 2*gone {
		t.Fatalf("after dropping %d connections: %d templates left for %d connections (want as many), %d entries dropped (want %d)",
			gone, tmpls, conns, dropped, 2*gone)
	}
}

// TestDropEntryNoAllocs: the drop_entry scan does not allocate, also
// when it drops templates in batches.
func TestDropEntryNoAllocs(t *testing.T) {
	tb := New(Config{Shards: 2, Seed: 19})
	def := NewDefense(tb, ipvs.NewSettings())
	d := newDest(t, ipvs.Masq, "198.19.0.72", 8080)
	var c Conn
	for i := 0; i < 2000; i++ {
		a := [4]byte{192, 0, byte(2 + i>>8), byte(i)}
		tk := NewTemplateKey(ipvs.ProtoUDP, netip.AddrFrom4(a), 32, vip, 80)
		ref, _ := tb.CreateTemplate(tk, d, 300*time.Second, t0)
		_ = tb.Create(InKeyV4(ipvs.ProtoUDP, a, 4000, [4]byte{203, 0, 113, 10}, 80), d, 8080, ref, 0, t0, &c)
	}
	now := t0 + 61*sec
	if n := testing.AllocsPerRun(20, func() {
		def.mu.Lock()
		def.randomDropEntry(now)
		def.mu.Unlock()
	}); n != 0 {
		t.Fatalf("randomDropEntry: %v allocs", n)
	}
}
