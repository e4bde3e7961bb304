package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"

	"gvs/forwarder/kernel"
	"gvs/forwarder/ring"
	"gvs/internal/lab"
)

// Lab layout of the soak.
const (
	labPrefix   = "gvssoak"
	metricsAddr = "127.0.0.1:9475"
	natPort     = 80   // NAT service VIP:80 -> RIP:8080
	drPort      = 8080 // DR service VIP:8080 -> RIP:8080
	rsPort      = 8080
	killedRS    = 2 // index of the real server killed (r3)
	// natTable is the real servers' routing table for the NAT replies
	// (source RIP): back through the director, while the DR replies
	// (source VIP) leave by the client-LAN leg.
	natTable = "100"
	// spoofNet is where the flood's source addresses come from: in the
	// lab's benchmarking range, routed nowhere.
	spoofNet = "198.19.0.0/16"
	// scrapeEvery is the period of the metrics scrapes (none in the
	// link-down window).
	scrapeEvery = 5 * time.Second
)

// soak is one run.
type soak struct {
	cfg  config
	plan plan
	out  io.Writer

	l       *lab.Lab
	dirNS   string
	rules   string // the rules file
	servers []*lab.Proc

	gvsdMu   sync.Mutex
	gvsd     *lab.Proc
	gen      int  // gvsd process number, from 1
	killing  bool // a SIGKILL of ours is under way
	gvsdPid  atomic.Int64
	ready    atomic.Bool
	unexpect []string // unexpected exits of gvsd

	rec   *recorder
	snaps []snapshot
	rss   []rssSample

	res result
}

// rssSample is one reading of gvsd's VmRSS.
type rssSample struct {
	At  time.Duration
	Gen int
	RSS int64
}

// result is what the run measured.
type result struct {
	Windows           windows
	ReadyAfterRestart time.Duration // SIGKILL -> gvsd ready again
	Converged         bool
	StaleTable        bool // the table was there after the SIGKILL
	TableAfterStop    bool // the table was still there after the final SIGTERM
	LinkDownTicks     int64
	LinkDownFor       time.Duration
	FloodSent         uint64
	FloodRate         float64
	FloodErr          string
	ReloadsSent       int
	ReloadsSkipped    int
	Acc               accounting
	Deltas            []counters
	MaxEntries        float64
	RSSBound, RSSMax  int64
	GVSDExits         []string
	Checks            []check
}

// check is one bound, passed or not.
type check struct {
	Name   string
	OK     bool
	Detail string
}

func (r result) ok() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

func (s *soak) printf(format string, args ...any) { fmt.Fprintf(s.out, format, args...) }

// run builds the lab, runs the plan, tears down and reports.
func (s *soak) run() (result, error) {
	if err := lab.Check(); err != nil {
		return result{}, err
	}
	if removed, _ := lab.Cleanup(labPrefix); len(removed) > 0 {
		s.printf("removed %d namespaces of an interrupted soak\n", len(removed))
	}
	s.printf("== gvs soak: %v, conn-capacity %d, %d worker(s), flood rate %s\n", s.cfg.duration, s.cfg.capacity, s.cfg.workers, rateName(s.cfg.floodRate))
	s.printf("timeline:\n%s", s.plan)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		s.printf("load average at the start: %s", la)
	}
	l, err := lab.New(lab.Options{Prefix: labPrefix, Clients: 2, Servers: 3, ClientLegOnServers: true, VIPOnServers: true})
	if err != nil {
		return result{}, err
	}
	s.l, s.dirNS = l, l.Director().NS
	stopSig := l.CloseOnSignal()
	defer func() {
		stopSig()
		if err := l.Close(); err != nil {
			s.printf("closing the lab: %v\n", err)
		}
	}()
	if err := s.setup(); err != nil {
		return result{}, err
	}
	if err := s.execute(); err != nil {
		return result{}, err
	}
	s.evaluate()
	s.report()
	return s.res, nil
}

// setup starts the real servers, their NAT return route, and gvsd.
func (s *soak) setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dip := s.l.Director().DIPSide.Addr().String()
	for i, sv := range s.l.Servers() {
		for _, c := range [][]string{
			{"rule", "add", "from", sv.LAN.Addr().String(), "lookup", natTable, "pref", "100"},
			{"route", "add", "default", "via", dip, "dev", lab.ServerIf, "table", natTable},
		} {
			if _, err := s.l.Run(ctx, sv.NS, "ip", c...); err != nil {
				return err
			}
		}
		p, err := s.startServer(ctx, i)
		if err != nil {
			return err
		}
		s.servers = append(s.servers, p)
	}
	s.rules = filepath.Join(s.cfg.out, "rules")
	if err := os.WriteFile(s.rules, []byte(s.rulesText(1)), 0o644); err != nil {
		return err
	}
	return s.startGVSD(ctx)
}

