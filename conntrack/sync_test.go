package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"gvs/ipvs"
	"gvs/lvssync"
)

// TestSyncMasterRule: with a master running (SetSync), the table marks the
// packets whose connection is due for a record as the kernel would: the
// sync_threshold-th input packet (3) and every sync_period (50) after it
// in ESTABLISHED, at once on a change to another syncable state (a client
// FIN: CLOSE_WAIT),
// never without a master.
func TestSyncMasterRule(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 1})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	k := inKey(ipvs.ProtoTCP, 40000)
	var c Conn
	now := int64(t0)
	tb.SetSync(&lvssync.DefaultSyncSettings, 1)
	if err := tb.Create(k, d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
		t.Fatal(err)
	}
	if c.Sync {
		t.Fatal("SYN (in_pkts 1) synced")
	}
	var synced []uint32
	for range 120 {
		now += int64(time.Millisecond)
		if !tb.In(k, TCPAck, now, &c) {
			t.Fatal("connection lost")
		}
		if c.Sync {
			synced = append(synced, c.InPkts)
		}
	}
	want := []uint32{3, 53, 103}
	if len(synced) != len(want) || synced[0] != 3 || synced[1] != 53 || synced[2] != 103 {
		t.Fatalf("synced at in_pkts %v, want %v", synced, want)
	}
	// FIN: CLOSE_WAIT is synced at once (forced), whatever in_pkts.
	now += int64(time.Millisecond)
	tb.In(k, TCPFin|TCPAck, now, &c)
	if c.State != StateCloseWait || !c.Sync {
		t.Fatalf("FIN: state %v sync %v, want CLOSE_WAIT synced", c.State, c.Sync)
	}
	var r lvssync.Conn
	c.Record(now, &r)
	if r.State != lvssync.TCPCloseWait || r.Flags&lvssync.FlagFwdMask != lvssync.FlagMasq || r.DAddr != d.Addr || r.DPort != 8080 ||
		r.CAddr != client || r.VAddr != vip || r.Timeout != 60 {
		t.Fatalf("record %+v", r)
	}
	// The same state again: not forced.
	now += int64(time.Millisecond)
	tb.In(k, TCPAck, now, &c)
	if c.Sync {
		t.Fatal("second packet in CLOSE_WAIT synced again")
	}

	// No master: nothing is ever due.
	tb.SetSync(nil, 1)
	k2 := inKey(ipvs.ProtoTCP, 40001)
	_ = tb.Create(k2, d, 8080, TemplateRef{}, TCPSyn, now, &c)
	for range 5 {
		tb.In(k2, TCPAck, now, &c)
		if c.Sync {
			t.Fatal("synced without a master")
		}
	}
}

// TestSyncTemplate: a template controlling a connection is considered after
// each of its input packets (version 1) and, with sync_period > 0, always
// due; its record carries the template flag, its persistence timeout and
// ASSURED once a connection under it is established.
func TestSyncTemplate(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 1})
	d := newDest(t, ipvs.Route, "198.19.0.11", 80)
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80)
	now := int64(t0)
	ref, err := tb.CreateTemplate(tk, d, 300*time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	tb.SetSync(&lvssync.DefaultSyncSettings, 1)
	k := inKey(ipvs.ProtoTCP, 40000)
	var c, tc Conn
	if err := tb.Create(k, d, 80, ref, TCPSyn, now, &c); err != nil {
		t.Fatal(err)
	}
	if !tb.SyncTemplate(&c, now, &tc) || tc.Flags&FlagTemplate == 0 || tc.Assured {
		t.Fatalf("template after SYN: due=%v %+v", tc.Sync, tc)
	}
	tb.In(k, TCPAck, now, &c)
	if !tb.SyncTemplate(&c, now, &tc) || !tc.Assured {
		t.Fatalf("template after ACK: %+v", tc)
	}
	var r lvssync.Conn
	tc.Record(now, &r)
	if r.Flags&lvssync.FlagTemplate == 0 || r.State != lvssync.TemplateAssured || r.Timeout != 300 || r.CPort != 0 ||
		r.Flags&lvssync.FlagFwdMask != lvssync.FlagDRoute {
		t.Fatalf("template record %+v", r)
	}
	// Version 0: the template follows only a synced connection.
	tb.SetSync(&lvssync.DefaultSyncSettings, 0)
	tb.In(k, TCPAck, now, &c) // in_pkts 3: synced
	if !c.Sync || !tb.SyncTemplate(&c, now, &tc) {
		t.Fatal("v0: template not synced after its synced connection")
	}
	tb.In(k, TCPAck, now, &c) // in_pkts 4: not synced
	if c.Sync || tb.SyncTemplate(&c, now, &tc) {
		t.Fatal("v0: template synced after an unsynced connection")
	}
}

