// Command gvsd is the gvs director daemon: IPVS in userspace on AF_PACKET
// rings.
//
//	gvsd --vip-if IF --dip-if IF [--rules FILE] [--keepalived-conf FILE] [--socket NAME] [--workers N]
//	     [--log-level LEVEL] [--log-format json|console] [--stats-interval D]
//	     [--sysctl NAME=VALUE]... [--sysctl-file FILE] [--metrics ADDR [--metrics-node-ipvs]]
//
// It loads the ipvsadm-save rules file, captures the services' traffic on
// the VIP interface and the NAT replies on the DIP interface (the same
// interface for a one-arm director), forwards it with IPVS's semantics, and
// serves the ipvsadm-compatible control socket @NAME (default @gvsd) for
// gvsadm. SIGHUP re-reads the rules file and applies it atomically (existing
// connections keep flowing); SIGTERM and SIGINT stop it, removing its
// nftables table and ARP responder, with exit status 0.
//
// --keepalived-conf FILE runs the virtual servers of a keepalived.conf with
// their health checks (beside --rules; SIGHUP re-reads it too);
// "gvsd --keepalived-conf FILE --config-test" checks it as keepalived
// --config-test does, prints the ipvsadm-save lines it programs and exits
// with keepalived's status, touching nothing.
//
// --metrics ADDR serves Prometheus metrics at http://ADDR/metrics (gvs_*;
// with --metrics-node-ipvs also node_exporter's node_ipvs_* families).
//
// --sysctl and --sysctl-file set IPVS's sysctls (net.ipv4.vs.NAME, see
// "gvsadm --sysctl") before the daemon serves: the file first, in
// sysctl.conf syntax, then the flags in order. An unknown name or an invalid
// value is one line on stderr and exit status 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"gvs/daemon"
	"gvs/metrics"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options are the parsed command line.
