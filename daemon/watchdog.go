package daemon

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// The watchdog: systemd's WatchdogSec= kills a service that stops sending
// WATCHDOG=1. gvsd sends it from here, the data path's supervisor, and only
// while every worker is making progress, so that a worker stuck in its loop
// (not merely an alive control plane) gets the director restarted.
//
// A worker's loop stores a new turn number every turn: after a batch of
// frames, or after sleeping in poll(2) at most pollTimeout (100 ms) when
// idle. A counter unchanged for the whole stall limit (far longer than
// pollTimeout) means the worker is stuck: in a frame, a syscall or a lock.

// MinStall is the shortest stall limit Watchdog uses: many idle turns
// (pollTimeout each), so a busy host's scheduling delays are not a stall.
const MinStall = time.Second

// Progress tells stalled workers from working ones by their turn counters.
// The zero value is ready to use; it is not safe for concurrent use.
type Progress struct {
	last  []uint64
	since []time.Time // when last[i] was first seen
}

// Stalled records the workers' turn counters as seen at now and returns
// the indexes of the workers whose counter has not changed for at least
// limit (none on the first call).
func (p *Progress) Stalled(beats []uint64, now time.Time, limit time.Duration) []int {
	if len(p.last) != len(beats) { // first call, or the workers changed
		p.last = append(p.last[:0], beats...)
		p.since = p.since[:0]
		for range beats {
			p.since = append(p.since, now)
		}
		return nil
	}
	var stalled []int
	for i, b := range beats {
		if b != p.last[i] {
			p.last[i], p.since[i] = b, now
			continue
		}
		if now.Sub(p.since[i]) >= limit {
			stalled = append(stalled, i)
		}
	}
	return stalled
}

// Heartbeats appends every worker's turn counter to dst.
func (d *Daemon) Heartbeats(dst []uint64) []uint64 {
	for _, w := range d.workers {
		dst = append(dst, w.beat.Load())
	}
	return dst
}

// Watchdog calls ping every interval while all the workers make progress,
// until ctx ends: a worker whose loop has not turned for max(interval,
// MinStall) stops the pings (logged once per stall) until it turns again.
// Run it while Run runs; interval is half of systemd's WatchdogSec.
func (d *Daemon) Watchdog(ctx context.Context, interval time.Duration, ping func()) {
	if interval <= 0 {
		return
	}
	limit := max(interval, MinStall)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var p Progress
	var beats []uint64
	wasStalled := false
	d.watchdogTurn(&p, &beats, time.Now(), limit, ping, &wasStalled)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			d.watchdogTurn(&p, &beats, now, limit, ping, &wasStalled)
		}
	}
}

// watchdogTurn is one check of Watchdog: ping if no worker is stalled.
func (d *Daemon) watchdogTurn(p *Progress, beats *[]uint64, now time.Time, limit time.Duration, ping func(), wasStalled *bool) {
	*beats = d.Heartbeats((*beats)[:0])
	stalled := p.Stalled(*beats, now, limit)
	if len(stalled) == 0 {
		if *wasStalled {
			d.log.Warn("every data-path worker makes progress again: watchdog pings resumed")
		}
		*wasStalled = false
		ping()
		return
	}
	if !*wasStalled {
		d.log.Error("data-path worker stuck: watchdog pings stopped (systemd restarts gvsd after WatchdogSec)",
			zap.Ints("workers", stalled), zap.Duration("for_at_least", limit))
	}
	*wasStalled = true
}
