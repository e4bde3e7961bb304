package main

import (
	"context"
	"os"

	"go.uber.org/zap"

	"gvs/control"
	"gvs/daemon"
)

// serve returns the daemon's control hook, which Run calls once the data
// path is up (control socket bound, rules applied, rings open): it tells
// systemd the daemon is ready, handles SIGHUP (from hup) and gvsadm
// --reload as the same synchronous reload, reports status and runs the
// watchdog, and serves the ipvsadm engine over the daemon's tables and
// clock on the abstract socket @NAME, with the daemon's Sync as the change
// hook (kernel filters, ingress drops, ARP, neighbour wants follow every
// ipvsadm change).
func serve(adminGID int, n *notifier, hup <-chan os.Signal) func(ctx context.Context, d *daemon.Daemon) error {
	return func(ctx context.Context, d *daemon.Daemon) error {
		log := d.Logger()
		e := control.NewEngine(d.Table(), d.Conns(), d.Clock)
		e.OnChange = d.Sync
		e.AdminGID = adminGID
		e.Settings = d.Settings()
		e.Syncd = d
		e.OnReload = func() error {
			err := n.reload(d.Reload)
			if err != nil {
				log.Error("reload failed; the rules in force are unchanged", zap.Error(err))
			}
			return err
		}
		if d.HasHealthChecks() {
			e.Status = d.HealthStatus
		}
		// The rate estimator (ipvsadm --rate) samples the counters every 2 s.
		go e.RunEstimator(ctx)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					_ = e.Reload() // through the engine: never amid an ipvsadm change
				}
			}
		}()
		n.ready(statusLine(d, 0))
		go n.supervise(ctx, d)
		// New bound the socket before touching the host (single instance).
		s := &control.Server{Engine: e, Log: log.Named("control")}
		return s.Serve(ctx, d.ControlListener())
	}
}
