package conntrack

import (
	"errors"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"gvs/ipvs"
)

const sec = int64(time.Second)

// t0 is an arbitrary, not tick-aligned start of the fake clock.
const t0 = 5000*sec + 123_456_789

var (
	vip    = netip.MustParseAddr("203.0.113.10")
	client = netip.MustParseAddr("198.18.0.2")
)

func newDest(t testing.TB, m ipvs.Method, rip string, port uint16) *ipvs.Dest {
	t.Helper()
	svc := ipvs.NewService(ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}})
	d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: netip.MustParseAddr(rip), Port: port, Method: m, Weight: 1})
	svc.SetDests([]*ipvs.Dest{d})
	return d
}

func checkCounts(t *testing.T, step string, d *ipvs.Dest, active, inact, persist int32) {
	t.Helper()
	a, i, p := d.ActiveConns.Load(), d.InactConns.Load(), d.PersistConns.Load()
	if a != active || i != inact || p != persist {
		t.Fatalf("%s: dest counters active/inact/persist = %d/%d/%d, want %d/%d/%d", step, a, i, p, active, inact, persist)
	}
}

func inKey(proto ipvs.Protocol, cport uint16) InKey {
	return NewInKey(proto, netip.AddrPortFrom(client, cport), netip.AddrPortFrom(vip, 80))
}

func TestNATPath(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 1})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	k := inKey(ipvs.ProtoTCP, 40000)
	rk := NewReplyKey(ipvs.ProtoTCP, netip.AddrPortFrom(d.Addr, 8080), netip.AddrPortFrom(client, 40000))
	var c Conn
	now := int64(t0)

	if tb.In(k, TCPSyn, now, &c) {
		t.Fatal("In found a connection in an empty table")
	}
	if err := tb.Create(k, d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
		t.Fatal(err)
	}
	if c.State != StateSynRecv || c.Method != ipvs.Masq || c.Flags&FlagNoOutput != 0 || c.Dest != d {
		t.Fatalf("after SYN: %+v", c)
	}
	if c.DAddr != d.Addr || c.DPort != 8080 || c.VAddr != vip || c.VPort != 80 || c.CAddr != client || c.CPort != 40000 {
		t.Fatalf("addresses: %+v", c)
	}
	if c.Expires != now+60*sec {
		t.Fatalf("SYN_RECV expiry %d, want now+60s", c.Expires-now)
	}
	checkCounts(t, "SYN in", d, 1, 0, 0)

	steps := []struct {
		name  string
		out   bool
		flags uint8
		state State
		a, i  int32
		tmo   int64
	}{
		{"SYN/ACK out", true, TCPSyn | TCPAck, StateSynRecv, 1, 0, 60},
		{"ACK in", false, TCPAck, StateEstablished, 1, 0, 900},
		{"data in", false, TCPAck | 0x08, StateEstablished, 1, 0, 900},
		{"data out", true, TCPAck, StateEstablished, 1, 0, 900},
		{"FIN in", false, TCPFin | TCPAck, StateCloseWait, 0, 1, 60},
		{"FIN out", true, TCPFin | TCPAck, StateTimeWait, 0, 1, 120},
		{"ACK in", false, TCPAck, StateTimeWait, 0, 1, 120},
	}
	for _, st := range steps {
		now += sec
		var ok bool
		if st.out {
			ok = tb.Out(rk, st.flags, now, &c)
		} else {
			ok = tb.In(k, st.flags, now, &c)
		}
		if !ok {
			t.Fatalf("%s: connection not found", st.name)
		}
		if c.State != st.state || c.Expires != now+st.tmo*sec {
			t.Fatalf("%s: state %s expires +%ds, want %s +%ds", st.name, c.State, (c.Expires-now)/sec, st.state, st.tmo)
		}
		checkCounts(t, st.name, d, st.a, st.i, 0)
	}
	if c.InPkts != 5 {
		t.Errorf("InPkts = %d, want 5", c.InPkts)
	}
	if n := tb.Expire(now + 120*sec - 1); n != 0 {
		t.Fatalf("Expire before the deadline removed %d", n)
	}
	checkCounts(t, "before expiry", d, 0, 1, 0)
	if n := tb.Expire(now + 120*sec); n != 1 {
		t.Fatalf("Expire at the deadline removed %d, want 1", n)
	}
	checkCounts(t, "after expiry", d, 0, 0, 0)
	if tb.Len() != 0 || tb.PeekOut(rk, now, &c) || tb.PeekIn(k, now, &c) {
		t.Fatal("entry still visible after expiry")
	}
	st := tb.Stats()
	if st.Inserts != 1 || st.Expired != 1 || st.Live != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestDRPath(t *testing.T) {
	for _, m := range []ipvs.Method{ipvs.Route, ipvs.Tunnel} {
		t.Run(m.String(), func(t *testing.T) {
			tb := New(Config{Shards: 2})
			d := newDest(t, m, "198.19.0.12", 80)
			k := inKey(ipvs.ProtoTCP, 40001)
			var c Conn
			now := int64(t0)
			if err := tb.Create(k, d, 80, TemplateRef{}, TCPSyn, now, &c); err != nil {
				t.Fatal(err)
			}
			if c.State != StateSynRecv || c.Flags&FlagNoOutput == 0 || c.Method != m {
				t.Fatalf("after SYN: %+v", c)
			}
			checkCounts(t, "SYN", d, 1, 0, 0)
			// Not in the reply index: replies bypass the director.
			rk := NewReplyKey(ipvs.ProtoTCP, netip.AddrPortFrom(d.Addr, 80), netip.AddrPortFrom(client, 40001))
			if tb.PeekOut(rk, now, &c) {
				t.Fatal("DR connection found by reply key")
			}
			for _, st := range []struct {
				flags uint8
				want  State
				a, i  int32
			}{
				{TCPAck, StateEstablished, 1, 0},
				{TCPFin | TCPAck, StateFinWait, 0, 1}, // INPUT_ONLY table
				{TCPAck, StateFinWait, 0, 1},
			} {
				now += sec
				if !tb.In(k, st.flags, now, &c) || c.State != st.want {
					t.Fatalf("flags %#x: state %s, want %s", st.flags, c.State, st.want)
				}
				checkCounts(t, st.want.String(), d, st.a, st.i, 0)
			}
			if c.Expires != now+120*sec {
				t.Fatalf("FIN_WAIT expiry +%v", c.Expires-now)
			}
			if !tb.PeekIn(k, now+120*sec-1, &c) {
				t.Fatal("gone before 120 s")
			}
			if tb.PeekIn(k, now+120*sec, &c) {
				t.Fatal("still visible at 120 s")
			}
			if n := tb.Expire(now + 120*sec); n != 1 {
				t.Fatalf("Expire removed %d", n)
			}
			checkCounts(t, "expired", d, 0, 0, 0)
		})
	}
}

