package main

import (
	"testing"
	"time"
)

func TestPlanLayout(t *testing.T) {
	for _, d := range []time.Duration{minDuration, 90 * time.Second, 5 * time.Minute, maxDuration} {
		p, err := newPlan(d)
		if err != nil {
			t.Fatalf("%v: %v", d, err)
		}
		want := []string{phaseBaseline, phaseFlood, phaseServerKill, phaseLinkFlap, phaseRestart, phaseTail}
		if len(p.Phases) != len(want) {
			t.Fatalf("%v: %d phases, want %d", d, len(p.Phases), len(want))
		}
		at := time.Duration(0)
		for i, ph := range p.Phases {
			if ph.Name != want[i] {
				t.Errorf("%v: phase %d is %q, want %q", d, i, ph.Name, want[i])
			}
			if ph.Start != at || ph.End <= ph.Start {
				t.Errorf("%v: phase %s is %v..%v, want to start at %v and not be empty", d, ph.Name, ph.Start, ph.End, at)
			}
			at = ph.End
		}
		if at != d {
			t.Errorf("%v: phases end at %v", d, at)
		}
		in := func(name string, ts ...time.Duration) {
			ph := p.phase(name)
			for _, x := range ts {
				if x < ph.Start || x >= ph.End {
					t.Errorf("%v: event at %v outside phase %s %v..%v", d, x, name, ph.Start, ph.End)
				}
			}
		}
		in(phaseServerKill, p.ServerKill, p.ServerStart)
		in(phaseLinkFlap, p.LinkDown, p.LinkUp)
		in(phaseRestart, p.GVSDKill)
		if p.FloodStart != p.phase(phaseFlood).Start || p.FloodEnd != p.phase(phaseFlood).End {
			t.Errorf("%v: flood %v..%v is not its phase", d, p.FloodStart, p.FloodEnd)
		}
		if p.LinkUp-p.LinkDown != linkDownFor {
			t.Errorf("%v: link down for %v", d, p.LinkUp-p.LinkDown)
		}
		// The reloads keep out of the link-down window (its CPU time is
		// measured), are in order, and keep to the period elsewhere.
		if len(p.Reloads) < int(d/reloadEvery)-2 {
			t.Errorf("%v: only %d reloads", d, len(p.Reloads))
		}
		for i, r := range p.Reloads {
			if r > p.LinkDown-reloadQuiet && r < p.LinkUp+reloadQuiet {
				t.Errorf("%v: reload at %v within the link-down window %v..%v", d, r, p.LinkDown, p.LinkUp)
			}
			if r >= d || (i > 0 && r <= p.Reloads[i-1]) {
				t.Errorf("%v: reload %d at %v out of order or after the end", d, i, r)
			}
		}
	}
}

// The same duration gives the same timeline.
func TestPlanDeterministic(t *testing.T) {
	a, _ := newPlan(90 * time.Second)
	b, _ := newPlan(90 * time.Second)
	if a.String() != b.String() || len(a.Reloads) != len(b.Reloads) {
		t.Fatal("two plans of the same duration differ")
	}
}

func TestPlanRejects(t *testing.T) {
	for _, d := range []time.Duration{0, minDuration - time.Second, maxDuration + time.Second} {
		if _, err := newPlan(d); err == nil {
			t.Errorf("newPlan(%v) accepted", d)
		}
	}
}

func TestPhaseAt(t *testing.T) {
	p, _ := newPlan(90 * time.Second)
	for i, ph := range p.Phases {
		if got := p.phaseAt(ph.Start); got != i {
			t.Errorf("phaseAt(start of %s) = %d, want %d", ph.Name, got, i)
		}
		if got := p.phaseAt(ph.End - 1); got != i {
			t.Errorf("phaseAt(end of %s - 1ns) = %d, want %d", ph.Name, got, i)
		}
	}
	if got := p.phaseAt(-time.Second); got != 0 {
		t.Errorf("phaseAt(-1s) = %d", got)
	}
	if got := p.phaseAt(p.Total + time.Minute); got != len(p.Phases)-1 {
		t.Errorf("phaseAt(after the end) = %d", got)
	}
}
