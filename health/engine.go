package health

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Options are the engine's collaborators. Applier is required; the others have defaults.
type Options struct {
	Applier Applier
	Logger  *zap.Logger // default: no logging
	Clock   Clock       // default: SystemClock
	Runner  Runner      // prober pool; default: NewPool(16)
	Scripts ScriptRunner
	// OnEvent receives every transition, in order, outside the engine's lock.
	OnEvent func(Event)
	// ObserveCheck receives every check's duration and outcome (for a histogram).
	ObserveCheck func(CheckSample)
	// Random returns a uniform duration in [0, max]; default math/rand/v2.
	Random func(max time.Duration) time.Duration
}

// CheckSample is one finished check.
type CheckSample struct {
	Service  ServiceRef
	Dest     DestRef
	Checker  int
	Kind     Kind
	Duration time.Duration
	OK       bool
	// Timeout marks a failure by timeout (connect or read timeout, misc_timeout).
	Timeout bool
}

// EventKind is the kind of a transition.
type EventKind int

// Event kinds.
const (
	CheckerUp EventKind = iota
	CheckerDown
	RealUp
	RealDown
	QuorumGained
	QuorumLost
	SorryIn
	SorryOut
	WeightChanged
	Drained
	Undrained
)

var eventNames = [...]string{"checker_up", "checker_down", "real_up", "real_down", "quorum_gained",
	"quorum_lost", "sorry_in", "sorry_out", "weight_changed", "drained", "undrained"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event%d", int(k))
}

// Event is a transition. FIFO, when set, is the line keepalived writes to lvs_notify_fifo
// ("RS [1.2.3.4]:tcp:80 [192.168.201.15]:tcp:80 UP\n", "VS [192.168.201.15]:tcp:80 DOWN\n").
type Event struct {
	Time    time.Time
	Kind    EventKind
	Service ServiceRef
	Dest    DestRef
	Checker int // index of the checker in its real server, for CheckerUp/Down
	Weight  int // WeightChanged: the new weight
	Message string
	FIFO    string
}

// Runner runs probes: Go must not block the caller.
type Runner interface {
	Go(f func())
}

// Engine runs the checkers of a set of virtual services and drives an Applier.
type Engine struct {
	mu       sync.Mutex
	opts     Options
	log      *zap.Logger
	clock    Clock
	services []*service
	started  bool
	stopped  bool
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	after    []func() // work to do outside the lock, in order
}

type service struct {
	cfg         ServiceConfig
	reals       []*real
	quorumUp    bool
	sorryActive bool
	sorryApp    applied
}

type applied struct {
	present bool
	weight  int
}

type real struct {
	svc      *service
	cfg      RealConfig
	checkers []*checker
	alive    bool
	drained  bool
	eff      int64 // effective weight: configured plus misc_dynamic deltas
	app      applied
	since    time.Time
	ramp     bool
	rampFrom time.Time
	rampT    Timer
}

type checker struct {
	r         *real
	idx       int
	cfg       CheckerConfig
	m         *machine
	timer     Timer
	cur       int64 // misc_dynamic weight delta
	lastExit  int
	lastOK    bool
	lastErr   string
	lastCheck time.Time
	lastDur   time.Duration
	changed   time.Time
	checks    uint64
	successes uint64
	failures  uint64
	dead      bool // removed by Update: results still in flight are dropped
}