func TestUDP(t *testing.T) {
	tb := New(Config{Shards: 1})
	d := newDest(t, ipvs.Masq, "198.19.0.13", 53)
	k := inKey(ipvs.ProtoUDP, 5353)
	rk := NewReplyKey(ipvs.ProtoUDP, netip.AddrPortFrom(d.Addr, 53), netip.AddrPortFrom(client, 5353))
	var c Conn
	now := int64(t0)
	if err := tb.Create(k, d, 53, TemplateRef{}, 0, now, &c); err != nil {
		t.Fatal(err)
	}
	if c.State != StateUDP || c.State.String() != "UDP" || c.Expires != now+300*sec {
		t.Fatalf("new UDP: %+v", c)
	}
	checkCounts(t, "created", d, 0, 1, 0)
	for i := 0; i < 5; i++ {
		now += 299 * sec
		var ok bool
		if i%2 == 0 {
			ok = tb.In(k, 0xff, now, &c)
		} else {
			ok = tb.Out(rk, 0xff, now, &c)
		}
		if !ok || c.Expires != now+300*sec || c.State != StateUDP {
			t.Fatalf("packet %d: ok=%v %+v", i, ok, c)
		}
		checkCounts(t, "packet", d, 0, 1, 0)
		if n := tb.Expire(now); n != 0 {
			t.Fatalf("expired %d while being re-armed", n)
		}
	}
	if n := tb.Expire(now + 300*sec); n != 1 {
		t.Fatalf("Expire removed %d", n)
	}
	checkCounts(t, "expired", d, 0, 0, 0)
}

