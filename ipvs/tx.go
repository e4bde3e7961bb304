package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Errors of rejected changes. They are what the kernel's errnos tell
// apart; a change's error wraps one of them (test with errors.Is) and
// names the service or destination. On error a transaction changes
// nothing.
var (
	// ErrServiceExists: AddService of an existing service (EEXIST).
	ErrServiceExists = errors.New("service exists")
	// ErrNoService: a change to a missing service (ESRCH), including the
	// destination changes of a missing service.
	ErrNoService = errors.New("no such service")
	// ErrDestExists: AddDest of an existing destination (EEXIST).
	ErrDestExists = errors.New("destination exists")
	// ErrNoDest: EditDest or DeleteDest of a missing destination (ENOENT).
	ErrNoDest = errors.New("no such destination")
	// ErrNoScheduler: an unknown scheduler, or scheduler flags it refuses
	// (ENOENT).
	ErrNoScheduler = errors.New("no such scheduler")
	// ErrNoPE: a persistence engine not allowed by AllowPE (ENOENT).
	ErrNoPE = errors.New("no such persistence engine")
	// ErrRange: a weight outside 0..65535 or a lower threshold above the
	// upper one (ERANGE).
	ErrRange = errors.New("value out of range")
	// ErrInvalid: a change the kernel refuses with EINVAL (destination
	// address not unicast, GUE tunnel without a port).
	ErrInvalid = errors.New("invalid argument")
)

// Timeouts are the protocol timeouts in seconds: TCP established, TCP
// after FIN, UDP. In SetTimeouts a zero leaves that timeout unchanged, as
// in IPVS.
type Timeouts struct {
	TCP, TCPFin, UDP int
}

// DefaultTimeouts are IPVS's defaults (900 120 300 on a fresh kernel).
var DefaultTimeouts = Timeouts{TCP: 900, TCPFin: 120, UDP: 300}

// Tx is a transaction on a Table: changes are validated one by one against
// a staged copy and published together when the transaction's function
// returns nil (Table.Update). A Tx is only valid inside that function.
type Tx struct {
	t        *Table
	svcs     map[ServiceKey]*stSvc
	newOrder []ServiceKey // services without a live object, in creation order
	cleared  bool
	zeroAll  bool
	timeouts Timeouts
}

// stSvc is a service in a transaction.
type stSvc struct {
	key     ServiceKey
	obj     *Service // the live object with this key when the batch began
	present bool     // exists in the staged state
	fresh   bool     // created in this batch (new counters)
	touched bool     // changed in this batch
	zero    bool
	cfg     ServiceConfig
	sched   Scheduler    // new scheduler instance, nil: keep obj's
	dests   []DestConfig // oldest first (the reverse of IPVS list order)
	// lastW is the last_weight the batch gave a destination: its weight
	// when added, its last non-zero weight when edited (as
	// __ip_vs_update_dest keeps it, change by change).
	lastW map[netip.AddrPort]int
}

// setLastWeight records a destination's last_weight after an add or edit.
func (s *stSvc) setLastWeight(d DestConfig, add bool) {
	if add || d.Weight != 0 {
		if s.lastW == nil {
			s.lastW = map[netip.AddrPort]int{}
		}
		s.lastW[d.AddrPort()] = d.Weight
	}
}

// Update runs fn as one transaction: when fn returns nil, every change it
// made is published at once; when it returns an error (for example one a
// Tx method returned), nothing changes and Update returns that error.
// Services and destinations present before and after keep their objects
// (counters and connections continue). fn must not call other Table
// methods.
func (t *Table) Update(fn func(tx *Tx) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	tx := &Tx{t: t, svcs: map[ServiceKey]*stSvc{}, timeouts: t.timeouts}
	if err := fn(tx); err != nil {
		return err
	}
	tx.commit()
	return nil
}

// Apply applies changes in order as one transaction (see Update). The
// error is the first failing change's.
func (t *Table) Apply(changes ...Change) error {
	return t.Update(func(tx *Tx) error {
		for _, c := range changes {
			if err := c.Apply(tx); err != nil {
				return err
			}
		}
		return nil
	})
}

