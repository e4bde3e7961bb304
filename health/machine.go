package health

import "time"

// machine is one checker's state, as keepalived keeps it in checker_t (is_up, has_run,
// retry_it) plus the HTTP walk (url_it, failed_url) and gvs's rise counter.
type machine struct {
	cfg     CheckerConfig
	steps   int
	walk    bool // HTTP_GET/SSL_GET per-url walk (check_http.c epilog)
	isUp    bool
	hasRun  bool
	retryIt int
	riseIt  int
	urlIt   int // next url to check
	failed  int // failed url, -1 when none
}

// verdict is what one result does to a checker.
type verdict struct {
	// call is true when keepalived would call update_svr_checker_state(up, checker).
	call bool
	up   bool
	// delay to the next check.
	delay time.Duration
	// afterRetries is true when a failure comes after retries (for the log wording).
	afterRetries bool
	// first is true when the checker had not run before (has_run false in the call).
	first bool
}

func newMachine(cfg CheckerConfig) *machine {
	m := &machine{cfg: cfg, steps: 1, isUp: true, failed: -1}
	if cfg.Probe != nil {
		if k := cfg.Probe.Kind(); k == KindHTTP || k == KindSSL {
			m.walk = true
		}
		if n := cfg.Probe.Steps(); n > 1 {
			m.steps = n
		}
	}
	if m.cfg.Rise < 1 {
		m.cfg.Rise = 1
	}
	if cfg.Alpha {
		m.isUp = false
	}
	// "For non alpha mode, one failure is enough initially."
	m.retryIt = cfg.Retry
	return m
}

// step is the step the next check performs.
func (m *machine) step() int { return m.urlIt }

// result feeds one check's outcome. It returns what the engine must do; the engine then sets
// isUp through setUp when v.call and v.up differ from isUp.
func (m *machine) result(ok bool) verdict {
	if m.walk {
		return m.httpResult(ok)
	}
	return m.simpleResult(ok)
}

// simpleResult is tcp_epilog (the same in udp_epilog, icmp_epilog, dns_final and the MISC
// child handler), with rise added: while down, Rise successes in a row are needed.
func (m *machine) simpleResult(ok bool) verdict {
	v := verdict{delay: m.cfg.DelayLoop, first: !m.hasRun}
	if !ok {
		m.riseIt = 0
	}
	if ok || ((m.isUp || !m.hasRun) && m.retryIt >= m.cfg.Retry) {
		m.retryIt = 0
		if ok && (!m.isUp || !m.hasRun) {
			if !m.isUp && !m.risen() {
				v.delay = m.cfg.DelayBeforeRetry
			} else {
				v.call, v.up = true, true
			}
		} else if !ok && (m.isUp || !m.hasRun) {
			v.call, v.up = true, false
			v.afterRetries = m.cfg.Retry > 0 && m.hasRun
		}
	} else if m.isUp {
		v.delay = m.cfg.DelayBeforeRetry
		m.retryIt++
	}
	m.hasRun = true
	return v
}

// risen counts one success of a down checker and reports whether Rise is reached.
func (m *machine) risen() bool {
	m.riseIt++
	if m.riseIt >= m.cfg.Rise {
		m.riseIt = 0
		return true
	}
	return false
}

// httpResult is check_http.c: success is REGISTER_CHECKER_NEW; a failure while up (or before
// the first run) is REGISTER_CHECKER_RETRY (timeout_epilog marks has_run first); a failure
// while known down is REGISTER_CHECKER_FAILED.
func (m *machine) httpResult(ok bool) verdict {
	const (
		mNew = iota
		mRetry
		mFailed
	)
	method := mNew
	if !ok {
		m.riseIt = 0
		if m.isUp || !m.hasRun {
			m.hasRun = true
			method = mRetry
		} else {
			method = mFailed
		}
	}
	var v verdict
	walkDone := false
	if method == mNew {
		if m.urlIt >= m.steps-1 {
			walkDone = true
		} else {
			m.urlIt++
		}
		m.retryIt = 0
	} else if method == mRetry {
		m.retryIt++
	}

	switch {
	case method == mNew && walkDone && m.failed < 0:
		// Every url checked successfully.
		if !m.isUp || !m.hasRun {
			if m.isUp || m.risen() {
				v.call, v.up, v.first = true, true, !m.hasRun
				m.hasRun = true
			}
		}
		m.urlIt = 0
		m.retryIt = 0
	case method == mRetry && m.retryIt > m.cfg.Retry:
		if m.isUp || !m.hasRun {
			v.call, v.up = true, false
			v.afterRetries = m.cfg.Retry > 0
		}
		m.failed = m.urlIt
	case method == mNew && m.failed >= 0:
		// The failed url is answering again: walk every url before coming up.
		m.failed = -1
		m.urlIt = 0
		m.retryIt = 0
	}
	if method == mNew && walkDone && m.failed < 0 && !v.call && !m.isUp {
		// gvs rise: a complete walk that did not reach Rise starts another walk.
		m.urlIt = 0
	}

	switch {
	case method == mNew:
		v.delay = m.cfg.DelayLoop
		if !m.hasRun {
			m.retryIt = m.cfg.Retry
		}
	case m.failed >= 0:
		v.delay = max(m.cfg.DelayBeforeRetry, m.cfg.DelayLoop)
	default:
		v.delay = m.cfg.DelayBeforeRetry
	}
	if m.cfg.FastRecovery && (!m.hasRun || (!m.isUp && m.failed < 0)) && !(v.call && v.up) {
		v.delay = 0
	}
	return v
}
