package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"gvs/ipvs"
)

// Template behaviour checked against the kernel's (ip_vs_conn.c,
// ip_vs_proto_tcp.c, ip_vs_proto_udp.c, ip_vs_core.c ip_vs_sched_persist).

// templates returns the templates Walk lists at now.
func templates(tb *Table, now int64) []Conn {
	var out []Conn
	tb.Walk(now, func(c *Conn) {
		if c.Flags&FlagTemplate != 0 {
			out = append(out, *c)
		}
	})
	return out
}

// oneTemplate returns the only template listed at now.
func oneTemplate(t *testing.T, tb *Table, now int64) Conn {
	t.Helper()
	ts := templates(tb, now)
	if len(ts) != 1 {
		t.Fatalf("Walk lists %d templates, want 1: %+v", len(ts), ts)
	}
	return ts[0]
}

// A template turns ASSURED when a TCP connection it controls enters
// ESTABLISHED (set_tcp_state -> ip_vs_control_assure_ct), and stays so.
func TestTemplateAssuredByEstablishedTCP(t *testing.T) {
	tb := New(Config{Shards: 8})
	d := newDest(t, ipvs.Route, "198.19.0.41", 80)
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80)
	var c Conn
	schedPersist(t, tb, tk, d, inKey(ipvs.ProtoTCP, 1000), t0, &c) // SYN: SYN_RECV
	if tc := oneTemplate(t, tb, t0); tc.Assured || tc.StateName() != "NONE" {
		t.Fatalf("after SYN: template %s (assured %v), want NONE", tc.StateName(), tc.Assured)
	}
	// Another SYN (retransmission) and a FIN_WAIT path never assure it.
	tb.In(inKey(ipvs.ProtoTCP, 1000), TCPSyn, t0+sec, &c)
	if tc := oneTemplate(t, tb, t0+sec); tc.Assured {
		t.Fatal("assured by a SYN")
	}
	// The client's ACK (DR: INPUT_ONLY table) establishes it.
	tb.In(inKey(ipvs.ProtoTCP, 1000), TCPAck, t0+2*sec, &c)
	if c.State != StateEstablished {
		t.Fatalf("conn state %v", c.State)
	}
	tc := oneTemplate(t, tb, t0+2*sec)
	if !tc.Assured || tc.StateName() != "ASSURED" || tc.State != StateNone {
		t.Fatalf("after ESTABLISHED: template %s (assured %v, state %v), want ASSURED", tc.StateName(), tc.Assured, tc.State)
	}
	if tc.NControl != 1 {
		t.Fatalf("n_control %d with the assured bit, want 1", tc.NControl)
	}
	// A connection is never "ASSURED": its name is its protocol state.
	if c.StateName() != "ESTABLISHED" {
		t.Fatalf("conn StateName %q", c.StateName())
	}
	// It stays assured after the connection ends.
	tb.Remove(inKey(ipvs.ProtoTCP, 1000))
	if tc := oneTemplate(t, tb, t0+3*sec); !tc.Assured || tc.NControl != 0 {
		t.Fatalf("after the connection ended: %+v", tc)
	}
	// An uncontrolled connection reaching ESTABLISHED touches no template.
	k2 := inKey(ipvs.ProtoTCP, 2000)
	if err := tb.Create(k2, d, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil {
		t.Fatal(err)
	}
	tb.In(k2, TCPAck, t0, &c)
}

