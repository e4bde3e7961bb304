package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/bpf"

	"gvs/forwarder/ring"
	"gvs/ipvs"
	"gvs/scheduler"
)

// Sync brings everything derived from the service table up to date: the
// conntrack timeouts (--set), the resolver's wanted real servers, the RX
// ring filters, the nftables ingress drops and the ARP responder's
// addresses (with a gratuitous ARP for each new one). It is the control
// socket's OnChange hook. Every step is attempted; the errors are joined.
func (d *Daemon) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("daemon closed")
	}
	der := Derive(d.table, d.cfg.VIPIf, d.cfg.DIPIf)
	var errs []error

	to := d.table.Timeouts()
	d.conns.SetTimeouts(time.Duration(to.TCP)*time.Second, time.Duration(to.TCPFin)*time.Second, time.Duration(to.UDP)*time.Second)

	// Next hops first, so that the first packets find their MACs.
	if len(der.RIPs) > 0 {
		d.res.Want(der.RIPs...)
	}
	if gone := diffAddrs(d.derived.RIPs, der.RIPs); len(gone) > 0 {
		d.res.Unwant(gone...)
	}

	// Rings before the kernel: the rings see new traffic before the
	// kernel stops seeing it.
	vf, df := der.Filters(d.oneArm)
	if err := d.setFilters(vf, df); err != nil {
		errs = append(errs, err)
	}

	if !d.synced || !slices.Equal(der.Ingress, d.derived.Ingress) {
		if err := d.ingress.Sync(der.Ingress); err != nil {
			errs = append(errs, err)
		}
	}

	host, err := hostAddrs()
	if err != nil {
		errs = append(errs, err)
	} else {
		addrs := der.ARPAddrs(func(a netip.Addr) bool { return host[a] })
		if err := d.arp.SetAddrs(addrs); err != nil {
			errs = append(errs, err)
		}
		for _, a := range diffAddrs(addrs, d.arpAddrs) {
			if err := d.arp.Gratuitous(a); err != nil {
				errs = append(errs, err)
			}
		}
		d.arpAddrs = addrs
	}
	if der.FWMarkServices > 0 {
		d.log.Warn("fwmark services are not matched at ingress: their traffic is neither captured nor hidden from the kernel",
			zap.Int("services", der.FWMarkServices))
	}
	d.derived = der
	d.synced = true
	d.log.Info("services synced", zap.Int("vips", len(der.VIPs)), zap.Int("real_servers", len(der.RIPs)),
		zap.Int("ingress_rules", len(der.Ingress)), zap.Int("arp_addrs", len(d.arpAddrs)))
	return errors.Join(errs...)
}

// setFilters attaches new filters to every RX ring when they changed. A
// filter too large for the kernel is replaced by none (everything is copied
// and the pipeline passes what is not gvs's): slower, never wrong.
func (d *Daemon) setFilters(vf, df ring.Filter) error {
	want := [2]ring.Filter{vf, df}
	if d.synced && want[0].Equal(d.filters[0]) && want[1].Equal(d.filters[1]) {
		return nil
	}
	var progs [2][]bpf.RawInstruction
	var errs []error
	for side, f := range want {
		p, err := f.Assemble()
		if err != nil {
			d.log.Warn("ring filter disabled: every frame is copied", zap.Int("side", side), zap.Error(err))
			p = nil
		}
		progs[side] = p
	}
	for _, w := range d.workers {
		for i, r := range w.rx {
			// SO_ATTACH_FILTER replaces a socket's filter atomically in the
			// kernel; the worker keeps reading the ring meanwhile.
			if err := r.SetFilter(progs[w.rxSide[i]]); err != nil {
				errs = append(errs, fmt.Errorf("ring filter: %w", err))
			}
		}
	}
	d.filters = want
	return errors.Join(errs...)
}

// Reload re-reads the rules file and makes the table match it in one
// atomic batch (see ReloadCommands): services and real servers present
// before and after keep their objects, counters and connections. On error
// nothing changes.
func (d *Daemon) Reload() (err error) {
	if f := d.cfg.OnReload; f != nil {
		defer func() { f(err) }()
	}
	if d.cfg.RulesFile == "" {
		return errors.New("no rules file to reload")
	}
	cmds, err := readRules(d.cfg.RulesFile)
	if err != nil {
		return err
	}
	batch, err := ReloadCommands(d.table, cmds)
	if err != nil {
		return fmt.Errorf("%s: %w", d.cfg.RulesFile, err)
	}
	if err := d.table.ApplyAll(batch); err != nil {
		return fmt.Errorf("%s: %w", d.cfg.RulesFile, err)
	}
	d.log.Info("rules reloaded", zap.String("file", d.cfg.RulesFile), zap.Int("commands", len(batch)))
	return d.Sync()
}

func readRules(path string) ([]*ipvs.Command, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmds, err := ipvs.ParseRules(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cmds, nil
}

// ReloadCommands returns the batch that turns cur into the table described
// by cmds (a rules file): the file is applied to a scratch table, and the
// difference is expressed as -D/-E/-A for services, -d/-e/-a for real
// servers and --set for the timeouts. Unlike "-C, then the file", an
// unchanged service keeps its counters (IPVS zeroes a re-created service's)
// and scheduler state. Real servers added by the reload go after the kept
// ones in scheduling order.
func ReloadCommands(cur *ipvs.Table, cmds []*ipvs.Command) ([]*ipvs.Command, error) {
	next := ipvs.NewTable(scheduler.New)
	if err := next.ApplyAll(cmds); err != nil {
		return nil, err
	}
	var batch []*ipvs.Command
	want := map[ipvs.ServiceKey]*ipvs.Service{}
	for _, s := range next.Services() {
		want[s.Config.ServiceKey] = s
	}
	old := map[ipvs.ServiceKey]*ipvs.Service{}
	for _, s := range cur.Services() {
		k := s.Config.ServiceKey
		old[k] = s
		if want[k] == nil {
			batch = append(batch, &ipvs.Command{Kind: ipvs.CmdDeleteService, Service: s.Config})
		}
	}
	for _, ns := range next.Services() {
		k := ns.Config.ServiceKey
		prev := old[k]
		if prev == nil {
			batch = append(batch, &ipvs.Command{Kind: ipvs.CmdAddService, Service: ns.Config})
		} else {
			batch = append(batch, &ipvs.Command{Kind: ipvs.CmdEditService, Service: ns.Config})
		}
		have := map[netip.AddrPort]bool{}
		if prev != nil {
			keep := map[netip.AddrPort]bool{}
			for _, d := range ns.Dests() {
				keep[d.AddrPort()] = true
			}
			for _, d := range prev.Dests() {
				have[d.AddrPort()] = true
				if !keep[d.AddrPort()] {
					batch = append(batch, &ipvs.Command{Kind: ipvs.CmdDeleteServer, Service: ns.Config, Dest: d.Config()})
				}
			}
		}
		// Dests() is newest first: add in file order.
		ds := ns.Dests()
		for i := len(ds) - 1; i >= 0; i-- {
			kind := ipvs.CmdAddServer
			if have[ds[i].AddrPort()] {
				kind = ipvs.CmdEditServer
			}
			batch = append(batch, &ipvs.Command{Kind: kind, Service: ns.Config, Dest: ds[i].Config()})
		}
	}
	batch = append(batch, &ipvs.Command{Kind: ipvs.CmdSet, Timeouts: next.Timeouts()})
	return batch, nil
}
