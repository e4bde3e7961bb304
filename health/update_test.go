package health

import (
	"testing"
	"time"
)

// A reload keeps the state of unchanged checkers: a failed real server stays out (not re-added),
// a healthy one keeps its timer (no new bootstrap check), a weight change is an edit, a removed
// real server is deleted, a new one is added at once and checked after the bootstrap delay.
func TestUpdateKeepsCheckerState(t *testing.T) {
	clock := NewFakeClock(t0)
	p1 := &fakeProbe{kind: KindTCP, def: true}
	p2 := &fakeProbe{kind: KindTCP, def: false}
	p3 := &fakeProbe{kind: KindTCP, def: true}
	cfg := one(clock, tcpTiming, p1, p2, p3)
	h := newHarness(t, []ServiceConfig{cfg})
	h.eng.Start()
	h.at(1 * time.Second) // rs2 fails its first check: deleted
	equal(t, "start", h.app.take(), []string{
		"rs [198.18.2.11]:tcp:80 w1", "rs [198.18.2.12]:tcp:80 w1", "rs [198.18.2.13]:tcp:80 w1",
		"rs [198.18.2.12]:tcp:80 del"})

	// Reload at 5 s: rs1's weight becomes 3, rs2 unchanged (still failing), rs3 removed, rs4 new.
	p4 := &fakeProbe{kind: KindTCP, def: true, clock: clock}
	next := cfg
	next.Reals = []RealConfig{cfg.Reals[0], cfg.Reals[1],
		{Dest: rs(4), Weight: 1, Checkers: []CheckerConfig{withProbe(tcpTiming, p4)}}}
	next.Reals[0].Weight = 3
	h.at(5 * time.Second)
	if err := h.eng.Update([]ServiceConfig{next}); err != nil {
		t.Fatal(err)
	}
	equal(t, "reload", h.app.take(), []string{
		"rs [198.18.2.13]:tcp:80 del", "rs [198.18.2.11]:tcp:80 w3", "rs [198.18.2.14]:tcp:80 w1"})
	if msgs := h.messages(); !contains(msgs, "Changing weight from 1 to 3 for active service [198.18.2.11]:tcp:80 of VS [198.51.100.10]:tcp:80") {
		t.Errorf("weight change not logged: %q", msgs)
	}

	// The kept checkers keep their schedule (next check at 11 s); the new one starts after the
	// bootstrap delay (6 s); the removed one is not checked again.
	h.at(11 * time.Second)
	equal(t, "rs1 checks", p1.times(), secs(1, 11))
	equal(t, "rs2 checks", p2.times(), secs(1, 11))
	equal(t, "rs3 checks", p3.times(), secs(1))
	equal(t, "rs4 checks", p4.times(), secs(6))
	equal(t, "no change", h.app.take(), nil)

	st := h.eng.Status()[0]
	if st.Reals[1].Alive || st.Reals[1].Present {
		t.Errorf("failed rs2 re-added by the reload: %+v", st.Reals[1])
	}
	if st.Reals[0].Configured != 3 || st.Reals[0].Weight != 3 || st.Reals[0].Checkers[0].Checks != 2 {
		t.Errorf("rs1 after reload: %+v", st.Reals[0])
	}

	// rs2 recovers: added back as usual.
	p2.set(true)
	h.at(21 * time.Second)
	equal(t, "recovery", h.app.take(), []string{"rs [198.18.2.12]:tcp:80 w1"})
}

// A changed checker is a new checker (state restarts); removing the failing checker of a real
// server brings it back; a removed service's destinations are deleted; a new service starts.
func TestUpdateChangedCheckerAndServices(t *testing.T) {
	clock := NewFakeClock(t0)
	ok := &fakeProbe{kind: KindTCP, def: true}
	bad := &fakeProbe{kind: KindHTTP, def: false}
	cfg := ServiceConfig{Ref: vs80(), Quorum: 1, Reals: []RealConfig{{Dest: rs(1), Weight: 2,
		Checkers: []CheckerConfig{withProbe(tcpTiming, ok), withProbe(tcpTiming, bad)}}}}
	ok.clock, bad.clock = clock, clock
	h := newHarness(t, []ServiceConfig{cfg})
	h.eng.Start()
	h.at(1 * time.Second)
	equal(t, "start", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w2", "rs [198.18.2.11]:tcp:80 del"})

	// Drop the failing HTTP checker: the real server is alive again at once.
	next := cfg
	next.Reals = []RealConfig{cfg.Reals[0]}
	next.Reals[0].Checkers = []CheckerConfig{withProbe(tcpTiming, ok)}
	if err := h.eng.Update([]ServiceConfig{next}); err != nil {
		t.Fatal(err)
	}
	equal(t, "failing checker removed", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w2"})

	// A changed timing is a new checker: first check after the bootstrap delay.
	h.at(2 * time.Second)
	changed := tcpTiming
	changed.DelayLoop = 3 * time.Second
	next2 := next
	next2.Reals = []RealConfig{next.Reals[0]}
	next2.Reals[0].Checkers = []CheckerConfig{withProbe(changed, ok)}
	other := ServiceRef{Proto: ProtoTCP, Addr: vs80().Addr, Port: 443}
	p := &fakeProbe{kind: KindTCP, def: true, clock: clock}
	svc2 := ServiceConfig{Ref: other, Quorum: 1, Reals: []RealConfig{{Dest: rs(5), Weight: 1,
		Checkers: []CheckerConfig{withProbe(tcpTiming, p)}}}}
	if err := h.eng.Update([]ServiceConfig{next2, svc2}); err != nil {
		t.Fatal(err)
	}
	equal(t, "new service", h.app.take(), []string{"rs [198.18.2.15]:tcp:80 w1"})
	before := len(ok.calls)
	h.at(3 * time.Second) // the new checker's first check (2 s + 1 s)
	if len(ok.calls) != before+1 {
		t.Fatalf("changed checker not restarted: calls at %v", ok.times())
	}
	// Remove the first service: its real server is deleted.
	if err := h.eng.Update([]ServiceConfig{svc2}); err != nil {
		t.Fatal(err)
	}
	equal(t, "service removed", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	n := len(ok.calls)
	h.at(30 * time.Second)
	if len(ok.calls) != n {
		t.Errorf("removed service still checked: %v", ok.times())
	}

	// A bad configuration changes nothing.
	if err := h.eng.Update([]ServiceConfig{svc2, svc2}); err == nil {
		t.Error("duplicate service accepted")
	}
	if got := len(h.eng.Status()); got != 1 {
		t.Errorf("%d services after a refused update", got)
	}
}

func withProbe(c CheckerConfig, p Probe) CheckerConfig {
	c.Probe = p
	return c
}