// get returns the staged state of a service key (present or not).
func (tx *Tx) get(k ServiceKey) *stSvc {
	if s := tx.svcs[k]; s != nil {
		return s
	}
	s := &stSvc{key: k, obj: tx.t.byKey[k]}
	if s.obj != nil && !tx.cleared {
		s.present = true
		s.cfg = s.obj.Config
		ds := s.obj.Dests()
		for i := len(ds) - 1; i >= 0; i-- {
			s.dests = append(s.dests, ds[i].Config())
		}
	}
	tx.svcs[k] = s
	return s
}

func (s *stSvc) findDest(ap netip.AddrPort) int {
	for i := range s.dests {
		if s.dests[i].AddrPort() == ap {
			return i
		}
	}
	return -1
}

// Service returns the staged configuration of a service.
func (tx *Tx) Service(k ServiceKey) (ServiceConfig, bool) {
	s := tx.get(k.Norm())
	return s.cfg, s.present
}

// Dest returns the staged configuration of a service's destination.
func (tx *Tx) Dest(k ServiceKey, ap netip.AddrPort) (DestConfig, bool) {
	s := tx.get(k.Norm())
	if !s.present {
		return DestConfig{}, false
	}
	if i := s.findDest(ap); i >= 0 {
		return s.dests[i], true
	}
	return DestConfig{}, false
}

// present reports whether service k (normalized) exists in the staged
// state, without staging it.
func (tx *Tx) present(k ServiceKey) bool {
	if s := tx.svcs[k]; s != nil {
		return s.present
	}
	return !tx.cleared && tx.t.byKey[k] != nil
}

// Services returns the staged configurations of every service, in
// creation order (the order of Table.Read): what the table will hold if
// the transaction commits now. Reading it inside Update is consistent with
// the changes the transaction then makes: nothing else changes the table
// meanwhile.
func (tx *Tx) Services() []ServiceConfig {
	var out []ServiceConfig
	for _, svc := range tx.t.svcs {
		k := svc.Config.ServiceKey.Norm()
		if tx.present(k) {
			c, _ := tx.Service(k)
			out = append(out, c)
		}
	}
	for _, k := range tx.newOrder {
		if s := tx.svcs[k]; s.present && s.obj == nil {
			out = append(out, s.cfg)
		}
	}
	return out
}

// Dests returns the staged configurations of a service's destinations,
// newest first (the order of Service.Dests); nil when the service does
// not exist.
func (tx *Tx) Dests(k ServiceKey) []DestConfig {
	s := tx.get(k.Norm())
	if !s.present {
		return nil
	}
	out := make([]DestConfig, len(s.dests))
	for i, d := range s.dests {
		out[len(out)-1-i] = d
	}
	return out
}

// Flush deletes every service (ipvsadm -C).
func (tx *Tx) Flush() {
	tx.cleared = true
	tx.svcs = map[ServiceKey]*stSvc{}
	tx.newOrder = nil
}

// SetTimeouts sets the protocol timeouts; a zero field keeps that timeout.
func (tx *Tx) SetTimeouts(to Timeouts) {
	for _, p := range [][2]*int{{&tx.timeouts.TCP, &to.TCP},
		{&tx.timeouts.TCPFin, &to.TCPFin}, {&tx.timeouts.UDP, &to.UDP}} {
		if *p[1] != 0 {
			*p[0] = *p[1]
		}
	}
}

// ZeroAll zeroes the counters of every service and of their destinations
// (ip_vs_zero_all; gvs keeps no global totals to zero): their baselines
// move to the current counts (Service.Counts, Dest.Counts) and their rate
// estimators' averages restart.
func (tx *Tx) ZeroAll() { tx.zeroAll = true }

