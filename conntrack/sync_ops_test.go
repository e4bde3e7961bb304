package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"gvs/ipvs"
	"gvs/lvssync"
)

// TestSyncOnePacketTemplate: on a master, a persistent one-packet (-o)
// UDP service's datagrams are never synced themselves, but each one goes
// on to its template as ip_vs_sync_conn does (sync_version 1): in_pkts is
// raised once and the sync-needed rule decides with it. The datagrams
// (1-based) whose template record is due, by the kernel's rule:
//   - defaults (sync_threshold 3 50): a template passes the period test
//     whatever its count, so every datagram;
//   - sync_threshold 3 0 (no period, no refresh period): only when in_pkts
//     equals the threshold, the third;
//   - sync_refresh_period 10 s: the first, then none until the template's
//     end time (now + 300 s, to 4 ticks) moved 10 s or more;
//   - sync_version 0: never, and in_pkts is not raised either
//     (ip_vs_sync_conn_v0 returns at once for a one-packet connection);
//   - no master: never, and every datagram counts in in_pkts (ip_vs_in's
//     atomic_inc on the controller).
func TestSyncOnePacketTemplate(t *testing.T) {
	type dgram struct {
		at  int64 // after t0
		due bool
	}
	every := []dgram{{0, true}, {0, true}, {0, true}, {sec, true}, {sec, true}, {2 * sec, true}}
	cases := []struct {
		name     string
		settings *lvssync.SyncSettings
		version  int
		dgrams   []dgram
		pkts     uint32 // the template's in_pkts after the datagrams
	}{
		{"defaults", &lvssync.DefaultSyncSettings, 1, every, 6},
		{"no period", &lvssync.SyncSettings{Threshold: 3}, 1,
			[]dgram{{0, false}, {0, false}, {0, true}, {sec, false}, {sec, false}, {2 * sec, false}}, 6},
		{"refresh period", &lvssync.SyncSettings{Threshold: 3, Period: 50, RefreshPeriod: lvssync.Ticks(10 * time.Second)}, 1,
			[]dgram{{0, true}, {sec, false}, {9 * sec, false}, {11 * sec, true}, {12 * sec, false}, {22 * sec, true}}, 6},
		{"version 0", &lvssync.DefaultSyncSettings, 0,
			[]dgram{{0, false}, {0, false}, {0, false}, {sec, false}}, 0},
		{"no master", nil, 1,
			[]dgram{{0, false}, {0, false}, {0, false}, {sec, false}}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := New(Config{Shards: 4, Seed: 7})
			d := opsDest(t, "198.19.0.71")
			tb.SetSync(tc.settings, tc.version)
			tk := NewTemplateKey(ipvs.ProtoUDP, client, 32, vip, 53)
			ref, err := tb.CreateTemplate(tk, d, 300*time.Second, t0)
			if err != nil {
				t.Fatal(err)
			}
			var c, tmpl Conn
			for i, dg := range tc.dgrams {
				now := t0 + dg.at
				k := InKeyV4(ipvs.ProtoUDP, client.As4(), uint16(6000+i), vip.As4(), 53)
				if err := tb.CreateOnePacket(k, d, 53, ref, now, &c); err != nil {
					t.Fatal(err)
				}
				if c.Sync {
					t.Fatalf("datagram %d: the one-packet connection itself is due", i+1)
				}
				due := tb.SyncTemplate(&c, now, &tmpl)
				if due != dg.due {
					t.Fatalf("datagram %d (at +%v): template record due %v, want %v", i+1, time.Duration(dg.at), due, dg.due)
				}
				if !due {
					continue
				}
				var r lvssync.Conn
				tmpl.Record(now, &r)
				if r.Protocol != lvssync.ProtoUDP || r.Flags != lvssync.FlagTemplate|lvssync.FlagMasq|lvssync.FlagInactive ||
					r.State != lvssync.TemplateNone || r.Timeout != 300 ||
					r.CAddr != client || r.CPort != 0 || r.VAddr != vip || r.VPort != 53 || r.DAddr != d.Addr || r.DPort != 53 {
					t.Fatalf("datagram %d: template record %+v", i+1, r)
				}
			}
			s := &tb.shards[ref.shard]
			s.mu.Lock()
			got := tb.tmplPkts(ref.shard, ref.slot, s.refEntry(ref))
			s.mu.Unlock()
			if got != tc.pkts {
				t.Fatalf("template in_pkts %d after %d datagrams, want %d", got, len(tc.dgrams), tc.pkts)
			}
		})
	}
}

