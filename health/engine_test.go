package health

import (
	"strings"
	"testing"
	"time"
)

// one builds a service with one real server per probe, each with one checker.
func one(clock *FakeClock, cc CheckerConfig, probes ...*fakeProbe) ServiceConfig {
	sc := ServiceConfig{Ref: vs80(), Quorum: 1}
	for i, p := range probes {
		p.clock = clock
		c := cc
		c.Probe = p
		sc.Reals = append(sc.Reals, RealConfig{Dest: rs(i + 1), Weight: 1, Checkers: []CheckerConfig{c}})
	}
	return sc
}

var tcpTiming = CheckerConfig{DelayLoop: 10 * time.Second, DelayBeforeRetry: time.Second, Retry: 2}

// Not alpha: the real server is added before any check, and the first result decides at once.
func TestFirstFailureDecides(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: false}
	h := newHarness(t, []ServiceConfig{one(clock, tcpTiming, p)})
	h.eng.Start()
	equal(t, "start", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
	h.at(1 * time.Second)
	// retry 2, but the very first failure takes the server out (retry_it starts at retry).
	equal(t, "first failure", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	equal(t, "check times", p.times(), secs(1))
	msgs := h.messages()
	for _, want := range []string{
		"TCP_CHECK on service [198.18.2.11]:tcp:80 failed.",
		"Removing service [198.18.2.11]:tcp:80 from VS [198.51.100.10]:tcp:80",
		"Lost quorum 1-0=1 > 0 for VS [198.51.100.10]:tcp:80",
	} {
		if !contains(msgs, want) {
			t.Errorf("log lacks %q; got %q", want, msgs)
		}
	}
	// While down it polls every delay_loop, no back-off, no retries.
	h.at(31 * time.Second)
	equal(t, "down polling", p.times(), secs(1, 11, 21, 31))
}

func TestFirstSuccessKeepsServer(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: true}
	h := newHarness(t, []ServiceConfig{one(clock, tcpTiming, p)})
	h.eng.Start()
	h.app.take()
	h.at(1 * time.Second)
	equal(t, "no change", h.app.take(), nil)
	if msgs := h.messages(); !contains(msgs, "TCP connection to [198.18.2.11]:tcp:80 success.") {
		t.Errorf("first success not logged: %q", msgs)
	}
}

