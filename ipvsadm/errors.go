package ipvsadm

import (
	"errors"
	"fmt"
)

// Exit statuses ipvsadm 1.31 uses.
const (
	// ExitOK is a successful run (also -h and -v).
	ExitOK = 0
	// ExitList is a listing that failed (-L -t of a missing service):
	// list_service calls exit(1).
	ExitList = 1
	// ExitParse is a command-line error reported by fail(2, ...).
	ExitParse = 2
	// ExitFailure is what ipvsadm exits with when process_options returns
	// -1: a rejected operation ("Service already exists"), a popt error
	// ("-q: unknown option") or the "Try `ipvsadm -h'" hint.
	ExitFailure = 255
)

// Error is an ipvsadm error: Msg is the exact text ipvsadm prints on stderr
// (without the final newline; the caller prints Msg then "\n") and Code the
// status it exits with. Err, when set, is one of the sentinels below or
// the model's error (ipvs.ErrNoService, ...) so callers can branch with
// errors.Is.
type Error struct {
	Msg  string
	Code int
	Err  error
}

// Error returns Msg.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// Sentinels carried by Error.Err.
var (
	// ErrSyntax marks command-line and rules-file syntax errors (exit 2 or 255).
	ErrSyntax = errors.New("ipvsadm syntax error")
	// ErrUnsupported: a command gvs parses but does not implement (the
	// connection sync daemon).
	ErrUnsupported = errors.New("operation not supported")
)

// Texts ipvsadm 1.31 and libipvs print. Kept in one place; the %-verbs
// match ipvsadm's own format strings.
const (
	msgTryHelp          = "Try `%s -h' or '%s --help' for more information."
	msgPoptError        = "%s: %s" // bad option, popt error text
	msgPoptBadOpt       = "unknown option"
	msgPoptNoArg        = "missing argument"
	msgPoptUnwantedArg  = "option does not take an argument"
	msgInvalidOption    = "invalid option `%s'"
	msgMultipleOptions  = "multiple '%s' options specified"
	msgNeedOption       = "You need to supply the '%s' option for the '%s' command"
	msgIllegalOption    = "Illegal '%s' option with the '%s' command"
	msgOptionConflict   = "The option '%s' conflicts with the '%s' option in the '%s' command"
	msgTunNeedOption    = "You need to supply the '%s' option for the '%s' tunnel type"
	msgTunIllegalOption = "Illegal '%s' option with the '%s' tunnel type"
	msgTunConflict      = "The option '%s' conflicts with the '%s' option in the '%s' tunnel type"
	msgBadVirtual       = "illegal virtual server address[:port] specified"
	msgBadReal          = "illegal real server address[:port] specified"
	msgBadMask          = "illegal virtual server persistent mask specified"
	msgBadMask6         = "illegal ipv6 netmask specified"
	msgNonContigMask    = "non-contiguous persistent netmask `%s' is not supported"
	msgBadWeight        = "illegal weight specified"
	msgBadUThreshold    = "illegal u_threshold specified"
	msgBadLThreshold    = "illegal l_threshold specified"
	msgBadSyncID        = "illegal syncid specified"
	msgBadTimeout       = "invalid timeout value `%s' specified"
	msgBadFwmark        = "invalid fwmark value `%s' specified"
	msgSixBeforeF       = "-6 used before -f\n" // sic: ipvsadm prints an empty line after it
	msgBadMcastGroup4   = "invalid IPv4 mcast-group `%s'"
	msgBadMcastGroup6   = "invalid IPv6 mcast-group `%s'"
	msgBadMcastPort     = "illegal mcast-port specified"
	msgBadMcastTTL      = "illegal mcast-ttl specified"
	msgBadSyncMaxlen    = "illegal sync-maxlen specified"
	msgBadTunType       = "illegal tunnel type specified"
	msgBadTunPort       = "illegal tunnel port specified"
	msgBadStartDaemon   = "illegal start-daemon parameter specified"
	msgBadStopDaemon    = "illegal start_daemon specified" // sic
	msgSetNeeds3        = "--set option requires 3 timeout values"
	msgUnexpectedArg    = "unexpected argument %s"
	msgBadSchedFlag     = "invalid scheduler flag `%s'"
	msgIncompatFlag     = "incompatible scheduler flag `%s'"
	msgZeroPort         = "Zero port specified for non-persistent service"
	msgOPSNotUDP        = "One-Packet Scheduling is only for UDP virtual services"
	msgDiffAF           = "Different address family is allowed only for tunneling servers"
	msgTunConflictFwd   = "Tunnel options conflict with forward method"
	msgListConflict     = "options conflicts in the list command"

	msgServiceExists = "Service already exists"
	msgNotFound      = "Scheduler or persistence engine not found"
	msgNoService     = "No such service"
	msgNotDefined    = "Service not defined"
	msgDestExists    = "Destination already exists"
	msgNoDest        = "No such destination"
	msgERANGE        = "Numerical result out of range" // strerror(ERANGE)
	msgEINVAL        = "Invalid operation.  Possibly wrong module version, address not unicast, ..."
	msgNoDaemon      = "the connection sync daemon is not supported by gvs"
	msgNotTableCmd   = "the '%s' command does not change the table"

	msgRulesLine       = "line %d: %s"
	msgRulesCommand    = "the '%s' command is not allowed in a rules file"
	msgRulesLineTooBig = "line too long"
)

// parseErr is fail(2, ...): a message and exit status 2.
func parseErr(format string, a ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, a...), Code: ExitParse, Err: ErrSyntax}
}

// poptErr is a popt error after the command: "<arg>: <text>", exit 255.
func poptErr(arg, text string) *Error {
	return &Error{Msg: fmt.Sprintf(msgPoptError, arg, text), Code: ExitFailure, Err: ErrSyntax}
}

// tryHelpErr is tryhelp_exit(prog, -1).
func tryHelpErr(prog string) *Error {
	return &Error{Msg: fmt.Sprintf(msgTryHelp, prog, prog), Code: ExitFailure, Err: ErrSyntax}
}

// atLine is e with its message prefixed by a rules-file line number
// ("line 3: ..."), same status and sentinel.
func (e *Error) atLine(line int) *Error {
	return &Error{Msg: fmt.Sprintf(msgRulesLine, line, e.Msg), Code: e.Code, Err: e.Err}
}

// opErr is a rejected operation (libipvs ipvs_strerror text), exit 255.
func opErr(sentinel error, msg string) *Error {
	return &Error{Msg: msg, Code: ExitFailure, Err: sentinel}
}