// New validates the configuration and builds an engine; Start runs it.
func New(cfgs []ServiceConfig, opts Options) (*Engine, error) {
	if opts.Applier == nil {
		return nil, errors.New("health: an Applier is required")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Runner == nil {
		opts.Runner = NewPool(16)
	}
	if opts.Random == nil {
		opts.Random = func(m time.Duration) time.Duration {
			if m <= 0 {
				return 0
			}
			return time.Duration(rand.Int64N(int64(m) + 1))
		}
	}
	e := &Engine{opts: opts, log: opts.Logger, clock: opts.Clock}
	svcs, err := e.build(cfgs)
	if err != nil {
		return nil, err
	}
	e.services = svcs
	return e, nil
}

// build validates cfgs and makes their services (nothing started). It logs keepalived's
// warnings for the quorum and hysteresis clamps.
func (e *Engine) build(cfgs []ServiceConfig) ([]*service, error) {
	var out []*service
	seen := map[ServiceRef]bool{}
	for _, sc := range cfgs {
		if seen[sc.Ref] {
			return nil, fmt.Errorf("health: duplicate virtual server %s", sc.Ref)
		}
		seen[sc.Ref] = true
		if sc.Quorum < 1 {
			sc.Quorum = 1
		}
		s := &service{cfg: sc}
		dests := map[DestRef]bool{}
		for _, rc := range sc.Reals {
			if dests[rc.Dest] {
				return nil, fmt.Errorf("health: duplicate real server %s in VS %s", rc.Dest.format(sc.Ref), sc.Ref)
			}
			dests[rc.Dest] = true
			r := &real{svc: s, cfg: rc, eff: int64(rc.Weight)}
			for i, cc := range rc.Checkers {
				if cc.Probe == nil {
					return nil, fmt.Errorf("health: checker %d of %s in VS %s has no probe", i, rc.Dest.format(sc.Ref), sc.Ref)
				}
				if cc.DelayLoop <= 0 {
					return nil, fmt.Errorf("health: checker %d of %s in VS %s: delay_loop must be positive", i, rc.Dest.format(sc.Ref), sc.Ref)
				}
				if cc.Retry < 0 || cc.DelayBeforeRetry < 0 || cc.Warmup < 0 {
					return nil, fmt.Errorf("health: checker %d of %s in VS %s: negative timing", i, rc.Dest.format(sc.Ref), sc.Ref)
				}
				r.checkers = append(r.checkers, &checker{r: r, idx: i, cfg: cc, m: newMachine(cc)})
			}
			s.reals = append(s.reals, r)
		}
		e.clampQuorum(s)
		out = append(out, s)
	}
	return out, nil
}

// clampQuorum applies check_data.c's limits: a quorum above the sum of the weights could never
// be reached, and the hysteresis must stay below the quorum.
func (e *Engine) clampQuorum(s *service) {
	sc := s.cfg
	var sum int
	for _, rc := range sc.Reals {
		sum += max(rc.Weight, 0)
	}
	if s.cfg.Quorum > sum {
		e.log.Warn(fmt.Sprintf("Warning - quorum %d for %s exceeds total weight of real servers %d, reducing quorum to %d",
			s.cfg.Quorum, sc.Ref, sum, sum))
		s.cfg.Quorum = sum
	}
	if s.cfg.Hysteresis > 0 && s.cfg.Hysteresis >= s.cfg.Quorum {
		h := max(s.cfg.Quorum-1, 0)
		e.log.Warn(fmt.Sprintf("Virtual server %s: hysteresis %d >= quorum %d; setting hysteresis to %d",
			sc.Ref, s.cfg.Hysteresis, s.cfg.Quorum, h))
		s.cfg.Hysteresis = h
	}
}

// Start applies the initial state (real servers without a failed checker are added before any
// check, as keepalived's init_service_rs does; alpha checkers start failed) and schedules the
// first check of every checker after BootstrapDelay plus a random part of its warmup.
func (e *Engine) Start() {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return
	}
	e.started = true
	e.ctx, e.cancel = context.WithCancel(context.Background())
	now := e.clock.Now()
	for _, s := range e.services {
		e.startService(s, now)
	}
	e.unlockAndRun()
}

// startService applies a service's initial state and schedules its checkers' first checks.
func (e *Engine) startService(s *service, now time.Time) {
	for _, r := range s.reals {
		r.alive = r.allUp()
		r.since = now
	}
	e.updateQuorum(s, true, now)
	e.reconcile(s, now)
	for _, r := range s.reals {
		for _, c := range r.checkers {
			e.activate(c, now)
		}
	}
}

// activate schedules a new checker's first check.
func (e *Engine) activate(c *checker, now time.Time) {
	r := c.r
	e.log.Info(fmt.Sprintf("Activating healthchecker for service %s for VS %s", r.cfg.Dest.format(r.svc.cfg.Ref), r.svc.cfg.Ref))
	c.changed = now
	e.schedule(c, BootstrapDelay+e.opts.Random(c.cfg.Warmup))
}