// Once it has run, a checker falls after retry+1 failures spaced by delay_before_retry, and one
// success brings it back.
func TestFallAfterRetryPlusOne(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: true}
	h := newHarness(t, []ServiceConfig{one(clock, tcpTiming, p)})
	h.eng.Start()
	h.at(1 * time.Second) // first check ok
	h.app.take()
	p.set(false)
	h.at(11 * time.Second) // failure 1
	h.at(12 * time.Second) // failure 2 (retry 1)
	equal(t, "still in after 2 failures", h.app.take(), nil)
	h.at(13 * time.Second) // failure 3 (retry 2): down
	equal(t, "down after retry+1", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	equal(t, "check times", p.times(), secs(1, 11, 12, 13))
	if msgs := h.messages(); !contains(msgs, "TCP_CHECK on service [198.18.2.11]:tcp:80 failed after 2 retries.") {
		t.Errorf("fall not logged: %q", msgs)
	}
	p.set(true)
	h.at(23 * time.Second)
	equal(t, "one success brings it back", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
	if msgs := h.messages(); !contains(msgs, "Adding service [198.18.2.11]:tcp:80 to VS [198.51.100.10]:tcp:80") {
		t.Errorf("recovery not logged: %q", msgs)
	}
	// A single failure between successes does not take it out, and resets the count.
	p.set(false)
	h.at(33 * time.Second)
	p.set(true)
	h.at(34 * time.Second)
	p.set(false)
	h.at(44 * time.Second)
	h.at(45 * time.Second)
	equal(t, "interrupted failures", h.app.take(), nil)
	equal(t, "times", p.times()[5:], secs(33, 34, 44, 45))
}

// rise (gvs): a down checker needs Rise successes in a row, spaced by delay_before_retry.
func TestRise(t *testing.T) {
	clock := NewFakeClock(t0)
	cc := tcpTiming
	cc.Rise = 3
	p := &fakeProbe{kind: KindTCP, def: false}
	h := newHarness(t, []ServiceConfig{one(clock, cc, p)})
	h.eng.Start()
	h.at(1 * time.Second) // down at once
	h.app.take()
	p.set(true)
	h.at(11 * time.Second)
	h.at(12 * time.Second)
	equal(t, "two successes", h.app.take(), nil)
	p.set(false)
	h.at(13 * time.Second) // breaks the run
	p.set(true)
	h.at(23 * time.Second)
	h.at(24 * time.Second)
	equal(t, "two again", h.app.take(), nil)
	h.at(25 * time.Second)
	equal(t, "third success", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
	equal(t, "times", p.times(), secs(1, 11, 12, 13, 23, 24, 25))
}

// alpha: the real server starts out and comes in on its first success; with inhibit it starts at
// weight 0. The first failure under alpha runs notify_down without any IPVS change.
func TestAlpha(t *testing.T) {
	for _, inhibit := range []bool{false, true} {
		clock := NewFakeClock(t0)
		cc := tcpTiming
		cc.Alpha = true
		p := &fakeProbe{kind: KindTCP, def: false}
		sc := one(clock, cc, p)
		sc.Reals[0].Inhibit = inhibit
		sc.Reals[0].NotifyDown = &Script{Argv: []string{"down.sh"}}
		sc.Reals[0].NotifyUp = &Script{Argv: []string{"up.sh"}}
		h := newHarness(t, []ServiceConfig{sc})
		h.eng.Start()
		start := []string(nil)
		if inhibit {
			start = []string{"rs [198.18.2.11]:tcp:80 w0"}
		}
		equal(t, "start", h.app.take(), start)
		h.at(1 * time.Second)
		equal(t, "first failure", h.app.take(), nil)
		equal(t, "alpha first failure notifies", h.scripts.runs, []string{"down.sh"})
		p.set(true)
		h.at(11 * time.Second)
		equal(t, "first success", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
		equal(t, "notify_up", h.scripts.runs, []string{"down.sh", "up.sh"})
		verb := "Adding service [198.18.2.11]:tcp:80 to VS"
		if inhibit {
			verb = "Enabling service [198.18.2.11]:tcp:80 of VS"
		}
		if msgs := h.messages(); !contains(msgs, verb+" [198.51.100.10]:tcp:80") {
			t.Errorf("inhibit=%v: %q", inhibit, msgs)
		}
	}
}

func TestInhibitOnFailure(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: false}
	sc := one(clock, tcpTiming, p)
	sc.Reals[0].Inhibit = true
	sc.Reals[0].Weight = 5
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	h.at(1 * time.Second)
	equal(t, "weight 0, not deleted", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w5", "rs [198.18.2.11]:tcp:80 w0"})
	if msgs := h.messages(); !contains(msgs, "Disabling service [198.18.2.11]:tcp:80 of VS [198.51.100.10]:tcp:80") {
		t.Errorf("%q", msgs)
	}
	p.set(true)
	h.at(11 * time.Second)
	equal(t, "weight back", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w5"})
}

// A real server is alive only while all its checkers are up.
func TestRealServerIsAndOfCheckers(t *testing.T) {
	clock := NewFakeClock(t0)
	a := &fakeProbe{kind: KindTCP, def: true, clock: clock}
	b := &fakeProbe{kind: KindUDP, def: true, clock: clock}
	ca, cb := tcpTiming, tcpTiming
	ca.Probe, cb.Probe = a, b
	cb.Retry = 0
	sc := ServiceConfig{Ref: vs80(), Quorum: 1, Reals: []RealConfig{{Dest: rs(1), Weight: 1, Checkers: []CheckerConfig{ca, cb}}}}
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	h.at(1 * time.Second)
	h.app.take()
	b.set(false)
	h.at(11 * time.Second)
	equal(t, "one checker down", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	a.set(false)
	h.at(21 * time.Second)
	b.set(true)
	h.at(31 * time.Second)
	equal(t, "other checker still down", h.app.take(), nil)
	a.set(true)
	h.at(41 * time.Second)
	equal(t, "all up", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
}

// keepalived.conf.quorum: ten servers of weight 1, quorum 7, hysteresis 2: the quorum is gained
// at 9 live servers and lost below 5. With a sorry server, losing it swaps the pool for the
// sorry server and gaining it swaps back.
func TestQuorumHysteresisAndSorryServer(t *testing.T) {
	clock := NewFakeClock(t0)
	var probes []*fakeProbe
	for range 10 {
		probes = append(probes, &fakeProbe{kind: KindTCP, def: true})
	}
	cc := tcpTiming
	cc.Retry = 0
	sc := one(clock, cc, probes...)
	sc.Quorum, sc.Hysteresis = 7, 2
	sc.QuorumUp = &Script{Argv: []string{"qup"}}
	sc.QuorumDown = &Script{Argv: []string{"qdown"}}
	sc.Sorry = &SorryConfig{Dest: DestRef{Addr: rs(99).Addr, Port: 80}, Weight: 1}
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	if ops := h.app.take(); len(ops) != 10 {
		t.Fatalf("start: %q", ops)
	}
	if msgs := h.messages(); !contains(msgs, "Gained quorum 7+2=9 <= 10 for VS [198.51.100.10]:tcp:80") {
		t.Fatalf("start quorum: %q", msgs)
	}
	equal(t, "quorum_up at start", h.scripts.runs, []string{"qup"})
	h.at(1 * time.Second)
	// Take servers down one by one: 9, 8, 7, 6, 5 alive keep the quorum (5 >= 7-2).
	for i := range 5 {
		probes[i].set(false)
		h.at(time.Duration(11+10*i) * time.Second)
	}
	ops := h.app.take()
	if len(ops) != 5 || h.status().QuorumUp != true {
		t.Fatalf("5 alive: quorum %v ops %q", h.status().QuorumUp, ops)
	}
	probes[5].set(false)
	h.at(61 * time.Second) // 4 alive < 5: lost
	equal(t, "lost", h.app.take(), []string{
		"rs [198.18.2.16]:tcp:80 del",
		"rs [198.18.2.17]:tcp:80 del", "rs [198.18.2.18]:tcp:80 del", "rs [198.18.2.19]:tcp:80 del", "rs [198.18.2.20]:tcp:80 del",
		"sorry [198.18.2.109]:tcp:80 w1"})
	msgs := h.messages()
	for _, want := range []string{
		"Removing service [198.18.2.16]:tcp:80 from VS [198.51.100.10]:tcp:80",
		"Lost quorum 7-2=5 > 4 for VS [198.51.100.10]:tcp:80",
		"Adding sorry server [198.18.2.109]:tcp:80 to VS [198.51.100.10]:tcp:80",
		"Removing alive servers from the pool for VS [198.51.100.10]:tcp:80",
	} {
		if !contains(msgs, want) {
			t.Errorf("log lacks %q: %q", want, msgs)
		}
	}
	equal(t, "quorum_down", h.scripts.runs, []string{"qup", "qdown"})
	// Coming back: 5..8 alive do not regain it (needs 9); IPVS untouched meanwhile.
	for i := range 4 {
		probes[i].set(true)
		h.at(time.Duration(71+10*i) * time.Second)
	}
	equal(t, "recovering under sorry server", h.app.take(), nil)
	if h.status().QuorumUp {
		t.Fatal("quorum regained below quorum+hysteresis")
	}
	probes[4].set(true)
	h.at(111 * time.Second) // 9 alive
	ops = h.app.take()
	if ops[0] != "sorry [198.18.2.109]:tcp:80 del" || len(ops) != 10 {
		t.Fatalf("gained: %q", ops)
	}
	if msgs := h.messages(); !contains(msgs, "Gained quorum 7+2=9 <= 9 for VS [198.51.100.10]:tcp:80") ||
		!contains(msgs, "Removing sorry server [198.18.2.109]:tcp:80 from VS [198.51.100.10]:tcp:80") {
		t.Errorf("%q", msgs)
	}
}

// A service that starts without quorum gets its sorry server at once; sorry_server_inhibit
// keeps the sorry server configured and toggles its weight.
func TestSorryServerAtStartAndInhibit(t *testing.T) {
	clock := NewFakeClock(t0)
	cc := tcpTiming
	cc.Alpha = true
	p := &fakeProbe{kind: KindTCP, def: true}
	sc := one(clock, cc, p)
	sc.Sorry = &SorryConfig{Dest: rs(99), Weight: 1, Inhibit: true}
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	equal(t, "start", h.app.take(), []string{"sorry [198.18.2.109]:tcp:80 w1"})
	if msgs := h.messages(); !contains(msgs, "Starting with quorum down 1-0=1 > 0 for VS [198.51.100.10]:tcp:80") ||
		!contains(msgs, "Enabling sorry server [198.18.2.109]:tcp:80 to VS [198.51.100.10]:tcp:80") {
		t.Errorf("%q", msgs)
	}
	h.at(1 * time.Second)
	equal(t, "up", h.app.take(), []string{"sorry [198.18.2.109]:tcp:80 w0", "rs [198.18.2.11]:tcp:80 w1"})
	if msgs := h.messages(); !contains(msgs, "Disabling sorry server [198.18.2.109]:tcp:80 from VS [198.51.100.10]:tcp:80") {
		t.Errorf("%q", msgs)
	}
}

// Without a sorry server, quorum drives only the scripts: real servers come and go as usual.
func TestQuorumWithoutSorryServer(t *testing.T) {
	clock := NewFakeClock(t0)
	a, b := &fakeProbe{kind: KindTCP, def: true}, &fakeProbe{kind: KindTCP, def: true}
	sc := one(clock, tcpTiming, a, b)
	sc.Quorum = 2
	sc.QuorumDown = &Script{Argv: []string{"qdown"}}
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	h.at(1 * time.Second)
	h.app.take()
	a.set(false)
	h.at(13 * time.Second) // 11, 12, 13: retry 2
	equal(t, "real server removed as usual", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	equal(t, "quorum_down ran", h.scripts.runs, []string{"qdown"})
}

func TestSlowstart(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: false}
	sc := one(clock, tcpTiming, p)
	sc.Reals[0].Weight = 10
	sc.Reals[0].Slowstart = 10 * time.Second
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	equal(t, "no slowstart at start", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w10"})
	h.at(1 * time.Second)
	h.app.take()
	p.set(true)
	h.at(11 * time.Second)
	equal(t, "recovery starts at 1", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
	h.at(12 * time.Second)
	equal(t, "1 s", h.app.take(), nil) // 10*1/10 = 1: unchanged
	h.at(13 * time.Second)
	equal(t, "2 s", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w2"})
	h.at(16 * time.Second)
	equal(t, "5 s", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w3", "rs [198.18.2.11]:tcp:80 w4", "rs [198.18.2.11]:tcp:80 w5"})
	if !h.status().Reals[0].Slowstart {
		t.Fatal("status does not show the ramp")
	}
	h.at(30 * time.Second)
	ops := h.app.take()
	if ops[len(ops)-1] != "rs [198.18.2.11]:tcp:80 w10" || len(ops) != 5 {
		t.Fatalf("end of ramp: %q", ops)
	}
	if h.status().Reals[0].Slowstart || clock.Pending() != 1 {
		t.Fatalf("ramp still running (timers %d)", clock.Pending())
	}
}

// An operator's drain holds the real server at weight 0 whatever its checks say, and takes it out
// of the quorum weight.
func TestDrainOverridesChecks(t *testing.T) {
	clock := NewFakeClock(t0)
	a, b := &fakeProbe{kind: KindTCP, def: true}, &fakeProbe{kind: KindTCP, def: true}
	sc := one(clock, tcpTiming, a, b)
	sc.Quorum = 2
	sc.QuorumDown = &Script{Argv: []string{"qdown"}}
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	h.at(1 * time.Second)
	h.app.take()
	if err := h.eng.SetDrain(vs80(), rs(1), true); err != nil {
		t.Fatal(err)
	}
	equal(t, "drained", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w0"})
	equal(t, "drain counts against quorum", h.scripts.runs, []string{"qdown"})
	h.at(31 * time.Second) // checks keep succeeding: nothing changes
	a.set(false)
	h.at(41 * time.Second)
	h.at(42 * time.Second)
	h.at(43 * time.Second)
	equal(t, "down while drained", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	a.set(true)
	h.at(53 * time.Second)
	equal(t, "up while drained stays out", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w0"})
	if err := h.eng.SetDrain(vs80(), rs(1), false); err != nil {
		t.Fatal(err)
	}
	equal(t, "undrained", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
	if err := h.eng.SetDrain(vs80(), rs(7), true); err == nil {
		t.Fatal("unknown real server accepted")
	}
}

// A failing Applier leaves the engine's applied state alone, so the next result retries.
func TestApplierErrorRetried(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: true}
	h := newHarness(t, []ServiceConfig{one(clock, tcpTiming, p)})
	h.app.fail = true
	h.eng.Start()
	if st := h.status(); st.Reals[0].Present {
		t.Fatal("present despite the error")
	}
	h.app.fail = false
	h.at(1 * time.Second)
	equal(t, "retried", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
}

func TestMiscDynamicWeight(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindMisc, def: true}
	cc := tcpTiming
	cc.Retry = 0
	sc := one(clock, cc, p)
	sc.Reals[0].Weight = 3
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	h.app.take()
	p.res = &Result{HasWeight: true, Weight: 7} // exit 9
	h.at(1 * time.Second)
	equal(t, "weight from exit code", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w7"})
	if msgs := h.messages(); !contains(msgs, "Changing weight from 3 to 7 for active service [198.18.2.11]:tcp:80 of VS [198.51.100.10]:tcp:80") {
		t.Errorf("%q", msgs)
	}
	p.res = &Result{Err: errExit, Exit: &ScriptExit{Code: 1, Path: "/bin/chk"}}
	h.at(11 * time.Second)
	equal(t, "failure", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	if msgs := h.messages(); !contains(msgs, "Misc check for [[198.18.2.11]:tcp:80 VS [198.51.100.10]:tcp:80] by [/bin/chk] failed with retry disabled (exited with status 1).") {
		t.Errorf("%q", msgs)
	}
	p.res = &Result{}
	h.at(21 * time.Second)
	equal(t, "back at the configured weight", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w3"})
}

func TestStopRemovesAndOmega(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: true}
	sc := one(clock, tcpTiming, p)
	sc.Omega = true
	sc.Reals[0].NotifyDown = &Script{Argv: []string{"down"}}
	sc.QuorumDown = &Script{Argv: []string{"qdown"}}
	h := newHarness(t, []ServiceConfig{sc})
	h.eng.Start()
	h.app.take()
	h.eng.Stop(true)
	equal(t, "removed", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	equal(t, "omega scripts", h.scripts.runs, []string{"down", "qdown"})
	if n := clock.Pending(); n != 0 {
		t.Fatalf("%d timers left", n)
	}
	h.at(100 * time.Second)
	if len(p.calls) != 0 {
		t.Fatal("checked after Stop")
	}
}

func (h *harness) status() ServiceStatus { return h.eng.Status()[0] }

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

// As check_data.c: the quorum is lowered to the sum of the weights, the hysteresis below it.
func TestQuorumClamp(t *testing.T) {
	clock := NewFakeClock(t0)
	sc := one(clock, tcpTiming, &fakeProbe{kind: KindTCP, def: true}, &fakeProbe{kind: KindTCP, def: true})
	sc.Quorum, sc.Hysteresis = 5, 3
	h := newHarness(t, []ServiceConfig{sc})
	if st := h.status(); st.Quorum != 2 || st.Hysteresis != 1 {
		t.Fatalf("quorum %d hysteresis %d", st.Quorum, st.Hysteresis)
	}
	if msgs := h.messages(); !contains(msgs, "Warning - quorum 5 for [198.51.100.10]:tcp:80 exceeds total weight of real servers 2, reducing quorum to 2") ||
		!contains(msgs, "Virtual server [198.51.100.10]:tcp:80: hysteresis 3 >= quorum 2; setting hysteresis to 1") {
		t.Errorf("%q", msgs)
	}
}

// Each real-server transition is one event, with keepalived's lvs_notify_fifo line.
func TestEventsAndFIFOLines(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindTCP, def: false}
	h := newHarness(t, []ServiceConfig{one(clock, tcpTiming, p)})
	h.eng.Start()
	h.events = nil
	h.at(1 * time.Second)
	var got []string
	for _, ev := range h.events {
		got = append(got, ev.Kind.String()+"|"+ev.FIFO)
	}
	equal(t, "events", got, []string{"checker_down|", "real_down|RS [198.18.2.11]:tcp:80 [198.51.100.10]:tcp:80 DOWN\n",
		"quorum_lost|VS [198.51.100.10]:tcp:80 DOWN\n"})
}
