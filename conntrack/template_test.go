package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"gvs/ipvs"
)

// schedPersist does what the forwarder does for a persistent service: reuse
// the template's dest, or "schedule" fallback and make a template.
func schedPersist(t *testing.T, tb *Table, tk TemplateKey, fallback *ipvs.Dest, k InKey, now int64, c *Conn) {
	t.Helper()
	d, ref, ok := tb.Template(tk, now)
	if !ok {
		var err error
		if ref, err = tb.CreateTemplate(tk, fallback, 360*time.Second, now); err != nil {
			t.Fatal(err)
		}
		d = ref.Dest()
	}
	if err := tb.Create(k, d, d.Port, ref, TCPSyn, now, c); err != nil {
		t.Fatal(err)
	}
}

func templateOf(tb *Table, now int64) (c Conn, n int) {
	tb.Walk(now, func(x *Conn) {
		if x.Flags&FlagTemplate != 0 {
			c = *x
			n++
		}
	})
	return c, n
}

func TestTemplateAffinityAndLifetime(t *testing.T) {
	tb := New(Config{Shards: 8})
	d1 := newDest(t, ipvs.Route, "198.19.0.31", 80)
	d2 := newDest(t, ipvs.Route, "198.19.0.32", 80)
	c1 := netip.MustParseAddr("198.18.5.7")
	c2 := netip.MustParseAddr("198.18.5.200") // same /24
	tk := NewTemplateKey(ipvs.ProtoTCP, c1, 24, vip, 80)
	if tk != NewTemplateKey(ipvs.ProtoTCP, c2, 24, vip, 80) {
		t.Fatal("clients of one /24 have different template keys")
	}
	var c Conn
	k1 := NewInKey(ipvs.ProtoTCP, netip.AddrPortFrom(c1, 1111), netip.AddrPortFrom(vip, 80))
	k2 := NewInKey(ipvs.ProtoTCP, netip.AddrPortFrom(c2, 2222), netip.AddrPortFrom(vip, 80))

	schedPersist(t, tb, tk, d1, k1, t0, &c)
	if c.Dest != d1 {
		t.Fatal("first connection not on d1")
	}
	checkCounts(t, "first", d1, 1, 0, 1)
	// The second client of the net sticks to d1 although d2 is offered.
	schedPersist(t, tb, tk, d2, k2, t0+10*sec, &c)
	if c.Dest != d1 {
		t.Fatal("affinity broken")
	}
	checkCounts(t, "second", d1, 2, 0, 1)
	checkCounts(t, "d2", d2, 0, 0, 0)
	tc, n := templateOf(tb, t0+10*sec)
	if n != 1 || tc.NControl != 2 || tc.Expires != t0+370*sec || tc.State != StateNone || tc.CPort != 0 ||
		tc.CAddr != netip.MustParseAddr("198.18.5.0") || tc.DPort != 80 {
		t.Fatalf("template %+v (n=%d)", tc, n)
	}

	// Establish both connections (900 s): the template outlives its own
	// 360 s while it controls them.
	tb.In(k1, TCPAck, t0+11*sec, &c)
	tb.In(k2, TCPAck, t0+11*sec, &c) // both expire at t0+911
	for now := t0 + 12*sec; now < t0+911*sec; now += 10 * sec {
		if n := tb.Expire(now); n != 0 {
			t.Fatalf("Expire(%ds) removed %d", (now-t0)/sec, n)
		}
		if _, _, ok := tb.Template(tk, now); !ok {
			t.Fatalf("template gone at %ds while controlling", (now-t0)/sec)
		}
	}
	checkCounts(t, "established", d1, 2, 0, 1)
	// Its deadline moves in 60 s steps from 370 s; the step at 910 s still
	// sees live connections, so it moves on to 970 s.
	if n := tb.Expire(t0 + 911*sec - 1); n != 0 {
		t.Fatalf("removed %d before the connections' deadline", n)
	}
	if n := tb.Expire(t0 + 911*sec); n != 2 {
		t.Fatalf("connections: removed %d", n)
	}
	checkCounts(t, "connections gone", d1, 0, 0, 1)
	if n := tb.Expire(t0 + 970*sec - 1); n != 0 {
		t.Fatalf("template removed early")
	}
	if _, _, ok := tb.Template(tk, t0+970*sec-1); !ok {
		t.Fatal("template gone before 970 s")
	}
	if n := tb.Expire(t0 + 970*sec); n != 1 {
		t.Fatalf("template: removed %d", n)
	}
	checkCounts(t, "all gone", d1, 0, 0, 0)
	if _, _, ok := tb.Template(tk, t0+970*sec); ok {
		t.Fatal("template still found")
	}
}

