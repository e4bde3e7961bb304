package ipvs

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
)

// fakeSched is a scheduler for tests: first usable destination, and a
// record of Update calls.
type fakeSched struct {
	name    string
	flags   SvcFlags
	mu      sync.Mutex
	updates int
	seen    int // number of dests at the last Update
}

func (f *fakeSched) Name() string { return f.name }

func (f *fakeSched) Schedule(svc *Service, _ *Flow) *Dest {
	for _, d := range svc.Dests() {
		if d.Usable() {
			return d
		}
	}
	return nil
}

func (f *fakeSched) Update(svc *Service) {
	f.mu.Lock()
	f.updates++
	f.seen = len(svc.Dests())
	f.mu.Unlock()
}

var knownScheds = map[string]bool{"rr": true, "wrr": true, "lc": true, "wlc": true, "sh": true, "mh": true,
	"dh": true, "sed": true, "nq": true, "fo": true, "ovf": true, "lblc": true, "lblcr": true}

func newFakeSched(name string, flags SvcFlags) (Scheduler, error) {
	if !knownScheds[name] {
		return nil, errors.New("unknown scheduler")
	}
	return &fakeSched{name: name, flags: flags}, nil
}

// The model's change API, without ipvsadm: typed changes, plain errors.

var (
	txKey  = ServiceKey{Proto: ProtoTCP, Addr: netip.MustParseAddr("198.51.100.1"), Port: 80}
	txDst1 = DestConfig{Addr: netip.MustParseAddr("198.18.0.11"), Port: 8080, Method: Masq, Weight: 1}
	txDst2 = DestConfig{Addr: netip.MustParseAddr("198.18.0.12"), Port: 8080, Method: Masq, Weight: 1}
)

