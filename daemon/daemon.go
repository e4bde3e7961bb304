package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/bpf"

	"gvs/conntrack"
	"gvs/control"
	"gvs/forwarder"
	"gvs/forwarder/kernel"
	"gvs/forwarder/ring"
	"gvs/forwarder/xdp"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/scheduler"
)

// Config configures a Daemon.
type Config struct {
	// VIPIf is the interface clients' traffic arrives on; DIPIf the one the
	// real servers are on. They may be the same (one-arm director).
	VIPIf, DIPIf string
	// RulesFile is an ipvsadm-save rules file loaded at start and on
	// Reload; empty: start with no services.
	RulesFile string
	// KeepalivedConf is a keepalived.conf whose LVS part (virtual servers,
	// real servers, checkers) the daemon runs beside the rules file (see
	// keepalived.go); empty: none. KeepalivedConfigID is keepalived's -i
	// for "@id" lines (default: the host name's first label).
	KeepalivedConf, KeepalivedConfigID string
	// Socket is the control socket name (abstract, without '@'); it also
	// names the nftables table (kernel.TableName). Default "gvsd".
	Socket string
	// Workers is the number of data-path workers; 0: DefaultWorkers().
	Workers int
	// Batch is the number of frames taken from one ring per turn; 0:
	// DefaultBatch.
	Batch int
	// ConnCapacity bounds the connection table; 0: conntrack's default.
	ConnCapacity int
	// BusyPoll keeps a worker polling its rings for this long after its
	// last frame before it sleeps in poll(2): a frame arriving within it is
	// taken without a wake-up (tens of µs on a VM), at the price of a CPU
	// kept busy that long after every burst. 0 (the default): sleep at
	// once, like the kernel without net.core.busy_poll.
	BusyPoll time.Duration
	// RingFrames is the number of frames of each RX ring; 0: the ring
	// package's default (2048). A full ring is that many frames of queueing.
	RingFrames int
	// SYNRate is each source address's budget of new connections (TCP
	// SYNs to a VIP) a second, shared by the workers; beyond it a source's
	// SYNs are dropped (counter syn_budget). 0: DefaultSYNRate; negative:
	// no budget.
	SYNRate int
	// ARP says for which VIPs the daemon answers ARP (default ARPAuto).
	ARP ARPMode
	// IO is the packet I/O (default IOTPacket); XDPModes the XDP attach
	// modes IOAFXDP tries, in order (nil: native, then generic).
	IO       IOMode
	XDPModes []xdp.Mode
	// XDPFastPath (with IOAFXDP) forwards the steady packets of
	// established NAT, DR and TUN connections in the XDP program, from a flow
	// map the daemon keeps (fastpath_linux.go).
	XDPFastPath bool
	// StatsInterval, if positive, logs Stats at debug level that often.
	StatsInterval time.Duration
	// Settings are IPVS's sysctls (net.ipv4.vs.*), shared by the control
	// engine (--sysctl), the connection table, the schedulers' caches and
	// the forwarder; nil: the kernel's defaults.
	Settings *ipvs.Settings
	// Logger receives the daemon's logs; nil: no logs.
	Logger *zap.Logger
	// OnReload, if not nil, is called after every Reload with its result
	// (the metrics' reload counters).
	OnReload func(err error)
	// Control, if not nil, serves the control socket: Run calls it in its
	// own goroutine once the data path is up and cancels its context at
	// shutdown. It serves d.ControlListener(), which New bound before
	// anything else. An error other than the context's is logged and stops
	// the daemon.
	Control func(ctx context.Context, d *Daemon) error
}

// DefaultSocket is the default control socket name.
const DefaultSocket = "gvsd"

// DefaultWorkers is half the CPUs, at least one: each worker spins on its
// own locked thread, and the kernel needs the other half for the interfaces'
// softirq work (on the 2-CPU reference machine: 1 worker).
func DefaultWorkers() int { return max(1, runtime.NumCPU()/2) }