// A UDP template is assured by a reply through the director (OUTPUT
// direction, udp_state_transition), never by client datagrams.
func TestTemplateAssuredByUDPReply(t *testing.T) {
	tb := New(Config{Shards: 8})
	d := newDest(t, ipvs.Masq, "198.19.0.42", 5353)
	tk := NewTemplateKey(ipvs.ProtoUDP, client, 32, vip, 80)
	k := inKey(ipvs.ProtoUDP, 3000)
	var c Conn
	ref, err := tb.CreateTemplate(tk, d, time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Create(k, d, 5353, ref, 0, t0, &c); err != nil {
		t.Fatal(err)
	}
	tb.In(k, 0, t0+sec, &c)
	tb.In(k, 0, t0+2*sec, &c)
	if tc := oneTemplate(t, tb, t0+2*sec); tc.Assured {
		t.Fatal("UDP template assured by client datagrams")
	}
	rk := NewReplyKey(ipvs.ProtoUDP, netip.AddrPortFrom(d.Addr, 5353), netip.AddrPortFrom(client, 3000))
	if !tb.Out(rk, 0, t0+3*sec, &c) {
		t.Fatal("reply not found")
	}
	if tc := oneTemplate(t, tb, t0+3*sec); !tc.Assured || tc.StateName() != "ASSURED" {
		t.Fatalf("after a reply: %+v", tc)
	}
}

// When its timer runs out while it controls connections, the kernel gives a
// template 60 s more and keeps cp->timeout at 60 s: from then on a new
// connection under it re-arms it to 60 s, not to the persistence timeout.
// When the last connection has gone, it dies at its next 60 s deadline.
func TestTemplateBusyRearmIs60s(t *testing.T) {
	tb := New(Config{Shards: 8})
	d := newDest(t, ipvs.Route, "198.19.0.43", 80)
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80)
	var c Conn
	k1 := inKey(ipvs.ProtoTCP, 1001)
	schedPersist(t, tb, tk, d, k1, t0, &c) // template: 360 s
	tb.In(k1, TCPAck, t0, &c)              // ESTABLISHED: 900 s
	if tc := oneTemplate(t, tb, t0); tc.Expires != t0+360*sec {
		t.Fatalf("template expires at +%ds", (tc.Expires-t0)/sec)
	}
	// At 360 s it still controls k1: re-armed for 60 s.
	tb.Expire(t0 + 360*sec)
	tc := oneTemplate(t, tb, t0+361*sec)
	if tc.Expires != t0+420*sec {
		t.Fatalf("after the busy re-arm: expires at +%ds, want +420", (tc.Expires-t0)/sec)
	}
	if got := tc.Remaining(t0+361*sec) / time.Second; got != 59 {
		t.Fatalf("-Lnc expire after the re-arm: %ds, want 59", got)
	}
	// A second connection under it at 400 s re-arms it to 400+60, not +360.
	k2 := inKey(ipvs.ProtoTCP, 1002)
	schedPersist(t, tb, tk, d, k2, t0+400*sec, &c)
	tc = oneTemplate(t, tb, t0+400*sec)
	if tc.Expires != t0+460*sec || tc.NControl != 2 {
		t.Fatalf("use after the re-arm: expires at +%ds n_control %d, want +460 and 2", (tc.Expires-t0)/sec, tc.NControl)
	}
	// Both connections end at 450 s (RST); the template lives to 460 s.
	tb.In(k2, TCPAck, t0+401*sec, &c)
	tb.In(k1, TCPRst, t0+440*sec, &c) // CLOSE: 10 s
	tb.In(k2, TCPRst, t0+440*sec, &c)
	tb.Expire(t0 + 450*sec)
	tc = oneTemplate(t, tb, t0+450*sec)
	if tc.NControl != 0 || tc.Expires != t0+460*sec {
		t.Fatalf("after the connections ended: %+v", tc)
	}
	if n := tb.Expire(t0 + 460*sec - 1); n != 0 {
		t.Fatalf("template removed before its deadline (%d)", n)
	}
	if n := tb.Expire(t0 + 460*sec); n != 1 {
		t.Fatalf("template not removed at its deadline (%d)", n)
	}
	checkCounts(t, "end", d, 0, 0, 0)
}

// The lazy path (a lookup or a listing between Expire calls) extends a due
// busy template the same way.
func TestTemplateBusyRearmLazy(t *testing.T) {
	tb := New(Config{Shards: 8})
	d := newDest(t, ipvs.Route, "198.19.0.44", 80)
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80)
	var c Conn
	k1 := inKey(ipvs.ProtoTCP, 1003)
	schedPersist(t, tb, tk, d, k1, t0, &c)
	tb.In(k1, TCPAck, t0, &c)
	// No Expire: at 500 s the kernel's timer has stepped 360 -> 420 -> 480
	// -> 540.
	if got, _, ok := tb.Template(tk, t0+500*sec); !ok || got != d {
		t.Fatal("busy template not found at 500 s")
	}
	k2 := inKey(ipvs.ProtoTCP, 1004)
	schedPersist(t, tb, tk, d, k2, t0+500*sec, &c)
	if tc := oneTemplate(t, tb, t0+500*sec); tc.Expires != t0+560*sec {
		t.Fatalf("expires at +%ds, want +560", (tc.Expires-t0)/sec)
	}
}