// Zero zeroes the counters of one service and of its destinations, not of
// its trashed ones (ip_vs_zero_service); see ZeroAll.
func (tx *Tx) Zero(k ServiceKey) error {
	k = k.Norm()
	s := tx.get(k)
	if !s.present {
		return fmt.Errorf("zero %v: %w", k, ErrNoService)
	}
	s.zero = true
	return nil
}

// AddService creates a service (ipvsadm -A). Its scheduler is made by the
// Table's newSched; a service created again (also after Flush) reuses its
// old Service object with zeroed counters, and the real servers it takes
// back have theirs zeroed too.
func (tx *Tx) AddService(c ServiceConfig) error {
	key := c.ServiceKey.Norm()
	s := tx.get(key)
	if s.present {
		return fmt.Errorf("add service %v: %w", key, ErrServiceExists)
	}
	sched, err := tx.newScheduler(c)
	if err != nil {
		return fmt.Errorf("add service %v: %w", key, err)
	}
	c.ServiceKey = key
	*s = stSvc{key: key, obj: s.obj, present: true, fresh: true, touched: true, cfg: c, sched: sched}
	if s.obj == nil && !slices.Contains(tx.newOrder, key) {
		tx.newOrder = append(tx.newOrder, key)
	}
	return nil
}

// EditService replaces a service's configuration (ipvsadm -E); a new
// scheduler or new scheduler flags make a new scheduler instance.
func (tx *Tx) EditService(c ServiceConfig) error {
	key := c.ServiceKey.Norm()
	s := tx.get(key)
	if !s.present {
		return fmt.Errorf("edit service %v: %w", key, ErrNoService)
	}
	// Scheduler flags (sh-port, mh-fallback, ...) are fixed when a
	// scheduler is made, so a flag change needs a new one too.
	if c.Scheduler != s.cfg.Scheduler || c.Flags&SvcSchedMask != s.cfg.Flags&SvcSchedMask {
		sched, err := tx.newScheduler(c)
		if err != nil {
			return fmt.Errorf("edit service %v: %w", key, err)
		}
		s.sched = sched
	} else if err := tx.checkPE(c.PE); err != nil {
		return fmt.Errorf("edit service %v: %w", key, err)
	}
	c.ServiceKey = key
	s.cfg = c
	s.touched = true
	return nil
}

// DeleteService deletes a service and its destinations (ipvsadm -D).
func (tx *Tx) DeleteService(k ServiceKey) error {
	key := k.Norm()
	s := tx.get(key)
	if !s.present {
		return fmt.Errorf("delete service %v: %w", key, ErrNoService)
	}
	*s = stSvc{key: key, obj: s.obj, touched: true}
	return nil
}

// destOp is AddDest, EditDest or DeleteDest.
type destOp uint8

const (
	opAddDest destOp = iota
	opEditDest
	opDeleteDest
)

var destOpNames = [...]string{"add", "edit", "delete"}

// AddDest adds a real server to a service (ipvsadm -a). A destination
// deleted earlier comes back as the same Dest object.
func (tx *Tx) AddDest(k ServiceKey, d DestConfig) error { return tx.dest(opAddDest, k, d) }

// EditDest replaces a real server's configuration (ipvsadm -e).
func (tx *Tx) EditDest(k ServiceKey, d DestConfig) error { return tx.dest(opEditDest, k, d) }

// DeleteDest removes a real server from a service (ipvsadm -d); its Dest
// is kept for reuse while it has connections (or for the trash period).
func (tx *Tx) DeleteDest(k ServiceKey, ap netip.AddrPort) error {
	return tx.dest(opDeleteDest, k, DestConfig{Addr: ap.Addr(), Port: ap.Port()})
}

// SetWeight changes one real server's weight, keeping the rest of its
// configuration (a health checker's quiesce and restore).
func (tx *Tx) SetWeight(k ServiceKey, ap netip.AddrPort, weight int) error {
	d, ok := tx.Dest(k, ap)
	if !ok {
		err := ErrNoDest
		if _, ok := tx.Service(k); !ok {
			err = ErrNoService
		}
		return fmt.Errorf("set weight of %v of %v: %w", ap, k.Norm(), err)
	}
	d.Weight = weight
	return tx.EditDest(k, d)
}