// Daemon is a running director. Create it with New, run it with Run.
type Daemon struct {
	cfg    Config
	log    *zap.Logger
	start  time.Time
	oneArm bool

	table *ipvs.Table
	conns *conntrack.Table
	env   *Env
	pipe  *forwarder.Pipeline

	ctl     *net.UnixListener // the control socket: also the namespace's single-instance lock
	res     *kernel.Resolver
	ingress *kernel.Ingress
	arp     *kernel.ARPResponder

	ka       *keepalivedManager // nil without Config.KeepalivedConf
	reloadMu sync.Mutex         // serializes Reload

	workers []*worker
	// wstop is the running workers' stop flag (nil: not running), wwg
	// their goroutines; both change only under d.mu (or in Run before and
	// after everything else).
	wstop *atomic.Bool
	wwg   sync.WaitGroup

	ringMu  sync.Mutex // guards rxs, txs and retired: Stats reads them while rings are reopened
	rxs     []*ring.RX
	synRxs  []*ring.RX // the workers' rings of connection openings
	udpRxs  []*ring.RX // the workers' rings of UDP to the VIPs
	txs     []*ring.TX
	retired ringTotals // the counters of rings closed by reopenRings
	xdp     *xdpIO     // the AF_XDP data path (nil: TPACKET rings)

	// arpWG counts the ARP responders' Run goroutines; arpCtx is Run's
	// context (nil before Run), under which a replaced responder runs.
	arpWG  sync.WaitGroup
	arpCtx context.Context

	defense *conntrack.Defense // IPVS's defenses on conns (defend, every second)

	mu     sync.Mutex // serializes Sync, Reload and reopenRings; guards the fields below
	closed bool
	links  [2]LinkInfo // the links the rings are open on: VIP side, DIP side
	// ifNames are the interfaces' current names, VIP side and DIP side:
	// Config.VIPIf and DIPIf until one is renamed (watchLinks).
	ifNames  [2]string
	synced   bool
	derived  Derived
	filters  [2]ring.Filter
	arpAddrs []netip.Addr
	hostHeld map[netip.Addr]bool // VIPs the host has held since New (ARPAuto)

	syncd syncDaemons // the connection sync daemons (syncd.go)
}

