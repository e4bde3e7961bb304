package main

import (
	"testing"
	"time"
)

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// testPlan is a hand-made 90 s plan: baseline 0..6s, flood ..30s,
// server-kill ..40s (r3 killed at 31s), link-flap ..50s, gvsd-restart ..70s
// (SIGKILL at 52s), tail ..90s.
func testPlan(t *testing.T) plan {
	t.Helper()
	p := plan{Total: sec(90), ServerKill: sec(31), GVSDKill: sec(52)}
	at := time.Duration(0)
	for _, ph := range []struct {
		name string
		end  float64
	}{{phaseBaseline, 6}, {phaseFlood, 30}, {phaseServerKill, 40}, {phaseLinkFlap, 50}, {phaseRestart, 70}, {phaseTail, 90}} {
		p.Phases = append(p.Phases, phase{Name: ph.name, Start: at, End: sec(ph.end)})
		at = sec(ph.end)
	}
	return p
}

func TestClassify(t *testing.T) {
	w := windows{RestartFrom: sec(52), RestartTo: sec(53), KilledServer: "r3", ServerKill: sec(31)}
	// Client 0's connection 1 opened at 0 s, connection 2 at 35 s.
	genStart := func(client, gen int) time.Duration {
		if gen == 1 {
			return 0
		}
		return sec(35)
	}
	cases := []struct {
		name string
		r    request
		want category
	}{
		{"ordinary", request{Server: "r1", Gen: 1, Sent: sec(10), Took: time.Millisecond}, catEstablished},
		{"in the restart window", request{Server: "r1", Gen: 1, Sent: sec(52.5), Took: time.Millisecond}, catRestart},
		{"sent before the kill, still open at it", request{Server: "r1", Gen: 1, Sent: sec(51), Took: sec(2)}, catRestart},
		{"sent before the kill, answered before it", request{Server: "r1", Gen: 1, Sent: sec(51), Took: sec(0.5)}, catEstablished},
		{"just after the window", request{Server: "r1", Gen: 1, Sent: sec(53.001), Took: time.Millisecond}, catEstablished},
		{"the killed server's connection at the kill", request{Server: "r3", Gen: 1, Sent: sec(30.99), Took: sec(0.02)}, catKilledServer},
		{"the killed server's connection before the kill", request{Server: "r3", Gen: 1, Sent: sec(20), Took: time.Millisecond}, catEstablished},
		{"a new connection to the restarted server", request{Server: "r3", Gen: 2, Sent: sec(36), Took: time.Millisecond}, catEstablished},
		{"another server's connection after the kill", request{Server: "r2", Gen: 1, Sent: sec(32), Took: sec(5), Out: outTimeout}, catEstablished},
	}
	for _, c := range cases {
		if got := w.classify(c.r, genStart); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAccount(t *testing.T) {
	p := testPlan(t)
	w := windows{RestartFrom: sec(52), RestartTo: sec(53), KilledServer: "r3", ServerKill: sec(31)}
	dials := []dial{
		{Client: 0, At: sec(0.1), OK: true},
		{Client: 1, At: sec(0.1), OK: true},
		{Client: 1, At: sec(31.1), Err: "refused"}, // rescheduled to the dead r3
		{Client: 1, At: sec(31.3), OK: true},
	}
	ms := time.Millisecond
	reqs := []request{
		{Client: 0, Gen: 1, Server: "r1", Sent: sec(1), Took: ms},                               // baseline
		{Client: 0, Gen: 1, Server: "r1", Sent: sec(7), Took: sec(0.3)},                         // flood, a stall
		{Client: 0, Gen: 1, Server: "r1", Sent: sec(8), Took: sec(8), Out: outTimeout},          // flood, lost
		{Client: 1, Gen: 1, Server: "r3", Sent: sec(31), Took: ms, Out: outEOF},                 // killed server
		{Client: 1, Gen: 2, Server: "r2", Sent: sec(32), Took: ms},                              // server-kill phase
		{Client: 0, Gen: 1, Server: "r1", Sent: sec(52.2), Took: ms, Out: outReset},             // restart window
		{Client: 0, Gen: 1, Server: "r1", Sent: sec(60), Took: ms},                              // restart phase, established
		{Client: 1, Gen: 2, Server: "r2", Sent: sec(80), Took: 150 * time.Millisecond},          // tail
		{Client: 1, Gen: 2, Server: "r2", Sent: sec(81), Took: ms, Out: outError, Err: "bogus"}, // tail, lost
	}
	a := account(p, w, 2, reqs, dials)
	type want struct {
		phase             string
		cat               category
		sent, ok, stalls  int
		byOut             outcome
		byOutN            int
		delivered         float64
		maxTookAtLeastSec float64
	}
	idx := func(name string) int {
		for i, ph := range p.Phases {
			if ph.Name == name {
				return i
			}
		}
		t.Fatalf("no phase %s", name)
		return -1
	}
	for _, c := range []want{
		{phaseBaseline, catEstablished, 1, 1, 0, outOK, 1, 1, 0},
		{phaseFlood, catEstablished, 2, 1, 1, outTimeout, 1, 0.5, 0.3},
		{phaseServerKill, catKilledServer, 1, 0, 0, outEOF, 1, 0, 0},
		{phaseServerKill, catEstablished, 1, 1, 0, outOK, 1, 1, 0},
		{phaseRestart, catRestart, 1, 0, 0, outReset, 1, 0, 0},
		{phaseRestart, catEstablished, 1, 1, 0, outOK, 1, 1, 0},
		{phaseTail, catEstablished, 2, 1, 0, outError, 1, 0.5, 0.15},
	} {
		got := a.Phase[idx(c.phase)][c.cat]
		if got.Sent != c.sent || got.OK != c.ok || got.Lost != c.sent-c.ok || got.Stalls != c.stalls ||
			got.ByOutcome[c.byOut] != c.byOutN || got.delivered() != c.delivered || got.MaxTook < sec(c.maxTookAtLeastSec) {
			t.Errorf("%s/%v: %+v, want %+v", c.phase, c.cat, got, c)
		}
	}
	if n := a.Phase[idx(phaseLinkFlap)][catEstablished]; n.Sent != 0 || n.delivered() != 1 {
		t.Errorf("link-flap: %+v, want nothing sent, all delivered", n)
	}
	// Per client and phase.
	if c0 := a.Client[0][idx(phaseFlood)]; c0.Sent != 2 || c0.Lost != 1 {
		t.Errorf("client 0 in the flood: %+v", c0)
	}
	if c1 := a.Client[1][idx(phaseServerKill)]; c1.Sent != 2 || c1.Lost != 1 {
		t.Errorf("client 1 in server-kill: %+v", c1)
	}
	// Dials.
	if sk := idx(phaseServerKill); a.Dials[sk] != 2 || a.DialFails[sk] != 1 || a.DialFailsBy[sk]["refused"] != 1 {
		t.Errorf("server-kill dials %d, failed %d %v", a.Dials[sk], a.DialFails[sk], a.DialFailsBy[sk])
	}
	if len(a.Lost) != 4 || a.Lost[0].Out != outTimeout || a.Lost[1].Cat != catKilledServer || a.Lost[2].Cat != catRestart {
		t.Errorf("lost list %+v", a.Lost)
	}
}

func TestRestartWindowEnd(t *testing.T) {
	kill, ready := sec(52), sec(52.3)
	ms := time.Millisecond
	dials := []dial{
		{Client: 0, At: 0, OK: true}, {Client: 1, At: 0, OK: true}, {Client: 2, At: 0, OK: true},
		{Client: 0, At: sec(52.4), OK: true},
		{Client: 1, At: sec(52.5), Err: "timeout"},
		{Client: 1, At: sec(55), OK: true},
	}
	reqs := []request{
		// Client 0: reset by the new gvsd, reconnected, answered at 52.45 s.
		{Client: 0, Gen: 1, Sent: sec(52.1), Took: 200 * ms, Out: outReset},
		{Client: 0, Gen: 2, Sent: sec(52.44), Took: 10 * ms},
		// Client 1: timed out, failed to connect once, answered at 55.1 s.
		{Client: 1, Gen: 1, Sent: sec(51.99), Took: requestTimeout, Out: outTimeout},
		{Client: 1, Gen: 2, Sent: sec(55.05), Took: 50 * ms},
		{Client: 1, Gen: 2, Sent: sec(56), Took: ms},
		// Client 2: nothing in flight across the restart; unaffected.
		{Client: 2, Gen: 1, Sent: sec(51), Took: ms},
		{Client: 2, Gen: 1, Sent: sec(60), Took: ms, Out: outReset}, // later, not the restart's
	}
	end, ok := restartWindowEnd(kill, ready, reqs, dials)
	if !ok || end != sec(55.1) {
		t.Errorf("restartWindowEnd = %v, %v; want 55.1s, true", end, ok)
	}
	// Nobody broken: the window ends when gvsd is ready.
	if end, ok := restartWindowEnd(kill, ready, reqs[5:6], dials[:3]); !ok || end != ready {
		t.Errorf("no broken clients: %v, %v; want %v, true", end, ok, ready)
	}
	// Client 1 never answered again: no convergence.
	if _, ok := restartWindowEnd(kill, ready, reqs[:3], dials); ok {
		t.Error("a client never answered again after the restart, and the restart converged")
	}
}

func TestTally(t *testing.T) {
	var a, b tally
	a.add(request{Took: stallAfter})
	a.add(request{Took: stallAfter - 1})
	b.add(request{Out: outReset, Took: 9 * time.Second})
	a.merge(b)
	if a.Sent != 3 || a.OK != 2 || a.Lost != 1 || a.Stalls != 1 || a.StallTime != stallAfter || a.MaxTook != stallAfter || a.ByOutcome[outReset] != 1 {
		t.Errorf("tally %+v", a)
	}
	if d := a.delivered(); d != 2.0/3 {
		t.Errorf("delivered %v", d)
	}
}
