// Command gvs-bench is `make bench`: it builds the gvs lab (network
// namespaces: a client, a director, three real servers), and measures gvs
// side by side with what a user would run instead, on the same lab, in the
// same run, with identical topology and traffic:
//
//   - pps: 64-byte UDP frames over 10k flows from trafgen to the VIP; the
//     rate forwarded at overload and the loss-free rate (bounded search).
//     Contenders: the generator alone (sink at the director), a no-op ring
//     forwarder (the ceiling of gvs's I/O design), gvs NAT, DR and TUN, gvs
//     NAT on AF_XDP with and without the XDP fast path (GRO on the
//     director's veth peers, which the fast path's redirect needs), and
//     the kernel's nftables DNAT with conntrack (also with that GRO, to
//     show what the setting alone does).
//   - cpu: all the CPU the machine spends per forwarded packet at fixed
//     rates (60k, 150k pps), wherever it runs, measured exactly by
//     idle-priority spinners on every CPU (spin.go), net of the generator
//     alone at the same rate: the headline comparison.
//   - budget: the loss-free rate with all of the director's work on the
//     director's CPU (RPS; threaded NAPI pinned there for native XDP), the
//     paced generator offering every trial.
//   - cps: HTTP connections per second (wrk, Connection: close) to nginx
//     real servers: gvs NAT, nftables DNAT, HAProxy in TCP mode; and the
//     exact CPU per connection at a fixed connection rate, net of the
//     endpoints alone.
//   - latency: UDP request/response round trips (p50/p99) at low load and
//     under the fixed background load.
//   - scaling: the overload rate with 1..N gvsd workers.
//   - conntrack: gvs's connection table at 1M and 10M connections
//     (in-process): bytes per connection, insert and lookup rates.
//
// Each round runs every contender once (A B C ... A B C ...), so drifts of a
// shared machine hit all contenders alike; the report gives medians with
// min–max over the rounds. Outputs go to -out: results.json (every sample
// and trial), results.md (the tables), chart.svg and the forwarders' logs.
//
//	gvs-bench [-rounds 3] [-window 4s] [-cases pps,cpu,...] [-quick] [-out DIR] [-bin DIR]
//	gvs-bench noop -vip VIP -dst-macs M1,M2 [-in vip0] [-out dip0] [-spin]
//	gvs-bench render DIR   (rewrite DIR/results.md and chart.svg from DIR/results.json)
//	gvs-bench spin [-threshold 500ns]   (the exact CPU accounting's spinners; see spin.go)
//	gvs-bench conn -dst ADDR:PORT -rate R -duration D   (paced HTTP connections)
//
// It needs root, trafgen (netsniff-ng), wrk, nginx, haproxy, nft and
// conntrack (`make bench-deps`), and gvsd and gvs-testsrv in -bin.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gvs/internal/lab"
)

const (
	labPrefix  = "gvsbench"
	benchTable = "gvsbench"
)

// caseNames are the cases in the order they run within a contender's turn.
var caseNames = []string{"pps", "cpu", "budget", "latency", "cps", "scaling", "gc", "conntrack"}