// Stop stops every checker and waits for the probes in flight. With remove, it deletes every
// destination it added (keepalived's default at shutdown) and, for services with omega, runs
// notify_down and quorum_down.
func (e *Engine) Stop(remove bool) {
	e.mu.Lock()
	if e.stopped || !e.started {
		e.stopped = true
		e.mu.Unlock()
		return
	}
	e.stopped = true
	e.cancel()
	now := e.clock.Now()
	for _, s := range e.services {
		for _, r := range s.reals {
			r.stopRamp()
			for _, c := range r.checkers {
				if c.timer != nil {
					c.timer.Stop()
					c.timer = nil
				}
			}
		}
		if !remove {
			continue
		}
		if s.sorryApp.present {
			if err := e.opts.Applier.SetSorry(s.cfg.Ref, s.cfg.Sorry.Dest, false, 0); err == nil {
				s.sorryApp = applied{}
			}
			s.sorryActive = false
		}
		for _, r := range s.reals {
			inh := ""
			if r.cfg.Inhibit && !r.alive {
				inh = "(inhibited) "
			}
			e.log.Info(fmt.Sprintf("Shutting down %sservice %s from VS %s", inh, r.cfg.Dest.format(s.cfg.Ref), s.cfg.Ref))
			if r.app.present {
				if err := e.opts.Applier.SetDest(s.cfg.Ref, r.cfg.Dest, false, 0); err != nil {
					e.log.Warn("removing real server failed", zap.Error(err))
				} else {
					r.app = applied{}
				}
			}
			if r.alive {
				r.alive = false
				if s.cfg.Omega {
					e.rsNotify(r, now, fmt.Sprintf("Shutting down service %s from VS %s", r.cfg.Dest.format(s.cfg.Ref), s.cfg.Ref))
				}
			}
		}
		s.quorumUp = false
		if s.cfg.Omega {
			e.vsNotify(s, QuorumLost, now, "")
		}
	}
	e.unlockAndRun()
	e.wg.Wait()
}

// SetDrain puts a real server in (or takes it out of) the operator's drain: a drained real
// server is kept at weight 0 (or absent if it is down and not inhibited) whatever its checks
// say, and does not count towards the quorum. Its checks keep running.
func (e *Engine) SetDrain(svc ServiceRef, dest DestRef, drained bool) error {
	e.mu.Lock()
	r := e.find(svc, dest)
	if r == nil {
		e.mu.Unlock()
		return fmt.Errorf("health: no real server %s in VS %s", dest.format(svc), svc)
	}
	if r.drained == drained {
		e.mu.Unlock()
		return nil
	}
	now := e.clock.Now()
	r.drained = drained
	s := r.svc
	kind, verb := Drained, "Draining"
	if !drained {
		kind, verb = Undrained, "Undraining"
		if r.alive {
			e.startRamp(r, now)
		}
	}
	msg := fmt.Sprintf("%s service %s of VS %s", verb, dest.format(s.cfg.Ref), s.cfg.Ref)
	e.log.Info(msg)
	e.emit(Event{Time: now, Kind: kind, Service: s.cfg.Ref, Dest: dest, Message: msg})
	e.updateQuorum(s, false, now)
	e.reconcile(s, now)
	e.unlockAndRun()
	return nil
}

func (e *Engine) find(svc ServiceRef, dest DestRef) *real {
	for _, s := range e.services {
		if s.cfg.Ref != svc {
			continue
		}
		for _, r := range s.reals {
			if r.cfg.Dest == dest {
				return r
			}
		}
	}
	return nil
}

// unlockAndRun releases the lock and runs the deferred work (events, scripts, observations).
func (e *Engine) unlockAndRun() {
	after := e.after
	e.after = nil
	e.mu.Unlock()
	for _, f := range after {
		f()
	}
}

func (e *Engine) emit(ev Event) {
	if e.opts.OnEvent != nil {
		f := e.opts.OnEvent
		e.after = append(e.after, func() { f(ev) })
	}
}

func (e *Engine) runScript(s *Script) {
	if s == nil || len(s.Argv) == 0 || e.opts.Scripts == nil {
		return
	}
	sc, run := *s, e.opts.Scripts
	e.after = append(e.after, func() { run.Run(sc) })
}

func (e *Engine) schedule(c *checker, d time.Duration) {
	c.timer = e.clock.AfterFunc(d, func() { e.launch(c) })
}

// launch starts one check of c in the prober pool.
func (e *Engine) launch(c *checker) {
	e.mu.Lock()
	if e.stopped || c.dead {
		e.mu.Unlock()
		return
	}
	c.timer = nil
	step := c.m.step()
	start := e.clock.Now()
	ctx := e.ctx
	e.wg.Add(1)
	e.mu.Unlock()
	e.opts.Runner.Go(func() {
		defer e.wg.Done()
		res := c.cfg.Probe.Check(ctx, step)
		e.deliver(c, start, res)
	})
}