// An invalid template (dest unavailable, or quiesced with
// expire_quiescent_template) is not freed: ip_vs_check_template rewrites
// its vport and dport to 65535 (cport 0) and rehashes it, and it stays
// listed, bound and counted until its own timer, which the failed lookup
// does not restart. The client gets a new template next to it.
func TestTemplateInvalidatedStaysListed(t *testing.T) {
	tb := New(Config{Shards: 8})
	d1 := newDest(t, ipvs.Route, "198.19.0.45", 8080)
	d2 := newDest(t, ipvs.Route, "198.19.0.46", 8080)
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80)
	var c Conn
	schedPersist(t, tb, tk, d1, inKey(ipvs.ProtoTCP, 1), t0, &c) // controlled conn, SYN_RECV 60 s
	tb.Remove(inKey(ipvs.ProtoTCP, 1))                           // n_control 0

	d1.SetUnavailable()
	if _, _, ok := tb.Template(tk, t0+10*sec); ok {
		t.Fatal("template of an unavailable dest accepted")
	}
	tc := oneTemplate(t, tb, t0+10*sec)
	if tc.VPort != 65535 || tc.DPort != 65535 || tc.CPort != 0 || tc.Dest != d1 ||
		tc.VAddr != vip || tc.CAddr != client || tc.Expires != t0+360*sec {
		t.Fatalf("invalidated template %+v", tc)
	}
	checkCounts(t, "invalidated", d1, 0, 0, 1)
	if tb.Len() != 1 {
		t.Fatalf("len %d, want 1 (still counted)", tb.Len())
	}
	// Not found again, and the lookup does not touch its timer.
	if _, _, ok := tb.Template(tk, t0+20*sec); ok {
		t.Fatal("invalidated template found by its old key")
	}
	// The client is rescheduled; both templates are listed.
	schedPersist(t, tb, tk, d2, inKey(ipvs.ProtoTCP, 2), t0+30*sec, &c)
	if c.Dest != d2 {
		t.Fatal("not rescheduled to d2")
	}
	ts := templates(tb, t0+30*sec)
	if len(ts) != 2 {
		t.Fatalf("%d templates listed, want 2", len(ts))
	}
	var old, cur Conn
	for _, x := range ts {
		if x.Dest == d1 {
			old = x
		} else {
			cur = x
		}
	}
	if old.VPort != 65535 || old.Expires != t0+360*sec || cur.VPort != 80 || cur.DPort != 8080 || cur.Expires != t0+390*sec {
		t.Fatalf("templates: old %+v new %+v", old, cur)
	}
	// The new template is the one found.
	if got, _, ok := tb.Template(tk, t0+31*sec); !ok || got != d2 {
		t.Fatal("new template not found")
	}
	// The old one dies at its own deadline.
	if n := tb.Expire(t0 + 360*sec - 1); n != 1 { // the SYN_RECV conn on d2 (60 s after 30 s)
		t.Fatalf("removed %d before the old template's deadline", n)
	}
	if n := tb.Expire(t0 + 360*sec); n != 1 {
		t.Fatalf("old template: removed %d", n)
	}
	checkCounts(t, "d1 end", d1, 0, 0, 0)
	if ts := templates(tb, t0+360*sec); len(ts) != 1 || ts[0].Dest != d2 {
		t.Fatalf("after the old one expired: %+v", ts)
	}
}

// With expire_quiescent_template a weight-0 dest invalidates its template
// the same way; a fwmark template (protocol IP, vport 0) gets vport and
// dport 65535 too. One that still controls a connection is re-armed by 60 s
// steps as any other.
func TestTemplateInvalidatedQuiescentFWMark(t *testing.T) {
	tb := New(Config{Shards: 4, ExpireQuiescentTemplate: true})
	d1 := newDest(t, ipvs.Route, "198.19.0.47", 80)
	d2 := newDest(t, ipvs.Route, "198.19.0.48", 80)
	tk := NewFWMarkTemplateKey(7, client, 24)
	var c Conn
	k1 := inKey(ipvs.ProtoTCP, 1)
	schedPersist(t, tb, tk, d1, k1, t0, &c)
	tb.In(k1, TCPAck, t0, &c) // ESTABLISHED, 900 s
	cfg := d1.Config()
	cfg.Weight = 0
	d1.Update(cfg)
	if _, _, ok := tb.Template(tk, t0+sec); ok {
		t.Fatal("quiesced dest's template accepted with expire_quiescent_template")
	}
	tc := oneTemplate(t, tb, t0+sec)
	if tc.Proto != ipvs.ProtoIP || tc.VPort != 65535 || tc.DPort != 65535 || tc.NControl != 1 || !tc.Assured {
		t.Fatalf("invalidated fwmark template %+v", tc)
	}
	schedPersist(t, tb, tk, d2, inKey(ipvs.ProtoTCP, 2), t0+2*sec, &c)
	if c.Dest != d2 || len(templates(tb, t0+2*sec)) != 2 {
		t.Fatal("no second template")
	}
	// Re-weighting d1 does not bring the invalidated template back.
	cfg.Weight = 1
	d1.Update(cfg)
	if got, _, ok := tb.Template(tk, t0+3*sec); !ok || got != d2 {
		t.Fatal("lookup did not return the new template")
	}
	// Busy at 360 s (k1 lives to 900 s): stepped by 60 s.
	tb.Expire(t0 + 360*sec)
	if old := templateOn(t, tb, d1, t0+360*sec); old.Expires != t0+420*sec {
		t.Fatalf("invalidated busy template expires at +%ds, want +420", (old.Expires-t0)/sec)
	}
	checkCounts(t, "d1 busy", d1, 1, 0, 1)
}

