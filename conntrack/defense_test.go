package conntrack

import (
	"errors"
	"testing"
	"time"

	"gvs/ipvs"
)

// spoofKey is the in-key of spoofed client i (one SYN each).
func spoofKey(i int) InKey {
	return InKeyV4(ipvs.ProtoTCP, [4]byte{198, 18, byte(i >> 8), byte(i)}, uint16(1024+i), [4]byte{203, 0, 113, 10}, 80)
}

// TestFullTableEvictsHalfOpen fills a table with spoofed SYNs: a new SYN
// still gets a slot, by evicting the half-open entry nearest to expiry
// (the oldest SYN), and each eviction is counted, not refused.
func TestFullTableEvictsHalfOpen(t *testing.T) {
	const capacity = 64
	tb := New(Config{Shards: 1, Capacity: capacity, Seed: 3})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	var c Conn
	now := int64(t0)
	for i := 0; i < capacity; i++ {
		if err := tb.Create(spoofKey(i), d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
			t.Fatalf("SYN %d: %v", i, err)
		}
		now += sec / 2
	}
	legit := InKeyV4(ipvs.ProtoTCP, [4]byte{192, 0, 2, 7}, 5555, [4]byte{203, 0, 113, 10}, 80)
	if err := tb.Create(legit, d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
		t.Fatalf("legitimate SYN on a table full of SYN_RECV: %v", err)
	}
	if tb.PeekIn(spoofKey(0), now, &c) {
		t.Error("the oldest SYN_RECV entry (nearest expiry) was not the one evicted")
	}
	for i := 1; i < capacity; i++ {
		if !tb.PeekIn(spoofKey(i), now, &c) {
			t.Fatalf("SYN %d evicted too", i)
		}
	}
	st := tb.Stats()
	if st.Evicted != 1 || st.FullDrops != 0 || st.Live != capacity || tb.Len() != capacity {
		t.Fatalf("stats %+v, Len %d; want 1 eviction, no refusal, %d live", st, tb.Len(), capacity)
	}
	checkCounts(t, "after eviction", d, capacity, 0, 0)
}