func serverName(i int) string { return fmt.Sprintf("r%d", i+1) }

// startServer starts gvs-testsrv on real server i (HTTP only).
func (s *soak) startServer(ctx context.Context, i int) (*lab.Proc, error) {
	name := serverName(i)
	p, err := s.l.Start(s.l.Servers()[i].NS, filepath.Join(s.cfg.bin, "gvs-testsrv"), "--name", name, "--udp", "", "--sink", "")
	if err != nil {
		return nil, err
	}
	if _, err := p.WaitFor(ctx, "ready name="+name); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// rulesText is the rules file with r1's weight w.
func (s *soak) rulesText(w int) string {
	var b strings.Builder
	vip := s.l.VIP().String()
	b.WriteString("# gvs-soak: a NAT and a DR service over the same real servers; r1's weight alternates\n")
	for _, svc := range []struct {
		port int
		fwd  string
	}{{natPort, "-m"}, {drPort, "-g"}} {
		fmt.Fprintf(&b, "-A -t %s:%d -s wrr\n", vip, svc.port)
		for i, sv := range s.l.Servers() {
			wt := 1
			if i == 0 {
				wt = w
			}
			fmt.Fprintf(&b, "-a -t %s:%d -r %s:%d %s -w %d\n", vip, svc.port, sv.LAN.Addr(), rsPort, svc.fwd, wt)
		}
	}
	return b.String()
}

// startGVSD starts gvsd (again) and waits until it is ready.
func (s *soak) startGVSD(ctx context.Context) error {
	s.gvsdMu.Lock()
	s.gen++
	gen := s.gen
	s.gvsdMu.Unlock()
	p, err := s.l.Start(s.dirNS, filepath.Join(s.cfg.bin, "gvsd"),
		"--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf, "--rules", s.rules,
		"--conn-capacity", fmt.Sprint(s.cfg.capacity), "--workers", fmt.Sprint(s.cfg.workers),
		"--metrics", metricsAddr, "--stats-interval", "0")
	if err != nil {
		return err
	}
	s.gvsdMu.Lock()
	s.gvsd, s.killing = p, false
	s.gvsdMu.Unlock()
	s.gvsdPid.Store(int64(p.Pid()))
	go s.watchGVSD(p, gen)
	if _, err := p.WaitFor(ctx, "gvsd ready"); err != nil {
		return fmt.Errorf("gvsd: %w", err)
	}
	s.ready.Store(true)
	return nil
}

// watchGVSD notes an exit of gvsd that the soak did not cause, and saves
// its log.
func (s *soak) watchGVSD(p *lab.Proc, gen int) {
	<-p.Done()
	os.WriteFile(filepath.Join(s.cfg.out, fmt.Sprintf("gvsd-%d.log", gen)), []byte(p.Output()), 0o644)
	s.gvsdMu.Lock()
	defer s.gvsdMu.Unlock()
	if s.killing || s.gvsd != p {
		return
	}
	s.ready.Store(false)
	s.unexpect = append(s.unexpect, fmt.Sprintf("gvsd %d exited unexpectedly: %v", gen, p.Wait()))
}

// event is one action of the run at an offset.
type event struct {
	At   time.Duration
	Name string
	Do   func() error
}

// execute runs the clients and the plan's events in time order.
func (s *soak) execute() error {
	p := s.plan
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.rec = &recorder{t0: time.Now()}
	t0 := s.rec.t0

	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Go(func() { s.sampleRSS(ctx) })
	s.scrape(-1) // the counters' starting point

	cctx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	var clients sync.WaitGroup
	cns := s.l.Clients()[0].NS
	vip := s.l.VIP().String()
	for i := range 2 * s.cfg.perMode {
		c := &client{id: i, ns: cns}
		if i < s.cfg.perMode {
			c.name, c.addr = fmt.Sprintf("nat-%02d", i+1), fmt.Sprintf("%s:%d", vip, natPort)
		} else {
			c.name, c.addr = fmt.Sprintf("dr-%02d", i-s.cfg.perMode+1), fmt.Sprintf("%s:%d", vip, drPort)
		}
		clients.Go(func() { c.run(cctx, s.rec) })
	}

	var evs []event
	for i, ph := range p.Phases {
		evs = append(evs, event{ph.End, "end of " + ph.Name, func() error {
			s.printf("%8.1fs  end of %s\n", time.Since(t0).Seconds(), ph.Name)
			s.scrape(i)
			return nil
		}})
	}
	for t := scrapeEvery; t < p.Total; t += scrapeEvery {
		if t > p.LinkDown-reloadQuiet && t < p.LinkUp+reloadQuiet {
			continue
		}
		evs = append(evs, event{t, "", func() error { s.scrape(p.phaseAt(t)); return nil }})
	}
	var flood *lab.Proc
	evs = append(evs,
		event{p.FloodStart, "SYN flood starts", func() error {
			var err error
			flood, err = s.startFlood(p.FloodEnd - p.FloodStart)
			return err
		}},
		event{p.FloodEnd, "SYN flood stops", func() error { s.stopFlood(flood); return nil }},
		event{p.ServerKill, "SIGKILL to r3", func() error { return s.killServer() }},
		event{p.ServerStart, "r3 started", func() error { return s.restartServer() }},
		event{p.LinkDown, "dip0 down", func() error { return s.linkDown() }},
		event{p.LinkUp, "dip0 up", func() error { return s.linkUp() }},
		event{p.GVSDKill, "SIGKILL to gvsd", func() error { return s.restartGVSD(t0) }},
	)
	for i, t := range p.Reloads {
		w := 1
		if i%2 == 0 {
			w = 3
		}
		evs = append(evs, event{t, "", func() error { return s.reload(w) }})
	}
	slices.SortStableFunc(evs, func(a, b event) int { return cmpDur(a.At, b.At) })

	for _, ev := range evs {
		if d := time.Until(t0.Add(ev.At)); d > 0 {
			time.Sleep(d)
		}
		if ev.Name != "" && !strings.HasPrefix(ev.Name, "end of") {
			s.printf("%8.1fs  %s\n", time.Since(t0).Seconds(), ev.Name)
		}
		if err := ev.Do(); err != nil {
			return fmt.Errorf("%s: %w", ev.Name, err)
		}
	}
	stopClients()
	clients.Wait()
	cancel()
	bg.Wait()

	// The end: SIGTERM must remove gvsd's table.
	s.gvsdMu.Lock()
	g := s.gvsd
	s.killing = true
	s.gvsdMu.Unlock()
	if err := g.Stop(); err != nil {
		s.gvsdMu.Lock()
		s.unexpect = append(s.unexpect, fmt.Sprintf("gvsd stopped with %v", err))
		s.gvsdMu.Unlock()
	}
	present, err := s.tablePresent()
	if err != nil {
		return err
	}
	s.res.TableAfterStop = present
	return nil
}

// sampleRSS reads gvsd's VmRSS every second.
func (s *soak) sampleRSS(ctx context.Context) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		pid := s.gvsdPid.Load()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		rss, err := parseVmRSS(b)
		if err != nil {
			continue
		}
		s.gvsdMu.Lock()
		s.rss = append(s.rss, rssSample{At: s.rec.since(time.Now()), Gen: s.gen, RSS: rss})
		s.gvsdMu.Unlock()
	}
}

