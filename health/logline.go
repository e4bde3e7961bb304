package health

import (
	"errors"
	"fmt"
	"strings"
)

// logChecker writes keepalived's line for a checker result that calls
// update_svr_checker_state (check_tcp.c tcp_epilog, check_udp.c, check_ping.c, check_dns.c,
// check_http.c epilog, check_misc.c).
func (e *Engine) logChecker(c *checker, v verdict, res Result, wasUp, hadRun bool) {
	r, s := c.r, c.r.svc
	rs, vs := r.cfg.Dest.format(s.cfg.Ref), s.cfg.Ref.String()
	retry := c.cfg.Retry
	var msg string
	switch k := c.cfg.Probe.Kind(); k {
	case KindTCP, KindUDP:
		name := strings.TrimSuffix(string(k), "_CHECK")
		switch {
		case v.up:
			msg = fmt.Sprintf("%s connection to %s success.", name, rs)
		case v.afterRetries:
			msg = fmt.Sprintf("%s on service %s failed after %d retries.", k, rs, retry)
		default:
			msg = fmt.Sprintf("%s on service %s failed.", k, rs)
		}
	case KindPing:
		switch {
		case v.up:
			msg = fmt.Sprintf("ICMP connection to %s success.", rs)
		case v.afterRetries:
			msg = fmt.Sprintf("ICMP CHECK on service %s of %s failed after %d retries.", rs, vs, retry)
		default:
			msg = fmt.Sprintf("ICMP CHECK on service %s failed.", rs)
		}
	case KindHTTP, KindSSL:
		name := "HTTP"
		if k == KindSSL {
			name = "SSL"
		}
		switch {
		case v.up:
			msg = fmt.Sprintf("Remote Web server %s succeed on service.", rs)
		case v.afterRetries:
			msg = fmt.Sprintf("%s_CHECK on service %s failed after %d retries.", name, rs, retry)
		default:
			msg = fmt.Sprintf("%s_CHECK on service %s failed.", name, rs)
		}
	case KindDNS:
		if v.up {
			return // dns_final logs nothing on success
		}
		reason := "failed"
		if res.Err != nil {
			reason = errText(res.Err)
		}
		if v.afterRetries {
			reason += fmt.Sprintf(" after %d retries", retry)
		}
		msg = fmt.Sprintf("DNS_CHECK (%s) %s", rs, reason)
	case KindMisc:
		path := ""
		if ex := res.Exit; ex != nil {
			path = ex.Path
		}
		if mp, ok := c.cfg.Probe.(interface{ ScriptPath() string }); ok && path == "" {
			path = mp.ScriptPath()
		}
		if v.up {
			msg = fmt.Sprintf("Misc check for [%s VS %s] by [%s] succeeded.", rs, vs, path)
			break
		}
		how, reason := "failed", ""
		if ex := res.Exit; ex != nil {
			switch {
			case ex.TimedOut:
				how = "timed out"
			case ex.Signal != 0:
				reason = fmt.Sprintf(" (due to signal %d)", ex.Signal)
			default:
				reason = fmt.Sprintf(" (exited with status %d)", ex.Code)
			}
		}
		tail := " with retry disabled"
		if retry > 0 {
			word := "retries"
			if retry == 1 {
				word = "retry"
			}
			tail = fmt.Sprintf(" after %d %s", retry, word)
		}
		msg = fmt.Sprintf("Misc check for [%s VS %s] by [%s] %s%s%s.", rs, vs, path, how, tail, reason)
	default:
		state := "failed"
		if v.up {
			state = "succeeded"
		}
		msg = fmt.Sprintf("%s on service %s %s.", k, rs, state)
	}
	e.log.Info(msg)
}

// errText is the keepalived-style reason of a probe error.
func errText(err error) string {
	var pe *ProbeError
	if errors.As(err, &pe) {
		return pe.Msg
	}
	return err.Error()
}

// ProbeError is a probe failure with keepalived's reason wording ("Timeout connecting",
// "HTTP status code error to", "read timeout from socket") and the underlying error.
type ProbeError struct {
	Msg string
	Err error
}

func (e *ProbeError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *ProbeError) Unwrap() error { return e.Err }
