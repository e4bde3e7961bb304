// Package ipvstest holds test helpers for code built on package ipvs.
package ipvstest

import (
	"errors"
	"sync"

	"gvs/ipvs"
)

// FakeSched is a scheduler for tests: it picks the first usable
// destination and records its Update calls.
type FakeSched struct {
	name    string
	mu      sync.Mutex
	updates int
	seen    int // number of dests at the last Update
}

// Name is the scheduler name the fake was made for.
func (f *FakeSched) Name() string { return f.name }

// Schedule returns the first usable destination of svc.
func (f *FakeSched) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	for _, d := range svc.Dests() {
		if d.Usable() {
			return d
		}
	}
	return nil
}

// Update counts the call and the destinations svc has.
func (f *FakeSched) Update(svc *ipvs.Service) {
	f.mu.Lock()
	f.updates++
	f.seen = len(svc.Dests())
	f.mu.Unlock()
}

// Updates reports how many Update calls there were and how many
// destinations the last one saw.
func (f *FakeSched) Updates() (updates, seen int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.updates, f.seen
}

var knownScheds = map[string]bool{"rr": true, "wrr": true, "lc": true, "wlc": true, "sh": true, "mh": true,
	"dh": true, "sed": true, "nq": true, "fo": true, "ovf": true, "lblc": true, "lblcr": true}

// NewFakeSched is an ipvs.NewTable scheduler factory that makes a
// FakeSched for every scheduler name IPVS has and refuses the others.
func NewFakeSched(name string, _ ipvs.SvcFlags) (ipvs.Scheduler, error) {
	if !knownScheds[name] {
		return nil, errors.New("unknown scheduler")
	}
	return &FakeSched{name: name}, nil
}
