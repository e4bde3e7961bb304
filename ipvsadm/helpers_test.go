package ipvsadm

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"gvs/ipvs"
)

// fakeSched is a scheduler for tests: first usable destination, and a
// record of Update calls.
type fakeSched struct {
	name    string
	flags   ipvs.SvcFlags
	mu      sync.Mutex
	updates int
	seen    int // number of dests at the last Update
}

func (f *fakeSched) Name() string { return f.name }

func (f *fakeSched) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	for _, d := range svc.Dests() {
		if d.Usable() {
			return d
		}
	}
	return nil
}

func (f *fakeSched) Update(svc *ipvs.Service) {
	f.mu.Lock()
	f.updates++
	f.seen = len(svc.Dests())
	f.mu.Unlock()
}

var knownScheds = map[string]bool{"rr": true, "wrr": true, "lc": true, "wlc": true, "sh": true, "mh": true,
	"dh": true, "sed": true, "nq": true, "fo": true, "ovf": true, "lblc": true, "lblcr": true}

func newFakeSched(name string, flags ipvs.SvcFlags) (ipvs.Scheduler, error) {
	if !knownScheds[name] {
		return nil, errors.New("unknown scheduler")
	}
	return &fakeSched{name: name, flags: flags}, nil
}

// mustApply parses and applies command lines to t.
func mustApply(t testing.TB, tab *ipvs.Table, lines ...string) {
	t.Helper()
	for _, l := range lines {
		c, err := ParseArgs(strings.Fields(l))
		if err != nil {
			t.Fatalf("ParseArgs(%q): %v", l, err)
		}
		if err := Apply(tab, c); err != nil {
			t.Fatalf("Apply(%q): %v", l, err)
		}
	}
}

func key(s string) ipvs.ServiceKey {
	c, err := ParseArgs(append([]string{"-D"}, strings.Fields(s)...))
	if err != nil {
		panic(err)
	}
	return c.Service.ServiceKey
}
