package main

import (
	"fmt"
	"time"
)

// The soak's timeline. Every phase and event is at a fixed offset from the
// start of the run, computed from the run's duration alone, so two runs of
// the same duration do the same things at the same times.
//
//	baseline      clients only (and the reloads, as in every phase)
//	flood         a SYN flood from spoofed sources at the VIP, full rate
//	server-kill   real server r3 gets SIGKILL, and is started again
//	link-flap     the director's DIP link goes down for 2 s, then up
//	gvsd-restart  gvsd gets SIGKILL (its nftables table stays behind) and
//	              is started again at once
//	tail          clients only
//
// The three fault phases have fixed lengths; baseline, flood and tail share
// the rest of the duration.

// Bounds of the run's duration.
const (
	minDuration = 60 * time.Second
	maxDuration = 10 * time.Minute
)

// Fixed lengths and event offsets of the fault phases.
const (
	serverKillPhase = 10 * time.Second
	serverKillAt    = 1 * time.Second // into the phase
	serverDownFor   = 4 * time.Second // then it is started again

	linkFlapPhase = 10 * time.Second
	linkDownAt    = 3 * time.Second
	linkDownFor   = 2 * time.Second

	restartPhase = 20 * time.Second
	gvsdKillAt   = 2 * time.Second
)

// reloadEvery is the period of the SIGHUP reloads; reloadQuiet keeps them
// this far from the link-down window, whose CPU time is measured.
const (
	reloadEvery  = 3 * time.Second
	reloadOffset = 1500 * time.Millisecond
	reloadQuiet  = time.Second
)

// Phase names, in order.
const (
	phaseBaseline   = "baseline"
	phaseFlood      = "flood"
	phaseServerKill = "server-kill"
	phaseLinkFlap   = "link-flap"
	phaseRestart    = "gvsd-restart"
	phaseTail       = "tail"
)

// phase is one stretch of the run, [Start, End) from the run's start.
type phase struct {
	Name       string
	Start, End time.Duration
}

// plan is the run's timeline, offsets from its start.
type plan struct {
	Total  time.Duration
	Phases []phase

	FloodStart, FloodEnd time.Duration
	ServerKill           time.Duration // SIGKILL to real server r3
	ServerStart          time.Duration // r3 started again
	LinkDown, LinkUp     time.Duration // the DIP link
	GVSDKill             time.Duration // SIGKILL to gvsd; restarted at once
	// Reloads are the times of the SIGHUPs (skipped at run time while gvsd
	// is not ready).
	Reloads []time.Duration
}

// newPlan lays out a run of total length.
func newPlan(total time.Duration) (plan, error) {
	if total < minDuration || total > maxDuration {
		return plan{}, fmt.Errorf("duration %v out of range %v..%v", total, minDuration, maxDuration)
	}
	rest := total - serverKillPhase - linkFlapPhase - restartPhase
	// Whole milliseconds keep the printed offsets readable.
	baseline := (rest * 15 / 100).Truncate(time.Millisecond)
	flood := (rest * 60 / 100).Truncate(time.Millisecond)
	lengths := []struct {
		name string
		d    time.Duration
	}{
		{phaseBaseline, baseline},
		{phaseFlood, flood},
		{phaseServerKill, serverKillPhase},
		{phaseLinkFlap, linkFlapPhase},
		{phaseRestart, restartPhase},
		{phaseTail, rest - baseline - flood},
	}
	p := plan{Total: total}
	at := time.Duration(0)
	for _, l := range lengths {
		p.Phases = append(p.Phases, phase{Name: l.name, Start: at, End: at + l.d})
		at += l.d
	}
	fl, sk, lf, rs := p.phase(phaseFlood), p.phase(phaseServerKill), p.phase(phaseLinkFlap), p.phase(phaseRestart)
	p.FloodStart, p.FloodEnd = fl.Start, fl.End
	p.ServerKill = sk.Start + serverKillAt
	p.ServerStart = p.ServerKill + serverDownFor
	p.LinkDown = lf.Start + linkDownAt
	p.LinkUp = p.LinkDown + linkDownFor
	p.GVSDKill = rs.Start + gvsdKillAt
	for t := reloadOffset; t < total; t += reloadEvery {
		if t > p.LinkDown-reloadQuiet && t < p.LinkUp+reloadQuiet {
			continue
		}
		p.Reloads = append(p.Reloads, t)
	}
	return p, nil
}

// phase returns the phase called name (the zero phase if there is none).
func (p plan) phase(name string) phase {
	for _, ph := range p.Phases {
		if ph.Name == name {
			return ph
		}
	}
	return phase{}
}

// phaseAt returns the index of the phase that holds offset t; times before
// the start belong to the first phase, times at or after the end to the
// last.
func (p plan) phaseAt(t time.Duration) int {
	for i, ph := range p.Phases {
		if t < ph.End {
			return i
		}
	}
	return len(p.Phases) - 1
}

// String renders the timeline, one phase a line, with its events.
func (p plan) String() string {
	s := ""
	for _, ph := range p.Phases {
		s += fmt.Sprintf("  %-13s %7.1fs .. %6.1fs", ph.Name, ph.Start.Seconds(), ph.End.Seconds())
		switch ph.Name {
		case phaseFlood:
			s += "  SYN flood on throughout"
		case phaseServerKill:
			s += fmt.Sprintf("  r3 SIGKILL at %.1fs, started at %.1fs", p.ServerKill.Seconds(), p.ServerStart.Seconds())
		case phaseLinkFlap:
			s += fmt.Sprintf("  dip0 down at %.1fs, up at %.1fs", p.LinkDown.Seconds(), p.LinkUp.Seconds())
		case phaseRestart:
			s += fmt.Sprintf("  gvsd SIGKILL at %.1fs, restarted at once", p.GVSDKill.Seconds())
		}
		s += "\n"
	}
	s += fmt.Sprintf("  reloads (SIGHUP, weight of r1 alternating 1/3): %d, every %v from %v, none within %v of the link-down window\n",
		len(p.Reloads), reloadEvery, reloadOffset, reloadQuiet)
	return s
}
