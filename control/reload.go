package control

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// The --reload extension (ipvsadm has no such option): gvsadm --reload asks
// the daemon to re-read its configuration (the rules file) and waits for
// the outcome, so that it can serve as systemd's ExecReload= (kill -HUP is
// asynchronous: systemd could not tell a failed reload from a good one).
//
//	--reload    reload; exit 0 when the new configuration is in force, or
//	            the error on stderr and exit status 1 with the old one kept
//
// Who may reload: root and AdminGID, as for every change, and also the
// user the daemon runs as (systemd runs ExecReload= as the unit's User=):
// that user can send it SIGHUP anyway.

// OptReload is the option that selects the reload extension.
const OptReload = "--reload"

// Exit statuses of --reload.
const (
	exitReloadFail  = 1 // the reload failed; the old configuration stays
	exitReloadUsage = 2 // a command line --reload does not take
)

// Reload runs the engine's OnReload hook with the Engine's mutex held, so a
// reload never interleaves with an ipvsadm change: the SIGHUP path uses it,
// the control socket's --reload comes through Run.
func (e *Engine) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.OnReload == nil {
		return fmt.Errorf("this daemon has no configuration to reload")
	}
	return e.OnReload()
}

// daemonUID is the daemon's own user (a variable for the tests).
var daemonUID = os.Geteuid

// reloadArgs reports whether argv is a --reload command and returns the
// words after the option.
func reloadArgs(argv []string) ([]string, bool) {
	prog, args := progArgs(argv)
	if prog == progSave || prog == progRestore || len(args) == 0 || args[0] != OptReload {
		return nil, false
	}
	return args[1:], true
}

// runReload executes a --reload command line; handled is false for any
// other command line.
func (e *Engine) runReload(argv []string, cred Cred, stderr io.Writer) (code int, handled bool) {
	extra, ok := reloadArgs(argv)
	if !ok {
		return 0, false
	}
	prog, _ := progArgs(argv)
	if len(extra) > 0 {
		fmt.Fprintf(stderr, "%s: %s takes no arguments\n", prog, OptReload)
		return exitReloadUsage, true
	}
	if !e.Allowed(cred) && int64(cred.UID) != int64(daemonUID()) {
		fmt.Fprintln(stderr, msgPerm)
		return ExitInit, true
	}
	if err := e.Reload(); err != nil {
		fmt.Fprintf(stderr, "%s: %s failed, the configuration in force is unchanged: %s\n", prog, OptReload, oneLine(err.Error()))
		return exitReloadFail, true
	}
	return 0, true
}

// oneLine joins a multi-line error text (errors.Join) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