func TestSetTimeouts(t *testing.T) {
	tb := New(Config{Timeouts: Timeouts{UDP: 10 * time.Second}})
	if tcp, fin, udp := tb.GetTimeouts(); tcp != 900*time.Second || fin != 120*time.Second || udp != 10*time.Second {
		t.Fatalf("initial %v %v %v", tcp, fin, udp)
	}
	tb.SetTimeouts(0, 30*time.Second, 0)
	if tcp, fin, udp := tb.GetTimeouts(); tcp != 900*time.Second || fin != 30*time.Second || udp != 10*time.Second {
		t.Fatalf("after --set 0 30 0: %v %v %v", tcp, fin, udp)
	}
	tb.SetTimeouts(3600*time.Second, 0, 60*time.Second)
	all := tb.Timeouts()
	if all.TCP[StateEstablished] != time.Hour || all.TCP[StateFinWait] != 30*time.Second || all.UDP != time.Minute ||
		all.TCP[StateSynRecv] != 60*time.Second {
		t.Fatalf("after second --set: %+v", all)
	}
	// Live connections use the new values from their next packet on.
	d := newDest(t, ipvs.Route, "198.19.0.14", 80)
	var c Conn
	k := inKey(ipvs.ProtoTCP, 1)
	if err := tb.Create(k, d, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil {
		t.Fatal(err)
	}
	tb.In(k, TCPAck, t0+sec, &c)
	if c.Expires != t0+sec+3600*sec {
		t.Errorf("ESTABLISHED expiry +%ds", (c.Expires-t0-sec)/sec)
	}
	tb.In(k, TCPFin, t0+2*sec, &c)
	if c.Expires != t0+2*sec+30*sec {
		t.Errorf("FIN_WAIT expiry +%ds", (c.Expires-t0-2*sec)/sec)
	}
	// The shorter timeout must also be honoured by Expire.
	if n := tb.Expire(t0 + 32*sec); n != 1 {
		t.Errorf("Expire after shortened timeout removed %d", n)
	}
	u := inKey(ipvs.ProtoUDP, 2)
	if err := tb.Create(u, d, 80, TemplateRef{}, 0, t0, &c); err != nil || c.Expires != t0+60*sec {
		t.Errorf("UDP: err %v expiry +%ds", err, (c.Expires-t0)/sec)
	}
}

func TestSecureTCP(t *testing.T) {
	tb := New(Config{SecureTCP: true})
	d := newDest(t, ipvs.Masq, "198.19.0.15", 80)
	k := inKey(ipvs.ProtoTCP, 3)
	rk := NewReplyKey(ipvs.ProtoTCP, netip.AddrPortFrom(d.Addr, 80), netip.AddrPortFrom(client, 3))
	var c Conn
	if err := tb.Create(k, d, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil || c.State != StateSynRecv {
		t.Fatalf("SYN: %v %s", err, c.State)
	}
	// secure_tcp: an ACK before the SYN/ACK does not establish.
	if tb.In(k, TCPAck, t0+1, &c); c.State != StateSynRecv {
		t.Fatalf("early ACK: %s", c.State)
	}
	if tb.Out(rk, TCPSyn|TCPAck, t0+2, &c); c.State != StateSynAck {
		t.Fatalf("SYN/ACK: %s", c.State)
	}
	checkCounts(t, "SYNACK", d, 1, 0, 0)
	// The client's ACK keeps SYNACK; the first output ACK establishes.
	if tb.In(k, TCPAck, t0+3, &c); c.State != StateSynAck {
		t.Fatalf("ACK in: %s", c.State)
	}
	if tb.Out(rk, TCPAck, t0+3, &c); c.State != StateEstablished {
		t.Fatalf("ACK out: %s", c.State)
	}
	tb.SetSecureTCP(false)
	if tb.In(k, TCPFin, t0+4, &c); c.State != StateCloseWait {
		t.Fatalf("FIN: %s", c.State)
	}
}

func TestExpiredInvisibleBeforeExpire(t *testing.T) {
	tb := New(Config{Shards: 1})
	d := newDest(t, ipvs.Masq, "198.19.0.16", 80)
	k := inKey(ipvs.ProtoTCP, 4)
	var c Conn
	if err := tb.Create(k, d, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil {
		t.Fatal(err)
	}
	dl := c.Expires
	if !tb.PeekIn(k, dl-1, &c) {
		t.Fatal("not visible 1 ns before its deadline")
	}
	if tb.PeekIn(k, dl, &c) || tb.Len() != 1 {
		t.Fatal("PeekIn saw a dead entry, or removed it")
	}
	if tb.In(k, TCPAck, dl, &c) {
		t.Fatal("In saw a dead entry")
	}
	if tb.Len() != 0 || tb.Stats().Expired != 1 {
		t.Fatalf("In did not reclaim the dead entry: len %d", tb.Len())
	}
	checkCounts(t, "reclaimed by In", d, 0, 0, 0)
	// Create over a dead entry replaces it.
	if err := tb.Create(k, d, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil {
		t.Fatal(err)
	}
	if err := tb.Create(k, d, 80, TemplateRef{}, TCPAck, c.Expires, &c); err != nil || c.State != StateEstablished || c.InPkts != 1 {
		t.Fatalf("re-create: %v %+v", err, c)
	}
	checkCounts(t, "re-created", d, 1, 0, 0)
	if tb.Expire(c.Expires) != 1 || tb.Len() != 0 {
		t.Fatal("not expired")
	}
}

func TestCreateExisting(t *testing.T) {
	tb := New(Config{})
	d1 := newDest(t, ipvs.Masq, "198.19.0.17", 80)
	d2 := newDest(t, ipvs.Masq, "198.19.0.18", 80)
	k := inKey(ipvs.ProtoTCP, 5)
	var c Conn
	if err := tb.Create(k, d1, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil {
		t.Fatal(err)
	}
	if err := tb.Create(k, d2, 80, TemplateRef{}, TCPAck, t0+1, &c); err != nil {
		t.Fatal(err)
	}
	if c.Dest != d1 || c.State != StateEstablished || c.InPkts != 2 || tb.Len() != 1 {
		t.Fatalf("second Create: %+v len %d", c, tb.Len())
	}
	checkCounts(t, "d2", d2, 0, 0, 0)
	if err := tb.Create(k, nil, 80, TemplateRef{}, TCPSyn, t0, &c); !errors.Is(err, ErrNoDest) {
		t.Fatalf("nil dest: %v", err)
	}
}

func TestCapacity(t *testing.T) {
	tb := New(Config{Shards: 4, Capacity: 5})
	d := newDest(t, ipvs.Route, "198.19.0.19", 80)
	var c Conn
	// Established connections: a full table evicts only half-open ones
	// (defense_test.go).
	for i := 0; i < 4; i++ {
		if err := tb.Create(inKey(ipvs.ProtoTCP, uint16(100+i)), d, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil {
			t.Fatal(err)
		}
		tb.In(inKey(ipvs.ProtoTCP, uint16(100+i)), TCPAck, t0, &c)
	}
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 24, vip, 80)
	if _, err := tb.CreateTemplate(tk, d, 1000*time.Second, t0); err != nil {
		t.Fatal(err)
	}
	err := tb.Create(inKey(ipvs.ProtoTCP, 200), d, 80, TemplateRef{}, TCPSyn, t0+sec, &c)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("6th entry: %v", err)
	}
	if _, err := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 443), d, time.Second, t0); !errors.Is(err, ErrFull) {
		t.Fatalf("template when full: %v", err)
	}
	if st := tb.Stats(); st.FullDrops != 2 || st.Live != 5 {
		t.Fatalf("stats %+v", st)
	}
	checkCounts(t, "full", d, 4, 0, 1)
	// After the ESTABLISHED entries are due, Create reclaims them in its
	// own shard without an Expire call, unless they live elsewhere: try
	// the same keys, which hash to the shards that hold due entries.
	later := t0 + 901*sec
	if err := tb.Create(inKey(ipvs.ProtoTCP, 100), d, 80, TemplateRef{}, TCPSyn, later, &c); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if err := tb.Create(inKey(ipvs.ProtoTCP, 101), d, 80, TemplateRef{}, TCPSyn, later, &c); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	tb.Expire(later)
	if tb.Len() != 3 {
		t.Fatalf("len %d, want 2 conns + 1 template", tb.Len())
	}
	checkCounts(t, "after reclaim", d, 2, 0, 1)
}

func TestRemoveFlushRemoveDest(t *testing.T) {
	tb := New(Config{Shards: 8})
	d1 := newDest(t, ipvs.Masq, "198.19.0.20", 80)
	d2 := newDest(t, ipvs.Route, "198.19.0.21", 80)
	var c Conn
	for i := 0; i < 100; i++ {
		d := d1
		if i%2 == 1 {
			d = d2
		}
		if err := tb.Create(inKey(ipvs.ProtoTCP, uint16(1000+i)), d, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil {
			t.Fatal(err)
		}
	}
	ref, err := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, client, 32, vip, 80), d2, time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Create(inKey(ipvs.ProtoTCP, 9), d2, 80, ref, TCPSyn, t0, &c); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, "d1", d1, 50, 0, 0)
	checkCounts(t, "d2", d2, 51, 0, 1)
	if !tb.Remove(inKey(ipvs.ProtoTCP, 1000)) || tb.Remove(inKey(ipvs.ProtoTCP, 1000)) {
		t.Fatal("Remove")
	}
	checkCounts(t, "d1 after Remove", d1, 49, 0, 0)
	if n := tb.RemoveDest(d2); n != 52 {
		t.Fatalf("RemoveDest removed %d, want 52", n)
	}
	checkCounts(t, "d2 after RemoveDest", d2, 0, 0, 0)
	if n := tb.Flush(); n != 49 {
		t.Fatalf("Flush removed %d", n)
	}
	checkCounts(t, "d1 after Flush", d1, 0, 0, 0)
	if tb.Len() != 0 || tb.Stats().Removed != 102 {
		t.Fatalf("len %d stats %+v", tb.Len(), tb.Stats())
	}
	// The table is reusable after a flush.
	if err := tb.Create(inKey(ipvs.ProtoTCP, 1000), d1, 80, TemplateRef{}, TCPSyn, t0, &c); err != nil || !tb.In(inKey(ipvs.ProtoTCP, 1000), TCPAck, t0, &c) {
		t.Fatalf("reuse: %v", err)
	}
}

func TestWalk(t *testing.T) {
	tb := New(Config{Shards: 4})
	d := newDest(t, ipvs.Masq, "192.168.10.1", 80)
	var c Conn
	now := int64(t0)
	if err := tb.Create(NewInKey(ipvs.ProtoTCP, netip.MustParseAddrPort("10.0.0.2:41234"), netip.MustParseAddrPort("207.175.44.110:80")),
		d, 80, TemplateRef{}, TCPSyn, now, &c); err != nil {
		t.Fatal(err)
	}
	if err := tb.Create(NewInKey(ipvs.ProtoUDP, netip.MustParseAddrPort("10.0.0.2:5353"), netip.MustParseAddrPort("207.175.44.110:53")),
		d, 53, TemplateRef{}, 0, now, &c); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.CreateTemplate(NewFWMarkTemplateKey(1, netip.MustParseAddr("10.0.0.2"), 32), d, 360*time.Second, now); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.CreateTemplate(NewTemplateKey(ipvs.ProtoTCP, netip.MustParseAddr("10.0.0.77"), 24, netip.MustParseAddr("207.175.44.110"), 443),
		d, 360*time.Second, now); err != nil {
		t.Fatal(err)
	}
	var lines []string
	tb.Walk(now+sec, func(c *Conn) {
		r := c.Remaining(now + sec)
		lines = append(lines, strings.Join([]string{c.Proto.String(), c.State.String(),
			netip.AddrPortFrom(c.CAddr, c.CPort).String(), netip.AddrPortFrom(c.VAddr, c.VPort).String(),
			netip.AddrPortFrom(c.DAddr, c.DPort).String(), r.String()}, " "))
	})
	sort.Strings(lines)
	want := []string{
		"IP NONE 10.0.0.2:0 0.0.0.1:0 192.168.10.1:0 5m59s",
		"TCP NONE 10.0.0.0:0 207.175.44.110:443 192.168.10.1:80 5m59s",
		"TCP SYN_RECV 10.0.0.2:41234 207.175.44.110:80 192.168.10.1:80 59s",
		"UDP UDP 10.0.0.2:5353 207.175.44.110:53 192.168.10.1:53 4m59s",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Walk:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	n := 0
	tb.Walk(now+60*sec, func(*Conn) { n++ })
	if n != 3 {
		t.Fatalf("Walk after SYN_RECV expiry listed %d entries", n)
	}
}
