package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"gvs/health"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/keepalived"
	"gvs/metrics"
	"gvs/scheduler"
)

// The keepalived.conf path (Config.KeepalivedConf): gvsd runs the LVS part
// of a keepalived.conf as keepalived's checker process does under the
// kernel. The virtual servers become IPVS services in the table (typed
// changes: AddService, EditService, DeleteService, SetTimeouts, Flush); the
// health engine (package health) runs their checkers and changes the real
// servers through the same typed changes (AddDest, SetWeight, DeleteDest),
// which follow IPVS's rules for existing connections as ipvsadm's -a/-e/-d
// do: a deleted real server's connections follow expire_nodest_conn, weight
// 0 quiesces. Services of the rules file and of the keepalived.conf live
// side by side; a service both define is an error.

// keepalivedManager runs a keepalived.conf's virtual servers on a table.
type keepalivedManager struct {
	path  string
	table *ipvs.Table
	log   *zap.Logger
	opts  kaOptions
	// changed is signalled (without blocking) after the health engine
	// changed the table: the daemon then runs Sync.
	changed chan struct{}

	mu    sync.Mutex // guards plan and prev
	plan  *kaPlan
	prev  *kaPlan // the plan before a reload, while the engine updates
	eng   *health.Engine
	stats *healthStats
}

// kaOptions are the collaborators tests replace.
type kaOptions struct {
	ConfigID string
	// Probe makes a checker's probe; nil: the real probes.
	Probe   func(vs *keepalived.VirtualServer, rs *keepalived.RealServer, c *keepalived.Checker) (health.Probe, error)
	Clock   health.Clock
	Runner  health.Runner
	Scripts health.ScriptRunner
	Random  func(max time.Duration) time.Duration
}

// kaPlan is what a keepalived.conf makes: the IPVS services, the health
// engine's configuration, and which IPVS services and destinations each
// health service stands for.
type kaPlan struct {
	conf     *keepalived.Config
	services []ipvs.ServiceConfig // keepalived's order
	health   []health.ServiceConfig
	targets  map[health.ServiceRef]*kaTargets
	owned    map[ipvs.ServiceKey]bool
}

// kaTargets are the IPVS services of one virtual_server (several for a
// virtual_server_group) with each real server's and the sorry server's
// destination configuration in each of them.
type kaTargets struct {
	keys  []ipvs.ServiceKey
	dests []map[health.DestRef]ipvs.DestConfig // per key
	sorry []ipvs.DestConfig                    // per key; zero Addr: none
}