// New sets the director up: it reads the interfaces, loads the rules, opens
// the rings and installs the kernel coexistence state. Nothing is forwarded
// before Run. On error everything set up so far is removed again.
func New(cfg Config) (d *Daemon, err error) {
	if cfg.VIPIf == "" || cfg.DIPIf == "" {
		return nil, errors.New("both the VIP and the DIP interface are required")
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers()
	}
	if cfg.Workers > ipvs.MaxWorkers {
		return nil, fmt.Errorf("at most %d workers", ipvs.MaxWorkers)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Settings == nil {
		cfg.Settings = ipvs.NewSettings()
	}
	d = &Daemon{cfg: cfg, log: cfg.Logger, start: time.Now(), oneArm: cfg.VIPIf == cfg.DIPIf, ifNames: [2]string{cfg.VIPIf, cfg.DIPIf}}
	defer func() {
		if err != nil {
			d.close()
			d = nil
		}
	}()

	// How long each step takes, logged at debug level (start-up under a
	// flood is a question operators ask).
	phases := phaseTimer{last: d.start}
	defer func() {
		if err == nil {
			d.log.Debug("startup phases", phases.fields...)
		}
	}()

	// The control socket first: it is the single-instance lock of the
	// socket name in this network namespace, and a second daemon must fail
	// before it touches what the first one installed (nftables table,
	// offloads, ARP).
	if d.ctl, err = listenControl(cfg.Socket); err != nil {
		return d, err
	}
	phases.mark("control_socket")
	vip, err := ReadLink(cfg.VIPIf)
	if err != nil {
		return d, err
	}
	dip := vip
	if !d.oneArm {
		if dip, err = ReadLink(cfg.DIPIf); err != nil {
			return d, err
		}
	}
	d.table = ipvs.NewTable(control.SchedulerFactory(cfg.Settings, scheduler.New))
	if cfg.KeepalivedConf != "" {
		if d.ka, err = newKeepalived(cfg.KeepalivedConf, d.table, d.log, kaOptions{ConfigID: cfg.KeepalivedConfigID}); err != nil {
			return d, err
		}
	}
	if cfg.RulesFile != "" {
		cmds, err := readRules(cfg.RulesFile)
		if err != nil {
			return d, err
		}
		if err := d.ka.checkRules(cfg.RulesFile, cmds); err != nil {
			return d, err
		}
		if err := ipvsadm.ApplyAll(d.table, cmds); err != nil {
			return d, fmt.Errorf("%s: %w", cfg.RulesFile, err)
		}
	}
	phases.mark("links_rules")
	d.conns = conntrack.New(conntrack.Config{Capacity: cfg.ConnCapacity})
	phases.mark("conntrack")
	d.defense = control.BindSettings(cfg.Settings, d.conns, d.table)
	if d.res, err = kernel.NewResolver(kernel.ResolverConfig{Logger: d.log.Named("resolver")}); err != nil {
		return d, err
	}
	phases.mark("resolver")
	if d.env, err = NewEnv(d.res, vip, dip); err != nil {
		return d, err
	}
	d.pipe = forwarder.New(forwarder.Config{Env: d.env, Services: d.table, Conns: d.conns, Settings: cfg.Settings})

	for _, ifname := range d.interfaces() {
		changed, err := kernel.DisableGRO(ifname)
		if len(changed) > 0 {
			d.log.Info("receive offloads switched off", zap.String("interface", ifname), zap.Strings("features", changed))
		}
		if err != nil {
			d.log.Warn("receive offloads stay on: oversized frames will be dropped (counter oversize)",
				zap.String("interface", ifname), zap.Error(err))
		}
	}
	phases.mark("offloads")
	if d.ingress, err = kernel.NewIngress(kernel.TableName(cfg.Socket), d.log.Named("ingress")); err != nil {
		return d, err
	}
	phases.mark("nftables_stale")
	if d.arp, err = kernel.NewARPResponder(cfg.VIPIf, d.log.Named("arp")); err != nil {
		return d, err
	}
	phases.mark("arp")
	d.links = [2]LinkInfo{vip, dip}
	drop, err := ring.Filter{}.Assemble()
	if err != nil {
		return d, err
	}
	if err := d.openRings(vip, dip, [2][]bpf.RawInstruction{drop, drop}, drop, drop); err != nil {
		return d, err
	}
	phases.mark("rings")
	d.ka.startChecks()
	if err := d.Sync(); err != nil {
		return d, err
	}
	phases.mark("sync")
	if missing := d.awaitNextHops(NextHopWait); missing > 0 {
		d.log.Warn("starting with real servers whose next hop is not resolved yet: their first packets are dropped (no_route)",
			zap.Int("unresolved", missing), zap.Duration("waited", NextHopWait))
	}
	phases.mark("next_hops")
	return d, nil
}

// NextHopWait bounds how long New waits for the real servers' next hops
// (kernel neighbour resolution, which the resolver starts at the first
// Sync). A connection whose first packet finds its real server unresolved
// loses that packet (no_route) and waits for the client's retransmission:
// a second for a TCP SYN. The wait ends as soon as every one is resolved
// (a few milliseconds on a LAN); a real server that does not answer ARP
// holds the start-up this long at most.
const NextHopWait = 500 * time.Millisecond

// awaitNextHops waits until the resolver knows the MAC of every real
// server's next hop, at most max, and returns how many it does not know.
func (d *Daemon) awaitNextHops(max time.Duration) (missing int) {
	d.mu.Lock()
	rips := slices.Clone(d.derived.RIPs)
	d.mu.Unlock()
	deadline := time.Now().Add(max)
	for {
		missing = 0
		for _, a := range rips {
			if n, ok := d.res.Lookup(a); !ok || n.MAC == ([6]byte{}) {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// phaseTimer records how long each step of a sequence took.
type phaseTimer struct {
	last   time.Time
	fields []zap.Field
}

func (p *phaseTimer) mark(name string) {
	now := time.Now()
	p.fields = append(p.fields, zap.Duration(name, now.Sub(p.last)))
	p.last = now
}

// listenControl binds the abstract unix socket @name. An address in use
// means another daemon of this network namespace holds the name.
func listenControl(name string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: "@" + name, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("control socket @%s is in use: another gvsd runs in this network namespace (nothing was changed; use another --socket to run a second one)", name)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket @%s: %w", name, err)
	}
	return ln, nil
}

// ControlListener is the control socket New bound (@Socket). Config.Control
// serves it; the daemon closes it when it stops.
func (d *Daemon) ControlListener() *net.UnixListener { return d.ctl }

// interfaces lists the distinct interfaces, VIP side first.
func (d *Daemon) interfaces() []string {
	if d.oneArm {
		return []string{d.cfg.VIPIf}
	}
	return []string{d.cfg.VIPIf, d.cfg.DIPIf}
}

// ringFrameSize is a slot size that holds a whole frame of the link's MTU
// (plus a VLAN tag) behind the ring's slot header.
func ringFrameSize(mtu int) int {
	n := mtu + 14 + 4 + ring.RXDataOffset
	n = (n + 15) &^ 15
	return max(n, ring.DefaultFrameSize)
}

// openRings opens every worker's rings: an RX ring per interface in that
// interface's fanout group (hash of the flow; fragments reassembled by the pipeline), with the
// filter of its side (New: one dropping everything until the first Sync),
// and a TX ring per egress interface. The workers are made on the first
// call; later calls (reopenRings) give the same workers new rings, so their
// counters carry on.
//
// Each worker also gets a ring of the connection openings to the VIPs (TCP
// SYN without ACK) on the VIP interface, with filter synProg, which the
// VIP side's filter leaves out (see worker.poll). It is in a fanout group
// of its own, joined in the same worker order as the VIP side's group:
// with as many members and the same (symmetric) flow hash, a flow's SYN and
// its later packets reach the same worker. Likewise a ring of the UDP
// frames to the VIPs, with filter udpProg (see ring.UDPOnly): a UDP flood
// overflows it, not the ring of the established TCP traffic. Each ring is
// one socket and RingFrames frames of memory: a worker holds at most four
// RX rings (two sides, SYN, UDP) and two TX rings.
func (d *Daemon) openRings(vip, dip LinkInfo, progs [2][]bpf.RawInstruction, synProg, udpProg []bpf.RawInstruction) error {
	if d.tryXDP(vip, dip) {
		return nil
	}
	links := []LinkInfo{vip}
	if !d.oneArm {
		links = append(links, dip)
	}
	pid := os.Getpid()
	for i := 0; i < d.cfg.Workers; i++ {
		var w *worker
		if i < len(d.workers) {
			w = d.workers[i]
			w.clearRings()
		} else {
			w = newWorker(d.pipe.NewWorker(), d.Clock, d.cfg.Batch)
			w.busyPoll = int64(d.cfg.BusyPoll)
			rate := d.cfg.SYNRate
			if rate == 0 {
				rate = DefaultSYNRate
			}
			w.budget.setRate(rate, d.cfg.Workers)
			d.workers = append(d.workers, w)
		}
		for side, l := range links {
			fs := ringFrameSize(l.MTU)
			// A fanout group spreads flows over the workers; one worker
			// needs none, and skips the kernel's per-frame flow hash.
			var fanout *ring.Fanout
			if d.cfg.Workers > 1 {
				// No PACKET_FANOUT_FLAG_DEFRAG: the pipeline reassembles
				// (forwarder/defrag.go), alike for one worker and many;
				// a fragment's hash (addresses, protocol) already keeps
				// a datagram's fragments on one worker.
				fanout = &ring.Fanout{Group: uint16(pid<<2 | side), Mode: ring.FanoutHash, NoDefrag: true}
			}
			rx, err := ring.OpenRX(l.Index, &ring.RXConfig{
				FrameSize:  fs,
				FrameCount: d.cfg.RingFrames,
				Fanout:     fanout,
				Filter:     progs[side],
			})
			if err != nil {
				return fmt.Errorf("%s: %w", l.Name, err)
			}
			d.ringMu.Lock()
			d.rxs = append(d.rxs, rx)
			d.ringMu.Unlock()
			w.addRX(rx, side)
			txc := ring.DefaultTXConfig()
			txc.FrameSize = fs
			txc.FlushEvery = -1 // the worker flushes once per batch
			tx, err := ring.OpenTX(l.Index, &txc)
			if err != nil {
				return fmt.Errorf("%s: %w", l.Name, err)
			}
			d.ringMu.Lock()
			d.txs = append(d.txs, tx)
			d.ringMu.Unlock()
			w.tx[side] = tx
		}
		if d.oneArm {
			w.tx[forwarder.DIPSide] = w.tx[forwarder.VIPSide]
			w.rxSide[0] = forwarder.DIPSide // one wire: the side does not matter
		}
		if err := d.openSYNRing(w, vip, pid, synProg, false); err != nil {
			return err
		}
		if err := d.openSYNRing(w, vip, pid, udpProg, true); err != nil {
			return err
		}
	}
	return nil
}

// openSYNRing opens w's ring of connection openings on the VIP link, or
// its UDP ring (udp).
func (d *Daemon) openSYNRing(w *worker, vip LinkInfo, pid int, prog []bpf.RawInstruction, udp bool) error {
	var fanout *ring.Fanout
	if d.cfg.Workers > 1 {
		group := pid<<2 | 2
		if udp {
			group = pid<<2 | 3
		}
		fanout = &ring.Fanout{Group: uint16(group), Mode: ring.FanoutHash, NoDefrag: true}
	}
	rx, err := ring.OpenRX(vip.Index, &ring.RXConfig{
		FrameSize:  ringFrameSize(vip.MTU),
		FrameCount: d.cfg.RingFrames,
		Fanout:     fanout,
		Filter:     prog,
	})
	if err != nil && udp {
		return fmt.Errorf("%s: UDP ring: %w", vip.Name, err)
	}
	if err != nil {
		return fmt.Errorf("%s: SYN ring: %w", vip.Name, err)
	}
	d.ringMu.Lock()
	if udp {
		d.udpRxs = append(d.udpRxs, rx)
	} else {
		d.synRxs = append(d.synRxs, rx)
	}
	d.ringMu.Unlock()
	if udp {
		w.addUDP(rx, w.rxSide[0])
	} else {
		w.addSYN(rx, w.rxSide[0])
	}
	return nil
}

// ringTotals are the Stats counters of closed rings.
type ringTotals struct {
	drops, synDrops, udpDrops, again, nobufs, kicks uint64
}

// closeRings closes every ring (the workers must be stopped), keeping
// their counters in d.retired.
func (d *Daemon) closeRings() error {
	d.ringMu.Lock()
	defer d.ringMu.Unlock()
	var errs []error
	for _, r := range d.rxs {
		if rs, err := r.Stats(); err == nil {
			d.retired.drops += rs.Drops
		}
		errs = append(errs, r.Close())
	}
	for _, r := range d.synRxs {
		if rs, err := r.Stats(); err == nil {
			d.retired.synDrops += rs.Drops
		}
		errs = append(errs, r.Close())
	}
	for _, r := range d.udpRxs {
		if rs, err := r.Stats(); err == nil {
			d.retired.udpDrops += rs.Drops
		}
		errs = append(errs, r.Close())
	}
	for _, t := range d.txs {
		_ = t.Flush()
		ts := t.Stats()
		d.retired.again += ts.Again
		d.retired.nobufs += ts.NoBufs
		d.retired.kicks += ts.Kicks
		errs = append(errs, t.Close())
	}
	d.rxs, d.synRxs, d.udpRxs, d.txs = nil, nil, nil, nil
	errs = append(errs, d.closeXDP())
	return errors.Join(errs...)
}

// startWorkers starts the workers on their rings. d.mu is held (or Run
// owns the daemon).
func (d *Daemon) startWorkers() {
	if d.wstop != nil {
		return
	}
	stop := new(atomic.Bool)
	d.wstop = stop
	for _, w := range d.workers {
		d.wwg.Go(func() { w.run(stop) })
	}
}

// stopWorkers stops the workers and waits for them (at most pollTimeout).
func (d *Daemon) stopWorkers() {
	if d.wstop == nil {
		return
	}
	d.wstop.Store(true)
	d.wwg.Wait()
	d.wstop = nil
}

// reopenRings moves the data path to interfaces that were re-created
// (another ifindex): the workers stop, their rings are closed and opened
// again on vip and dip with the current filters, the links are updated,
// and the workers start again. The ARP responder follows a re-created VIP
// interface, receive offloads are switched off again on the new
// interfaces, and the nftables table is installed again (kernels before
// 6.16 delete a netdev chain with its last device). On error the workers
// stay stopped; a later call may succeed.
func (d *Daemon) reopenRings(vip, dip LinkInfo) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("daemon closed")
	}
	old := d.links
	d.stopWorkers()
	var errs []error
	if err := d.closeRings(); err != nil {
		d.log.Debug("closing the old rings", zap.Error(err))
	}
	progs, synProg, udpProg := d.filterProgs(d.filters)
	if !d.synced {
		drop, _ := ring.Filter{}.Assemble()
		progs, synProg, udpProg = [2][]bpf.RawInstruction{drop, drop}, drop, drop
	}
	if err := d.openRings(vip, dip, progs, synProg, udpProg); err != nil {
		// Whatever opened is closed again: a worker must not run on half
		// its rings.
		_ = d.closeRings()
		return err
	}
	if err := d.env.SetLinks(vip, dip); err != nil {
		_ = d.closeRings()
		return err
	}
	d.links = [2]LinkInfo{vip, dip}
	if d.arpCtx != nil {
		d.startWorkers()
	}

	for side, l := range d.links {
		if side == forwarder.DIPSide && d.oneArm || l.Index == old[side].Index {
			continue
		}
		changed, err := kernel.DisableGRO(l.Name)
		if len(changed) > 0 {
			d.log.Info("receive offloads switched off", zap.String("interface", l.Name), zap.Strings("features", changed))
		}
		if err != nil {
			d.log.Warn("receive offloads stay on: oversized frames will be dropped (counter oversize)",
				zap.String("interface", l.Name), zap.Error(err))
		}
	}
	if vip.Index != old[forwarder.VIPSide].Index {
		if err := d.replaceARP(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.synced {
		if err := d.ingress.Sync(d.derived.Ingress); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// replaceARP opens a new ARP responder on the VIP interface (re-created:
// the old one's socket is bound to the removed device), gives it the
// current addresses with a gratuitous ARP each, and runs it. d.mu is held.
func (d *Daemon) replaceARP() error {
	arp, err := kernel.NewARPResponder(d.ifNames[forwarder.VIPSide], d.log.Named("arp"))
	if err != nil {
		return err
	}
	_ = d.arp.Close() // its Run returns nil
	d.arp = arp
	var errs []error
	if err := arp.SetAddrs(d.arpAddrs); err != nil {
		errs = append(errs, err)
	}
	for _, a := range d.arpAddrs {
		if err := arp.Gratuitous(a); err != nil {
			errs = append(errs, err)
		}
	}
	if d.arpCtx != nil {
		d.runARP(arp)
	}
	return errors.Join(errs...)
}

// runARP runs an ARP responder until Run's context ends or it is closed.
func (d *Daemon) runARP(arp *kernel.ARPResponder) {
	ctx := d.arpCtx
	d.arpWG.Go(func() {
		if err := arp.Run(ctx); err != nil {
			d.log.Warn("ARP responder stopped", zap.Error(err))
		}
	})
}

// Clock is the daemon's clock: monotonic nanoseconds since New. The
// connection table and the control socket use it.
func (d *Daemon) Clock() int64 { return int64(time.Since(d.start)) }

// Table is the service table.
func (d *Daemon) Table() *ipvs.Table { return d.table }

// Conns is the connection table.
func (d *Daemon) Conns() *conntrack.Table { return d.conns }

// Settings are the sysctls the daemon runs with (Config.Settings).
func (d *Daemon) Settings() *ipvs.Settings { return d.cfg.Settings }

// Env is the live environment.
func (d *Daemon) Env() *Env { return d.env }

// Logger is the daemon's logger.
func (d *Daemon) Logger() *zap.Logger { return d.log }

// Socket is the control socket name.
func (d *Daemon) Socket() string { return d.cfg.Socket }

// Run forwards until ctx ends, then stops the workers and removes
// everything New installed (nftables table, ARP responder, rings). It
// returns nil after a clean shutdown.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mu.Lock()
	d.arpCtx = ctx
	d.startWorkers()
	d.runARP(d.arp)
	d.mu.Unlock()
	var bg sync.WaitGroup
	bg.Go(func() { d.housekeeping(ctx) })
	bg.Go(func() { d.ka.syncLoop(ctx, d.Sync, d.log) })
	bg.Go(func() { d.watchLinks(ctx) })
	bg.Go(func() { d.defend(ctx) })
	if d.cfg.ARP == ARPAuto {
		bg.Go(func() { d.watchAddrs(ctx) })
	}
	var runErr error
	var errOnce sync.Once
	if d.cfg.Control != nil {
		bg.Go(func() {
			if err := d.cfg.Control(ctx, d); err != nil && ctx.Err() == nil {
				errOnce.Do(func() { runErr = fmt.Errorf("control socket: %w", err) })
				cancel()
			}
		})
	}
	d.log.Info("gvsd ready",
		zap.String("vip_if", d.cfg.VIPIf), zap.String("dip_if", d.cfg.DIPIf),
		zap.Int("workers", len(d.workers)), zap.Int("services", len(d.table.Services())),
		zap.String("socket", "@"+d.cfg.Socket), zap.Duration("startup", time.Since(d.start)))
	<-ctx.Done()
	d.stopSyncDaemons()
	bg.Wait() // no reopenRings after this
	d.mu.Lock()
	d.stopWorkers()
	_ = d.arp.Close()
	d.mu.Unlock()
	d.arpWG.Wait()
	s := d.Stats()
	d.log.Info("gvsd stopping", zap.Uint64("rx", s.RX), zap.Uint64("tx", s.TX), zap.Any("drops", s.Reasons))
	if err := d.close(); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}

// IngressCheckInterval is how often the daemon checks that its nftables
// table is still in place (see kernel.Ingress.Ensure).
const IngressCheckInterval = time.Second

// housekeeping expires connections every 100 ms, restores the nftables
// table when someone removed it, and logs statistics.
func (d *Daemon) housekeeping(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastStats, lastCheck time.Time
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			d.conns.Expire(d.Clock())
			d.foldFastPath()
			if now.Sub(lastCheck) >= IngressCheckInterval {
				lastCheck = now
				restored, err := d.ingress.Ensure()
				switch {
				case err != nil:
					// Once per distinct error, not every second.
					if err.Error() != lastErr {
						d.log.Warn("cannot check or restore the nftables table", zap.String("table", d.ingress.Table()), zap.Error(err))
					}
					lastErr = err.Error()
				case restored:
					d.log.Warn("nftables table was removed by someone else: restored", zap.String("table", d.ingress.Table()))
					lastErr = ""
				default:
					lastErr = ""
				}
			}
			if iv := d.cfg.StatsInterval; iv > 0 && now.Sub(lastStats) >= iv {
				lastStats = now
				if ce := d.log.Check(zap.DebugLevel, "stats"); ce != nil {
					ce.Write(d.Stats().Fields()...)
				}
			}
		}
	}
}

// close releases everything; safe on a partly built Daemon.
func (d *Daemon) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.ka.stopChecks()
	var errs []error
	if d.ingress != nil {
		errs = append(errs, d.ingress.Close())
	}
	if d.arp != nil {
		errs = append(errs, d.arp.Close())
	}
	errs = append(errs, d.closeRings())
	if d.res != nil {
		errs = append(errs, d.res.Close())
	}
	if d.ctl != nil {
		// Last: the name stays taken until everything else is removed.
		// Config.Control may have closed it already.
		if err := d.ctl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