// scrape reads gvsd's /metrics into a snapshot of phase ph (-1: the
// starting point). A failed scrape (gvsd down) is skipped.
func (s *soak) scrape(ph int) {
	if !s.ready.Load() {
		return
	}
	page, err := s.metricsPage()
	if err != nil {
		s.printf("          metrics: %v\n", err)
		return
	}
	samples, err := parseMetrics(page, metricFamilies...)
	if err != nil {
		s.printf("          metrics: %v\n", err)
		return
	}
	c := toCounters(samples)
	s.res.MaxEntries = max(s.res.MaxEntries, c[gaugeEntries])
	s.gvsdMu.Lock()
	gen := s.gen
	s.gvsdMu.Unlock()
	s.snaps = append(s.snaps, snapshot{Gen: gen, Phase: ph, C: c})
}

// metricsPage fetches http://metricsAddr/metrics inside the director.
func (s *soak) metricsPage() ([]byte, error) {
	c := &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lab.Dial(ctx, s.dirNS, network, addr)
			},
		},
	}
	resp, err := c.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	return io.ReadAll(resp.Body)
}

// startFlood starts the SYN generator in the second client namespace for
// at most d.
func (s *soak) startFlood(d time.Duration) (*lab.Proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	att := s.l.Clients()[1]
	p, err := s.l.Start(att.NS, exe, "flood", "-dev", att.Name, "-src-mac", att.MAC.String(),
		"-dst-mac", s.l.Director().VIPSide.MAC.String(), "-vip", s.l.VIP().String(),
		"-ports", fmt.Sprintf("%d,%d", natPort, drPort), "-spoof", spoofNet,
		"-rate", fmt.Sprint(s.cfg.floodRate), "-duration", d.String())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.WaitFor(ctx, "flood ready"); err != nil {
		return nil, err
	}
	return p, nil
}