func txTable(t *testing.T) *Table {
	t.Helper()
	tab := NewTable(newFakeSched)
	err := tab.Apply(
		AddService{Config: ServiceConfig{ServiceKey: txKey, Scheduler: "wrr", Netmask: 32}},
		AddDest{Service: txKey, Config: txDst1},
		AddDest{Service: txKey, Config: txDst2},
	)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestTxErrors(t *testing.T) {
	tab := txTable(t)
	other := txKey
	other.Port = 81
	mcast := txDst1
	mcast.Addr = netip.MustParseAddr("224.0.0.1")
	badThresh := txDst1
	badThresh.LThreshold, badThresh.UThreshold = 5, 4
	heavy := txDst1
	heavy.Weight = 65536
	gue := txDst1
	gue.Method, gue.TunType = Tunnel, TunGUE
	tests := []struct {
		name string
		c    Change
		want error
	}{
		{"add existing service", AddService{Config: ServiceConfig{ServiceKey: txKey, Scheduler: "rr"}}, ErrServiceExists},
		{"unknown scheduler", AddService{Config: ServiceConfig{ServiceKey: other, Scheduler: "nosuch"}}, ErrNoScheduler},
		{"unknown pe", AddService{Config: ServiceConfig{ServiceKey: other, Scheduler: "rr", PE: "sip"}}, ErrNoPE},
		{"edit missing service", EditService{Config: ServiceConfig{ServiceKey: other, Scheduler: "rr"}}, ErrNoService},
		{"delete missing service", DeleteService{Key: other}, ErrNoService},
		{"zero missing service", Zero{Service: other}, ErrNoService},
		{"dest of missing service", AddDest{Service: other, Config: txDst1}, ErrNoService},
		{"add existing dest", AddDest{Service: txKey, Config: txDst1}, ErrDestExists},
		{"edit missing dest", EditDest{Service: txKey, Config: mcast}, ErrNoDest},
		{"delete missing dest", DeleteDest{Service: txKey, Dest: mcast.AddrPort()}, ErrNoDest},
		{"multicast dest", AddDest{Service: txKey, Config: mcast}, ErrInvalid},
		{"thresholds", EditDest{Service: txKey, Config: badThresh}, ErrRange},
		{"weight", EditDest{Service: txKey, Config: heavy}, ErrRange},
		{"gue without port", EditDest{Service: txKey, Config: gue}, ErrInvalid},
	}
	for _, tc := range tests {
		if err := tab.Apply(tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	svcs := tab.Services()
	if len(svcs) != 1 || len(svcs[0].Dests()) != 2 || svcs[0].Dests()[1].Weight() != 1 {
		t.Fatal("failed changes changed the table")
	}
}

// A health checker quiesces one real server and restores it: same objects,
// the rest of the configuration kept.
func TestTxSetWeight(t *testing.T) {
	tab := txTable(t)
	svc := tab.Service(txKey)
	d1 := svc.Dests()[1]
	d1.Stats[0].InPkts.Add(3)
	up := txDst1
	up.UThreshold = 100
	if err := tab.Apply(EditDest{Service: txKey, Config: up}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []int{0, 7} {
		if err := tab.Update(func(tx *Tx) error { return tx.SetWeight(txKey, txDst1.AddrPort(), w) }); err != nil {
			t.Fatal(err)
		}
		if tab.Service(txKey) != svc || svc.Dests()[1] != d1 {
			t.Fatal("SetWeight made new objects")
		}
		if d1.Weight() != w || d1.UThreshold() != 100 || d1.Stats[0].InPkts.Load() != 3 {
			t.Errorf("weight %d: got weight %d, uthreshold %d", w, d1.Weight(), d1.UThreshold())
		}
	}
	err := tab.Update(func(tx *Tx) error { return tx.SetWeight(txKey, netip.MustParseAddrPort("198.18.0.99:8080"), 1) })
	if !errors.Is(err, ErrNoDest) {
		t.Errorf("SetWeight of a missing dest: %v", err)
	}
	other := txKey
	other.Port = 81
	if err := tab.Update(func(tx *Tx) error { return tx.SetWeight(other, txDst1.AddrPort(), 1) }); !errors.Is(err, ErrNoService) {
		t.Errorf("SetWeight of a missing service: %v", err)
	}
}

// A transaction whose function fails changes nothing, even after changes
// that succeeded; one that succeeds publishes them all, with IPVS's object
// identity (a dest deleted and re-added is the same object).
func TestTxAllOrNothing(t *testing.T) {
	tab := txTable(t)
	svc := tab.Service(txKey)
	d2 := svc.Dests()[0]
	stop := errors.New("stop")
	err := tab.Update(func(tx *Tx) error {
		tx.Flush()
		if _, ok := tx.Service(txKey); ok {
			t.Error("service visible in the transaction after Flush")
		}
		tx.SetTimeouts(Timeouts{TCP: 5})
		return stop
	})
	if err != stop || tab.Service(txKey) != svc || len(svc.Dests()) != 2 || tab.Timeouts() != DefaultTimeouts {
		t.Fatalf("a failed transaction changed the table (err %v)", err)
	}
	err = tab.Update(func(tx *Tx) error {
		if err := tx.DeleteDest(txKey, txDst2.AddrPort()); err != nil {
			return err
		}
		if _, ok := tx.Dest(txKey, txDst2.AddrPort()); ok {
			t.Error("deleted dest still in the transaction")
		}
		tx.SetTimeouts(Timeouts{UDP: 60})
		return tx.AddDest(txKey, txDst2)
	})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Dests()[0] != d2 || !d2.Available() {
		t.Error("a dest deleted and re-added in one transaction is a new object")
	}
	if to := tab.Timeouts(); to != (Timeouts{TCP: 900, TCPFin: 120, UDP: 60}) {
		t.Errorf("timeouts %+v", to)
	}
	if err := tab.Apply(DeleteService{Key: txKey}, AddService{Config: svc.Config}); err != nil {
		t.Fatal(err)
	}
	if tab.Service(txKey) != svc || len(svc.Dests()) != 0 {
		t.Error("a re-created service is a new object, or kept its dests")
	}
}
