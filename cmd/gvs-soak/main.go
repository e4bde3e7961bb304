// Command gvs-soak is `make soak`: a bounded run of gvsd in the lab under
// hostile input and faults, with pass/fail bounds.
//
//	gvs-soak [-duration 5m] [-bin DIR] [-out DIR] [-conn-capacity N] [-workers N] [-flood-rate R]
//
// It builds a lab (two clients, a director, three real servers that serve
// both NAT and DR), starts gvsd with a rules file, a NAT service (VIP:80 ->
// :8080) and a DR service (VIP:8080), and keeps 10 long-lived TCP
// connections through each doing an HTTP request/response every 20 ms.
// Then, in fixed phases (see plan.go), it floods the VIP with SYNs from
// spoofed sources at the generator's full rate, kills and restarts a real
// server, flaps the DIP link, and kills gvsd with SIGKILL and starts it
// again over its stale nftables table; every 3 s it reloads the rules
// (SIGHUP) with r1's weight alternating between 1 and 3.
//
// It prints what every client lost per phase, gvsd's RSS over time (VmRSS,
// every second), the data path's drops by reason per phase (from
// --metrics), and checks the bounds (bounds.go):
//
//   - in every phase at least 99 % of the requests on established
//     connections are answered; requests overlapping the gvsd restart window
//     (SIGKILL until gvsd is ready and every client it broke is answered
//     again) and those on connections through the killed real server are
//     counted apart;
//   - RSS stays within capacity × 115 B × 2 + 32 MiB + the rings;
//   - gvsd uses at most 10 % of a CPU while the DIP link is down;
//   - the stale table is there after the SIGKILL and the restart
//     converges; every reload succeeds; the flood really ran.
//
// It exits 1 when a bound is broken (2 on bad usage or when the run could
// not be set up). The hidden subcommand `gvs-soak flood` is the SYN
// generator, which the soak runs in the attacker's namespace.
//
// It needs root and the binaries gvsd and gvs-testsrv in -bin.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// errBounds is returned when the run completed but broke a bound.
var errBounds = errors.New("bounds broken")

func main() {
	if len(os.Args) > 1 && os.Args[1] == "flood" {
		if err := runFlood(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "gvs-soak flood:", err)
			os.Exit(2)
		}
		return
	}
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errBounds):
		fmt.Fprintln(os.Stderr, "gvs-soak:", err)
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "gvs-soak:", err)
		os.Exit(2)
	}
}

// config is the parsed command line.
type config struct {
	duration  time.Duration
	bin, out  string
	capacity  int
	workers   int
	floodRate float64
	perMode   int // long-lived connections per forwarding method
}

// defaultDuration is -duration's default: $SOAK_DURATION, else 5 minutes.
func defaultDuration() time.Duration {
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			return d
		}
		if n, err := strconv.Atoi(s); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	return 5 * time.Minute
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("gvs-soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	exe, _ := os.Executable()
	fs.DurationVar(&c.duration, "duration", defaultDuration(), "length of the run, 60s..10m (default: $SOAK_DURATION, else 5m)")
	fs.StringVar(&c.bin, "bin", filepath.Dir(exe), "folder with gvsd and gvs-testsrv")
	fs.StringVar(&c.out, "out", "out/soak", "folder for the report, rss.csv and gvsd's logs")
	fs.IntVar(&c.capacity, "conn-capacity", 1<<20, "gvsd --conn-capacity (the RSS bound follows it)")
	fs.IntVar(&c.workers, "workers", 1, "gvsd --workers (the RSS bound counts their rings)")
	fs.Float64Var(&c.floodRate, "flood-rate", 0, "SYN flood rate in frames/s; 0: the generator's full rate")
	fs.IntVar(&c.perMode, "conns", 10, "long-lived connections through NAT, and as many through DR")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.duration < minDuration || c.duration > maxDuration:
		return c, fmt.Errorf("-duration %v out of range %v..%v", c.duration, minDuration, maxDuration)
	case c.capacity < 1024:
		return c, fmt.Errorf("-conn-capacity %d: want at least 1024", c.capacity)
	case c.workers < 1 || c.workers > 64:
		return c, fmt.Errorf("-workers %d out of range 1..64", c.workers)
	case c.floodRate < 0:
		return c, fmt.Errorf("-flood-rate %v: want 0 or more", c.floodRate)
	case c.perMode < 1 || c.perMode > 100:
		return c, fmt.Errorf("-conns %d out of range 1..100", c.perMode)
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	p, err := newPlan(cfg.duration)
	if err != nil {
		return err
	}
	for _, b := range []string{"gvsd", "gvs-testsrv"} {
		if _, err := os.Stat(filepath.Join(cfg.bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s (run make build): %w", b, cfg.bin, err)
		}
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	report, err := os.Create(filepath.Join(cfg.out, "report.txt"))
	if err != nil {
		return err
	}
	defer report.Close()
	s := &soak{cfg: cfg, plan: p, out: io.MultiWriter(stdout, report)}
	res, err := s.run()
	if err != nil {
		return err
	}
	if !res.ok() {
		return errBounds
	}
	return nil
}