// TestSyncedBackup: the backup creates connections from records flagged
// SYNC, bound to its own real server, counted as the kernel counts them;
// updates move INACTIVE between the counters; a record for another real
// server replaces the connection unless it is INACTIVE (stale); the first
// packet on the backup finds the synced connection (takeover).
func TestSyncedBackup(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 1})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	d2 := newDest(t, ipvs.Masq, "198.19.0.12", 8080)
	now := int64(t0)
	sc := SyncedConn{
		Proto: ipvs.ProtoTCP, CAddr: client, CPort: 40000, VAddr: vip, VPort: 80, DAddr: d.Addr, DPort: 8080,
		Flags: lvssync.FlagSync, State: lvssync.TCPEstablished, Timeout: 900 * time.Second, InPkts: 3,
	}
	res, err := tb.Synced(&sc, d, now)
	if err != nil || res != SyncCreated {
		t.Fatalf("create: %v %v", res, err)
	}
	checkCounts(t, "created ESTABLISHED", d, 1, 0, 0)
	var conns []Conn
	tb.Walk(now, func(c *Conn) { conns = append(conns, *c) })
	if len(conns) != 1 || conns[0].State != StateEstablished || conns[0].Flags&FlagSync == 0 ||
		conns[0].Remaining(now) != 900*time.Second || conns[0].Method != ipvs.Masq {
		t.Fatalf("listed %+v", conns)
	}
	// Update: INACTIVE (the master saw it close), CLOSE_WAIT, 60 s.
	sc.Flags |= lvssync.FlagInactive
	sc.State, sc.Timeout = lvssync.TCPCloseWait, 60*time.Second
	if res, err := tb.Synced(&sc, d, now); err != nil || res != SyncUpdated {
		t.Fatalf("update: %v %v", res, err)
	}
	checkCounts(t, "updated INACTIVE", d, 0, 1, 0)
	// An INACTIVE record for another real server is stale: ignored.
	stale := sc
	stale.DAddr = d2.Addr
	if _, err := tb.Synced(&stale, d2, now); err != ErrSyncStale {
		t.Fatalf("stale record: %v", err)
	}
	// An active one replaces the connection.
	stale.Flags &^= lvssync.FlagInactive
	stale.State = lvssync.TCPEstablished
	if res, err := tb.Synced(&stale, d2, now); err != nil || res != SyncReplaced {
		t.Fatalf("replace: %v %v", res, err)
	}
	checkCounts(t, "old dest after replace", d, 0, 0, 0)
	checkCounts(t, "new dest after replace", d2, 1, 0, 0)
	// Takeover: a client packet on the backup finds the synced connection
	// and goes on with the state machine; a reply finds it by its reply key.
	var c Conn
	if !tb.In(inKey(ipvs.ProtoTCP, 40000), TCPAck, now+sec, &c) || c.Dest != d2 || c.State != StateEstablished {
		t.Fatalf("takeover: %+v", c)
	}
	if !tb.Out(NewReplyKey(ipvs.ProtoTCP, netip.AddrPortFrom(d2.Addr, 8080), netip.AddrPortFrom(client, 40000)), TCPAck, now+sec, &c) {
		t.Fatal("NAT reply of a synced connection not found")
	}
	// A bad state is refused and changes nothing.
	bad := sc
	bad.CPort, bad.State = 40009, 99
	if _, err := tb.Synced(&bad, d, now); err != ErrSyncState || tb.Len() != 1 {
		t.Fatalf("bad state: %v, %d entries", err, tb.Len())
	}
	// Version 0 records have no timeout: the state's.
	v0 := sc
	v0.CPort, v0.Timeout, v0.Flags, v0.State = 40010, 0, lvssync.FlagSync, lvssync.TCPEstablished
	_, _ = tb.Synced(&v0, d, now)
	tb.Walk(now, func(c *Conn) {
		if c.CPort == 40010 && c.Remaining(now) != 900*time.Second {
			t.Fatalf("v0 timeout %v, want ESTABLISHED's 900s", c.Remaining(now))
		}
	})
}

