package main

import (
	"context"

	"gvs/daemon"
)

// serveControl serves the control socket for a daemon (daemon.Config.Control).
//
// TODO(integration): package control (being written in parallel) provides
//
//	control.Serve(ctx, name string, e *control.Engine, log *zap.Logger) error
//	control.Engine{Table, Conns, Clock, OnChange, AdminGID}
//
// Wire it here once it exists:
//
//	serveControl = func(ctx context.Context, d *daemon.Daemon) error {
//		e := &control.Engine{Table: d.Table(), Conns: d.Conns(), Clock: d.Clock, OnChange: d.Sync}
//		return control.Serve(ctx, d.Socket(), e, d.Logger().Named("control"))
//	}
//
// Until then it is nil and gvsd warns at start that it has no control socket.
var serveControl func(ctx context.Context, d *daemon.Daemon) error