func TestTemplateRearmOnUse(t *testing.T) {
	tb := New(Config{Shards: 1})
	d := newDest(t, ipvs.Masq, "198.19.0.33", 8080)
	tk := NewTemplateKey(ipvs.ProtoUDP, client, 32, vip, 0) // port-0 service
	var c Conn
	ref, err := tb.CreateTemplate(tk, d, 100*time.Second, t0)
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := templateOf(tb, t0)
	if tc.DPort != 0 || tc.VPort != 0 || tc.Expires != t0+100*sec {
		t.Fatalf("port-0 template %+v", tc)
	}
	// A short UDP connection under it, created late, re-arms it.
	tb.SetTimeouts(0, 0, 5*time.Second)
	if err := tb.Create(inKey(ipvs.ProtoUDP, 53), d, 53, ref, 0, t0+90*sec, &c); err != nil {
		t.Fatal(err)
	}
	if tc, _ = templateOf(tb, t0+90*sec); tc.Expires != t0+190*sec || tc.NControl != 1 {
		t.Fatalf("after use: %+v", tc)
	}
	if n := tb.Expire(t0 + 95*sec); n != 1 {
		t.Fatalf("UDP conn: removed %d", n)
	}
	if tc, _ = templateOf(tb, t0+95*sec); tc.NControl != 0 {
		t.Fatalf("n_control after conn end: %d", tc.NControl)
	}
	if n := tb.Expire(t0 + 190*sec - 1); n != 0 {
		t.Fatal("template expired before its re-armed deadline")
	}
	if n := tb.Expire(t0 + 190*sec); n != 1 {
		t.Fatalf("template: removed %d", n)
	}
	checkCounts(t, "end", d, 0, 0, 0)
	// A stale ref is ignored: the connection is created uncontrolled.
	if err := tb.Create(inKey(ipvs.ProtoUDP, 54), d, 53, ref, 0, t0+200*sec, &c); err != nil || tb.Len() != 1 {
		t.Fatalf("stale ref: %v len %d", err, tb.Len())
	}
	if tb.DropTemplate(ref) {
		t.Fatal("DropTemplate accepted a stale ref")
	}
}

func TestTemplateInvalidation(t *testing.T) {
	tb := New(Config{Shards: 4})
	d1 := newDest(t, ipvs.Route, "198.19.0.34", 80)
	d2 := newDest(t, ipvs.Route, "198.19.0.35", 80)
	tk := NewFWMarkTemplateKey(7, client, 32)
	var c Conn
	schedPersist(t, tb, tk, d1, inKey(ipvs.ProtoTCP, 1), t0, &c)

	// Quiesced: still valid by default, invalid with expire_quiescent_template.
	cfg := d1.Config()
	cfg.Weight = 0
	d1.Update(cfg)
	if d, _, ok := tb.Template(tk, t0+sec); !ok || d != d1 {
		t.Fatal("quiesced dest's template rejected without ExpireQuiescentTemplate")
	}
	tb.SetExpireQuiescentTemplate(true)
	if _, _, ok := tb.Template(tk, t0+sec); ok {
		t.Fatal("quiesced dest's template accepted with ExpireQuiescentTemplate")
	}
	// It is invalidated (not found any more) but still counted and listed.
	checkCounts(t, "invalidated", d1, 1, 0, 1)
	schedPersist(t, tb, tk, d2, inKey(ipvs.ProtoTCP, 2), t0+2*sec, &c)
	if c.Dest != d2 {
		t.Fatal("not rescheduled to d2")
	}
	checkCounts(t, "d2", d2, 1, 0, 1)
	if _, n := templateOf(tb, t0+2*sec); n != 2 {
		t.Fatalf("Walk lists %d templates, want the invalidated one and the new one", n)
	}
	// When the controlled connection has ended, the invalidated template
	// goes at its own deadline.
	tb.Remove(inKey(ipvs.ProtoTCP, 1))
	tb.Expire(t0 + 400*sec)
	checkCounts(t, "d1 end", d1, 0, 0, 0)

	// Deleted dest: invalid; the template stays until its timer.
	ref, err := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 443), d2, time.Minute, t0+500*sec)
	if err != nil {
		t.Fatal(err)
	}
	// CreateTemplate on an existing valid template returns it unchanged.
	if again, _ := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 443), d1, time.Minute, t0+500*sec); again != ref {
		t.Fatal("concurrent CreateTemplate did not return the existing template")
	}
	checkCounts(t, "two templates", d2, 0, 0, 1)
	d2.SetUnavailable()
	if _, _, ok := tb.Template(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 443), t0+501*sec); ok {
		t.Fatal("template of a deleted dest accepted")
	}
	checkCounts(t, "invalidated", d2, 0, 0, 1)
	if n := tb.Expire(t0 + 560*sec); n != 1 || tb.Len() != 0 {
		t.Fatalf("expired %d, len %d", n, tb.Len())
	}
	checkCounts(t, "dropped", d2, 0, 0, 0)
	// DropTemplate.
	ref, _ = tb.CreateTemplate(tk, d1, time.Minute, t0+600*sec)
	if !tb.DropTemplate(ref) || tb.Len() != 0 {
		t.Fatal("DropTemplate")
	}
	checkCounts(t, "DropTemplate", d1, 0, 0, 0)
}

// A template whose deadline and whose last connection's deadline fall into
// the same Expire call goes with its connections.
func TestTemplateGoesWithItsConnections(t *testing.T) {
	tb := New(Config{Shards: 16})
	d := newDest(t, ipvs.Route, "198.19.0.36", 80)
	var c Conn
	for i := 0; i < 20; i++ {
		cl := netip.AddrFrom4([4]byte{198, 18, 9, byte(i)})
		tk := NewTemplateKey(ipvs.ProtoTCP, cl, 32, vip, 80)
		schedPersist(t, tb, tk, d, NewInKey(ipvs.ProtoTCP, netip.AddrPortFrom(cl, 999), netip.AddrPortFrom(vip, 80)), t0, &c)
		tb.In(NewInKey(ipvs.ProtoTCP, netip.AddrPortFrom(cl, 999), netip.AddrPortFrom(vip, 80)), TCPAck, t0, &c)
	}
	checkCounts(t, "created", d, 20, 0, 20)
	if n := tb.Expire(t0 + 5000*sec); n != 40 {
		t.Fatalf("removed %d, want 40", n)
	}
	checkCounts(t, "gone", d, 0, 0, 0)
}