func templateOn(t *testing.T, tb *Table, d *ipvs.Dest, now int64) Conn {
	t.Helper()
	for _, x := range templates(tb, now) {
		if x.Dest == d {
			return x
		}
	}
	t.Fatalf("no template on %v", d.Addr)
	return Conn{}
}

// Templates carry the dest's connection flags as ip_vs_bind_dest gives
// them: INACTIVE, and NOOUTPUT when the method is not NAT.
func TestTemplateFlags(t *testing.T) {
	tb := New(Config{Shards: 4})
	for _, m := range []ipvs.Method{ipvs.Route, ipvs.Tunnel, ipvs.Masq} {
		d := newDest(t, m, "198.19.0.49", 80)
		tk := NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, uint16(m)+1)
		ref, err := tb.CreateTemplate(tk, d, time.Minute, t0)
		if err != nil {
			t.Fatal(err)
		}
		var tc Conn
		for _, x := range templates(tb, t0) {
			if x.VPort == uint16(m)+1 {
				tc = x
			}
		}
		want := FlagTemplate | FlagInactive
		if m != ipvs.Masq {
			want |= FlagNoOutput
		}
		if tc.Flags != want {
			t.Fatalf("%v template flags %#x, want %#x", m, tc.Flags, want)
		}
		tb.DropTemplate(ref)
	}
}

// Expire called rarely (a replay with a long gap between frames) still
// decides a busy template's 60 s steps in time order with its connections:
// the kernel's timer at 900 s sees the connection (which dies at 911 s)
// alive and gives the template until 960 s, even though the connection has
// gone by the time Expire next runs, at 920 s.
func TestTemplateBusyStepsInTimeOrder(t *testing.T) {
	tb := New(Config{Shards: 8})
	d := newDest(t, ipvs.Route, "198.19.0.50", 80)
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80)
	var c Conn
	k := inKey(ipvs.ProtoTCP, 1005)
	schedPersist(t, tb, tk, d, k, t0, &c)
	tb.In(k, TCPAck, t0+11*sec, &c) // ESTABLISHED until 911 s
	if n := tb.Expire(t0 + 920*sec); n != 1 {
		t.Fatalf("Expire(920 s) removed %d, want the connection only", n)
	}
	if tc := oneTemplate(t, tb, t0+920*sec); tc.Expires != t0+960*sec || tc.NControl != 0 {
		t.Fatalf("template after 920 s: expires +%ds n_control %d, want +960 and 0", (tc.Expires-t0)/sec, tc.NControl)
	}
	if n := tb.Expire(t0 + 960*sec); n != 1 {
		t.Fatalf("template not removed at 960 s (%d)", n)
	}

	// A connection that died long before the next step lets the template
	// go at that step: listed at 419 s, gone at 420 s, although nothing ran
	// Expire between 0 and 450 s (Walk is the kernel's listing after its
	// timers have fired).
	k2 := inKey(ipvs.ProtoTCP, 1006)
	schedPersist(t, tb, tk, d, k2, t0+1000*sec, &c) // template to 1360 s
	tb.In(k2, TCPAck, t0+1000*sec, &c)              // to 1900 s
	tb.In(k2, TCPRst, t0+1390*sec, &c)              // CLOSE: dies at 1400 s
	if tc := oneTemplate(t, tb, t0+1419*sec); tc.Expires != t0+1420*sec {
		t.Fatalf("template at 1419 s: expires +%ds, want +1420", (tc.Expires-t0)/sec)
	}
	if ts := templates(tb, t0+1450*sec); len(ts) != 0 {
		t.Fatalf("template still listed at 1450 s: %+v", ts)
	}
}