// loadKeepalived reads path and reports keepalived's diagnostics to log.
// It refuses a configuration keepalived could not run (a fatal error or a
// missing parameter).
func loadKeepalived(path, configID string, log *zap.Logger) (*keepalived.Config, error) {
	c, err := keepalived.Load(path, keepalived.Options{ConfigID: configID})
	for _, d := range c.Diags {
		switch d.Severity {
		case keepalived.Notice:
			log.Info(d.String())
		default:
			log.Warn(d.String())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, d := range c.Diags {
		if d.Severity == keepalived.Fatal || d.Severity == keepalived.Abort {
			return nil, fmt.Errorf("%s: %s", path, d)
		}
	}
	return c, nil
}

// DefaultConfigID is keepalived's default config id for "@id" lines: the
// first part of the host name.
func DefaultConfigID() string {
	h, _ := os.Hostname()
	id, _, _ := strings.Cut(h, ".")
	return id
}

// newKeepalived loads the configuration and programs its services (not
// yet their real servers: start does, through the health engine), after
// lvs_flush's flush and with lvs_timeouts.
func newKeepalived(path string, t *ipvs.Table, log *zap.Logger, o kaOptions) (*keepalivedManager, error) {
	if o.ConfigID == "" {
		o.ConfigID = DefaultConfigID()
	}
	m := &keepalivedManager{path: path, table: t, log: log, opts: o, changed: make(chan struct{}, 1),
		stats: newHealthStats()}
	c, err := loadKeepalived(path, o.ConfigID, log)
	if err != nil {
		return nil, err
	}
	p, err := m.makePlan(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := t.Update(func(tx *ipvs.Tx) error {
		if c.Global.Flush {
			tx.Flush()
		}
		if c.Global.HasTimeouts {
			tx.SetTimeouts(c.Global.Timeouts)
		}
		for _, s := range p.services {
			if err := tx.AddService(s); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.plan = p
	hl := log.Named("healthcheck")
	scripts := o.Scripts
	if scripts == nil {
		scripts = health.ExecRunner{Logger: hl}
	}
	m.eng, err = health.New(p.health, health.Options{
		Applier: kaApplier{m}, Logger: hl, Clock: o.Clock, Runner: o.Runner, Scripts: scripts, Random: o.Random,
		OnEvent: m.stats.event, ObserveCheck: m.stats.observe,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// owns reports whether the keepalived.conf defines the service k.
func (m *keepalivedManager) owns(k ipvs.ServiceKey) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.plan.owned[k.Norm()]
}

// conflict returns the error for services a rules file and the
// keepalived.conf both define (nil when none).
func (m *keepalivedManager) conflict(rulesFile string, keys []ipvs.ServiceKey) error {
	for _, k := range keys {
		if m.owns(k) {
			return fmt.Errorf("service %v is defined both in %s and in %s: define it in one of them", k.Norm(), rulesFile, m.path)
		}
	}
	return nil
}

// checkRules refuses a rules file that defines a service the
// keepalived.conf defines (m may be nil: no keepalived.conf).
func (m *keepalivedManager) checkRules(file string, cmds []*ipvsadm.Command) error {
	if m == nil {
		return nil
	}
	scratch := ipvs.NewTable(scheduler.New)
	if err := ipvsadm.ApplyAll(scratch, cmds); err != nil {
		return nil // the real application reports it
	}
	var keys []ipvs.ServiceKey
	for _, s := range scratch.Services() {
		keys = append(keys, s.Config.ServiceKey)
	}
	return m.conflict(file, keys)
}

// startChecks adds the real servers (those without a failed checker, as
// keepalived does before the first check) and starts the checkers.
// lvs_timeouts win over a rules file's --set, at start as on reload.
func (m *keepalivedManager) startChecks() {
	if m == nil {
		return
	}
	if g := m.plan.conf.Global; g.HasTimeouts {
		_ = m.table.Update(func(tx *ipvs.Tx) error { tx.SetTimeouts(g.Timeouts); return nil })
	}
	m.eng.Start()
}

// stopChecks stops the checkers and removes the real servers, as
// keepalived does at shutdown (logging "Shutting down service ..."), which
// runs omega's notify_down and quorum_down scripts. The daemon is going
// away: the workers have stopped.
func (m *keepalivedManager) stopChecks() {
	if m != nil {
		m.eng.Stop(true)
	}
}

// syncLoop runs sync after the health engine changed the table, until ctx
// ends.
func (m *keepalivedManager) syncLoop(ctx context.Context, sync func() error, log *zap.Logger) {
	if m == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.changed:
			if err := sync(); err != nil {
				log.Warn("applying a health-check change to the host failed", zap.Error(err))
			}
		}
	}
}

// HealthStatus is the health engine's state (gvsadm --status); nil
// without a keepalived.conf.
func (d *Daemon) HealthStatus() []health.ServiceStatus {
	if d.ka == nil {
		return nil
	}
	return d.ka.eng.Status()
}

// Health is the health engine's metrics source; nil without a
// keepalived.conf.
func (d *Daemon) Health() metrics.Health {
	if d.ka == nil {
		return nil
	}
	return d.ka
}

// HasHealthChecks reports whether the daemon runs a keepalived.conf.
func (d *Daemon) HasHealthChecks() bool { return d.ka != nil }

// notify tells the daemon the table changed.
func (m *keepalivedManager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// prepareReload reads the configuration again and makes its plan; nothing
// changes yet.
func (m *keepalivedManager) prepareReload() (*kaPlan, error) {
	c, err := loadKeepalived(m.path, m.opts.ConfigID, m.log)
	if err != nil {
		return nil, err
	}
	p, err := m.makePlan(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	return p, nil
}

// applyReload moves the table and the health engine to p: services that
// went are deleted, new ones added, changed ones edited (kept services
// keep their counters, scheduler state and connections); real servers
// whose configuration changed other than in weight are edited in place;
// then the health engine takes the new configuration (Update: unchanged
// checkers keep their state, failed real servers are not re-added).
// Reload does the same with the table's part in its own transaction
// (stageReload, then finishReload).
func (m *keepalivedManager) applyReload(p *kaPlan) error {
	old := m.current()
	if err := m.table.Update(func(tx *ipvs.Tx) error { return m.stageReload(tx, old, p) }); err != nil {
		return err
	}
	return m.finishReload(old, p)
}

// current is the plan in force.
func (m *keepalivedManager) current() *kaPlan {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.plan
}

// stageReload stages in tx the table's part of moving from plan old to p
// (see applyReload). Its error names the keepalived.conf.
func (m *keepalivedManager) stageReload(tx *ipvs.Tx, old, p *kaPlan) error {
	err := func() error {
		for k := range old.owned {
			if !p.owned[k] {
				if _, ok := tx.Service(k); ok {
					if err := tx.DeleteService(k); err != nil {
						return err
					}
				}
			}
		}
		for _, s := range p.services {
			if _, ok := tx.Service(s.ServiceKey); ok {
				if err := tx.EditService(s); err != nil {
					return err
				}
			} else if err := tx.AddService(s); err != nil {
				return err
			}
		}
		// Destinations the engine keeps: a new method, thresholds or tunnel
		// options are an edit with the weight in force.
		for ref, nt := range p.targets {
			for i, k := range nt.keys {
				for _, dc := range nt.dests[i] {
					cur, ok := tx.Dest(k, dc.AddrPort())
					if !ok {
						continue
					}
					want := dc
					want.Weight = cur.Weight
					if want != cur {
						if err := tx.EditDest(k, want); err != nil {
							return fmt.Errorf("%s: %w", ref, err)
						}
					}
				}
			}
		}
		if p.conf.Global.HasTimeouts {
			tx.SetTimeouts(p.conf.Global.Timeouts)
		}
		return nil
	}()
	if err != nil {
		return fmt.Errorf("%s: %w", m.path, err)
	}
	return nil
}

// finishReload makes p the plan in force once the table has been moved
// from old to p, and hands it to the health engine.
func (m *keepalivedManager) finishReload(old, p *kaPlan) error {
	m.mu.Lock()
	m.plan, m.prev = p, old
	m.mu.Unlock()
	err := m.eng.Update(p.health)
	m.mu.Lock()
	m.prev = nil
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", m.path, err)
	}
	m.fillNewGroupEntries(old, p)
	m.log.Info("keepalived configuration reloaded", zap.String("file", m.path),
		zap.Int("services", len(p.services)))
	return nil
}

// fillNewGroupEntries gives the IPVS services a reload added to a kept
// virtual_server_group the destinations the health engine has in force for
// the group (the engine applies differences, and for it nothing changed).
func (m *keepalivedManager) fillNewGroupEntries(old, p *kaPlan) {
	fresh := map[health.ServiceRef][]int{}
	for ref, tg := range p.targets {
		ot := old.targets[ref]
		if ot == nil {
			continue
		}
		for i, k := range tg.keys {
			if !slices.Contains(ot.keys, k) {
				fresh[ref] = append(fresh[ref], i)
			}
		}
	}
	if len(fresh) == 0 {
		return
	}
	err := m.table.Update(func(tx *ipvs.Tx) error {
		for _, st := range m.eng.Status() {
			tg := p.targets[st.Service]
			for _, i := range fresh[st.Service] {
				for _, r := range st.Reals {
					if dc, ok := tg.dests[i][r.Dest]; ok && r.Present {
						dc.Weight = r.Weight
						if err := tx.AddDest(tg.keys[i], dc); err != nil && !errors.Is(err, ipvs.ErrDestExists) {
							return err
						}
					}
				}
				if so := st.Sorry; so != nil && so.Present && tg.sorry[i].Addr.IsValid() {
					dc := tg.sorry[i]
					dc.Weight = so.Weight
					if err := tx.AddDest(tg.keys[i], dc); err != nil && !errors.Is(err, ipvs.ErrDestExists) {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		m.log.Warn("adding the real servers to new group entries failed", zap.Error(err))
	}
}

// makePlan turns a configuration into IPVS services and health-engine
// configuration.
func (m *keepalivedManager) makePlan(c *keepalived.Config) (*kaPlan, error) {
	p := &kaPlan{conf: c, targets: map[health.ServiceRef]*kaTargets{}, owned: map[ipvs.ServiceKey]bool{}}
	for _, vs := range c.VirtualServers {
		ref := serviceRef(vs)
		if p.targets[ref] != nil {
			return nil, fmt.Errorf("virtual server %s is defined twice", vs.Name())
		}
		tg := &kaTargets{}
		for _, s := range c.ServicesOf(vs) {
			k := s.Config.ServiceKey.Norm()
			if p.owned[k] {
				return nil, fmt.Errorf("IPVS service %v comes from two virtual_server blocks (the second is %s)", k, vs.Name())
			}
			p.owned[k] = true
			p.services = append(p.services, s.Config)
			ds := map[health.DestRef]ipvs.DestConfig{}
			for _, rs := range vs.RealServers {
				d := s.Dest(rs)
				if d.Weight > 65535 {
					return nil, fmt.Errorf("VS %s: real server %s: weight %d is above IPVS's limit 65535", vs.Name(), rs.Dest.AddrPort(), d.Weight)
				}
				ds[destRef(rs)] = d
			}
			var sorry ipvs.DestConfig
			if vs.Sorry != nil {
				sorry = s.Dest(vs.Sorry)
			}
			tg.keys = append(tg.keys, k)
			tg.dests = append(tg.dests, ds)
			tg.sorry = append(tg.sorry, sorry)
		}
		p.targets[ref] = tg
		hc, err := m.healthConfig(c, vs, ref)
		if err != nil {
			return nil, err
		}
		p.health = append(p.health, hc)
	}
	return p, nil
}

func serviceRef(vs *keepalived.VirtualServer) health.ServiceRef {
	switch {
	case vs.Group != "":
		return health.ServiceRef{Group: vs.Group, Proto: uint8(vs.Service.Proto)}
	case vs.FWMark != 0:
		return health.ServiceRef{FWMark: vs.FWMark, Proto: uint8(vs.Service.Proto)}
	}
	return health.ServiceRef{Proto: uint8(vs.Service.Proto), Addr: vs.Addr, Port: vs.Port}
}

func destRef(rs *keepalived.RealServer) health.DestRef {
	return health.DestRef{Addr: rs.Dest.Addr, Port: rs.Dest.Port}
}

// healthConfig is the health engine's view of a virtual server.
func (m *keepalivedManager) healthConfig(c *keepalived.Config, vs *keepalived.VirtualServer, ref health.ServiceRef) (health.ServiceConfig, error) {
	sc := health.ServiceConfig{Ref: ref, Quorum: int(vs.Quorum), Hysteresis: int(vs.Hysteresis), Omega: vs.Omega}
	var err error
	if sc.QuorumUp, err = script(c, vs.QuorumUp); err != nil {
		return sc, err
	}
	if sc.QuorumDown, err = script(c, vs.QuorumDown); err != nil {
		return sc, err
	}
	if s := vs.Sorry; s != nil {
		sc.Sorry = &health.SorryConfig{Dest: destRef(s), Weight: s.Dest.Weight, Inhibit: s.Inhibit}
	}
	for _, rs := range vs.RealServers {
		rc := health.RealConfig{Dest: destRef(rs), Weight: rs.Dest.Weight, Inhibit: rs.Inhibit, Slowstart: rs.Slowstart}
		if rc.NotifyUp, err = script(c, rs.NotifyUp); err != nil {
			return sc, err
		}
		if rc.NotifyDown, err = script(c, rs.NotifyDown); err != nil {
			return sc, err
		}
		for _, ck := range rs.Checkers {
			mk := m.opts.Probe
			if mk == nil {
				mk = probeFor
			}
			pr, err := mk(vs, rs, ck)
			if err != nil {
				return sc, fmt.Errorf("VS %s: real server %s: %w", vs.Name(), rs.Dest.AddrPort(), err)
			}
			if pr == nil {
				m.log.Warn(fmt.Sprintf("VS %s: real server %s: %s is not supported by gvs: ignored (%s)",
					vs.Name(), rs.Dest.AddrPort(), ck.Kind, ck.Pos))
				continue
			}
			cc := health.CheckerConfig{Probe: pr, DelayLoop: ck.DelayLoop, DelayBeforeRetry: ck.DelayBeforeRetry,
				Retry: ck.Retry, Warmup: ck.Warmup, Alpha: ck.Alpha, Rise: ck.Rise, LogAllFailures: ck.LogAllFailures}
			if ck.HTTP != nil {
				cc.FastRecovery = ck.HTTP.FastRecovery
			}
			rc.Checkers = append(rc.Checkers, cc)
		}
		sc.Reals = append(sc.Reals, rc)
	}
	return sc, nil
}

// probeFor makes the real probe of a checker; nil for the kinds gvs does
// not run (SMTP_CHECK, FILE_CHECK, BFD_CHECK).
func probeFor(_ *keepalived.VirtualServer, rs *keepalived.RealServer, c *keepalived.Checker) (health.Probe, error) {
	ip := c.ConnectIP
	if !ip.IsValid() {
		ip = rs.Dest.Addr
	}
	port := c.ConnectPort
	if port == 0 {
		port = rs.Dest.Port
	}
	conn := health.ConnOpts{Dst: netip.AddrPortFrom(ip, port), BindTo: c.BindTo, BindPort: c.BindPort,
		BindIf: c.BindIf, FWMark: c.FWMark, Timeout: c.ConnectTimeout}
	switch c.Kind {
	case keepalived.TCPCheck:
		return &health.TCPProbe{Conn: conn}, nil
	case keepalived.HTTPGet, keepalived.SSLGet:
		h := c.HTTP
		p := &health.HTTPProbe{Conn: conn, TLS: c.Kind == keepalived.SSLGet}
		if h != nil {
			p.VirtualHost, p.Protocol, p.EnableSNI, p.SNIName = h.VirtualHost, h.Protocol, h.EnableSNI, h.SNIName
			for _, u := range h.URLs {
				if u.Regex != "" {
					return nil, fmt.Errorf("%s: url %s: regex is not supported by gvs", c.Pos, u.Path)
				}
				hu := health.URL{Path: u.Path, Digest: u.Digest, VirtualHost: u.VirtualHost}
				for _, r := range u.StatusCodes {
					hu.Status = append(hu.Status, health.StatusRange{Min: r.Min, Max: r.Max})
				}
				p.URLs = append(p.URLs, hu)
			}
		}
		return p, nil
	case keepalived.UDPCheck:
		p := &health.UDPProbe{Conn: conn, MaxReply: 255}
		if u := c.UDP; u != nil {
			p.Payload, p.RequireReply, p.ReplyData = u.Payload, u.RequireReply, u.Reply
			p.MinReply, p.MaxReply = u.MinReplyLength, u.MaxReplyLength
		}
		return p, nil
	case keepalived.DNSCheck:
		p := &health.DNSProbe{Conn: conn, Type: 6, Name: "."}
		if d := c.DNS; d != nil {
			if d.Type != "" {
				t, ok := health.DNSType(d.Type)
				if !ok {
					return nil, fmt.Errorf("%s: DNS_CHECK type %s is not supported", c.Pos, d.Type)
				}
				p.Type = t
			}
			if d.Name != "" {
				p.Name = d.Name
			}
		}
		return p, nil
	case keepalived.PingCheck:
		return &health.PingProbe{Conn: conn}, nil
	case keepalived.MiscCheck:
		mc := c.Misc
		if mc == nil {
			return nil, fmt.Errorf("%s: MISC_CHECK without misc_path", c.Pos)
		}
		argv := strings.Fields(mc.Script.Cmd)
		if len(argv) == 0 {
			return nil, fmt.Errorf("%s: MISC_CHECK without misc_path", c.Pos)
		}
		s := health.Script{Argv: argv}
		if err := setUser(&s, mc.Script.User, mc.Script.Group, ""); err != nil {
			return nil, err
		}
		to := mc.Timeout
		if to <= 0 {
			to = c.DelayLoop
		}
		return &health.MiscProbe{Script: s, Timeout: to, Dynamic: mc.Dynamic}, nil
	}
	return nil, nil
}

// script converts a notify or quorum script: argv split at blanks, run as
// its user (or script_user) when one is named.
func script(c *keepalived.Config, s *keepalived.Script) (*health.Script, error) {
	if s == nil {
		return nil, nil
	}
	argv := strings.Fields(s.Cmd)
	if len(argv) == 0 {
		return nil, nil
	}
	hs := &health.Script{Argv: argv}
	if err := setUser(hs, s.User, s.Group, c.Global.ScriptUser); err != nil {
		return nil, err
	}
	return hs, nil
}

func setUser(s *health.Script, name, group, def string) error {
	if name == "" {
		name = def
	}
	if name == "" {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("script %s: user %s: %w", s.Argv[0], name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return fmt.Errorf("script %s: group %s: %w", s.Argv[0], group, err)
		}
		gid, _ = strconv.ParseUint(g.Gid, 10, 32)
	}
	s.User, s.UID, s.GID = true, uint32(uid), uint32(gid)
	return nil
}

// kaApplier is the health engine's Applier over the table: each call is
// one transaction over every IPVS service the virtual server stands for.
type kaApplier struct{ m *keepalivedManager }

func (a kaApplier) SetDest(svc health.ServiceRef, d health.DestRef, present bool, weight int) error {
	return a.m.set(svc, d, false, present, weight)
}

func (a kaApplier) SetSorry(svc health.ServiceRef, d health.DestRef, present bool, weight int) error {
	return a.m.set(svc, d, true, present, weight)
}

func (m *keepalivedManager) set(svc health.ServiceRef, d health.DestRef, sorry, present bool, weight int) error {
	type target struct {
		key ipvs.ServiceKey
		cfg ipvs.DestConfig
	}
	var ts []target
	m.mu.Lock()
	plans := []*kaPlan{m.plan}
	if m.prev != nil && !present {
		// A reload removing a real server: it is only in the old plan.
		plans = append(plans, m.prev)
	}
	for _, p := range plans {
		if tg := p.targets[svc]; tg != nil && len(ts) == 0 {
			for i, k := range tg.keys {
				cfg, ok := tg.dests[i][d]
				if sorry {
					cfg, ok = tg.sorry[i], tg.sorry[i].Addr.IsValid() && tg.sorry[i].AddrPort() == netip.AddrPortFrom(d.Addr, d.Port)
				}
				if ok {
					ts = append(ts, target{k, cfg})
				}
			}
		}
	}
	m.mu.Unlock()
	if len(ts) == 0 {
		// Gone with a reload: the table no longer has it either.
		return nil
	}
	err := m.table.Update(func(tx *ipvs.Tx) error {
		for _, t := range ts {
			if _, ok := tx.Service(t.key); !ok {
				continue // deleted by the operator (gvsadm -D)
			}
			cur, ok := tx.Dest(t.key, t.cfg.AddrPort())
			want := t.cfg
			want.Weight = weight
			var err error
			switch {
			case !present && ok:
				err = tx.DeleteDest(t.key, t.cfg.AddrPort())
			case !present:
			case ok && cur.Weight != weight && cur.Method == want.Method:
				err = tx.SetWeight(t.key, t.cfg.AddrPort(), weight)
			case ok && cur != want:
				err = tx.EditDest(t.key, want)
			case !ok:
				err = tx.AddDest(t.key, want)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		m.notify()
	}
	return err
}

// healthStats counts what the metrics report per checker: checks by
// result, transitions, the last success and the durations.
type healthStats struct {
	mu sync.Mutex
	c  map[checkerID]*metrics.CheckerHealth
}

type checkerID struct {
	svc  health.ServiceRef
	dest health.DestRef
	idx  int
}

func newHealthStats() *healthStats { return &healthStats{c: map[checkerID]*metrics.CheckerHealth{}} }

func (h *healthStats) get(id checkerID) *metrics.CheckerHealth {
	c := h.c[id]
	if c == nil {
		c = &metrics.CheckerHealth{DurationBuckets: make([]uint64, len(metrics.HealthDurationBuckets))}
		h.c[id] = c
	}
	return c
}

func (h *healthStats) observe(s health.CheckSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.get(checkerID{s.Service, s.Dest, s.Checker})
	switch {
	case s.OK:
		c.Successes++
		c.LastSuccess = time.Now()
	case s.Timeout:
		c.Timeouts++
	default:
		c.Failures++
	}
	sec := s.Duration.Seconds()
	c.DurationCount++
	c.DurationSum += sec
	for i, ub := range metrics.HealthDurationBuckets {
		if sec <= ub {
			c.DurationBuckets[i]++
		}
	}
}

func (h *healthStats) event(ev health.Event) {
	if ev.Kind != health.CheckerUp && ev.Kind != health.CheckerDown {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.get(checkerID{ev.Service, ev.Dest, ev.Checker})
	if ev.Kind == health.CheckerUp {
		c.UpTransitions++
	} else {
		c.DownTransitions++
	}
}

// HealthSnapshot implements metrics.Health: every checked real server of
// every IPVS service, from the engine's state and the counters above.
func (m *keepalivedManager) HealthSnapshot() []metrics.BackendHealth {
	st := m.eng.Status()
	m.mu.Lock()
	plan := m.plan
	m.mu.Unlock()
	m.stats.mu.Lock()
	defer m.stats.mu.Unlock()
	var out []metrics.BackendHealth
	for _, s := range st {
		tg := plan.targets[s.Service]
		if tg == nil {
			continue
		}
		for _, r := range s.Reals {
			var chk []metrics.CheckerHealth
			seen := map[health.Kind]int{}
			for i, c := range r.Checkers {
				seen[c.Kind]++
				ch := metrics.CheckerHealth{DurationBuckets: make([]uint64, len(metrics.HealthDurationBuckets))}
				if p := m.stats.c[checkerID{s.Service, r.Dest, i}]; p != nil {
					ch = *p
					ch.DurationBuckets = append([]uint64(nil), p.DurationBuckets...)
				}
				ch.Name = string(c.Kind)
				if n := seen[c.Kind]; n > 1 {
					ch.Name += "#" + strconv.Itoa(n)
				}
				chk = append(chk, ch)
			}
			for i, k := range tg.keys {
				dc, ok := tg.dests[i][r.Dest]
				if !ok {
					continue
				}
				out = append(out, metrics.BackendHealth{Service: k, Backend: dc.AddrPort(), Up: r.Alive,
					ConfiguredWeight: r.Configured, Checkers: chk})
			}
		}
	}
	return out
}

// errNoReload is Reload's error when there is nothing to reload.
var errNoReload = errors.New("no rules file or keepalived configuration to reload")

// CheckKeepalived checks what gvsd --config-test checks beyond keepalived's
// own diagnostics: that gvs can run every virtual server of c (checkers it
// supports, weights within IPVS's limit, no IPVS service from two blocks)
// and, with a rules file, that no service is defined in both.
func CheckKeepalived(c *keepalived.Config, path, rulesFile string) error {
	m := &keepalivedManager{path: path, log: zap.NewNop()}
	p, err := m.makePlan(c)
	if err != nil {
		return err
	}
	if rulesFile == "" {
		return nil
	}
	cmds, err := readRules(rulesFile)
	if err != nil {
		return err
	}
	m.plan = p
	return m.checkRules(rulesFile, cmds)
}
