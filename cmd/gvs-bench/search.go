package main

import "fmt"

// trial is one bounded run at a fixed offered rate.
type trial struct {
	// Rate is the rate asked of the generator (packets/s).
	Rate float64 `json:"rate_pps"`
	// Sent and Received are packet counts over the whole run: frames the
	// generator put on the client link and frames that reached the real
	// servers.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	// Offered is Sent over the run's duration.
	Offered float64 `json:"offered_pps"`
	// Loss is 1 - Received/Sent.
	Loss float64 `json:"loss"`
	// BacklogDrops counts frames the kernel dropped in the run because a
	// CPU's input backlog (netdev_max_backlog) was full, anywhere on the
	// machine.
	BacklogDrops uint64 `json:"backlog_drops"`
	// Pass reports Loss <= the search's tolerance.
	Pass bool `json:"pass"`
}

// prober runs one trial at rate packets/s.
type prober func(rate float64) (trial, error)

// searchConfig bounds a loss-free rate search.
type searchConfig struct {
	// Hi is the highest rate worth asking for (the generator's maximum).
	Hi float64
	// Guess is the first rate to try (e.g. the rate forwarded at
	// overload); it is clamped into (0, Hi].
	Guess float64
	// Tolerance is the loss fraction still counted as loss-free.
	Tolerance float64
	// Steps is the maximum number of trials.
	Steps int
	// Resolution stops the search once hi-lo < Resolution*hi.
	Resolution float64
}

// genShort is how far below the asked rate a generator may fall before the
// trial's rate counts as the generator's ceiling.
const genShort = 0.95

// searchLossFree finds the highest rate the contender forwards with loss at
// most cfg.Tolerance, bisecting between a passing and a failing rate with at
// most cfg.Steps trials. best is the highest offered rate of a passing
// trial (0 if none passed). When a passing trial was at the top of the
// range, genBound is true: the generator, not the contender, set the limit.
func searchLossFree(cfg searchConfig, probe prober) (best float64, genBound bool, trials []trial, err error) {
	if cfg.Hi <= 0 || cfg.Steps <= 0 {
		return 0, false, nil, fmt.Errorf("search: need Hi > 0 and Steps > 0 (got %v, %d)", cfg.Hi, cfg.Steps)
	}
	if cfg.Resolution <= 0 {
		cfg.Resolution = 0.02
	}
	lo, hi := 0.0, cfg.Hi
	hiFailed := false // hi is known to fail (or to be out of the generator's reach)
	x := cfg.Guess
	if x <= 0 || x > hi {
		x = hi
	}
	for len(trials) < cfg.Steps {
		t, err := probe(x)
		if err != nil {
			return best, genBound, trials, err
		}
		t.Pass = t.Sent > 0 && t.Loss <= cfg.Tolerance
		trials = append(trials, t)
		short := t.Offered < genShort*x
		if short && t.Offered < hi {
			// The generator could not offer x: nothing above what it did
			// offer can be tested.
			hi, hiFailed = t.Offered, true
		}
		if t.Pass {
			best = max(best, t.Offered)
			lo = max(lo, min(x, t.Offered))
			if short || x >= hi {
				genBound = true
				break
			}
			if !hiFailed {
				x = hi // the guess passed: try the top next
				continue
			}
		} else {
			hi, hiFailed = min(hi, x), true
		}
		if hi-lo < cfg.Resolution*hi {
			break
		}
		x = (lo + hi) / 2
	}
	return best, genBound, trials, nil
}
