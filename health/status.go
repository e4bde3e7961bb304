package health

import "time"

// ServiceStatus is a virtual service's health state, for gvsadm --status and metrics.
type ServiceStatus struct {
	Service     ServiceRef   `json:"service"`
	Name        string       `json:"name"`
	QuorumUp    bool         `json:"quorum_up"`
	Quorum      int          `json:"quorum"`
	Hysteresis  int          `json:"hysteresis"`
	AliveWeight int64        `json:"alive_weight"`
	Sorry       *SorryStatus `json:"sorry_server,omitempty"`
	Reals       []RealStatus `json:"real_servers"`
}

// SorryStatus is the sorry server's state.
type SorryStatus struct {
	Dest    DestRef `json:"dest"`
	Name    string  `json:"name"`
	Active  bool    `json:"active"`
	Present bool    `json:"present"`
	Weight  int     `json:"weight"`
}

// RealStatus is a real server's state.
type RealStatus struct {
	Dest       DestRef         `json:"dest"`
	Name       string          `json:"name"`
	Alive      bool            `json:"alive"`
	Drained    bool            `json:"drained"`
	Present    bool            `json:"present"`    // as applied to IPVS
	Weight     int             `json:"weight"`     // as applied to IPVS
	Configured int             `json:"configured"` // the configuration's weight
	Effective  int             `json:"effective"`  // configured, or misc_dynamic's
	Slowstart  bool            `json:"slowstart"`  // weight still ramping
	Since      time.Time       `json:"since"`
	Checkers   []CheckerStatus `json:"checkers"`
}

// CheckerStatus is one checker's state.
type CheckerStatus struct {
	Kind         Kind          `json:"kind"`
	Up           bool          `json:"up"`
	HasRun       bool          `json:"has_run"`
	LastOK       bool          `json:"last_ok"`
	LastError    string        `json:"last_error,omitempty"`
	LastCheck    time.Time     `json:"last_check"`
	LastDuration time.Duration `json:"last_duration_ns"`
	Changed      time.Time     `json:"changed"` // last transition (or start)
	RetryIt      int           `json:"retry_it"`
	Checks       uint64        `json:"checks"`
	Successes    uint64        `json:"successes"`
	Failures     uint64        `json:"failures"`
}

// Status is a snapshot of every service.
func (e *Engine) Status() []ServiceStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]ServiceStatus, 0, len(e.services))
	for _, s := range e.services {
		ss := ServiceStatus{Service: s.cfg.Ref, Name: s.cfg.Ref.String(), QuorumUp: s.quorumUp,
			Quorum: s.cfg.Quorum, Hysteresis: s.cfg.Hysteresis, AliveWeight: s.weightSum()}
		if s.cfg.Sorry != nil {
			ss.Sorry = &SorryStatus{Dest: s.cfg.Sorry.Dest, Name: s.cfg.Sorry.Dest.format(s.cfg.Ref),
				Active: s.sorryActive, Present: s.sorryApp.present, Weight: s.sorryApp.weight}
		}
		for _, r := range s.reals {
			rs := RealStatus{Dest: r.cfg.Dest, Name: r.cfg.Dest.format(s.cfg.Ref), Alive: r.alive,
				Drained: r.drained, Present: r.app.present, Weight: r.app.weight,
				Configured: r.cfg.Weight, Effective: realWeight(r.eff), Slowstart: r.ramp, Since: r.since}
			for _, c := range r.checkers {
				rs.Checkers = append(rs.Checkers, CheckerStatus{Kind: c.cfg.Probe.Kind(), Up: c.m.isUp,
					HasRun: c.m.hasRun, LastOK: c.lastOK, LastError: c.lastErr, LastCheck: c.lastCheck,
					LastDuration: c.lastDur, Changed: c.changed, RetryIt: c.m.retryIt,
					Checks: c.checks, Successes: c.successes, Failures: c.failures})
			}
			ss.Reals = append(ss.Reals, rs)
		}
		out = append(out, ss)
	}
	return out
}