func (tx *Tx) dest(op destOp, k ServiceKey, d DestConfig) error {
	key := k.Norm()
	s := tx.get(key)
	fail := func(err error) error {
		return fmt.Errorf("%s destination %v of %v: %w", destOpNames[op], d.AddrPort(), key, err)
	}
	if !s.present {
		return fail(ErrNoService)
	}
	if key.FWMark == 0 && op != opDeleteDest && (d.Method == Tunnel || d.Method == Route) {
		d.Port = key.Port
	}
	if op != opDeleteDest {
		if d.Weight < 0 || d.Weight > 65535 || d.LThreshold > d.UThreshold {
			return fail(ErrRange)
		}
		if d.Method == Tunnel && d.TunType == TunGUE && d.TunPort == 0 {
			return fail(ErrInvalid)
		}
	}
	i := s.findDest(d.AddrPort())
	switch op {
	case opAddDest:
		if i >= 0 {
			return fail(ErrDestExists)
		}
		if !unicast(d.Addr) {
			return fail(ErrInvalid)
		}
		s.dests = append(s.dests, d)
		s.setLastWeight(d, true)
	case opEditDest:
		if i < 0 {
			return fail(ErrNoDest)
		}
		s.dests[i] = d
		s.setLastWeight(d, false)
	default:
		if i < 0 {
			return fail(ErrNoDest)
		}
		s.dests = append(s.dests[:i:i], s.dests[i+1:]...)
	}
	s.touched = true
	return nil
}

// Change is one typed change, for building a batch as data (Table.Apply):
// the types below, each applying itself with the Tx method of its name.
type Change interface {
	Apply(tx *Tx) error
}

type (
	// AddService is Tx.AddService.
	AddService struct{ Config ServiceConfig }
	// EditService is Tx.EditService.
	EditService struct{ Config ServiceConfig }
	// DeleteService is Tx.DeleteService.
	DeleteService struct{ Key ServiceKey }
	// Flush is Tx.Flush.
	Flush struct{}
	// AddDest is Tx.AddDest.
	AddDest struct {
		Service ServiceKey
		Config  DestConfig
	}
	// EditDest is Tx.EditDest.
	EditDest struct {
		Service ServiceKey
		Config  DestConfig
	}
	// DeleteDest is Tx.DeleteDest.
	DeleteDest struct {
		Service ServiceKey
		Dest    netip.AddrPort
	}
	// SetTimeouts is Tx.SetTimeouts.
	SetTimeouts struct{ Timeouts Timeouts }
	// Zero is Tx.Zero, or Tx.ZeroAll when All is set.
	Zero struct {
		Service ServiceKey
		All     bool
	}
)

// Apply implements Change.
func (c AddService) Apply(tx *Tx) error { return tx.AddService(c.Config) }

// Apply implements Change.
func (c EditService) Apply(tx *Tx) error { return tx.EditService(c.Config) }

// Apply implements Change.
func (c DeleteService) Apply(tx *Tx) error { return tx.DeleteService(c.Key) }

// Apply implements Change.
func (Flush) Apply(tx *Tx) error { tx.Flush(); return nil }

// Apply implements Change.
func (c AddDest) Apply(tx *Tx) error { return tx.AddDest(c.Service, c.Config) }

// Apply implements Change.
func (c EditDest) Apply(tx *Tx) error { return tx.EditDest(c.Service, c.Config) }

// Apply implements Change.
func (c DeleteDest) Apply(tx *Tx) error { return tx.DeleteDest(c.Service, c.Dest) }

// Apply implements Change.
func (c SetTimeouts) Apply(tx *Tx) error { tx.SetTimeouts(c.Timeouts); return nil }

// Apply implements Change.
func (c Zero) Apply(tx *Tx) error {
	if c.All {
		tx.ZeroAll()
		return nil
	}
	return tx.Zero(c.Service)
}
