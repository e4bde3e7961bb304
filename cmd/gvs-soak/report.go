package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// evaluate classifies the run and checks the bounds.
func (s *soak) evaluate() {
	r := &s.res
	p := s.plan
	reqs, dials := s.rec.snapshot()
	ready := r.Windows.RestartFrom + r.ReadyAfterRestart
	r.Windows.RestartTo, r.Converged = restartWindowEnd(r.Windows.RestartFrom, ready, reqs, dials)
	if !r.Converged {
		// Everything after the kill is the restart's: the bound below
		// fails the run anyway.
		r.Windows.RestartTo = p.Total + requestTimeout
	}
	clients := 2 * s.cfg.perMode
	r.Acc = account(p, r.Windows, clients, reqs, dials)
	r.Deltas = phaseDeltas(s.snaps, len(p.Phases))
	r.RSSBound = rssBound(s.cfg.capacity, ringBytesOf(s.cfg.workers))
	s.gvsdMu.Lock()
	for _, x := range s.rss {
		r.RSSMax = max(r.RSSMax, x.RSS)
	}
	r.GVSDExits = slices.Clone(s.unexpect)
	s.gvsdMu.Unlock()

	add := func(name string, ok bool, format string, args ...any) {
		r.Checks = append(r.Checks, check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	for i, ph := range p.Phases {
		t := r.Acc.Phase[i][catEstablished]
		add("delivered "+ph.Name, t.delivered() >= deliveredMin && t.Sent > 0,
			"%d of %d requests on established connections answered (%.3f%%, bound >= %.0f%%)",
			t.OK, t.Sent, 100*t.delivered(), 100*deliveredMin)
	}
	add("rss", r.RSSMax > 0 && r.RSSMax <= r.RSSBound,
		"max VmRSS %s, bound %s = %d entries × %d B × %d + %s + rings %s",
		mib(r.RSSMax), mib(r.RSSBound), s.cfg.capacity, entryBytes, gcFactor, mib(baseMargin), mib(ringBytesOf(s.cfg.workers)))
	share := cpuShare(r.LinkDownTicks, r.LinkDownFor)
	add("no spin on link down", share <= linkDownCPUMax,
		"gvsd used %d ticks of CPU in %v with dip0 down (%.1f%% of a CPU, bound %.0f%%)",
		r.LinkDownTicks, r.LinkDownFor.Round(time.Millisecond), 100*share, 100*linkDownCPUMax)
	add("stale table", r.StaleTable, "gvsd's nftables table present after the SIGKILL: %v", r.StaleTable)
	restartEnd := p.phase(phaseRestart).End
	add("restart converges", r.Converged && r.Windows.RestartTo <= restartEnd,
		"gvsd ready %v after the SIGKILL; every broken client answered again %v after it (bound: within the phase, %v)",
		r.ReadyAfterRestart.Round(time.Millisecond), (r.Windows.RestartTo - r.Windows.RestartFrom).Round(time.Millisecond),
		(restartEnd - r.Windows.RestartFrom).Round(time.Millisecond))
	var ok, failed float64
	for _, d := range r.Deltas {
		ok += d["reload/success"]
		failed += d["reload/failure"]
	}
	add("reloads", failed == 0 && int(ok) == r.ReloadsSent,
		"%d SIGHUPs sent (%d skipped while gvsd restarted), %.0f applied, %.0f failed", r.ReloadsSent, r.ReloadsSkipped, ok, failed)
	add("flood ran", r.FloodSent > 0 && r.FloodErr == "", "%d SYNs sent (%.0f/s) %s", r.FloodSent, r.FloodRate, r.FloodErr)
	add("gvsd exits", len(r.GVSDExits) == 0 && !r.TableAfterStop,
		"unexpected exits: %d %s; table left after SIGTERM: %v", len(r.GVSDExits), strings.Join(r.GVSDExits, "; "), r.TableAfterStop)
}

// maxLostShown bounds the list of unanswered requests in the report.
const maxLostShown = 60

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// report prints the run's results and writes rss.csv.
func (s *soak) report() {
	r := s.res
	p := s.plan
	w := r.Windows
	s.printf("\n== windows\n")
	s.printf("  gvsd restart window %.1fs .. %.1fs (SIGKILL until ready and every broken client answered again)\n", w.RestartFrom.Seconds(), w.RestartTo.Seconds())
	s.printf("  killed real server %s at %.1fs: its connections opened before are counted apart\n", w.KilledServer, w.ServerKill.Seconds())

	s.printf("\n== requests per phase and category (sent / answered / lost; stalls > %v; longest answer)\n", stallAfter)
	s.printf("  %-13s %-15s %8s %8s %6s %7s %7s %7s %7s %7s %9s\n", "phase", "category", "sent", "ok", "lost", "timeout", "reset", "eof", "error", "stalls", "longest")
	var total [numCategories]tally
	for i, ph := range p.Phases {
		for c := range numCategories {
			t := r.Acc.Phase[i][c]
			total[c].merge(t)
			if t.Sent == 0 && c != catEstablished {
				continue
			}
			s.printTally(ph.Name, c.String(), t)
		}
	}
	for c := range numCategories {
		s.printTally("all", c.String(), total[c])
	}
	s.printf("  answered per phase, all categories, against the nominal rate (one request per %v per client):\n", requestEvery)
	for i, ph := range p.Phases {
		n := 0
		for c := range numCategories {
			n += r.Acc.Phase[i][c].OK
		}
		nominal := float64(ph.End-ph.Start) / float64(requestEvery) * float64(len(r.Acc.Client))
		s.printf("    %-13s %8d of %8.0f (%5.1f%%)\n", ph.Name, n, nominal, 100*float64(n)/nominal)
	}
	s.printf("  connection attempts per phase (failed by kind):\n")
	for i, ph := range p.Phases {
		s.printf("    %-13s %5d attempts, %d failed %v\n", ph.Name, r.Acc.Dials[i], r.Acc.DialFails[i], r.Acc.DialFailsBy[i])
	}

	s.printf("\n== unanswered requests (at most %d)\n", maxLostShown)
	for i, l := range r.Acc.Lost {
		if i == maxLostShown {
			s.printf("  ... %d more\n", len(r.Acc.Lost)-i)
			break
		}
		s.printf("  %7.2fs %-7s conn %-3d %-3s %-15s after %-9v %-7s %s\n", l.Sent.Seconds(), clientName(l.Client, s.cfg.perMode),
			l.Gen, l.Server, l.Cat, l.Took.Round(time.Millisecond), l.Out, l.Err)
	}

	s.printf("\n== lost requests per client and phase (all categories; lost/sent)\n  %-7s", "client")
	for _, ph := range p.Phases {
		s.printf(" %14s", ph.Name)
	}
	s.printf("\n")
	for i := range r.Acc.Client {
		s.printf("  %-7s", clientName(i, s.cfg.perMode))
		for j := range p.Phases {
			t := r.Acc.Client[i][j]
			s.printf(" %14s", fmt.Sprintf("%d/%d", t.Lost, t.Sent))
		}
		s.printf("\n")
	}

	s.printf("\n== gvsd drops by reason per phase (gvs_dataplane_drops_total, ring drops, conntrack)\n")
	keys := map[string]bool{}
	for _, d := range r.Deltas {
		for k := range d {
			keys[k] = true
		}
	}
	s.printf("  %-26s", "counter")
	for _, ph := range p.Phases {
		s.printf(" %12s", ph.Name)
	}
	s.printf("\n")
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		s.printf("  %-26s", k)
		for i := range p.Phases {
			s.printf(" %12.0f", r.Deltas[i][k])
		}
		s.printf("\n")
	}
	s.printf("  connection table: at most %.0f entries seen (capacity %d)\n", r.MaxEntries, s.cfg.capacity)

	s.printf("\n== gvsd RSS (VmRSS every second; min..max per 10 s)\n")
	s.gvsdMu.Lock()
	rss := slices.Clone(s.rss)
	s.gvsdMu.Unlock()
	var csv strings.Builder
	csv.WriteString("seconds,gvsd,rss_bytes\n")
	for i := 0; i < len(rss); {
		from := rss[i].At.Truncate(10 * time.Second)
		lo, hi, gens := rss[i].RSS, rss[i].RSS, map[int]bool{}
		j := i
		for ; j < len(rss) && rss[j].At.Truncate(10*time.Second) == from; j++ {
			lo, hi = min(lo, rss[j].RSS), max(hi, rss[j].RSS)
			gens[rss[j].Gen] = true
			fmt.Fprintf(&csv, "%.1f,%d,%d\n", rss[j].At.Seconds(), rss[j].Gen, rss[j].RSS)
		}
		s.printf("  %4.0fs  %9s .. %9s  (gvsd %v)\n", from.Seconds(), mib(lo), mib(hi), slices.Sorted(maps.Keys(gens)))
		i = j
	}
	if err := os.WriteFile(filepath.Join(s.cfg.out, "rss.csv"), []byte(csv.String()), 0o644); err != nil {
		s.printf("  rss.csv: %v\n", err)
	}

	s.printf("\n== bounds\n")
	for _, c := range r.Checks {
		v := "ok  "
		if !c.OK {
			v = "FAIL"
		}
		s.printf("  %s %-28s %s\n", v, c.Name, c.Detail)
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		s.printf("  load average at the end: %s", la)
	}
	if r.ok() {
		s.printf("== soak passed\n")
	} else {
		s.printf("== soak FAILED (report and logs in %s)\n", s.cfg.out)
	}
}

func (s *soak) printTally(phase, cat string, t tally) {
	s.printf("  %-13s %-15s %8d %8d %6d %7d %7d %7d %7d %7d %9v\n", phase, cat, t.Sent, t.OK, t.Lost,
		t.ByOutcome[outTimeout], t.ByOutcome[outReset], t.ByOutcome[outEOF], t.ByOutcome[outError], t.Stalls,
		t.MaxTook.Round(time.Millisecond))
}

func clientName(i, perMode int) string {
	if i < perMode {
		return fmt.Sprintf("nat-%02d", i+1)
	}
	return fmt.Sprintf("dr-%02d", i-perMode+1)
}
