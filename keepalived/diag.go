package keepalived

import (
	"fmt"
	"strconv"
)

// Severity classifies a diagnostic the way keepalived's config_err_t does
// (lib/parser.h): it decides the exit code of a configuration test.
type Severity uint8

const (
	// Notice is logged but is not a configuration error (keepalived's
	// log_message, or report_config_error with CONFIG_OK): skipped VRRP
	// blocks, an include that matches no file.
	Notice Severity = iota
	// FixedUp is a configuration error keepalived corrects or ignores and
	// then runs (CONFIG_UNKNOWN_KEYWORD .. CONFIG_DEPRECATED, mostly
	// CONFIG_GENERAL_ERROR): "no protocol set - defaulting to UDP".
	FixedUp
	// Security is CONFIG_SECURITY_ERROR: scripts configured without
	// enable_script_security.
	Security
	// Fatal means keepalived cannot run the configuration
	// (CONFIG_FILE_NOT_FOUND, CONFIG_FATAL).
	Fatal
	// Abort is a missing parameter: keepalived's null_strvec handler stops
	// reading and exits at once with KEEPALIVED_EXIT_CONFIG (2), even
	// under --config-test.
	Abort
)

func (s Severity) String() string {
	switch s {
	case Notice:
		return "notice"
	case FixedUp:
		return "error"
	case Security:
		return "security"
	case Fatal:
		return "fatal"
	case Abort:
		return "abort"
	}
	return "severity" + strconv.Itoa(int(s))
}

// Exit codes of keepalived --config-test, as keepalived's config_test_exit
// (keepalived/core/main.c) returns them: enum chk_exit_code in
// lib/scheduler.h since v2.2.5 (commit 545f117d). keepalived(8)'s "Exit
// status" section documents 3, 4 and 5 for the same three cases; the
// binary returns 4, 5 and 6.
const (
	ExitOK       = 0 // KEEPALIVED_CHK_EXIT_OK
	ExitAbort    = 2 // KEEPALIVED_EXIT_CONFIG: a parameter is missing
	ExitFatal    = 4 // KEEPALIVED_CHK_EXIT_CONFIG: the configuration cannot be run
	ExitFixedUp  = 5 // KEEPALIVED_CHK_EXIT_CONFIG_TEST: errors, runs after fixing them up
	ExitSecurity = 6 // KEEPALIVED_CHK_EXIT_CONFIG_TEST_SECURITY
)

// Pos is a place in the configuration: a file and a 1-based line.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string {
	if p.File == "" {
		return strconv.Itoa(p.Line)
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// Diagnostic is one message about the configuration, worded as keepalived
// words it (messages that keepalived does not have start with "gvs:").
type Diagnostic struct {
	Pos      Pos
	Severity Severity
	Msg      string
}

// String formats the diagnostic as keepalived writes it under
// --config-test when the configuration spans several files:
// "(FILE: Line N) message". Diagnostics without a position (the
// validation pass after parsing) are the bare message.
func (d Diagnostic) String() string {
	if d.Pos.Line == 0 {
		return d.Msg
	}
	return fmt.Sprintf("(%s: Line %d) %s", d.Pos.File, d.Pos.Line, d.Msg)
}

// ExitCode is the exit status keepalived --config-test would give for these
// diagnostics. keepalived keeps one config_err, and report_config_error
// replaces it with a new error whose config_err_t value is numerically
// larger (vreport_config_error: "config_err < err"). The enum is listed in
// decreasing order of severity, so a later, milder error wins over a fatal
// one: a missing include (fatal) followed by an ignored keyword exits 5,
// not 4. That is what the binary does, and what this function returns.
// A missing parameter (Abort) ends keepalived at once with 2.
func ExitCode(diags []Diagnostic) int {
	var fatal, fixed, security bool
	for _, d := range diags {
		switch d.Severity {
		case Abort:
			return ExitAbort
		case Fatal:
			fatal = true
		case FixedUp:
			fixed = true
		case Security:
			security = true
		}
	}
	switch {
	case security:
		return ExitSecurity
	case fixed:
		return ExitFixedUp
	case fatal:
		return ExitFatal
	}
	return ExitOK
}