// deliver feeds a check's result to its checker's state machine and acts on the outcome.
func (e *Engine) deliver(c *checker, start time.Time, res Result) {
	e.mu.Lock()
	if e.stopped || c.dead {
		e.mu.Unlock()
		return
	}
	now := e.clock.Now()
	r, s := c.r, c.r.svc
	ok := res.Err == nil
	c.checks++
	c.lastCheck, c.lastDur, c.lastOK = now, now.Sub(start), ok
	if ok {
		c.successes++
		c.lastErr = ""
	} else {
		c.failures++
		c.lastErr = res.Err.Error()
		if c.m.isUp && c.cfg.LogAllFailures {
			e.log.Info(fmt.Sprintf("%s check to %s failed: %v.", c.cfg.Probe.Kind(), r.cfg.Dest.format(s.cfg.Ref), res.Err))
		}
	}
	if e.opts.ObserveCheck != nil {
		obs, sample := e.opts.ObserveCheck, CheckSample{Service: s.cfg.Ref, Dest: r.cfg.Dest, Checker: c.idx,
			Kind: c.cfg.Probe.Kind(), Duration: c.lastDur, OK: ok,
			Timeout: !ok && (isTimeout(res.Err) || res.Exit != nil && res.Exit.TimedOut)}
		e.after = append(e.after, func() { obs(sample) })
	}
	wasUp, hadRun := c.m.isUp, c.m.hasRun
	if c.cfg.Probe.Kind() == KindMisc && ok {
		// misc_dynamic: exit 2..255 sets the weight to exit-2 (check_misc.c).
		code := 0
		if res.HasWeight {
			code = res.Weight + 2
		}
		if code != c.lastExit {
			cur := int64(0)
			if res.HasWeight {
				cur = int64(res.Weight) - int64(r.cfg.Weight)
			}
			e.setWeight(r, r.eff-c.cur+cur, now)
			c.cur = cur
			c.lastExit = code
		}
	}
	v := c.m.result(ok)
	if v.call {
		e.logChecker(c, v, res, wasUp, hadRun)
		if !v.up && c.cfg.Probe.Kind() == KindMisc {
			r.eff -= c.cur
			c.cur = 0
			c.lastExit = -1
			if res.Exit != nil && !res.Exit.TimedOut && res.Exit.Signal == 0 {
				c.lastExit = res.Exit.Code
			}
		}
		e.checkerState(c, v, now)
	}
	e.reconcile(s, now)
	d := v.delay
	if c.cfg.Probe.Kind() == KindMisc {
		// check_misc.c schedules the next run from the start of the last one.
		d = start.Add(d).Sub(now)
		if d <= 0 {
			d = time.Microsecond
		}
	}
	e.schedule(c, d)
	e.unlockAndRun()
}

// checkerState is update_svr_checker_state: a checker changing state, and the real server's
// liveness following the AND of its checkers.
func (e *Engine) checkerState(c *checker, v verdict, now time.Time) {
	r, s := c.r, c.r.svc
	if c.m.isUp == v.up {
		if v.first && (c.cfg.Alpha || !v.up) {
			e.rsNotify(r, now, "")
		}
		return
	}
	c.m.isUp = v.up
	c.changed = now
	kind := CheckerDown
	if v.up {
		kind = CheckerUp
	}
	e.emit(Event{Time: now, Kind: kind, Service: s.cfg.Ref, Dest: r.cfg.Dest, Checker: c.idx})
	if alive := r.allUp(); alive != r.alive {
		e.realState(r, alive, now)
	}
}

// realState is perform_svr_state.
func (e *Engine) realState(r *real, alive bool, now time.Time) {
	s := r.svc
	verb, prep := "Remov", "from"
	switch {
	case alive && r.cfg.Inhibit:
		verb, prep = "Enabl", "of"
	case alive:
		verb, prep = "Add", "to"
	case r.cfg.Inhibit:
		verb, prep = "Disabl", "of"
	}
	msg := fmt.Sprintf("%sing service %s %s VS %s", verb, r.cfg.Dest.format(s.cfg.Ref), prep, s.cfg.Ref)
	e.log.Info(msg)
	r.alive = alive
	r.since = now
	if alive {
		e.startRamp(r, now)
	} else {
		r.stopRamp()
	}
	e.rsNotify(r, now, msg)
	e.updateQuorum(s, false, now)
}

