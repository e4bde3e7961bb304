package conntrack

import (
	"testing"
	"time"

	"gvs/ipvs"
)

// TestWalkSeen: with a SeenFunc, Walk lists an ESTABLISHED TCP or UDP
// connection's expiry as the reported last packet plus the state's timeout
// when that is later than its timer, never earlier, and leaves other
// states alone.
func TestWalkSeen(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 1, Timeouts: Timeouts{UDP: 10 * time.Second}})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	now := int64(t0)
	var c Conn
	est, syn, udp := inKey(ipvs.ProtoTCP, 40000), inKey(ipvs.ProtoTCP, 40001), inKey(ipvs.ProtoUDP, 40002)
	for _, k := range []InKey{est, syn, udp} {
		if err := tb.Create(k, d, 8080, TemplateRef{}, TCPSyn, now, &c); err != nil {
			t.Fatal(err)
		}
	}
	// est: SYN, then the ACK of the handshake from the client.
	if !tb.In(est, TCPAck, now, &c) || c.State != StateEstablished {
		t.Fatalf("not established: %v", c.State)
	}
	estTO, udpTO := int64(tb.Timeouts().TCP[StateEstablished]), int64(10*time.Second)
	expires := func(at int64) map[uint16]int64 {
		m := map[uint16]int64{}
		tb.Walk(at, func(c *Conn) { m[c.CPort] = c.Expires })
		return m
	}
	base := expires(now)
	seen := now + 3*sec
	tb.SetSeen(func(c *Conn) (int64, bool) { return seen, true })
	got := expires(now + 4*sec)
	if got[40000] != seen+estTO || got[40002] != seen+udpTO {
		t.Errorf("listed ESTABLISHED %v, UDP %v after the last packet, want their timeouts", time.Duration(got[40000]-seen), time.Duration(got[40002]-seen))
	}
	if got[40001] != base[40001] {
		t.Errorf("a SYN_RECV connection listed from the last-seen time")
	}
	seen = now - 5*sec // before the timer was set: the timer stands
	if got := expires(now + 4*sec); got[40000] != base[40000] || got[40002] != base[40002] {
		t.Errorf("an earlier last-seen time lowered the listed expiry")
	}
	tb.SetSeen(nil)
	seen = now + 3*sec
	if got := expires(now + 4*sec); got[40002] != base[40002] {
		t.Errorf("SetSeen(nil) left the SeenFunc in place")
	}
}

// TestChanges: removals other than by a timer raise Changes; packets and
// timers do not.
func TestChanges(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 1})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	now := int64(t0)
	var c Conn
	for p := range uint16(4) {
		if err := tb.Create(inKey(ipvs.ProtoUDP, 40000+p), d, 8080, TemplateRef{}, 0, now, &c); err != nil {
			t.Fatal(err)
		}
	}
	ch := tb.Changes()
	tb.In(inKey(ipvs.ProtoUDP, 40000), 0, now+sec, &c)
	tb.Expire(now + 2*sec)
	if tb.Changes() != ch {
		t.Fatal("a packet or Expire raised Changes")
	}
	for _, step := range []struct {
		name string
		do   func()
	}{
		{"Remove", func() { tb.Remove(inKey(ipvs.ProtoUDP, 40001)) }},
		{"RemoveDest", func() { tb.RemoveDest(d) }},
	} {
		step.do()
		if n := tb.Changes(); n == ch {
			t.Errorf("%s did not raise Changes", step.name)
		} else {
			ch = n
		}
	}
}
