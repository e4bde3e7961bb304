// Command gvsd is the gvs director daemon: IPVS in userspace on AF_PACKET
// rings.
//
//	gvsd --vip-if IF --dip-if IF [--rules FILE] [--keepalived-conf FILE] [--socket NAME] [--workers N]
//	     [--io tpacket|afxdp [--xdp-mode auto|native|generic] [--xdp-fastpath]]
//	     [--log-level LEVEL] [--log-format json|console] [--stats-interval D]
//	     [--sysctl NAME=VALUE]... [--sysctl-file FILE] [--metrics ADDR [--metrics-node-ipvs]]
//	gvsd --help
//
// It loads the ipvsadm-save rules file, captures the services' traffic on
// the VIP interface and the NAT replies on the DIP interface (the same
// interface for a one-arm director), forwards it with IPVS's semantics, and
// serves the ipvsadm-compatible control socket @NAME (default @gvsd) for
// gvsadm. SIGHUP (or "gvsadm --reload", which waits for the outcome)
// re-reads the rules file and applies it atomically (existing connections
// keep flowing); SIGTERM and SIGINT stop it, removing its nftables table and
// ARP responder, with exit status 0. Under systemd (Type=notify) it sends
// READY=1, RELOADING=1/READY=1 around reloads, STOPPING=1, STATUS= lines
// and watchdog pings (see notify.go). --help prints its manual.
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
//
// An operator's mistake (bad option, missing interface or address, bad
// rules file, missing privileges, control socket in use) is one line on
// stderr and a non-zero exit status, never a stack trace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
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
	"gvs/forwarder/xdp"
	"gvs/metrics"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
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

// parseFlags parses the command line. --help (-h) prints the manual on
// stdout and returns flag.ErrHelp; errors are one line, without the flag
// package's usage text.
func parseFlags(args []string, stdout io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("gvsd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.cfg.VIPIf, "vip-if", "", "interface facing the clients (required)")
	fs.StringVar(&o.cfg.DIPIf, "dip-if", "", "interface facing the real servers (required; the same as --vip-if for a one-arm director)")
	fs.StringVar(&o.cfg.RulesFile, "rules", "", "rules file in ipvsadm-save format, loaded at start and on reload (SIGHUP, gvsadm --reload)")
	fs.StringVar(&o.cfg.KeepalivedConf, "keepalived-conf", "", "keepalived.conf whose virtual_server blocks (with their health checks) gvsd runs, beside --rules; re-read on reload (SIGHUP, gvsadm --reload)")
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
	ioMode := fs.String("io", "tpacket", "packet I/O: tpacket (AF_PACKET rings) or afxdp (AF_XDP sockets and an XDP program; falls back to tpacket, with a log line, where XDP cannot attach)")
	xdpFast := fs.Bool("xdp-fastpath", false, "with --io afxdp: forward the steady packets of established NAT, DR and TUN connections in the XDP program (the pipeline installs and expires them; statistics are folded in every 100 ms, connection timers every 400 ms)")
	xdpMode := fs.String("xdp-mode", "auto", "with --io afxdp: XDP attach mode auto (native, else generic), native or generic")
	fs.StringVar(&o.arp, "arp", "auto", "answer ARP for VIPs: auto (those the host does not hold and has not held since start, followed live), on (all), off (none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	var sysctls sysctlFlag
	fs.Var(&sysctls, "sysctl", "set IPVS sysctl net.ipv4.vs.NAME (NAME=VALUE; repeatable; after --sysctl-file)")
	sysctlFile := fs.String("sysctl-file", "", "IPVS sysctls in sysctl.conf syntax (net.ipv4.vs.NAME = VALUE lines)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeManual(stdout, fs)
			return o, err
		}
		return o, fmt.Errorf("%w (gvsd --help lists the options)", err)
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
	case o.cfg.Batch < 0:
		return o, errors.New("--batch must not be negative")
	case o.cfg.ConnCapacity < 0:
		return o, errors.New("--conn-capacity must not be negative")
	case o.cfg.RingFrames < 0:
		return o, errors.New("--ring-frames must not be negative")
	case o.cfg.StatsInterval < 0:
		return o, errors.New("--stats-interval must not be negative")
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
	if o.cfg.IO, err = daemon.ParseIOMode(*ioMode); err != nil {
		return o, err
	}
	switch *xdpMode {
	case "auto":
	case "native":
		o.cfg.XDPModes = []xdp.Mode{xdp.Native}
	case "generic":
		o.cfg.XDPModes = []xdp.Mode{xdp.Generic}
	default:
		return o, fmt.Errorf("--xdp-mode %q: want auto, native or generic", *xdpMode)
	}
	if o.cfg.XDPFastPath = *xdpFast; *xdpFast && o.cfg.IO != daemon.IOAFXDP {
		return o, fmt.Errorf("--xdp-fastpath needs --io afxdp")
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
	// No stack traces in the log: errors are an operator's business.
	zc.DisableStacktrace = true
	return zc.Build()
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "gvsd:", err)
		return 2
	}
	if o.configTest {
		return configTest(o.cfg.KeepalivedConf, o.cfg.KeepalivedConfigID, o.cfg.RulesFile, stdout, stderr)
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
	var pprofLn net.Listener
	if o.pprof != "" {
		// Before New: a port in use is a start-up error, found before
		// anything is installed.
		if pprofLn, err = net.Listen("tcp", o.pprof); err != nil {
			fmt.Fprintln(stderr, "gvsd: cannot start: --pprof:", err)
			return 1
		}
		defer pprofLn.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP is caught from now on; reloads are handled once the daemon
	// serves (a SIGHUP during start-up waits for it).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// The metrics address is taken before the daemon installs anything, so
	// that a busy address stops gvsd with nothing to undo.
	var reloads *metrics.Reloads
	var metricsLn net.Listener
	if o.metrics != "" {
		if metricsLn, err = net.Listen("tcp", o.metrics); err != nil {
			fmt.Fprintln(stderr, "gvsd: cannot start: --metrics:", err)
			return 1
		}
		defer metricsLn.Close()
		o.cfg.OnReload = func(err error) { reloads.Observe(err, time.Now()) }
	}
	n := newNotifier(log)
	o.cfg.Logger = log
	o.cfg.Control = serve(o.adminGID, n, hup)
	d, err := daemon.New(o.cfg)
	if err != nil {
		fmt.Fprintln(stderr, "gvsd: cannot start:", startError(err))
		return 1
	}
	if metricsLn != nil {
		reloads = metrics.NewReloads(time.Now())
		srv := serveMetrics(metricsLn, metricsSource(d, reloads, o.nodeIPVS), log)
		defer srv.Close()
	}
	if pprofLn != nil {
		log.Info("serving pprof", zap.String("addr", pprofLn.Addr().String()))
		srv := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(pprofLn)
		defer srv.Close()
	}
	go func() {
		<-ctx.Done()
		n.stopping()
	}()
	err = d.Run(ctx)
	n.stopping()
	if err != nil {
		log.Error("stopped with an error", zap.Error(err))
		return 1
	}
	log.Info("gvsd stopped")
	return 0
}

// startError is a start-up error in one line, with a hint when privileges
// are missing.
func startError(err error) string {
	msg := oneLine(err.Error())
	var pe *fs.PathError // a file gvsd may not read: no capability helps
	if errors.Is(err, os.ErrPermission) && !errors.As(err, &pe) {
		msg += " (gvsd needs CAP_NET_RAW and CAP_NET_ADMIN: run it as root or give it both capabilities, see gvsd --help)"
	}
	return msg
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
