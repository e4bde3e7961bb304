package scheduler

import (
	"errors"
	"slices"
	"testing"

	"gvs/ipvs"
)

func TestNew(t *testing.T) {
	want := []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	Names()[0] = "changed"
	if Names()[0] != "rr" {
		t.Fatal("Names returned the package's own slice")
	}
	for _, n := range want {
		s, err := New(n, 0)
		if err != nil {
			t.Fatalf("New(%q): %v", n, err)
		}
		if s.Name() != n {
			t.Errorf("New(%q).Name() = %q", n, s.Name())
		}
	}
	if s := mustNew(t, "", 0); s.Name() != ipvs.DefaultScheduler {
		t.Errorf(`New("").Name() = %q, want %q`, s.Name(), ipvs.DefaultScheduler)
	}
	for _, n := range []string{"none", "RR", "foo", "wlc "} {
		if s, err := New(n, 0); !errors.Is(err, ErrUnknown) || s != nil {
			t.Errorf("New(%q) = %v, %v; want nil, ErrUnknown", n, s, err)
		}
	}
	for _, n := range []string{"lblc", "lblcr"} {
		if _, ok := mustNew(t, n, 0).(ExpirationSetter); !ok {
			t.Errorf("%s does not implement ExpirationSetter", n)
		}
	}
	if _, err := NewMH(0, 4099); err == nil {
		t.Error("NewMH accepted a table size outside MHTableSizes")
	}
	for _, m := range MHTableSizes {
		if _, err := NewMH(0, m); err != nil {
			t.Errorf("NewMH(%d): %v", m, err)
		}
	}
}

// TestStateless is the known-answer table for lc, wlc, sed, nq, fo and ovf.
func TestStateless(t *testing.T) {
	tests := []struct {
		sched string
		desc  string
		dests []spec
		want  string
	}{
		// lc: minimum (active<<8)+inactive.
		{"lc", "min overhead", []spec{{name: "A", w: 1, act: 1}, {name: "B", w: 1, inact: 10}, {name: "C", w: 1, inact: 11}}, "B"},
		{"lc", "tie: first in list", []spec{{name: "A", w: 1, inact: 3}, {name: "B", w: 5, inact: 3}}, "A"},
		{"lc", "weight ignored", []spec{{name: "A", w: 100, inact: 4}, {name: "B", w: 1, inact: 3}}, "B"},
		{"lc", "weight 0 skipped", []spec{{name: "A", w: 0}, {name: "B", w: 1, act: 5}}, "B"},
		{"lc", "overload skipped", []spec{{name: "A", w: 1, over: true}, {name: "B", w: 1, act: 5}}, "B"},
		{"lc", "none usable", []spec{{name: "A", w: 0}, {name: "B", w: 1, over: true}}, "-"},
		{"lc", "empty", nil, "-"},
		// wlc: minimum overhead/weight.
		{"wlc", "min ratio", []spec{{name: "A", w: 1, act: 1}, {name: "B", w: 3, act: 2}}, "B"}, // 256/1 vs 512/3
		{"wlc", "tie: first", []spec{{name: "A", w: 2, inact: 20}, {name: "B", w: 1, inact: 10}}, "A"},
		{"wlc", "inactive count", []spec{{name: "A", w: 1, inact: 255}, {name: "B", w: 1, act: 1}}, "A"},
		{"wlc", "weight 0 with no conns skipped", []spec{{name: "A", w: 0}, {name: "B", w: 1, act: 9}}, "B"},
		{"wlc", "overload skipped", []spec{{name: "A", w: 9, over: true}, {name: "B", w: 1, act: 9}}, "B"},
		{"wlc", "large counters, 64-bit", []spec{{name: "A", w: 65535, act: 1 << 22}, {name: "B", w: 65534, act: 1 << 22}}, "A"},
		{"wlc", "none", []spec{{name: "A", w: 0}}, "-"},
		// sed: minimum (active+1)/weight, inactive ignored.
		{"sed", "min expected delay", []spec{{name: "A", w: 1, inact: 100}, {name: "B", w: 3, act: 1}}, "B"}, // 1/1 vs 2/3
		{"sed", "inactive ignored", []spec{{name: "A", w: 1, inact: 1000}, {name: "B", w: 1, act: 1}}, "A"},
		{"sed", "tie: first", []spec{{name: "A", w: 1, act: 1}, {name: "B", w: 2, act: 3}}, "A"}, // 2/1 vs 4/2
		{"sed", "weight 0 / overload skipped", []spec{{name: "A", w: 0}, {name: "B", w: 5, over: true}, {name: "C", w: 1, act: 7}}, "C"},
		// nq: first idle usable, else sed.
		{"nq", "first idle wins over better sed", []spec{{name: "A", w: 100, act: 1}, {name: "B", w: 1}, {name: "C", w: 50}}, "B"},
		{"nq", "idle but weight 0 skipped", []spec{{name: "A", w: 0}, {name: "B", w: 1, act: 1}}, "B"},
		{"nq", "idle but overloaded skipped", []spec{{name: "A", w: 1, over: true}, {name: "B", w: 1, act: 1}}, "B"},
		{"nq", "no idle: sed", []spec{{name: "A", w: 1, act: 1}, {name: "B", w: 4, act: 3}}, "B"}, // 2/1 vs 4/4
		{"nq", "no idle: sed tie first", []spec{{name: "A", w: 1, act: 1}, {name: "B", w: 2, act: 3}}, "A"},
		{"nq", "none", []spec{{name: "A", w: 0}, {name: "B", w: 2, over: true}}, "-"},
		// fo: highest weight, first on ties.
		{"fo", "highest weight", []spec{{name: "A", w: 1}, {name: "B", w: 5, act: 100}, {name: "C", w: 3}}, "B"},
		{"fo", "tie: first", []spec{{name: "A", w: 5}, {name: "B", w: 5}}, "A"},
		{"fo", "overload skipped", []spec{{name: "A", w: 9, over: true}, {name: "B", w: 2}}, "B"},
		{"fo", "all weight 0", []spec{{name: "A", w: 0}, {name: "B", w: 0}}, "-"},
		// ovf: highest weight with active <= weight.
		{"ovf", "highest not full", []spec{{name: "A", w: 2, act: 1}, {name: "B", w: 5, act: 5}}, "B"},
		{"ovf", "overflow to next", []spec{{name: "A", w: 2, act: 1}, {name: "B", w: 5, act: 6}}, "A"},
		{"ovf", "inactive ignored", []spec{{name: "A", w: 2}, {name: "B", w: 5, inact: 1000}}, "B"},
		{"ovf", "tie: first", []spec{{name: "A", w: 3, act: 3}, {name: "B", w: 3}}, "A"},
		{"ovf", "weight 0 / overload skipped", []spec{{name: "A", w: 0}, {name: "B", w: 9, over: true}, {name: "C", w: 1, act: 1}}, "C"},
		{"ovf", "all full", []spec{{name: "A", w: 1, act: 2}, {name: "B", w: 2, act: 3}}, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.sched+"/"+tt.desc, func(t *testing.T) {
			svc, m := build(t, tt.dests...)
			s := mustNew(t, tt.sched, 0)
			s.Update(svc)
			if got := nameOf(m, s.Schedule(svc, flow("198.51.100.1", "192.0.2.1", 1000))); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
