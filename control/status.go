package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gvs/health"
)

// The --status extension (ipvsadm has none; keepalived's closest are its
// SIGUSR1 data dump and SIGJSON): the health checks' state.
//
//	--status          a table: service, real server, state, weight
//	                  configured/effective, each checker with its state, last
//	                  result and last transition time
//	--status --json   health.Engine.Status as JSON
//
// Like -L it needs root (or AdminGID).

// OptStatus is the option that selects the status extension.
const OptStatus = "--status"

// Exit statuses of --status.
const (
	exitStatusNone  = 1 // the daemon runs no health checks
	exitStatusUsage = 2 // a command line --status does not take
)

// statusArgs reports whether argv is a --status command and whether it
// asks for JSON; ok is false for other command lines, bad for a --status
// command line with other arguments.
func statusArgs(argv []string) (json, bad, ok bool) {
	prog, args := progArgs(argv)
	if prog == progSave || prog == progRestore || len(args) == 0 || args[0] != OptStatus {
		return false, false, false
	}
	switch {
	case len(args) == 1:
		return false, false, true
	case len(args) == 2 && args[1] == "--json":
		return true, false, true
	}
	return false, true, true
}

// runStatus executes a --status command line; handled is false for any
// other command line.
func (e *Engine) runStatus(argv []string, cred Cred, stdout, stderr io.Writer) (code int, handled bool) {
	asJSON, bad, ok := statusArgs(argv)
	if !ok {
		return 0, false
	}
	prog, _ := progArgs(argv)
	switch {
	case bad:
		fmt.Fprintf(stderr, "%s: %s takes no argument but --json\n", prog, OptStatus)
		return exitStatusUsage, true
	case !e.Allowed(cred):
		fmt.Fprintln(stderr, msgPerm)
		return ExitInit, true
	case e.Status == nil:
		fmt.Fprintf(stderr, "%s: %s: this gvsd runs no health checks (start it with --keepalived-conf)\n", prog, OptStatus)
		return exitStatusNone, true
	}
	st := e.Status()
	if asJSON {
		if st == nil {
			st = []health.ServiceStatus{}
		}
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return exitStatusNone, true
		}
		_, _ = stdout.Write(append(b, '\n'))
		return 0, true
	}
	_ = WriteStatus(stdout, st)
	return 0, true
}

// WriteStatus prints the health state as gvsadm --status does: a line per
// service (STATE its quorum, WEIGHT the alive weight / the quorum), then
// one per checker of each real server (WEIGHT configured/effective, "-"
// when absent from the table; the real server columns only on its first
// checker's line), then the sorry server.
func WriteStatus(w io.Writer, st []health.ServiceStatus) error {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tREAL SERVER\tSTATE\tWEIGHT\tCHECKER\tCHECK\tLAST RESULT\tCHANGED")
	for _, s := range st {
		q := "quorum up"
		if !s.QuorumUp {
			q = "quorum down"
		}
		fmt.Fprintf(tw, "%s\t\t%s\t%d/%d\t\t\t\t\n", s.Name, q, s.AliveWeight, s.Quorum)
		for _, r := range s.Reals {
			state := "up"
			switch {
			case r.Drained:
				state = "drained"
			case !r.Alive:
				state = "down"
			case r.Slowstart:
				state = "up (slowstart)"
			}
			eff := "-"
			if r.Present {
				eff = strconv.Itoa(r.Weight)
			}
			lead := fmt.Sprintf("\t%s\t%s\t%d/%s", r.Name, state, r.Configured, eff)
			if len(r.Checkers) == 0 {
				fmt.Fprintf(tw, "%s\t-\t\t\t%s\n", lead, stamp(r.Since))
			}
			for i, c := range r.Checkers {
				if i > 0 {
					lead = "\t\t\t"
				}
				cs := "up"
				if !c.Up {
					cs = "down"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", lead, c.Kind, cs, lastResult(c), stamp(c.Changed))
			}
		}
		if so := s.Sorry; so != nil {
			state := "sorry, inactive"
			if so.Active {
				state = "sorry, active"
			}
			eff := "-"
			if so.Present {
				eff = strconv.Itoa(so.Weight)
			}
			fmt.Fprintf(tw, "\t%s\t%s\t-/%s\t\t\t\t\n", so.Name, state, eff)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(w, strings.TrimRight(l, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

func lastResult(c health.CheckerStatus) string {
	switch {
	case c.Checks == 0:
		return "none yet"
	case c.LastOK:
		return "ok"
	}
	return "failed: " + strings.ReplaceAll(c.LastError, "\t", " ")
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