// stopFlood ends the generator and notes what it sent.
func (s *soak) stopFlood(p *lab.Proc) {
	if p == nil {
		return
	}
	if err := p.Stop(); err != nil {
		s.res.FloodErr = fmt.Sprintf("%v: %s", err, strings.TrimSpace(p.Output()))
	}
	sent, rate, ok := parseFloodSent(p.Output())
	if !ok && s.res.FloodErr == "" {
		s.res.FloodErr = "no summary: " + strings.TrimSpace(p.Output())
	}
	s.res.FloodSent, s.res.FloodRate = sent, rate
	s.printf("          %s\n", strings.TrimSpace(lastLine(p.Output())))
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// killServer sends SIGKILL to real server r3.
func (s *soak) killServer() error {
	p := s.servers[killedRS]
	// The time before the signal: its connections may see the FIN before
	// Kill returns.
	s.res.Windows.KilledServer = serverName(killedRS)
	s.res.Windows.ServerKill = s.rec.since(time.Now())
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		return err
	}
	<-p.Done()
	return nil
}

// restartServer starts r3 again.
func (s *soak) restartServer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := s.startServer(ctx, killedRS)
	if err != nil {
		return err
	}
	s.servers[killedRS] = p
	return nil
}

// linkDown takes the DIP link down and starts measuring gvsd's CPU time.
func (s *soak) linkDown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.l.Run(ctx, s.dirNS, "ip", "link", "set", lab.DirectorDIPIf, "down"); err != nil {
		return err
	}
	t, err := s.cpuTicks()
	if err != nil {
		return err
	}
	s.res.LinkDownTicks, s.res.LinkDownFor = -t, -time.Duration(time.Now().UnixNano())
	return nil
}

// linkUp ends the CPU measurement and brings the DIP link back.
func (s *soak) linkUp() error {
	t, err := s.cpuTicks()
	if err != nil {
		return err
	}
	s.res.LinkDownTicks += t
	s.res.LinkDownFor += time.Duration(time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.l.Run(ctx, s.dirNS, "ip", "link", "set", lab.DirectorDIPIf, "up"); err != nil {
		return err
	}
	return lab.WaitCarrier(s.dirNS, lab.DirectorDIPIf, time.Now().Add(3*time.Second))
}

// cpuTicks is gvsd's CPU time so far.
func (s *soak) cpuTicks() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.gvsdPid.Load()))
	if err != nil {
		return 0, err
	}
	return parseCPUTicks(b)
}

// restartGVSD kills gvsd with SIGKILL, checks that its nftables table
// stayed behind, and starts it again at once.
func (s *soak) restartGVSD(t0 time.Time) error {
	s.scrape(s.plan.phaseAt(s.plan.GVSDKill))
	s.gvsdMu.Lock()
	g := s.gvsd
	s.killing = true
	s.gvsdMu.Unlock()
	s.ready.Store(false)
	killAt := time.Now()
	if err := syscall.Kill(g.Pid(), syscall.SIGKILL); err != nil {
		return err
	}
	<-g.Done()
	s.res.Windows.RestartFrom = killAt.Sub(t0)
	present, err := s.tablePresent()
	if err != nil {
		return err
	}
	s.res.StaleTable = present
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.startGVSD(ctx); err != nil {
		return err
	}
	s.res.ReadyAfterRestart = time.Since(killAt)
	s.printf("%8.1fs  gvsd ready again, %v after the SIGKILL (stale table present: %v)\n",
		time.Since(t0).Seconds(), s.res.ReadyAfterRestart.Round(time.Millisecond), present)
	return nil
}

// tablePresent reports whether gvsd's nftables table exists in the
// director.
func (s *soak) tablePresent() (bool, error) {
	var found bool
	err := lab.Do(s.dirNS, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		_, err = c.ListTableOfFamily(kernel.TableName("gvsd"), nftables.TableFamilyNetdev)
		found = err == nil
		if errors.Is(err, syscall.ENOENT) {
			err = nil
		}
		return err
	})
	return found, err
}

// reload writes the rules with r1's weight w and sends SIGHUP, unless gvsd
// is not ready (restarting).
func (s *soak) reload(w int) error {
	if !s.ready.Load() {
		s.res.ReloadsSkipped++
		return nil
	}
	// Written whole and renamed: gvsd never reads half a file.
	tmp := s.rules + ".tmp"
	if err := os.WriteFile(tmp, []byte(s.rulesText(w)), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.rules); err != nil {
		return err
	}
	if err := syscall.Kill(int(s.gvsdPid.Load()), syscall.SIGHUP); err != nil {
		return err
	}
	s.res.ReloadsSent++
	return nil
}

// ringBytesOf is the ring memory of gvsd with workers workers in this lab
// (MTU 1500: the default frame size holds a frame).
func ringBytesOf(workers int) int64 {
	return ringBytes(workers, ring.DefaultFrameCount, ring.DefaultFrameSize)
}

func rateName(r float64) string {
	if r == 0 {
		return "full"
	}
	return fmt.Sprintf("%.0f/s", r)
}