// TestFullTableKeepsEstablished: established connections are never
// evicted; a table full of them refuses (counted apart from evictions),
// and half-open ones go first in a mixed table.
func TestFullTableKeepsEstablished(t *testing.T) {
	const capacity = 32
	tb := New(Config{Shards: 1, Capacity: capacity, Seed: 3})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	var c Conn
	now := int64(t0)
	for i := 0; i < capacity; i++ {
		if err := tb.Create(spoofKey(i), d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // even: established
			tb.In(spoofKey(i), TCPAck, now, &c)
		}
	}
	for j := 0; j < capacity/2; j++ {
		k := InKeyV4(ipvs.ProtoTCP, [4]byte{192, 0, 2, byte(j)}, 7000, [4]byte{203, 0, 113, 10}, 80)
		if err := tb.Create(k, d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
			t.Fatalf("new SYN %d with half-open entries left: %v", j, err)
		}
	}
	// Now only established connections and the new SYNs: the new SYNs
	// (half-open too) are evicted in turn, never an established one.
	for j := 0; j < 3; j++ {
		k := InKeyV4(ipvs.ProtoTCP, [4]byte{192, 0, 3, byte(j)}, 7000, [4]byte{203, 0, 113, 10}, 80)
		if err := tb.Create(k, d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < capacity; i += 2 {
		if !tb.PeekIn(spoofKey(i), now, &c) || c.State != StateEstablished {
			t.Fatalf("established connection %d evicted", i)
		}
	}
	// Only established: refuse.
	full := New(Config{Shards: 1, Capacity: 4, Seed: 3})
	for i := 0; i < 4; i++ {
		_ = full.Create(spoofKey(i), d, 8080, TemplateRef{}, TCPSyn, now, &c)
		full.In(spoofKey(i), TCPAck, now, &c)
	}
	if err := full.Create(spoofKey(9), d, 8080, TemplateRef{}, TCPSyn, now, &c); !errors.Is(err, ErrFull) {
		t.Fatalf("table full of ESTABLISHED: %v, want ErrFull", err)
	}
	if st := full.Stats(); st.FullDrops != 1 || st.Evicted != 0 || st.Live != 4 {
		t.Fatalf("stats %+v: want one refusal, no eviction", st)
	}
	if st := tb.Stats(); st.Evicted != capacity/2+3 || st.FullDrops != 0 {
		t.Fatalf("stats %+v: want %d evictions, no refusal", st, capacity/2+3)
	}
}

// TestEvictNoAllocs: Create's eviction path reuses the evicted slot.
func TestEvictNoAllocs(t *testing.T) {
	const capacity = 256
	tb := New(Config{Shards: 1, Capacity: capacity, Seed: 5})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	var c Conn
	now := int64(t0)
	i := 0
	for ; i < capacity; i++ {
		_ = tb.Create(spoofKey(i), d, 8080, TemplateRef{}, TCPSyn, now, &c)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		now += 1000
		i++
		if err := tb.Create(spoofKey(i), d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Create with eviction: %v allocations, want 0", allocs)
	}
	if st := tb.Stats(); st.Evicted < 1000 {
		t.Fatalf("evictions %d: the path under test did not run", st.Evicted)
	}
}

// TestUpdateDefenseLevel checks the state machine against the kernel's
// update_defense_level, case by case.
func TestUpdateDefenseLevel(t *testing.T) {
	type in struct{ entry, packet, secure, old, avail, thresh, droprate int64 }
	type out struct {
		entry, packet, secure int64 // read back
		dropEntry             bool
		rate                  int64
		reset                 bool
		toChange              int
	}
	const th = 1024
	cases := []struct {
		name string
		in   in
		want out
	}{
		{"all off, room", in{0, 0, 0, 0, 5000, th, 10}, out{0, 0, 0, false, 0, false, -1}},
		{"all off, short", in{0, 0, 0, 0, 10, th, 10}, out{0, 0, 0, false, 0, false, -1}},
		{"1, room", in{1, 1, 1, 0, 5000, th, 10}, out{1, 1, 1, false, 0, false, -1}},
		{"1, short: engage, read 2", in{1, 1, 1, 0, 512, th, 10}, out{2, 2, 2, true, 2, true, 1}},
		{"2, short: stay", in{2, 2, 2, 2, 768, th, 10}, out{2, 2, 2, true, 4, true, -1}},
		{"2, room: back to 1", in{2, 2, 2, 2, 1024, th, 10}, out{1, 1, 1, false, 0, false, 0}},
		{"2 written, room: read 1", in{2, 2, 2, 0, 2000, th, 10}, out{1, 1, 1, false, 0, false, -1}},
		{"1, short, table already secure", in{1, 0, 1, 2, 0, th, 10}, out{2, 0, 2, true, 0, false, -1}},
		{"availmem 0: drop every one", in{0, 1, 0, 0, 0, th, 10}, out{0, 2, 0, false, 1, true, -1}},
		{"rate rounds down", in{0, 1, 0, 0, 1000, th, 10}, out{0, 2, 0, false, 42, true, -1}},
		{"3: always, am_droprate", in{3, 3, 3, 0, 5000, th, 7}, out{3, 3, 3, true, 7, false, 1}},
		{"3 again: no switch", in{3, 3, 3, 3, 5000, th, 7}, out{3, 3, 3, true, 7, false, -1}},
		{"0 after 3: back to normal", in{0, 0, 0, 3, 5000, th, 7}, out{0, 0, 0, false, 0, false, 0}},
		{"0 after 1: nothing", in{0, 0, 0, 1, 5000, th, 7}, out{0, 0, 0, false, 0, false, -1}},
		{"negative amemthresh is 0: never short", in{1, 1, 1, 0, 0, -5, 10}, out{1, 1, 1, false, 0, false, -1}},
		{"amemthresh 0: never short", in{1, 1, 1, 2, 0, 0, 10}, out{1, 1, 1, false, 0, false, 0}},
	}
	for _, c := range cases {
		v := DefenseSysctls{DropEntry: c.in.entry, DropPacket: c.in.packet, SecureTCP: c.in.secure,
			AmDroprate: c.in.droprate, Amemthresh: c.in.thresh}
		old := c.in.old
		l := updateDefenseLevel(&v, c.in.avail, &old)
		got := out{v.DropEntry, v.DropPacket, v.SecureTCP, l.dropEntry, l.dropRate, l.resetCounter, l.toChange}
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
		if old != v.SecureTCP {
			t.Errorf("%s: old_secure_tcp %d, want the new secure_tcp %d", c.name, old, v.SecureTCP)
		}
	}
}

// TestDefenseFromSettings runs the defense from sysctls on a table whose
// free room crosses amemthresh: automatic modes engage and read back 2,
// the secure state table is used, then everything reverts when room comes
// back.
func TestDefenseFromSettings(t *testing.T) {
	tb := New(Config{Shards: 1, Capacity: 64 * SlotsPerPage, Seed: 3})
	set := ipvs.NewSettings()
	def := NewDefense(tb, set)
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	for _, k := range []ipvs.Sysctl{ipvs.SysDropEntry, ipvs.SysDropPacket, ipvs.SysSecureTCP} {
		_ = set.Set(k, [2]int64{1})
	}
	_ = set.Set(ipvs.SysAmemthresh, [2]int64{16})
	def.Update()
	if set.Get(ipvs.SysSecureTCP) != 1 || tb.secure.Load() || tb.dropRate.Load() != 0 {
		t.Fatal("automatic modes engaged on an empty table")
	}
	var c Conn
	now := int64(t0)
	// 56 pages used, 8 free (< 16): short. rate = 16/(16-8) = 2.
	for i := 0; i < 56*SlotsPerPage; i++ {
		_ = tb.Create(spoofKey(i), d, 8080, TemplateRef{}, TCPSyn, now, &c)
	}
	def.Tick(now)
	for _, k := range []ipvs.Sysctl{ipvs.SysDropEntry, ipvs.SysDropPacket, ipvs.SysSecureTCP} {
		if set.Get(k) != 2 {
			t.Errorf("%s reads %d under pressure, want 2", k, set.Get(k))
		}
	}
	if !tb.secure.Load() || tb.dropRate.Load() != 2 {
		t.Fatalf("under pressure: secure %v, drop rate %d; want true, 2", tb.secure.Load(), tb.dropRate.Load())
	}
	// drop_packet: every second new connection (the counter restarts at
	// the rate: the 2nd, 4th, ... are dropped).
	dropped := 0
	for i := 0; i < 10; i++ {
		err := tb.Create(InKeyV4(ipvs.ProtoTCP, [4]byte{192, 0, 2, byte(i)}, 9, [4]byte{203, 0, 113, 10}, 80), d, 8080, TemplateRef{}, TCPSyn, now, &c)
		if errors.Is(err, ErrDropped) {
			dropped++
			if i%2 == 0 {
				t.Errorf("packet %d dropped, want the odd ones", i)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if st := tb.Stats(); dropped != 5 || st.DropPacket != 5 {
		t.Fatalf("dropped %d, Stats.DropPacket %d; want 5", dropped, st.DropPacket)
	}
	// Room again: the drop_entry scan frees SYN_RECV entries over the
	// ticks; once availmem >= 16 every mode reads 1 and the table is normal.
	for i := 0; i < 200 && set.Get(ipvs.SysSecureTCP) != 1; i++ {
		def.Tick(now)
	}
	if set.Get(ipvs.SysDropEntry) != 1 || set.Get(ipvs.SysDropPacket) != 1 || set.Get(ipvs.SysSecureTCP) != 1 ||
		tb.secure.Load() || tb.dropRate.Load() != 0 {
		t.Fatalf("after the scan made room: %d %d %d secure %v rate %d", set.Get(ipvs.SysDropEntry),
			set.Get(ipvs.SysDropPacket), set.Get(ipvs.SysSecureTCP), tb.secure.Load(), tb.dropRate.Load())
	}
	if st := tb.Stats(); st.DropEntry == 0 || tb.Availmem() < 16 {
		t.Fatalf("stats %+v availmem %d", st, tb.Availmem())
	}
}

// TestDropPacketAlways: drop_packet 3 drops one in am_droprate from the
// first packet on (the kernel's counter starts at 0).
func TestDropPacketAlways(t *testing.T) {
	tb := New(Config{Shards: 1, Seed: 3})
	set := ipvs.NewSettings()
	def := NewDefense(tb, set)
	_ = set.Set(ipvs.SysAmDroprate, [2]int64{4})
	_ = set.Set(ipvs.SysDropPacket, [2]int64{3})
	def.Update()
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	var c Conn
	var got []int
	for i := 0; i < 12; i++ {
		if err := tb.Create(spoofKey(i), d, 8080, TemplateRef{}, TCPSyn, t0, &c); errors.Is(err, ErrDropped) {
			got = append(got, i)
		}
	}
	if len(got) != 3 || got[0] != 0 || got[1] != 4 || got[2] != 8 {
		t.Fatalf("dropped %v, want [0 4 8]", got)
	}
	// A packet of an existing connection is never dropped.
	if err := tb.Create(spoofKey(1), d, 8080, TemplateRef{}, TCPAck, t0, &c); err != nil {
		t.Fatalf("existing connection: %v", err)
	}
}

// TestDropEntryScan runs drop_entry 3 (always) over a table holding one
// entry of each kind and checks ip_vs_random_dropentry's rules.
func TestDropEntryScan(t *testing.T) {
	tb := New(Config{Shards: 1, Seed: 11})
	set := ipvs.NewSettings()
	def := NewDefense(tb, set)
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	var c Conn
	key := func(proto ipvs.Protocol, i int) InKey {
		return InKeyV4(proto, [4]byte{192, 0, 2, byte(i)}, 1000, [4]byte{203, 0, 113, 10}, 80)
	}
	create := func(proto ipvs.Protocol, i int, flags uint8, now int64, tmpl TemplateRef) {
		t.Helper()
		if err := tb.Create(key(proto, i), d, 8080, tmpl, flags, now, &c); err != nil {
			t.Fatal(err)
		}
	}
	start := int64(t0)
	// At 0: idle for 61 s at the scan.
	create(ipvs.ProtoTCP, 1, TCPSyn, start, TemplateRef{}) // ESTABLISHED, 2 packets: dropped
	tb.In(key(ipvs.ProtoTCP, 1), TCPAck, start, &c)
	create(ipvs.ProtoTCP, 2, TCPSyn, start, TemplateRef{}) // ESTABLISHED, 9 packets: kept
	for j := 0; j < 8; j++ {
		tb.In(key(ipvs.ProtoTCP, 2), TCPAck, start, &c)
	}
	create(ipvs.ProtoUDP, 3, 0, start, TemplateRef{}) // UDP, 1 packet: dropped
	// Templates: idle non-assured (dropped), assured (kept), busy (kept).
	tIdle, _ := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 1), d, time.Hour, start)
	tAssured, _ := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 2), d, time.Hour, start)
	create(ipvs.ProtoTCP, 10, TCPSyn, start, tAssured)
	tb.In(key(ipvs.ProtoTCP, 10), TCPAck, start, &c) // ESTABLISHED: template ASSURED
	tb.Remove(key(ipvs.ProtoTCP, 10))
	tBusy, _ := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 3), d, time.Hour, start)
	// At 50 s: idle 11 s at the scan.
	create(ipvs.ProtoTCP, 4, TCPSyn, start+50*sec, TemplateRef{}) // ESTABLISHED, recent: kept
	tb.In(key(ipvs.ProtoTCP, 4), TCPAck, start+50*sec, &c)
	create(ipvs.ProtoUDP, 5, 0, start+50*sec, TemplateRef{})      // UDP, recent: kept
	create(ipvs.ProtoTCP, 11, TCPSyn, start+50*sec, tBusy)        // under tBusy
	tb.In(key(ipvs.ProtoTCP, 11), TCPAck, start+50*sec, &c)       // ESTABLISHED, recent: kept
	create(ipvs.ProtoTCP, 6, TCPSyn, start+61*sec, TemplateRef{}) // SYN_RECV: dropped
	create(ipvs.ProtoTCP, 8, TCPSyn, start+61*sec, TemplateRef{}) // CLOSE_WAIT: kept
	tb.In(key(ipvs.ProtoTCP, 8), TCPAck, start+61*sec, &c)
	tb.In(key(ipvs.ProtoTCP, 8), TCPFin, start+61*sec, &c)
	if c.State != StateCloseWait {
		t.Fatalf("setup: %s, want CLOSE_WAIT", c.State)
	}

	_ = set.Set(ipvs.SysDropEntry, [2]int64{3})
	now := start + 61*sec
	for i := 0; i < 100; i++ {
		def.Tick(now)
	}
	gone := map[int]bool{1: true, 3: true, 6: true}
	for _, e := range []struct {
		proto ipvs.Protocol
		i     int
	}{{ipvs.ProtoTCP, 1}, {ipvs.ProtoTCP, 2}, {ipvs.ProtoUDP, 3}, {ipvs.ProtoTCP, 4}, {ipvs.ProtoUDP, 5},
		{ipvs.ProtoTCP, 6}, {ipvs.ProtoTCP, 8}, {ipvs.ProtoTCP, 11}} {
		if found := tb.PeekIn(key(e.proto, e.i), now, &c); found == gone[e.i] {
			t.Errorf("%v %d (%s): present %v, want %v", e.proto, e.i, c.State, found, !gone[e.i])
		}
	}
	tmplLive := func(r TemplateRef) bool {
		s := &tb.shards[r.shard]
		return s.refEntry(r) != nil
	}
	if tmplLive(tIdle) || !tmplLive(tAssured) || !tmplLive(tBusy) {
		t.Errorf("templates idle/assured/busy live: %v %v %v; want false true true", tmplLive(tIdle), tmplLive(tAssured), tmplLive(tBusy))
	}
	if st := tb.Stats(); st.DropEntry != 4 {
		t.Errorf("Stats.DropEntry %d, want 4 (3 connections, 1 template)", st.DropEntry)
	}
}