// rsNotify is do_rs_notifies: notify_up/notify_down and a RealUp/RealDown event carrying the
// FIFO line. msg is the transition's log line; it is empty when the state did not change
// (alpha's first failure notifies without a transition).
func (e *Engine) rsNotify(r *real, now time.Time, msg string) {
	s := r.svc
	state, sc, kind := "DOWN", r.cfg.NotifyDown, RealDown
	if r.alive {
		state, sc, kind = "UP", r.cfg.NotifyUp, RealUp
	}
	e.runScript(sc)
	e.emit(Event{Time: now, Kind: kind, Service: s.cfg.Ref, Dest: r.cfg.Dest, Message: msg,
		FIFO: fmt.Sprintf("RS %s %s %s\n", r.cfg.Dest.format(s.cfg.Ref), s.cfg.Ref, state)})
}

func (e *Engine) vsNotify(s *service, kind EventKind, now time.Time, msg string) {
	state, sc := "DOWN", s.cfg.QuorumDown
	if kind == QuorumGained {
		state, sc = "UP", s.cfg.QuorumUp
	}
	e.runScript(sc)
	e.emit(Event{Time: now, Kind: kind, Service: s.cfg.Ref, Message: msg,
		FIFO: fmt.Sprintf("VS %s %s\n", s.cfg.Ref, state)})
}

// weightSum is weigh_live_realservers, without drained real servers.
func (s *service) weightSum() int64 {
	var w int64
	for _, r := range s.reals {
		if r.alive && !r.drained {
			w += int64(realWeight(r.eff))
		}
	}
	return w
}

func realWeight(w int64) int {
	if w < 0 {
		return 0
	}
	if w > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(w)
}

// updateQuorum is update_quorum_state.
func (e *Engine) updateQuorum(s *service, init bool, now time.Time) {
	w := s.weightSum()
	q, h := int64(s.cfg.Quorum), int64(s.cfg.Hysteresis)
	threshold := q + h
	if s.quorumUp {
		threshold = q - h
	}
	vs := s.cfg.Ref.String()
	switch {
	case !s.quorumUp && w >= threshold:
		s.quorumUp = true
		msg := fmt.Sprintf("Gained quorum %d+%d=%d <= %d for VS %s", q, h, threshold, w, vs)
		e.log.Info(msg)
		if s.cfg.Sorry != nil && s.sorryActive {
			verb := "Removing"
			if s.cfg.Sorry.Inhibit {
				verb = "Disabling"
			}
			sm := fmt.Sprintf("%s sorry server %s from VS %s", verb, s.cfg.Sorry.Dest.format(s.cfg.Ref), vs)
			e.log.Info(sm)
			s.sorryActive = false
			e.emit(Event{Time: now, Kind: SorryOut, Service: s.cfg.Ref, Dest: s.cfg.Sorry.Dest, Message: sm})
			e.log.Info("Adding alive servers to the pool for VS " + vs)
		}
		e.vsNotify(s, QuorumGained, now, msg)
	case (s.quorumUp && (w == 0 || w < threshold)) || (init && !s.quorumUp && s.cfg.Sorry != nil && !s.sorryActive):
		s.quorumUp = false
		verb := "Lost quorum"
		if init {
			verb = "Starting with quorum down"
		}
		msg := fmt.Sprintf("%s %d-%d=%d > %d for VS %s", verb, q, h, threshold, w, vs)
		e.log.Info(msg)
		if s.cfg.Sorry != nil && !s.sorryActive {
			verb := "Adding"
			if s.cfg.Sorry.Inhibit {
				verb = "Enabling"
			}
			sm := fmt.Sprintf("%s sorry server %s to VS %s", verb, s.cfg.Sorry.Dest.format(s.cfg.Ref), vs)
			e.log.Info(sm)
			e.log.Info("Removing alive servers from the pool for VS " + vs)
			s.sorryActive = true
			e.emit(Event{Time: now, Kind: SorryIn, Service: s.cfg.Ref, Dest: s.cfg.Sorry.Dest, Message: sm})
		}
		e.vsNotify(s, QuorumLost, now, msg)
	}
}

