package control

import (
	"errors"
	"fmt"
	"io"

	"gvs/ipvsadm"
	"gvs/lvssync"
)

// The connection sync daemons (ipvsadm --start-daemon, --stop-daemon and
// -L --daemon), run by the daemon through SyncDaemons. The errors are
// libipvs's texts for the kernel's errnos (ipvs_strerror): starting a
// running daemon is EEXIST, stopping one that does not run ESRCH, an
// unknown --mcast-interface ENODEV (strerror's text). ipvsadm exits with
// 255 on all of them.

// SyncDaemons starts, stops and lists the sync daemons (the daemon
// implements it). A master and a backup may run at the same time.
type SyncDaemons interface {
	// StartSyncDaemon starts the daemon of cfg.State; ErrDaemonRunning
	// when it runs already.
	StartSyncDaemon(cfg lvssync.Config) error
	// StopSyncDaemon stops it; ErrNoDaemon when it does not run.
	StopSyncDaemon(state lvssync.State) error
	// SyncDaemons are the running daemons' configurations (defaults
	// filled; nil: not running).
	SyncDaemons() (master, backup *lvssync.Config)
}

// Errors a SyncDaemons returns, with libipvs's messages.
var (
	ErrDaemonRunning = errors.New("Daemon has already run") // EEXIST
	ErrNoDaemon      = errors.New("No daemon is running")   // ESRCH
	ErrNoDevice      = errors.New("No such device")         // ENODEV
)

// runDaemon executes --start-daemon and --stop-daemon; handled is false for
// any other command, or when the engine has no SyncDaemons (then the
// command is refused as unsupported by apply).
func (e *Engine) runDaemon(c *ipvsadm.Command, stderr io.Writer) (code int, handled bool) {
	if e.Syncd == nil || (c.Kind != ipvsadm.CmdStartDaemon && c.Kind != ipvsadm.CmdStopDaemon) {
		return 0, false
	}
	st := lvssync.State(c.Daemon.State)
	var err error
	if c.Kind == ipvsadm.CmdStopDaemon {
		err = e.Syncd.StopSyncDaemon(st)
	} else {
		err = e.Syncd.StartSyncDaemon(DaemonConfig(&c.Daemon))
	}
	if err != nil {
		fmt.Fprintln(stderr, daemonErrText(err))
		return ipvsadm.ExitFailure, true
	}
	return ipvsadm.ExitOK, true
}

// daemonErrText is the line ipvsadm prints for a daemon command's error.
func daemonErrText(err error) string {
	for _, s := range []error{ErrDaemonRunning, ErrNoDaemon, ErrNoDevice} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return err.Error()
}

// DaemonConfig converts ipvsadm's --start-daemon options to the sync
// daemon's configuration (ipvsadm's default interface is eth0).
func DaemonConfig(d *ipvsadm.DaemonConfig) lvssync.Config {
	ifn := d.McastIfn
	if ifn == "" {
		ifn = "eth0"
	}
	return lvssync.Config{
		State:      lvssync.State(d.State),
		McastIfn:   ifn,
		SyncID:     uint8(d.SyncID),
		SyncMaxlen: d.SyncMaxlen,
		McastGroup: d.McastGroup,
		McastPort:  d.McastPort,
		McastTTL:   d.McastTTL,
	}
}

// listDaemons prints -L --daemon: nothing when no daemon runs.
func (e *Engine) listDaemons(w io.Writer) {
	if e.Syncd == nil {
		return
	}
	m, b := e.Syncd.SyncDaemons()
	_, _ = io.WriteString(w, lvssync.FormatDaemon(m, b))
}
