package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeProbe answers with its current outcome and records when and which step it was asked.
type fakeProbe struct {
	kind  Kind
	steps int
	clock *FakeClock
	ok    map[int]bool // per step; missing = the default
	def   bool
	res   *Result // overrides when set
	calls []call
}

type call struct {
	at   time.Duration // since t0
	step int
}

func (p *fakeProbe) Kind() Kind { return p.kind }
func (p *fakeProbe) Steps() int { return max(p.steps, 1) }
func (p *fakeProbe) Check(_ context.Context, step int) Result {
	p.calls = append(p.calls, call{p.clock.Now().Sub(t0), step})
	if p.res != nil {
		return *p.res
	}
	ok, found := p.ok[step]
	if !found {
		ok = p.def
	}
	if ok {
		return Result{}
	}
	return Result{Err: errors.New("connection refused")}
}

func (p *fakeProbe) set(ok bool) { p.def = ok; p.ok = nil }

func (p *fakeProbe) times() []time.Duration {
	var out []time.Duration
	for _, c := range p.calls {
		out = append(out, c.at)
	}
	return out
}

// recApplier records the Applier calls as text.
type recApplier struct {
	mu    sync.Mutex
	ops   []string
	fail  bool
	state map[string]string
}

func (a *recApplier) rec(kind string, svc ServiceRef, d DestRef, present bool, w int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail {
		return errors.New("injected")
	}
	op := fmt.Sprintf("%s %s del", kind, d.format(svc))
	if present {
		op = fmt.Sprintf("%s %s w%d", kind, d.format(svc), w)
	}
	a.ops = append(a.ops, op)
	if a.state == nil {
		a.state = map[string]string{}
	}
	a.state[d.format(svc)] = op
	return nil
}

func (a *recApplier) SetDest(svc ServiceRef, d DestRef, present bool, w int) error {
	return a.rec("rs", svc, d, present, w)
}

func (a *recApplier) SetSorry(svc ServiceRef, d DestRef, present bool, w int) error {
	return a.rec("sorry", svc, d, present, w)
}

// take returns the operations since the last take.
func (a *recApplier) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ops := a.ops
	a.ops = nil
	return ops
}

type recScripts struct{ runs []string }

func (r *recScripts) Run(s Script) { r.runs = append(r.runs, strings.Join(s.Argv, " ")) }

type harness struct {
	t       *testing.T
	clock   *FakeClock
	app     *recApplier
	scripts *recScripts
	logs    *observer.ObservedLogs
	events  []Event
	eng     *Engine
}

func newHarness(t *testing.T, cfgs []ServiceConfig) *harness {
	t.Helper()
	h := &harness{t: t, app: &recApplier{}, scripts: &recScripts{}}
	core, logs := observer.New(zap.InfoLevel)
	h.logs = logs
	eng, err := New(cfgs, Options{Applier: h.app, Logger: zap.New(core), Clock: h.clockOf(cfgs),
		Runner: InlineRunner{}, Scripts: h.scripts, OnEvent: func(ev Event) { h.events = append(h.events, ev) },
		Random: func(time.Duration) time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	return h
}

// clockOf finds the FakeClock the probes share (every fake probe of a test has the same one).
func (h *harness) clockOf(cfgs []ServiceConfig) Clock {
	for _, s := range cfgs {
		for _, r := range s.Reals {
			for _, c := range r.Checkers {
				if p, ok := c.Probe.(*fakeProbe); ok {
					h.clock = p.clock
					return p.clock
				}
			}
		}
	}
	h.clock = NewFakeClock(t0)
	return h.clock
}

// at advances the fake clock to t0+d.
func (h *harness) at(d time.Duration) {
	h.clock.Advance(t0.Add(d).Sub(h.clock.Now()))
}

// messages returns the logged messages since the last call.
func (h *harness) messages() []string {
	var out []string
	for _, e := range h.logs.TakeAll() {
		out = append(out, e.Message)
	}
	return out
}

func vs80() ServiceRef {
	return ServiceRef{Proto: ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80}
}

func rs(i int) DestRef {
	return DestRef{Addr: netip.AddrFrom4([4]byte{198, 18, 2, byte(10 + i)}), Port: 80}
}

func equal[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
		}
	}
}

func secs(xs ...float64) []time.Duration {
	var out []time.Duration
	for _, x := range xs {
		out = append(out, time.Duration(x*float64(time.Second)))
	}
	return out
}

var errExit = errors.New("exit status 1")
