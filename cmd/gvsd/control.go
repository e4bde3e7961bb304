package main

import (
	"context"

	"gvs/control"
	"gvs/daemon"
)

// controlServer returns the daemon's control hook: the ipvsadm engine over
// the daemon's tables and clock, served on the abstract socket @NAME, with
// the daemon's Sync as the change hook (kernel filters, ingress drops, ARP,
// neighbour wants follow every ipvsadm change).
func controlServer(adminGID int) func(ctx context.Context, d *daemon.Daemon) error {
	return func(ctx context.Context, d *daemon.Daemon) error {
		e := control.NewEngine(d.Table(), d.Conns(), d.Clock)
		e.OnChange = d.Sync
		e.AdminGID = adminGID
		e.Settings = d.Settings()
		if d.HasHealthChecks() {
			e.Status = d.HealthStatus
		}
		// The rate estimator (ipvsadm --rate) samples the counters every 2 s.
		go e.RunEstimator(ctx)
		// New bound the socket before touching the host (single instance).
		s := &control.Server{Engine: e, Log: d.Logger().Named("control")}
		return s.Serve(ctx, d.ControlListener())
	}
}