// TestSyncedTemplate: templates are created (PersistConn) and updated by
// their whole key, and a connection scheduled on the backup afterwards
// finds the synced template.
func TestSyncedTemplate(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 1})
	d := newDest(t, ipvs.Route, "198.19.0.11", 80)
	now := int64(t0)
	sc := SyncedConn{
		Proto: ipvs.ProtoTCP, CAddr: client, VAddr: vip, VPort: 80, DAddr: d.Addr, DPort: 80,
		Flags: lvssync.FlagSync | lvssync.FlagTemplate, State: lvssync.TemplateAssured, Timeout: 360 * time.Second,
	}
	if res, err := tb.Synced(&sc, d, now); err != nil || res != SyncCreated {
		t.Fatalf("create template: %v %v", res, err)
	}
	checkCounts(t, "template", d, 0, 0, 1)
	if res, err := tb.Synced(&sc, d, now+sec); err != nil || res != SyncUpdated {
		t.Fatalf("update template: %v %v", res, err)
	}
	checkCounts(t, "template updated", d, 0, 0, 1)
	got, _, ok := tb.Template(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80), now+2*sec)
	if !ok || got != d {
		t.Fatal("synced template not found by the scheduler's lookup")
	}
	tc, n := templateOf(tb, now+2*sec)
	if n != 1 || !tc.Assured || tc.Flags&FlagSync == 0 || tc.Remaining(now+2*sec) != 359*time.Second {
		t.Fatalf("template %+v (n=%d)", tc, n)
	}
}

// TestSyncRoundTrip: a master's record, through the wire format, makes the
// backup's connection with the master's state and timeout.
func TestSyncRoundTrip(t *testing.T) {
	master := New(Config{Shards: 4, Seed: 1})
	backup := New(Config{Shards: 4, Seed: 2})
	dm := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	db := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	master.SetSync(&lvssync.DefaultSyncSettings, 1)
	k := inKey(ipvs.ProtoTCP, 40000)
	now := int64(t0)
	var c Conn
	_ = master.Create(k, dm, 8080, TemplateRef{}, TCPSyn, now, &c)
	master.In(k, TCPAck, now, &c)
	master.In(k, TCPAck, now, &c)
	if !c.Sync {
		t.Fatal("third packet not due")
	}
	var r lvssync.Conn
	c.Record(now, &r)
	var m lvssync.Message
	m.Reset(1, 0)
	r.Flags = lvssync.MasterFlags(r.Flags)
	if err := m.Add(&r); err != nil {
		t.Fatal(err)
	}
	dec := lvssync.Decoder{Counters: &lvssync.Counters{}}
	n := 0
	dec.Decode(m.Bytes(), func(h *lvssync.Header, rc *lvssync.Conn) {
		n++
		sc := SyncedConn{Proto: ipvs.Protocol(rc.Protocol), CAddr: rc.CAddr, VAddr: rc.VAddr, DAddr: rc.DAddr,
			CPort: rc.CPort, VPort: rc.VPort, DPort: rc.DPort, Flags: lvssync.BackupFlags(h.Version, rc.Flags),
			State: rc.State, Timeout: time.Duration(rc.Timeout) * time.Second, InPkts: 3}
		if _, err := backup.Synced(&sc, db, now); err != nil {
			t.Fatal(err)
		}
	})
	if n != 1 {
		t.Fatalf("decoded %d records", n)
	}
	var bc Conn
	if !backup.PeekIn(k, now, &bc) || bc.State != StateEstablished || bc.Flags&FlagSync == 0 ||
		bc.Remaining(now) != 900*time.Second {
		t.Fatalf("backup's connection %+v", bc)
	}
	checkCounts(t, "backup dest", db, 1, 0, 0)
}