type options struct {
	rounds                int
	warmup, window, trial time.Duration
	steps                 int
	tolerance             float64
	rate                  float64
	cpuRates              []float64
	spinThreshold         time.Duration
	budgetRPS             string
	budgetBacklog         int
	cases                 []string
	contenders            []string
	out, bin              string
	genCPU, dirCPU        string
	worldCPU, allCPUs     string
	rps                   string
	endpointRPS           string
	gvsdCPUs              string
	noopSpin              bool
	trafgenRate           bool
	cpsDur                time.Duration
	cpsConns              int
	cpsRate               float64
	pingRate              float64
	pingDur               time.Duration
	ctSizes               []int
	ctDur                 time.Duration
	gcDur                 time.Duration
	busyPoll              time.Duration
	gvsdArgs              []string
	cpuDMALatency         int // µs; < 0: leave the CPUs' idle states alone
	perf                  bool
	clientXDPPass         bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("gvs-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	exe, _ := os.Executable()
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every contender once (interleaved)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before a measurement window")
	fs.DurationVar(&o.window, "window", 4*time.Second, "measurement window of a load run")
	fs.DurationVar(&o.trial, "trial", 2*time.Second, "duration of one loss-free search trial")
	fs.IntVar(&o.steps, "steps", 5, "trials per loss-free search")
	fs.Float64Var(&o.tolerance, "tolerance", 0.001, "loss fraction still counted as loss-free")
	fs.Float64Var(&o.rate, "rate", 100000, "fixed offered rate (packets/s) for the cpu case and the latency case's high load")
	cpuRates := fs.String("cpu-rates", "60000,150000", "fixed offered rates (packets/s) of the cpu case")
	fs.DurationVar(&o.spinThreshold, "spin-threshold", spinThreshold, "exact CPU accounting: a gap in an idle-priority spinner's clock reads longer than this is CPU used by something else")
	fs.StringVar(&o.budgetRPS, "budget-rps", "", "RPS CPU mask of the director's interfaces in the budget case (default: the -director-cpu's mask)")
	fs.IntVar(&o.budgetBacklog, "budget-backlog", vethXDPRing, "net.core.netdev_max_backlog in the budget case: the depth of the RPS queue in front of the director's CPU, by default veth's XDP ring's (the native XDP contenders' queue), so that every contender has as deep a queue; 0: leave the kernel's setting")
	cases := fs.String("cases", strings.Join(caseNames, ","), "cases to run: "+strings.Join(caseNames, ","))
	conts := fs.String("contenders", "", "only these contenders (comma-separated names; default all)")
	gvsdArgs := fs.String("gvsd-args", "", "extra gvsd flags for every gvs contender, space-separated (e.g. \"--ring-frames 8192\"; diagnostic)")
	fs.DurationVar(&o.busyPoll, "busy-poll", 2*time.Millisecond, "gvsd --busy-poll of the gvs-nat-bp contender")
	fs.DurationVar(&o.gcDur, "gc-duration", 30*time.Second, "the gc case's load run (gvsd's allocations and GC cycles at the fixed -rate)")
	quick := fs.Bool("quick", false, "about 3 minutes: 1 round, short windows, 3 search trials, 1M conntrack only")
	fs.StringVar(&o.out, "out", "out/bench", "output folder")
	fs.StringVar(&o.bin, "bin", filepath.Dir(exe), "folder with gvsd and gvs-testsrv")
	fs.StringVar(&o.genCPU, "gen-cpu", "0", "CPU of the traffic generator (and of wrk and nginx)")
	fs.StringVar(&o.dirCPU, "director-cpu", "1", "CPU of the director's forwarder and, with -rps, of its receive processing")
	fs.StringVar(&o.gvsdCPUs, "gvsd-cpus", "", "taskset CPU list for a 1-worker gvsd (default: -director-cpu)")
	fs.BoolVar(&o.noopSpin, "noop-spin", false, "run the no-op forwarder busy-polling (diagnostic)")
	fs.BoolVar(&o.trafgenRate, "trafgen-rate", false, "send fixed rates with trafgen -b (a burst at the start of every second) instead of the paced generator (diagnostic)")
	fs.StringVar(&o.endpointRPS, "endpoint-rps", "", "RPS CPU mask for the client's and real servers' interfaces, e.g. 1 to run their receive processing on CPU 0 with them (empty: on the sender's CPU, which for frames a userspace forwarder sends is the forwarder's)")
	fs.StringVar(&o.rps, "rps", "", "RPS CPU mask for the director's interfaces, e.g. 2 to run all of the director's receive work on CPU 1 (hex; empty: RPS off, the receive softirq runs on the sender's CPU)")
	fs.DurationVar(&o.cpsDur, "cps-duration", 5*time.Second, "wrk run length")
	fs.IntVar(&o.cpsConns, "cps-conns", 64, "wrk concurrent connections")
	fs.Float64Var(&o.cpsRate, "cps-rate", 3000, "the cps case's fixed connection rate for the exact CPU per connection (below every contender's limit)")
	fs.Float64Var(&o.pingRate, "ping-rate", 1000, "latency requests per second")
	fs.DurationVar(&o.pingDur, "ping-duration", 3*time.Second, "latency run length per load level")
	fs.IntVar(&o.cpuDMALatency, "cpu-dma-latency", -1, "hold /dev/cpu_dma_latency at this many µs for the whole run (0: idle CPUs poll instead of halting, as tuned's latency-performance profile does; -1: leave alone)")
	fs.BoolVar(&o.perf, "perf", false, "cpu case: profile the whole machine in each load run's first (tick-sampled) window with perf record -a -g and perf stat of skb/NAPI/XDP tracepoints, into the output's logs/perf-CONTENDER-RATE.{data,txt} (diagnostic; needs perf)")
	fs.BoolVar(&o.clientXDPPass, "client-xdp-pass", false, "attach an XDP_PASS program to the client's bridge port: veth copies each generator frame into a buffer with XDP headroom there, for every contender and the baseline alike, as a NIC's receive buffer has it (the director's native XDP then needs no copy of its own)")
	ct := fs.String("conntrack-sizes", "1M,10M", "connection table sizes")
	fs.DurationVar(&o.ctDur, "conntrack-duration", time.Second, "lookup measurement per size")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.gvsdArgs = strings.Fields(*gvsdArgs)
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("rounds", func() { o.rounds = 1 })
		def("warmup", func() { o.warmup = time.Second })
		def("window", func() { o.window = 2 * time.Second })
		def("trial", func() { o.trial = time.Second })
		def("steps", func() { o.steps = 3 })
		def("cps-duration", func() { o.cpsDur = 3 * time.Second })
		def("gc-duration", func() { o.gcDur = 6 * time.Second })
		def("ping-duration", func() { o.pingDur = 2 * time.Second })
		def("conntrack-sizes", func() { *ct = "1M" })
	}
	for c := range strings.SplitSeq(*cases, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		if !slices.Contains(caseNames, c) {
			return o, fmt.Errorf("-cases: unknown case %q (have %s)", c, strings.Join(caseNames, ","))
		}
		o.cases = append(o.cases, c)
	}
	if *conts != "" {
		known := allContenders()
		for c := range strings.SplitSeq(*conts, ",") {
			c = strings.TrimSpace(c)
			if !slices.ContainsFunc(known, func(k contender) bool { return k.Name == c }) {
				return o, fmt.Errorf("-contenders: unknown contender %q", c)
			}
			o.contenders = append(o.contenders, c)
		}
	}
	for f := range strings.SplitSeq(*cpuRates, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v < 1000 || v > 5e6 {
			return o, fmt.Errorf("-cpu-rates: %q: want packets/s in 1k..5M", f)
		}
		o.cpuRates = append(o.cpuRates, v)
	}
	if len(o.cpuRates) == 0 {
		return o, errors.New("-cpu-rates: no rate")
	}
	if o.spinThreshold < 100*time.Nanosecond || o.spinThreshold > time.Millisecond {
		return o, errors.New("-spin-threshold must be 100ns..1ms")
	}
	sizes, err := parseSizes(*ct)
	if err != nil {
		return o, err
	}
	o.ctSizes = sizes
	switch {
	case len(o.cases) == 0:
		return o, errors.New("-cases: nothing to run")
	case o.rounds < 1 || o.rounds > 20:
		return o, errors.New("-rounds must be 1..20")
	case o.window < 500*time.Millisecond || o.window > time.Minute || o.warmup < 0 || o.warmup > time.Minute:
		return o, errors.New("-window must be 0.5s..1m and -warmup 0..1m")
	case o.trial < 500*time.Millisecond || o.trial > 30*time.Second || o.steps < 1 || o.steps > 12:
		return o, errors.New("-trial must be 0.5s..30s and -steps 1..12")
	case o.rate < 1000 || o.rate > 5e6 || o.pingRate < 1 || o.pingRate > 1e5:
		return o, errors.New("-rate must be 1k..5M and -ping-rate 1..100k")
	case o.cpsDur < time.Second || o.cpsDur > time.Minute || o.cpsConns < 1 || o.cpsConns > 10000:
		return o, errors.New("-cps-duration must be 1s..1m and -cps-conns 1..10000")
	case o.cpsRate < 100 || o.cpsRate > 1e6:
		return o, errors.New("-cps-rate must be 100..1M connections/s")
	case o.busyPoll <= 0 || o.busyPoll > time.Second:
		return o, errors.New("-busy-poll must be positive, up to 1s")
	case o.gcDur < 4*time.Second || o.gcDur > 10*time.Minute:
		return o, errors.New("-gc-duration must be 4s..10m")
	case o.cpuDMALatency < -1 || o.cpuDMALatency > 1e6:
		return o, errors.New("-cpu-dma-latency must be -1 (off) or 0..1000000 µs")
	case o.pingDur < 500*time.Millisecond || o.pingDur > time.Minute || o.ctDur <= 0 || o.ctDur > time.Minute:
		return o, errors.New("-ping-duration must be 0.5s..1m and -conntrack-duration up to 1m")
	}
	o.worldCPU = o.genCPU
	if o.gvsdCPUs == "" {
		o.gvsdCPUs = o.dirCPU
	}
	if o.budgetRPS == "" {
		n, err := strconv.Atoi(o.dirCPU)
		if err != nil || n < 0 || n > 62 {
			return o, fmt.Errorf("-director-cpu %q: want one CPU number (or set -budget-rps)", o.dirCPU)
		}
		o.budgetRPS = strconv.FormatUint(1<<n, 16)
	}
	o.allCPUs = fmt.Sprintf("0-%d", runtime.NumCPU()-1)
	return o, nil
}

