package main

import (
	"errors"
	"math"
	"testing"
)

// fakeDUT forwards everything up to capacity and drops the rest; the
// generator reaches at most genMax.
func fakeDUT(capacity, genMax float64) prober {
	return func(rate float64) (trial, error) {
		off := math.Min(rate, genMax)
		sent := uint64(off)
		recv := uint64(math.Min(off, capacity))
		t := trial{Rate: rate, Sent: sent, Received: recv, Offered: off}
		t.Loss = 1 - float64(recv)/float64(sent)
		return t, nil
	}
}

func TestSearchLossFree(t *testing.T) {
	for _, tc := range []struct {
		name             string
		cfg              searchConfig
		capacity, genMax float64
		wantLo, wantHi   float64
		genBound         bool
		maxTrials        int
	}{
		{"bisects to the capacity", searchConfig{Hi: 1e6, Guess: 500e3, Tolerance: 0, Steps: 8}, 400e3, 1e6, 380e3, 400e3, false, 8},
		{"guess passes, top passes: generator-bound", searchConfig{Hi: 1e6, Guess: 800e3, Tolerance: 0, Steps: 5}, 2e6, 1e6, 1e6, 1e6, true, 2},
		{"generator falls short", searchConfig{Hi: 1e6, Guess: 900e3, Tolerance: 0, Steps: 5}, 2e6, 600e3, 600e3, 600e3, true, 1},
		{"nothing passes", searchConfig{Hi: 1e6, Guess: 1e5, Tolerance: 0, Steps: 4}, 0, 1e6, 0, 0, false, 4},
		{"one step only", searchConfig{Hi: 1e6, Guess: 300e3, Tolerance: 0, Steps: 1}, 400e3, 1e6, 300e3, 300e3, false, 1},
		{"guess above Hi is clamped", searchConfig{Hi: 500e3, Guess: 9e9, Tolerance: 0, Steps: 6}, 450e3, 1e6, 420e3, 450e3, false, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			best, gb, trials, err := searchLossFree(tc.cfg, fakeDUT(tc.capacity, tc.genMax))
			if err != nil {
				t.Fatal(err)
			}
			if best < tc.wantLo || best > tc.wantHi {
				t.Errorf("best = %v, want in [%v, %v]; trials %+v", best, tc.wantLo, tc.wantHi, trials)
			}
			if gb != tc.genBound {
				t.Errorf("genBound = %v, want %v", gb, tc.genBound)
			}
			if len(trials) > tc.maxTrials || len(trials) == 0 {
				t.Errorf("%d trials, want 1..%d", len(trials), tc.maxTrials)
			}
			for _, tr := range trials {
				if tr.Pass != (tr.Loss <= tc.cfg.Tolerance) {
					t.Errorf("trial %+v: Pass disagrees with Loss", tr)
				}
				if tr.Rate > tc.cfg.Hi*1.0001 {
					t.Errorf("trial at %v above Hi %v", tr.Rate, tc.cfg.Hi)
				}
			}
		})
	}
}

func TestSearchLossFreeErrors(t *testing.T) {
	if _, _, _, err := searchLossFree(searchConfig{Hi: 0, Steps: 3}, fakeDUT(1, 1)); err == nil {
		t.Error("Hi 0 accepted")
	}
	boom := errors.New("boom")
	_, _, trials, err := searchLossFree(searchConfig{Hi: 100, Steps: 3}, func(float64) (trial, error) { return trial{}, boom })
	if !errors.Is(err, boom) || len(trials) != 0 {
		t.Errorf("probe error: %v, %d trials", err, len(trials))
	}
}