// TestSyncOnePacketTemplateGone: a one-packet connection holds no
// n_control on its template, so a template that went away (and whose slot
// a new template took) between the datagram and the sync step is not
// synced in its stead.
func TestSyncOnePacketTemplateGone(t *testing.T) {
	tb := New(Config{Shards: 1, Seed: 7})
	d := opsDest(t, "198.19.0.72")
	tb.SetSync(&lvssync.DefaultSyncSettings, 1)
	tk := NewTemplateKey(ipvs.ProtoUDP, client, 32, vip, 53)
	ref, err := tb.CreateTemplate(tk, d, 300*time.Second, t0)
	if err != nil {
		t.Fatal(err)
	}
	var c, tmpl Conn
	k := InKeyV4(ipvs.ProtoUDP, client.As4(), 6000, vip.As4(), 53)
	if err := tb.CreateOnePacket(k, d, 53, ref, t0, &c); err != nil {
		t.Fatal(err)
	}
	tb.Flush()
	other := NewTemplateKey(ipvs.ProtoUDP, netip.MustParseAddr("198.18.0.3"), 32, vip, 53)
	ref2, err := tb.CreateTemplate(other, d, 300*time.Second, t0)
	if err != nil {
		t.Fatal(err)
	}
	if ref2.slot != ref.slot || ref2.shard != ref.shard {
		t.Fatal("the new template did not reuse the slot: the test proves nothing")
	}
	if tb.SyncTemplate(&c, t0, &tmpl) {
		t.Fatalf("synced another template in the gone one's stead: %+v", tmpl)
	}
}

// TestSyncOnePacketTemplateBackup: the master's template record of a
// one-packet service, through the version 1 wire format, makes the
// backup's template (SYNC, the master's real server and timeout, in_pkts
// the backup's sync_threshold); the backup's own datagrams from that
// client then find it, and, the backup running no master, count in its
// in_pkts.
func TestSyncOnePacketTemplateBackup(t *testing.T) {
	master := New(Config{Shards: 4, Seed: 1})
	backup := New(Config{Shards: 4, Seed: 2})
	dm := opsDest(t, "198.19.0.73")
	db := opsDest(t, "198.19.0.73")
	master.SetSync(&lvssync.DefaultSyncSettings, 1)
	tk := NewTemplateKey(ipvs.ProtoUDP, client, 32, vip, 53)
	ref, err := master.CreateTemplate(tk, dm, 300*time.Second, t0)
	if err != nil {
		t.Fatal(err)
	}
	var c, tmpl Conn
	k := InKeyV4(ipvs.ProtoUDP, client.As4(), 6000, vip.As4(), 53)
	if err := master.CreateOnePacket(k, dm, 53, ref, t0, &c); err != nil {
		t.Fatal(err)
	}
	if !master.SyncTemplate(&c, t0, &tmpl) {
		t.Fatal("template record not due at the first datagram")
	}
	var r lvssync.Conn
	tmpl.Record(t0, &r)
	r.Flags = lvssync.MasterFlags(r.Flags)
	var m lvssync.Message
	m.Reset(1, 0)
	if err := m.Add(&r); err != nil {
		t.Fatal(err)
	}
	now := t0 + 5*sec
	n := 0
	dec := lvssync.Decoder{Counters: &lvssync.Counters{}}
	dec.Decode(m.Bytes(), func(h *lvssync.Header, rc *lvssync.Conn) {
		n++
		sc := SyncedConn{Proto: ipvs.Protocol(rc.Protocol), CAddr: rc.CAddr, VAddr: rc.VAddr, DAddr: rc.DAddr,
			CPort: rc.CPort, VPort: rc.VPort, DPort: rc.DPort, Flags: lvssync.BackupFlags(h.Version, rc.Flags),
			State: rc.State, Timeout: time.Duration(rc.Timeout) * time.Second, InPkts: 3}
		if res, err := backup.Synced(&sc, db, now); err != nil || res != SyncCreated {
			t.Fatalf("Synced: %v %v", res, err)
		}
	})
	if n != 1 {
		t.Fatalf("decoded %d records", n)
	}
	bt, nt := templateOf(backup, now)
	if nt != 1 || bt.Flags&FlagSync == 0 || bt.Dest != db || bt.Remaining(now) != 300*time.Second || bt.Assured {
		t.Fatalf("backup's template %+v (%d templates)", bt, nt)
	}
	checkCounts(t, "backup dest", db, 0, 0, 1)
	d, bref, ok := backup.Template(tk, now)
	if !ok || d != db {
		t.Fatal("the backup's datagram does not find the synced template")
	}
	for i := range 2 {
		k := InKeyV4(ipvs.ProtoUDP, client.As4(), uint16(7000+i), vip.As4(), 53)
		if err := backup.CreateOnePacket(k, db, 53, bref, now, &c); err != nil {
			t.Fatal(err)
		}
		if backup.SyncTemplate(&c, now, &tmpl) {
			t.Fatal("a backup without a master synced a template")
		}
	}
	s := &backup.shards[bref.shard]
	s.mu.Lock()
	got := backup.tmplPkts(bref.shard, bref.slot, s.refEntry(bref))
	s.mu.Unlock()
	if got != 5 {
		t.Fatalf("backup template in_pkts %d, want 3 (sync_threshold) + 2 datagrams", got)
	}
}
