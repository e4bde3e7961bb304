// Command gvsadm is ipvsadm for gvs: it takes ipvsadm 1.31's arguments,
// sends them to the gvsd daemon of the current network namespace over its
// control socket, and prints the daemon's answer byte for byte, exiting
// with its status.
//
//	gvsadm [ipvsadm arguments]
//
// Installed or symlinked as ipvsadm it behaves the same, with "ipvsadm" in
// its messages; as ipvsadm-save it prints the rules ("-S", -n for numeric)
// and as ipvsadm-restore it replaces the table with the rules on stdin (one
// atomic clear and restore).
//
// A gvs extension ipvsadm does not have: "gvsadm --sysctl [NAME[=VALUE]]"
// lists, reads or sets IPVS's sysctls (net.ipv4.vs.NAME) in gvsd, with
// sysctl(8)'s output and error texts; "gvsadm --reload" makes gvsd re-read
// its rules file and keepalived.conf and waits for the outcome (exit 0, or
// the reason and exit status 1 with the old configuration kept), for
// systemd's ExecReload=. "gvsadm --status [--json]" shows the health checks
// of a gvsd started with --keepalived-conf: per service its quorum, per
// real server its state and configured/effective weight, per checker its
// state, last result and last transition.
//
// The socket is the abstract unix socket @gvsd; the environment variable
// GVS_SOCKET names another one. -h and -v work without a daemon.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"gvs/control"
)

func main() { os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr)) }

// exitNoDaemon is ipvsadm's status when it cannot initialise IPVS.
const exitNoDaemon = control.ExitInit

// run is the whole program: argv as os.Args, the standard streams, and the
// exit status as result.
func run(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := "gvsadm"
	if len(argv) > 0 && argv[0] != "" {
		prog = filepath.Base(argv[0])
	}
	args := []string{prog}
	if len(argv) > 1 {
		args = append(args, argv[1:]...)
	}
	if code, ok := control.Local(args, stdout, stderr); ok {
		return code
	}
	name := strings.TrimPrefix(os.Getenv("GVS_SOCKET"), "@")
	if name == "" {
		name = control.DefaultSocket
	}
	var in io.Reader
	if control.NeedsStdin(args) {
		in = stdin
	}
	out, errOut, code, err := control.Call(name, args, in)
	if err != nil {
		var de *control.DialError
		if errors.As(err, &de) {
			fmt.Fprintf(stderr, "Can't initialize ipvs: no gvsd control socket @%s (%s)\n"+
				"Are you sure that gvsd is running in this network namespace?\n", name, reason(de.Err))
			return exitNoDaemon
		}
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return exitNoDaemon
	}
	_, _ = stdout.Write(out)
	_, _ = stderr.Write(errOut)
	return code
}

// reason is the errno text of a connection failure ("connection refused").
func reason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}