type options struct {
	cfg       daemon.Config
	logLevel  string
	logFormat string
	adminGID  int
	pprof     string
	arp       string
	// metrics is --metrics (empty: off); nodeIPVS --metrics-node-ipvs.
	metrics  string
	nodeIPVS bool
	// notices are about sysctls set that gvs stores but does not act on.
	notices []string
	// configTest is --config-test: check --keepalived-conf and exit.
	configTest bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("gvsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.cfg.VIPIf, "vip-if", "", "interface facing the clients (required)")
	fs.StringVar(&o.cfg.DIPIf, "dip-if", "", "interface facing the real servers (required; the same as --vip-if for a one-arm director)")
	fs.StringVar(&o.cfg.RulesFile, "rules", "", "rules file in ipvsadm-save format, loaded at start and on SIGHUP")
	fs.StringVar(&o.cfg.KeepalivedConf, "keepalived-conf", "", "keepalived.conf whose virtual_server blocks (with their health checks) gvsd runs, beside --rules; re-read on SIGHUP")
	fs.StringVar(&o.cfg.KeepalivedConfigID, "config-id", "", "keepalived's -i: the config id for \"@id\" lines (default: the host name's first label)")
	fs.BoolVar(&o.configTest, "config-test", false, "check --keepalived-conf as keepalived --config-test does, print the ipvsadm-save lines it programs, and exit (status: keepalived's)")
	fs.StringVar(&o.cfg.Socket, "socket", daemon.DefaultSocket, "control socket name (abstract unix socket @NAME)")
	fs.IntVar(&o.cfg.Workers, "workers", 0, fmt.Sprintf("data-path workers (default: half the CPUs, at least 1; here %d)", daemon.DefaultWorkers()))
	fs.IntVar(&o.cfg.Batch, "batch", daemon.DefaultBatch, "frames taken from a ring per turn")
	fs.IntVar(&o.cfg.ConnCapacity, "conn-capacity", 0, "connection table capacity (default: conntrack's)")
	fs.IntVar(&o.cfg.RingFrames, "ring-frames", 0, "frames per RX ring (default 2048); a full ring is that much queueing")
	fs.DurationVar(&o.cfg.BusyPoll, "busy-poll", 0, "keep polling the rings this long after the last frame before sleeping (e.g. 200us): lower latency at low rates, a busier CPU; 0: sleep at once")
	fs.IntVar(&o.cfg.SYNRate, "syn-rate", daemon.DefaultSYNRate, "new TCP connections (SYNs to a VIP) a second each source address may open; beyond, its SYNs are dropped (counter syn_budget); 0: no limit")
	fs.StringVar(&o.pprof, "pprof", "", "serve Go's pprof on this address (e.g. 127.0.0.1:6060) for profiling; off by default")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9475); off by default")
	fs.BoolVar(&o.nodeIPVS, "metrics-node-ipvs", false, "also export node_exporter's node_ipvs_* metrics (same names and labels), for existing IPVS dashboards")
	fs.DurationVar(&o.cfg.StatsInterval, "stats-interval", 10*time.Second, "log data-path counters at debug level this often (0: never)")
	fs.IntVar(&o.adminGID, "admin-gid", -1, "group (primary GID of the caller) allowed to change the daemon besides root; -1: root only")
	fs.StringVar(&o.arp, "arp", "auto", "answer ARP for VIPs: auto (those the host does not hold and has not held since start, followed live), on (all), off (none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	var sysctls sysctlFlag
	fs.Var(&sysctls, "sysctl", "set IPVS sysctl net.ipv4.vs.NAME (NAME=VALUE; repeatable; after --sysctl-file)")
	sysctlFile := fs.String("sysctl-file", "", "IPVS sysctls in sysctl.conf syntax (net.ipv4.vs.NAME = VALUE lines)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.configTest && o.cfg.KeepalivedConf == "":
		return o, errors.New("--config-test needs --keepalived-conf")
	case o.configTest:
		return o, nil
	case o.cfg.VIPIf == "" || o.cfg.DIPIf == "":
		return o, errors.New("--vip-if and --dip-if are required")
	case o.cfg.Workers < 0:
		return o, errors.New("--workers must not be negative")
	case o.cfg.SYNRate < 0:
		return o, errors.New("--syn-rate must not be negative")
	case o.cfg.BusyPoll < 0 || o.cfg.BusyPoll > time.Second:
		return o, errors.New("--busy-poll must be between 0 and 1s")
	case o.nodeIPVS && o.metrics == "":
		return o, errors.New("--metrics-node-ipvs needs --metrics")
	case o.logFormat != "json" && o.logFormat != "console":
		return o, fmt.Errorf("--log-format %q: want json or console", o.logFormat)
	}
	if o.cfg.SYNRate == 0 {
		o.cfg.SYNRate = -1 // --syn-rate 0: no budget
	}
	var err error
	if o.cfg.ARP, err = daemon.ParseARPMode(o.arp); err != nil {
		return o, err
	}
	if o.cfg.Settings, o.notices, err = applySysctls(*sysctlFile, sysctls); err != nil {
		return o, err
	}
	return o, nil
}

func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	zc.OutputPaths = []string{"stderr"}
	return zc.Build()
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "gvsd:", err)
		return 2
	}
	if o.configTest {
		return configTest(o.cfg.KeepalivedConf, o.cfg.KeepalivedConfigID, o.cfg.RulesFile, os.Stdout, stderr)
	}
	log, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "gvsd:", err)
		return 2
	}
	defer log.Sync()
	for _, n := range o.notices {
		log.Warn(n)
	}
	o.cfg.Logger = log
	o.cfg.Control = controlServer(o.adminGID)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// The metrics address is taken before the daemon installs anything, so
	// that a busy address stops gvsd with nothing to undo.
	var reloads *metrics.Reloads
	var metricsLn net.Listener
	if o.metrics != "" {
		if metricsLn, err = net.Listen("tcp", o.metrics); err != nil {
			log.Error("cannot serve metrics", zap.Error(err))
			return 1
		}
		defer metricsLn.Close()
		o.cfg.OnReload = func(err error) { reloads.Observe(err, time.Now()) }
	}
	d, err := daemon.New(o.cfg)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	if metricsLn != nil {
		reloads = metrics.NewReloads(time.Now())
		srv := serveMetrics(metricsLn, metricsSource(d, reloads, o.nodeIPVS), log)
		defer srv.Close()
	}
	if o.pprof != "" {
		ln, err := net.Listen("tcp", o.pprof)
		if err != nil {
			log.Error("cannot serve pprof", zap.Error(err))
			return 1
		}
		log.Info("serving pprof", zap.String("addr", ln.Addr().String()))
		srv := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := d.Reload(); err != nil {
					log.Error("reload failed; the rules in force are unchanged", zap.Error(err))
				}
			}
		}
	}()
	if err := d.Run(ctx); err != nil {
		log.Error("stopped with an error", zap.Error(err))
		return 1
	}
	log.Info("gvsd stopped")
	return 0
}

// pprofMux serves Go's profiles (/debug/pprof/...) for --pprof.
func pprofMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}
