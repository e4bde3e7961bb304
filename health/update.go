package health

import (
	"fmt"
	"reflect"
	"time"

	"go.uber.org/zap"
)

// Update replaces the configuration of a running engine (a reload), as keepalived's reload does
// (check_data.c / ipwrapper.c clear_diff_services, clear_diff_rs): virtual services and real
// servers are matched by ServiceRef and DestRef, and checkers within a kept real server by kind,
// timing and probe configuration.
//
//   - A checker that is unchanged keeps its state: its timer, retry count, up/down state and
//     counters. A real server whose checkers all stay keeps its liveness, so a failed one is not
//     re-added ("Do not re-add failed RS instantly on reload").
//   - New checkers start as at Start (up unless alpha, first check after BootstrapDelay plus
//     warmup); removed ones stop, and their results still in flight are dropped.
//   - New real servers and services start as at Start; removed ones are stopped and their
//     destinations (and sorry server) deleted through the Applier.
//   - A changed weight is applied as misc_dynamic's are (quorum re-evaluated, "Changing
//     weight" logged); quorum, hysteresis, scripts, inhibit and the sorry server follow the new
//     configuration, and the differences are handed to the Applier.
//
// On error (the same validation as New) nothing changes. Before Start, Update only replaces
// the configuration.
func (e *Engine) Update(cfgs []ServiceConfig) error {
	e.mu.Lock()
	next, err := e.build(cfgs)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	if !e.started || e.stopped {
		if !e.started {
			e.services = next
		}
		e.mu.Unlock()
		return nil
	}
	now := e.clock.Now()
	old := map[ServiceRef]*service{}
	for _, s := range e.services {
		old[s.cfg.Ref] = s
	}
	keep := map[ServiceRef]bool{}
	for _, ns := range next {
		keep[ns.cfg.Ref] = true
	}
	// Removed services first: their destinations leave before new ones come.
	for _, s := range e.services {
		if !keep[s.cfg.Ref] {
			e.removeService(s)
		}
	}
	var out []*service
	for _, ns := range next {
		s := old[ns.cfg.Ref]
		if s == nil {
			out = append(out, ns)
			e.log.Info(fmt.Sprintf("Adding new VS %s", ns.cfg.Ref))
			e.startService(ns, now)
			continue
		}
		e.updateService(s, ns, now)
		out = append(out, s)
	}
	e.services = out
	e.unlockAndRun()
	return nil
}

// removeService stops a service's checkers and deletes what it applied.
func (e *Engine) removeService(s *service) {
	e.log.Info(fmt.Sprintf("Removing Virtual Server %s", s.cfg.Ref))
	for _, r := range s.reals {
		e.removeReal(r)
	}
	if s.sorryApp.present {
		if err := e.opts.Applier.SetSorry(s.cfg.Ref, s.cfg.Sorry.Dest, false, 0); err == nil {
			s.sorryApp = applied{}
		}
	}
}

// removeReal stops a real server's checkers and deletes its destination.
func (e *Engine) removeReal(r *real) {
	s := r.svc
	r.stopRamp()
	for _, c := range r.checkers {
		e.killChecker(c)
	}
	if r.app.present {
		e.log.Info(fmt.Sprintf("Removing service %s from VS %s", r.cfg.Dest.format(s.cfg.Ref), s.cfg.Ref))
		if err := e.opts.Applier.SetDest(s.cfg.Ref, r.cfg.Dest, false, 0); err != nil {
			e.log.Warn("removing real server failed", zap.String("vs", s.cfg.Ref.String()), zap.Error(err))
		} else {
			r.app = applied{}
		}
	}
}

func (e *Engine) killChecker(c *checker) {
	c.dead = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// updateService moves the kept service s to the configuration of ns (built, not started).
func (e *Engine) updateService(s, ns *service, now time.Time) {
	// The sorry server: a different one replaces the old one.
	if s.cfg.Sorry != nil && (ns.cfg.Sorry == nil || ns.cfg.Sorry.Dest != s.cfg.Sorry.Dest) && s.sorryApp.present {
		if err := e.opts.Applier.SetSorry(s.cfg.Ref, s.cfg.Sorry.Dest, false, 0); err == nil {
			s.sorryApp = applied{}
		}
	}
	if ns.cfg.Sorry == nil || s.cfg.Sorry == nil || ns.cfg.Sorry.Dest != s.cfg.Sorry.Dest {
		s.sorryApp = applied{}
		if ns.cfg.Sorry == nil {
			s.sorryActive = false
		}
	}
	oldReals := map[DestRef]*real{}
	for _, r := range s.reals {
		oldReals[r.cfg.Dest] = r
	}
	keep := map[DestRef]bool{}
	for _, nr := range ns.reals {
		keep[nr.cfg.Dest] = true
	}
	for _, r := range s.reals {
		if !keep[r.cfg.Dest] {
			e.removeReal(r)
		}
	}
	s.cfg = ns.cfg
	var reals []*real
	var fresh []*checker
	for _, nr := range ns.reals {
		r := oldReals[nr.cfg.Dest]
		if r == nil {
			nr.svc = s
			nr.alive = nr.allUp()
			nr.since = now
			e.log.Info(fmt.Sprintf("Adding new real server %s to VS %s", nr.cfg.Dest.format(s.cfg.Ref), s.cfg.Ref))
			reals = append(reals, nr)
			fresh = append(fresh, nr.checkers...)
			continue
		}
		fresh = append(fresh, e.updateReal(r, nr, now)...)
		reals = append(reals, r)
	}
	s.reals = reals
	e.updateQuorum(s, false, now)
	e.reconcile(s, now)
	for _, c := range fresh {
		e.activate(c, now)
	}
}

// updateReal moves the kept real server r to nr's configuration and returns its new checkers
// (to activate). Unchanged checkers keep their state.
func (e *Engine) updateReal(r, nr *real, now time.Time) []*checker {
	used := make([]bool, len(r.checkers))
	var out, fresh []*checker
	for i, nc := range nr.checkers {
		var kept *checker
		for j, oc := range r.checkers {
			if !used[j] && sameChecker(oc.cfg, nc.cfg) {
				used[j], kept = true, oc
				break
			}
		}
		if kept == nil {
			nc.r, nc.idx = r, i
			fresh = append(fresh, nc)
			out = append(out, nc)
			continue
		}
		kept.idx = i
		out = append(out, kept)
	}
	var cur int64
	for j, oc := range r.checkers {
		if !used[j] {
			e.killChecker(oc)
		} else {
			cur += oc.cur
		}
	}
	oldSlow := r.cfg.Slowstart
	r.cfg = nr.cfg
	r.checkers = out
	if r.cfg.Slowstart != oldSlow && r.ramp {
		r.stopRamp()
	}
	// The configured weight plus what misc_dynamic checkers that stay have set.
	e.setWeight(r, int64(r.cfg.Weight)+cur, now)
	if alive := r.allUp(); alive != r.alive {
		e.realState(r, alive, now)
	}
	return fresh
}

// sameChecker reports whether a checker's configuration is unchanged.
func sameChecker(a, b CheckerConfig) bool {
	pa, pb := a.Probe, b.Probe
	a.Probe, b.Probe = nil, nil
	if a != b || pa.Kind() != pb.Kind() {
		return false
	}
	if eq, ok := pa.(interface{ Equal(Probe) bool }); ok {
		return eq.Equal(pb)
	}
	return reflect.DeepEqual(pa, pb)
}