// setWeight is update_svr_wgt (with the quorum update).
func (e *Engine) setWeight(r *real, w int64, now time.Time) {
	s := r.svc
	old, nw := realWeight(r.eff), realWeight(w)
	r.eff = w
	if old == nw {
		return
	}
	in := "in"
	if r.alive {
		in = ""
	}
	msg := fmt.Sprintf("Changing weight from %d to %d for %sactive service %s of VS %s", old, nw, in, r.cfg.Dest.format(s.cfg.Ref), s.cfg.Ref)
	e.log.Info(msg)
	e.emit(Event{Time: now, Kind: WeightChanged, Service: s.cfg.Ref, Dest: r.cfg.Dest, Weight: nw, Message: msg})
	e.updateQuorum(s, false, now)
}

func (r *real) allUp() bool {
	for _, c := range r.checkers {
		if !c.m.isUp {
			return false
		}
	}
	return true
}

// desired is what IPVS should hold for a real server.
func (e *Engine) desired(r *real, now time.Time) applied {
	s := r.svc
	if s.sorryActive || !r.alive || r.drained {
		if r.cfg.Inhibit || (r.drained && r.alive && !s.sorryActive) {
			return applied{present: true}
		}
		return applied{}
	}
	return applied{present: true, weight: r.weightAt(now)}
}

func (s *service) desiredSorry() applied {
	switch {
	case s.cfg.Sorry == nil:
		return applied{}
	case s.sorryActive:
		return applied{present: true, weight: s.cfg.Sorry.Weight}
	case s.cfg.Sorry.Inhibit:
		return applied{present: true}
	}
	return applied{}
}

// reconcile hands the differences between the desired and the applied state to the Applier:
// first everything leaving the pool (deletions, weight 0), then the rest, which gives
// keepalived's order (the real servers out before the sorry server in, and the reverse).
func (e *Engine) reconcile(s *service, now time.Time) {
	for phase := 0; phase < 2; phase++ {
		leaving := phase == 0
		for _, r := range s.reals {
			want := e.desired(r, now)
			if want == r.app || (want.present && want.weight > 0) == leaving {
				continue
			}
			if err := e.opts.Applier.SetDest(s.cfg.Ref, r.cfg.Dest, want.present, want.weight); err != nil {
				e.log.Warn("applying real server failed", zap.String("vs", s.cfg.Ref.String()),
					zap.String("rs", r.cfg.Dest.format(s.cfg.Ref)), zap.Error(err))
				continue
			}
			r.app = want
		}
		if s.cfg.Sorry != nil {
			want := s.desiredSorry()
			if want == s.sorryApp || (want.present && want.weight > 0) == leaving {
				continue
			}
			if err := e.opts.Applier.SetSorry(s.cfg.Ref, s.cfg.Sorry.Dest, want.present, want.weight); err != nil {
				e.log.Warn("applying sorry server failed", zap.String("vs", s.cfg.Ref.String()), zap.Error(err))
				continue
			}
			s.sorryApp = want
		}
	}
}

// Slowstart: the weight ramps linearly from 1 to the effective weight over cfg.Slowstart, in
// ten steps.
const slowstartSteps = 10

func (r *real) weightAt(now time.Time) int {
	w := realWeight(r.eff)
	if !r.ramp || w == 0 {
		return w
	}
	el := now.Sub(r.rampFrom)
	if el >= r.cfg.Slowstart {
		return w
	}
	rw := int(int64(w) * int64(el) / int64(r.cfg.Slowstart))
	return max(rw, 1)
}

func (e *Engine) startRamp(r *real, now time.Time) {
	r.stopRamp()
	if r.cfg.Slowstart <= 0 || !e.started {
		return
	}
	r.ramp, r.rampFrom = true, now
	e.rampTick(r)
}

func (e *Engine) rampTick(r *real) {
	step := max(r.cfg.Slowstart/slowstartSteps, time.Millisecond)
	r.rampT = e.clock.AfterFunc(step, func() {
		e.mu.Lock()
		if e.stopped || !r.ramp {
			e.mu.Unlock()
			return
		}
		now := e.clock.Now()
		if now.Sub(r.rampFrom) >= r.cfg.Slowstart {
			r.ramp, r.rampT = false, nil
		} else {
			e.rampTick(r)
		}
		e.reconcile(r.svc, now)
		e.unlockAndRun()
	})
}

func (r *real) stopRamp() {
	r.ramp = false
	if r.rampT != nil {
		r.rampT.Stop()
		r.rampT = nil
	}
}
