package main

import (
	"fmt"
	"io"

	"gvs/daemon"
	"gvs/keepalived"
)

// configTest is gvsd --keepalived-conf FILE --config-test: keepalived
// --config-test's checks and exit status, plus gvs's own (checkers gvs
// runs, IPVS's weight limit, services also in --rules), and the
// ipvsadm-save lines gvsd would program at start (before any check:
// alpha real servers left out, inhibited ones at weight 0, the sorry server
// while the quorum is not met). Nothing on the host is touched.
//
// The exit status is keepalived's binary's (enum chk_exit_code, measured
// with Debian's keepalived 2.2.7: an unknown keyword gives 5): 0 OK, 2 a
// missing parameter, 4 the configuration cannot run, 5 it runs after
// fixing errors up, 6 scripts without script security. keepalived(8)
// documents 3, 4 and 5 for the last three.
func configTest(path, configID, rulesFile string, stdout, stderr io.Writer) int {
	if configID == "" {
		configID = daemon.DefaultConfigID()
	}
	c, _ := keepalived.Load(path, keepalived.Options{ConfigID: configID})
	for _, d := range c.Diags {
		fmt.Fprintln(stderr, d)
	}
	code := c.ExitCode()
	if code == keepalived.ExitAbort || code == keepalived.ExitFatal {
		return code
	}
	if err := daemon.CheckKeepalived(c, path, rulesFile); err != nil {
		fmt.Fprintf(stderr, "gvs: %v\n", err)
		return keepalived.ExitFatal
	}
	if err := keepalived.WriteSave(stdout, c, keepalived.SaveOptions{State: keepalived.Startup}); err != nil {
		fmt.Fprintf(stderr, "gvs: %v\n", err)
		return keepalived.ExitFatal
	}
	return code
}
