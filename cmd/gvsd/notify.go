package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"gvs/daemon"
)

// StatusInterval is how often gvsd sends systemd a STATUS= line.
const StatusInterval = 5 * time.Second

// notifier speaks systemd's sd_notify(3) protocol (Type=notify): READY=1
// once serving, RELOADING=1 + MONOTONIC_USEC=… then READY=1 around every
// reload, STOPPING=1 at shutdown, STATUS= lines, and WATCHDOG=1 from the
// data path's supervisor. Without NOTIFY_SOCKET every message is a no-op.
type notifier struct {
	// send delivers one message (sd.SdNotify; tests replace it).
	send func(state string) error
	log  *zap.Logger

	mu        sync.Mutex // serializes reloads; guards the fields below
	reloadErr string     // why the last reload failed ("" if it did not)
	stopped   bool
}

func newNotifier(log *zap.Logger) *notifier {
	return &notifier{log: log, send: func(state string) error {
		_, err := sd.SdNotify(false, state)
		return err
	}}
}

func (n *notifier) notify(state string) {
	if err := n.send(state); err != nil {
		n.log.Warn("cannot notify systemd", zap.String("state", strings.ReplaceAll(state, "\n", " ")), zap.Error(err))
	}
}

// ready says the daemon serves: control socket bound, rules applied,
// rings open.
func (n *notifier) ready(status string) {
	n.notify(sd.SdNotifyReady + "\nSTATUS=" + status)
}

// reload runs f (the daemon's reload) between RELOADING=1 and READY=1;
// when f fails, READY=1 comes with STATUS=reload failed: …, as the daemon
// carries on with its old configuration. Reloads are serialized.
func (n *notifier) reload(f func() error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	// systemd ignores RELOADING=1 without MONOTONIC_USEC (systemd >= 253
	// matches it against the reload it started).
	n.notify(sd.SdNotifyReloading + "\n" + sd.SdNotifyMonotonicUsec())
	err := f()
	if err != nil {
		n.reloadErr = oneLine(err.Error())
		n.notify(sd.SdNotifyReady + "\nSTATUS=reload failed: " + n.reloadErr)
		return err
	}
	n.reloadErr = ""
	n.notify(sd.SdNotifyReady)
	return nil
}

// stopping says shutdown has begun (once).
func (n *notifier) stopping() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.stopped {
		n.stopped = true
		n.notify(sd.SdNotifyStopping + "\nSTATUS=stopping")
	}
}

// status sends a STATUS= line, with the last reload's failure if any.
func (n *notifier) status(s string) {
	n.mu.Lock()
	if n.reloadErr != "" {
		s += "; last reload failed: " + n.reloadErr
	}
	n.mu.Unlock()
	n.notify("STATUS=" + s)
}

// watchdog is the data path's keep-alive (sent by daemon.Watchdog).
func (n *notifier) watchdog() { n.notify(sd.SdNotifyWatchdog) }

// supervise sends d's status every StatusInterval and, when systemd set
// WatchdogSec=, runs the data path's watchdog with pings every half of it,
// until ctx ends.
func (n *notifier) supervise(ctx context.Context, d *daemon.Daemon) {
	wd, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("systemd watchdog settings ignored", zap.Error(err))
	}
	if wd > 0 {
		n.log.Info("systemd watchdog", zap.Duration("timeout", wd), zap.Duration("ping_every", wd/2))
		go d.Watchdog(ctx, wd/2, n.watchdog)
	}
	tick := time.NewTicker(StatusInterval)
	defer tick.Stop()
	last, lastRX := time.Now(), d.Stats().RX
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			rx := d.Stats().RX
			pps := float64(rx-lastRX) / now.Sub(last).Seconds()
			last, lastRX = now, rx
			n.status(statusLine(d, pps))
		}
	}
}

// statusLine is the STATUS= text: "2 services, 6 real servers, 1.2 kpps".
func statusLine(d *daemon.Daemon, pps float64) string {
	svcs := d.Table().Services()
	dests := 0
	for _, s := range svcs {
		dests += len(s.Dests())
	}
	return statusText(len(svcs), dests, pps)
}

func statusText(services, dests int, pps float64) string {
	var rate string
	switch {
	case pps >= 1e6:
		rate = fmt.Sprintf("%.1f Mpps", pps/1e6)
	case pps >= 1e3:
		rate = fmt.Sprintf("%.1f kpps", pps/1e3)
	default:
		rate = fmt.Sprintf("%.0f pps", pps)
	}
	return fmt.Sprintf("%s, %s, %s", plural(services, "service"), plural(dests, "real server"), rate)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// oneLine joins a multi-line error text (errors.Join) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