// parseSizes parses "1M,10M,500k,1000".
func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mult := 1
		switch {
		case strings.HasSuffix(f, "M"):
			mult, f = 1<<20, strings.TrimSuffix(f, "M")
		case strings.HasSuffix(f, "k"):
			mult, f = 1<<10, strings.TrimSuffix(f, "k")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 || n*mult > 64<<20 {
			return nil, fmt.Errorf("conntrack size %q: want a positive count up to 64M (suffix k or M)", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

// sample is one measured value.
type sample struct {
	Case      string  `json:"case"`
	Contender string  `json:"contender"`
	Round     int     `json:"round"`
	Rate      float64 `json:"rate_pps,omitempty"` // the fixed offered rate of the measurement, when a case runs at several
	Metric    string  `json:"metric"`
	Value     float64 `json:"value"`
	Trials    []trial `json:"trials,omitempty"`
	Note      string  `json:"note,omitempty"`
}

// bench is one run.
type bench struct {
	o         options
	self      string
	l         *lab.Lab
	client    lab.Client
	dir       lab.Director
	servers   []lab.Server
	legsUp    bool
	peerGRO   bool      // GRO on the director's veth peers (xdp.go)
	clientXDP io.Closer // -client-xdp-pass's program link

	tmp, logDir string
	trafgenCfg  string
	stream      udpStream // the benchmark traffic (trafgenCfg, gvs-bench gen)
	needNginx   bool
	log         io.Writer

	genMax          float64               // the generator's offered rate this round
	genCPUBase      map[float64]float64   // the generator's tick-sampled ns/packet per fixed rate this round
	genSpinBase     map[float64]unitCost  // the generator's exact CPU per fixed rate this round
	directCPS       unitCost              // the endpoints' exact CPU per connection without a director, this round
	genLabBase      map[float64]unitCost  // the generator's lab-attributed CPU per fixed rate this round
	directLabCPS    unitCost              // the endpoints' lab-attributed CPU per connection, this round
	labNS           map[uint64]bool       // inodes of the lab's network namespaces
	budgetGenMax    float64               // the paced generator's reach in the budget placement this round
	direct          map[string][2]float64 // load -> p50, p99 of the round trip without a director, this round
	lastNatOverload float64               // gvs-nat's overload rate this round
	samples         []sample
	failures        []string
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, format+"\n", args...)
}

func (b *bench) add(cs string, c contender, round int, metric string, v float64) {
	b.addSample(sample{Case: cs, Contender: c.Name, Round: round, Metric: metric, Value: v})
}

// addAt adds a sample measured at a fixed offered rate.
func (b *bench) addAt(cs string, c contender, round int, rate float64, metric string, v float64) {
	b.addSample(sample{Case: cs, Contender: c.Name, Round: round, Rate: rate, Metric: metric, Value: v})
}

func (b *bench) addSample(s sample) { b.samples = append(b.samples, s) }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "noop" {
		if err := runNoop(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "gvs-bench noop:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "gen" {
		if err := runGen(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "gvs-bench gen:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "conn" {
		if err := runConn(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "gvs-bench conn:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "spin" {
		if err := runSpin(os.Args[2:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "gvs-bench spin:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "ping" {
		if err := runPing(context.Background(), os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "gvs-bench ping:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "render" {
		if err := render(os.Args[2], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "gvs-bench render:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gvs-bench:", err)
		os.Exit(2)
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gvs-bench:", err)
		os.Exit(1)
	}
}

// needTools checks the external programs the selected cases use.
func needTools(cases []string, perf bool) error {
	need := []string{"ip", "nft", "taskset"}
	if perf {
		need = append(need, "perf")
	}
	for _, c := range cases {
		switch c {
		case "pps", "cpu", "latency", "scaling", "gc":
			need = append(need, "trafgen")
		case "cps":
			need = append(need, "wrk", "nginx", "haproxy")
		}
	}
	var missing []string
	for _, t := range need {
		if _, err := exec.LookPath(t); err != nil && !slices.Contains(missing, t) {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (make bench-deps installs them)", strings.Join(missing, ", "))
	}
	return nil
}

func run(o options, stdout io.Writer) error {
	start := time.Now()
	b := &bench{o: o, log: stdout}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	b.logDir = filepath.Join(o.out, "logs")
	if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return err
	}
	labCases := slices.DeleteFunc(slices.Clone(o.cases), func(c string) bool { return c == "conntrack" })
	machine, load := describeMachine(), loadAverage()
	if bg, err := backgroundLoad(2 * time.Second); err == nil {
		load += ", " + bg + " before the run"
	}
	b.logf("gvs-bench: %s; %s", machine, load)
	if o.cpuDMALatency >= 0 {
		release, err := holdCPULatency(o.cpuDMALatency)
		if err != nil {
			return err
		}
		defer release()
		b.logf("holding /dev/cpu_dma_latency at %d µs", o.cpuDMALatency)
	}
	b.logf("cases %s, %d round(s), window %v after %v warm-up", strings.Join(o.cases, ","), o.rounds, o.window, o.warmup)

	if len(labCases) > 0 {
		if err := lab.Check(); err != nil {
			return err
		}
		if err := needTools(labCases, o.perf); err != nil {
			return err
		}
		for _, bin := range []string{"gvsd", "gvs-testsrv"} {
			if _, err := os.Stat(filepath.Join(o.bin, bin)); err != nil {
				return fmt.Errorf("%s not in %s (make build): %w", bin, o.bin, err)
			}
		}
		if b.tmp, err = os.MkdirTemp("", "gvs-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(b.tmp)
		b.needNginx = slices.Contains(labCases, "cps")
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
		defer cancel()
		if err := b.setupLab(ctx); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		stop := b.l.CloseOnSignal()
		defer func() {
			stop()
			if b.clientXDP != nil {
				_ = b.clientXDP.Close()
			}
			if err := b.l.Close(); err != nil {
				b.logf("closing the lab: %v", err)
			}
		}()
		b.logf("%s", b.l)
		if err := b.servicesUp(ctx); err != nil {
			return err
		}
		st := udpStream{
			SrcMAC: b.client.MAC, DstMAC: b.dir.VIPSide.MAC, Src: b.client.Addr(), Dst: b.l.VIP(),
			PortLo: 1024, PortHi: 1024 + 9999, DstPort: pktPort, FrameLen: 60,
		}
		cfg, err := st.trafgenConfig()
		if err != nil {
			return err
		}
		if b.trafgenCfg, err = b.writeTemp("udp.trafgen", cfg); err != nil {
			return err
		}
		b.stream = st
		b.runRounds(ctx, labCases)
	}
	if slices.Contains(o.cases, "conntrack") {
		for r := 1; r <= o.rounds; r++ {
			for _, n := range o.ctSizes {
				res, err := measureConntrack(n, o.ctDur)
				name := fmt.Sprintf("gvs %s", sizeLabel(n))
				if err != nil {
					b.failures = append(b.failures, fmt.Sprintf("conntrack %s round %d: %v", name, r, err))
					continue
				}
				c := contender{Name: name, kind: kindGVS}
				b.add("conntrack", c, r, "bytes_per_conn", res.BytesPerConn)
				b.add("conntrack", c, r, "insert_per_s", res.InsertPerSec)
				b.add("conntrack", c, r, "lookup_per_s_1", res.LookupPerSec)
				b.add("conntrack", c, r, "lookup_per_s_all", res.LookupPerSecP)
				b.logf("  conntrack %s: %.1f B/conn, insert %s/s, lookup %s/s (1 goroutine), %s/s (%d)", sizeLabel(n), res.BytesPerConn,
					formatValue(res.InsertPerSec), formatValue(res.LookupPerSec), formatValue(res.LookupPerSecP), runtime.GOMAXPROCS(0))
			}
		}
	}
	if bg, err := backgroundLoad(2 * time.Second); err == nil {
		load += ", " + bg + " after it"
	}
	rep := report{Machine: machine, Load: load, Started: start.UTC().Format(time.RFC3339), Seconds: time.Since(start).Seconds(),
		Options: o.describe(), Samples: b.samples, Failures: b.failures}
	if err := rep.write(o.out, stdout); err != nil {
		return err
	}
	if len(b.failures) > 0 {
		return fmt.Errorf("%d measurement(s) failed (see above and %s)", len(b.failures), filepath.Join(o.out, "results.json"))
	}
	return nil
}

// runRounds runs every round: the generator first (its rate bounds the
// searches), then the other contenders in an order rotated by round.
func (b *bench) runRounds(ctx context.Context, cases []string) {
	var list []contender
	for _, c := range allContenders() {
		if len(b.o.contenders) > 0 && !slices.Contains(b.o.contenders, c.Name) {
			continue
		}
		if slices.ContainsFunc(cases, c.takes) {
			list = append(list, c)
		}
	}
	for r := 1; r <= b.o.rounds; r++ {
		b.genMax, b.lastNatOverload, b.budgetGenMax = 0, 0, 0
		b.genCPUBase, b.genSpinBase, b.directCPS = map[float64]float64{}, map[float64]unitCost{}, unitCost{}
		b.genLabBase, b.directLabCPS = map[float64]unitCost{}, unitCost{}
		b.direct = map[string][2]float64{}
		order := slices.Clone(list)
		if len(order) > 1 && order[0].kind == kindGen {
			rest := order[1:]
			k := (r - 1) % len(rest)
			order = append([]contender{order[0]}, append(slices.Clone(rest[k:]), rest[:k]...)...)
		}
		// gvs-nat before gvs-nat-2w, so the 1-worker scaling point is
		// this round's pps overload rate.
		for i, c := range order {
			if c.Name == "gvs-nat-2w" {
				order = append(slices.Delete(order, i, i+1), c)
				break
			}
		}
		b.logf("== round %d/%d", r, b.o.rounds)
		for _, c := range order {
			if ctx.Err() != nil {
				b.failures = append(b.failures, ctx.Err().Error())
				return
			}
			b.runContender(ctx, c, cases, r)
		}
	}
}

func (b *bench) runContender(ctx context.Context, c contender, cases []string, round int) {
	fail := func(cs string, err error) {
		msg := fmt.Sprintf("%s %s round %d: %v", c.Name, cs, round, err)
		b.failures = append(b.failures, msg)
		b.logf("  FAILED %s", msg)
	}
	r, err := b.start(ctx, c, round)
	if err != nil {
		fail("start", err)
		return
	}
	defer r.stop()
	needsTraffic := slices.ContainsFunc(cases, func(cs string) bool { return c.takes(cs) && cs != "cps" })
	if needsTraffic && c.kind != kindGen {
		if err := b.prime(ctx); err != nil {
			fail("prime", err)
			return
		}
	}
	fns := map[string]func(context.Context, contender, *running, int) error{
		"pps": b.casePPS, "cpu": b.caseCPU, "budget": b.caseBudget, "cps": b.caseCPS, "latency": b.caseLatency, "scaling": b.caseScaling, "gc": b.caseGC,
	}
	for _, cs := range caseNames {
		if !slices.Contains(cases, cs) || !c.takes(cs) || fns[cs] == nil {
			continue
		}
		if err := fns[cs](ctx, c, r, round); err != nil {
			fail(cs, err)
		}
		if r.proc != nil {
			select {
			case <-r.proc.Done():
				fail(cs, fmt.Errorf("forwarder exited: %s", lastLines(r.proc.Output(), 5)))
				return
			default:
			}
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sizeLabel(n int) string {
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dk", n>>10)
	}
	return fmt.Sprint(n)
}

// describe lists the options for the report.
func (o options) describe() map[string]string {
	return map[string]string{
		"rounds": fmt.Sprint(o.rounds), "warmup": o.warmup.String(), "window": o.window.String(),
		"trial": o.trial.String(), "steps": fmt.Sprint(o.steps), "tolerance": fmt.Sprint(o.tolerance),
		"rate": fmt.Sprint(o.rate), "cpu_rates": fmt.Sprint(o.cpuRates), "spin_threshold": o.spinThreshold.String(), "budget_rps": o.budgetRPS, "budget_backlog": strconv.Itoa(o.budgetBacklog), "cases": strings.Join(o.cases, ","), "gen_cpu": o.genCPU,
		"director_cpu": o.dirCPU, "rps": o.rps, "endpoint_rps": o.endpointRPS, "cps_duration": o.cpsDur.String(), "cps_conns": fmt.Sprint(o.cpsConns), "cps_rate": fmt.Sprint(o.cpsRate),
		"ping_rate": fmt.Sprint(o.pingRate), "ping_duration": o.pingDur.String(),
		"cpu_dma_latency_us": fmt.Sprint(o.cpuDMALatency), "client_xdp_pass": fmt.Sprint(o.clientXDPPass),
	}
}

// describeMachine is nproc, CPU model, kernel and Go version.
func describeMachine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s", runtime.NumCPU(), model, kernel, runtime.Version())
}

// loadAverage is /proc/loadavg's three averages.
func loadAverage() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			return fmt.Sprintf("load average %s %s %s at start", f[0], f[1], f[2])
		}
	}
	return "load average unknown"
}

// jsonWrite writes v as indented JSON.
func jsonWrite(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// backgroundLoad measures how busy each CPU is over d (nothing of this run
// is generating traffic then): the load other users put on a shared
// machine.
func backgroundLoad(d time.Duration) (string, error) {
	read := func() (procStat, error) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return procStat{}, err
		}
		return parseProcStat(b)
	}
	a, err := read()
	if err != nil {
		return "", err
	}
	time.Sleep(d)
	b, err := read()
	if err != nil {
		return "", err
	}
	return describeBusy(a, b), nil
}

// describeBusy renders the busy share of each CPU between two samples.
func describeBusy(a, b procStat) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(b.CPUs)) {
		d := b.CPUs[n].Sub(a.CPUs[n])
		if d.Total() == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("cpu%d %.0f%%", n, 100*float64(d.Busy())/float64(d.Total())))
	}
	return "background busy " + strings.Join(parts, " ")
}
