package main

import (
	"fmt"
	"slices"
	"time"
)

// Per-request accounting. Every long-lived client connection records each
// request/response it makes and each connection attempt; after the run
// classify sorts them into categories and phases.

// outcome is how a request ended.
type outcome uint8

const (
	outOK      outcome = iota
	outTimeout         // no answer within requestTimeout
	outReset           // ECONNRESET
	outEOF             // the peer closed the connection
	outError           // anything else (a malformed answer, EPIPE, ...)
)

var outcomeNames = [...]string{"ok", "timeout", "reset", "eof", "error"}

func (o outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// stallAfter is the answer time from which a request counts as a stall.
const stallAfter = 200 * time.Millisecond

// request is one request/response on a connection. Times are offsets from
// the run's start.
type request struct {
	Client int           // index of the client (its connection's owner)
	Gen    int           // the client's connection number, from 1
	Server string        // real server of the connection ("" before the first answer)
	Sent   time.Duration // request written
	Took   time.Duration // until the answer, or until the failure
	Out    outcome
	Err    string // the failure, for the report
}

// end is when the request was over.
func (r request) end() time.Duration { return r.Sent + r.Took }

// dial is one connection attempt of a client.
type dial struct {
	Client int
	At     time.Duration
	OK     bool
	Err    string // the failure's kind: refused, timeout, ...
}

// category is why a request is or is not held to the delivery bound.
type category uint8

const (
	// catEstablished: traffic on an established connection outside the
	// windows below; deliveredMin applies.
	catEstablished category = iota
	// catRestart: the request overlapped the gvsd restart window.
	catRestart
	// catKilledServer: the request was on a connection to the real server
	// that was killed, at or after the kill.
	catKilledServer
	numCategories
)

var categoryNames = [numCategories]string{"established", "restart-window", "killed-server"}

func (c category) String() string { return categoryNames[c] }

// windows are the run's expected-loss windows, as offsets.
type windows struct {
	// RestartFrom..RestartTo is the gvsd restart window: from the SIGKILL
	// until gvsd is ready again and every client broken by the restart
	// has been answered on a new connection (see restartWindowEnd).
	RestartFrom, RestartTo time.Duration
	// KilledServer is the name of the killed real server, ServerKill the
	// time of its SIGKILL.
	KilledServer string
	ServerKill   time.Duration
}

// classify puts a request into its category. A connection to the killed
// server that was opened before the kill loses its requests from the kill
// on; a new connection later scheduled to the same server (after its
// restart) is ordinary traffic. genStart gives the time each client's
// connection generation was opened.
func (w windows) classify(r request, genStart func(client, gen int) time.Duration) category {
	if r.Sent <= w.RestartTo && r.end() >= w.RestartFrom {
		return catRestart
	}
	if w.KilledServer != "" && r.Server == w.KilledServer && r.end() >= w.ServerKill &&
		genStart(r.Client, r.Gen) < w.ServerKill {
		return catKilledServer
	}
	return catEstablished
}

// tally counts requests.
type tally struct {
	Sent, OK, Lost int
	ByOutcome      [len(outcomeNames)]int
	Stalls         int           // answered after stallAfter or later
	StallTime      time.Duration // sum of the stalled answers' times
	MaxTook        time.Duration // longest answer
}

func (t *tally) add(r request) {
	t.Sent++
	t.ByOutcome[r.Out]++
	if r.Out == outOK {
		t.OK++
		if r.Took >= stallAfter {
			t.Stalls++
			t.StallTime += r.Took
		}
		t.MaxTook = max(t.MaxTook, r.Took)
	} else {
		t.Lost++
	}
}

func (t *tally) merge(o tally) {
	t.Sent += o.Sent
	t.OK += o.OK
	t.Lost += o.Lost
	for i := range t.ByOutcome {
		t.ByOutcome[i] += o.ByOutcome[i]
	}
	t.Stalls += o.Stalls
	t.StallTime += o.StallTime
	t.MaxTook = max(t.MaxTook, o.MaxTook)
}

// delivered is OK / Sent (1 when nothing was sent).
func (t tally) delivered() float64 {
	if t.Sent == 0 {
		return 1
	}
	return float64(t.OK) / float64(t.Sent)
}

// accounting is the classified run: per phase, per category, per client.
type accounting struct {
	// Phase[p][c] counts phase p's requests of category c, by the phase
	// in which they were sent.
	Phase [][numCategories]tally
	// Client[i][p] counts client i's requests in phase p, all categories.
	Client [][]tally
	// Dials[p] and DialFails[p] count connection attempts by phase.
	Dials, DialFails []int
	// DialFailsBy[p] counts the failures by kind.
	DialFailsBy []map[string]int
	// Lost lists the requests that were not answered, in time order, with
	// their categories.
	Lost []lostRequest
}

// lostRequest is an unanswered request and its category.
type lostRequest struct {
	request
	Cat category
}

// account classifies the run's requests and dials.
func account(p plan, w windows, clients int, reqs []request, dials []dial) accounting {
	n := len(p.Phases)
	a := accounting{
		Phase:       make([][numCategories]tally, n),
		Client:      make([][]tally, clients),
		Dials:       make([]int, n),
		DialFails:   make([]int, n),
		DialFailsBy: make([]map[string]int, n),
	}
	for i := range a.Client {
		a.Client[i] = make([]tally, n)
	}
	for i := range a.DialFailsBy {
		a.DialFailsBy[i] = map[string]int{}
	}
	// The opening time of each connection: the n-th successful dial of a
	// client opened its connection n.
	gens := make([][]time.Duration, clients)
	ds := slices.Clone(dials)
	slices.SortStableFunc(ds, func(x, y dial) int { return cmpDur(x.At, y.At) })
	for _, d := range ds {
		ph := p.phaseAt(d.At)
		a.Dials[ph]++
		if d.OK {
			if d.Client >= 0 && d.Client < clients {
				gens[d.Client] = append(gens[d.Client], d.At)
			}
			continue
		}
		a.DialFails[ph]++
		a.DialFailsBy[ph][d.Err]++
	}
	genStart := func(client, gen int) time.Duration {
		if client < 0 || client >= clients || gen < 1 || gen > len(gens[client]) {
			return 0
		}
		return gens[client][gen-1]
	}
	for _, r := range reqs {
		ph := p.phaseAt(r.Sent)
		cat := w.classify(r, genStart)
		a.Phase[ph][cat].add(r)
		if r.Out != outOK {
			a.Lost = append(a.Lost, lostRequest{r, cat})
		}
		if r.Client >= 0 && r.Client < clients {
			a.Client[r.Client][ph].add(r)
		}
	}
	slices.SortStableFunc(a.Lost, func(x, y lostRequest) int { return cmpDur(x.Sent, y.Sent) })
	return a
}

// restartWindowEnd is when the gvsd restart window closes: gvsd is ready
// (ready, an offset) and every client whose connection failed across the
// restart (a failed request overlapping [kill, ready]) has had an answer on
// a connection opened after the kill. ok is false when some such client
// never got one: the restart did not converge.
func restartWindowEnd(kill, ready time.Duration, reqs []request, dials []dial) (end time.Duration, ok bool) {
	broken := map[int]bool{}
	for _, r := range reqs {
		if r.Out != outOK && r.Sent <= ready && r.end() >= kill {
			broken[r.Client] = true
		}
	}
	// The first connection each client opened after the kill.
	firstGen := map[int]int{}
	count := map[int]int{}
	ds := slices.Clone(dials)
	slices.SortStableFunc(ds, func(x, y dial) int { return cmpDur(x.At, y.At) })
	for _, d := range ds {
		if !d.OK {
			continue
		}
		count[d.Client]++
		if d.At >= kill {
			if _, seen := firstGen[d.Client]; !seen {
				firstGen[d.Client] = count[d.Client]
			}
		}
	}
	end = ready
	for c := range broken {
		g, reopened := firstGen[c]
		answered := time.Duration(-1)
		if reopened {
			for _, r := range reqs {
				if r.Client == c && r.Gen >= g && r.Out == outOK && (answered < 0 || r.end() < answered) {
					answered = r.end()
				}
			}
		}
		if answered < 0 {
			return end, false
		}
		end = max(end, answered)
	}
	return end, true
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
