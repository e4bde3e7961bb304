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

	"gvs/forwarder"
	"gvs/forwarder/ring"
	"gvs/ipvs"
	"gvs/ipvsadm"
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
	der := Derive(d.table, d.ifNames[forwarder.VIPSide], d.ifNames[forwarder.DIPSide])
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
	if err := d.syncXDP(der); err != nil {
		errs = append(errs, fmt.Errorf("XDP rules: %w", err))
	}

	if !d.synced || !slices.Equal(der.Ingress, d.derived.Ingress) {
		if err := d.ingress.Sync(der.Ingress); err != nil {
			errs = append(errs, err)
		}
	}

	if err := d.syncARP(der); err != nil {
		errs = append(errs, err)
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

// syncARP gives the ARP responder the VIPs of der it must answer for now
// (Config.ARP, the host's addresses), with a gratuitous ARP for each new
// one. d.mu is held.
func (d *Daemon) syncARP(der Derived) error {
	host, err := hostAddrs()
	if err != nil {
		return err
	}
	if d.hostHeld == nil {
		d.hostHeld = map[netip.Addr]bool{}
	}
	for _, a := range der.VIPs {
		if host[a] && !d.hostHeld[a] {
			d.hostHeld[a] = true
			if d.cfg.ARP == ARPAuto {
				d.log.Info("VIP held by the host: ARP for it is left to the kernel from now on", zap.Stringer("vip", a))
			}
		}
	}
	addrs := der.ARPAddrs(d.cfg.ARP, func(a netip.Addr) bool { return host[a] }, func(a netip.Addr) bool { return d.hostHeld[a] })
	if d.pipe.Standby() { // backup_only on a backup: no VIP is answered (syncd.go)
		addrs = nil
	}
	var errs []error
	if err := d.arp.SetAddrs(addrs); err != nil {
		errs = append(errs, err)
	}
	for _, a := range diffAddrs(addrs, d.arpAddrs) {
		if err := d.arp.Gratuitous(a); err != nil {
			errs = append(errs, err)
		}
	}
	if !slices.Equal(addrs, d.arpAddrs) {
		d.log.Info("answering ARP", zap.String("mode", d.cfg.ARP.String()), zap.Stringers("vips", addrs))
	}
	d.arpAddrs = addrs
	return errors.Join(errs...)
}

// hostAddrsChanged re-evaluates the ARP answers after the host's addresses
// changed (netlink), without touching the rest of Sync's state.
func (d *Daemon) hostAddrsChanged() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || !d.synced {
		return
	}
	if err := d.syncARP(d.derived); err != nil {
		d.log.Warn("ARP answers not updated after an address change", zap.Error(err))
	}
	if err := d.syncXDP(d.derived); err != nil {
		d.log.Warn("XDP rules not updated after an address change", zap.Error(err))
	}
}

// setFilters attaches new filters to every RX ring when they changed. A
// filter too large for the kernel is replaced by none (everything is copied
// and the pipeline passes what is not gvs's): slower, never wrong.
func (d *Daemon) setFilters(vf, df ring.Filter) error {
	want := [2]ring.Filter{vf, df}
	if d.synced && want[0].Equal(d.filters[0]) && want[1].Equal(d.filters[1]) {
		return nil
	}
	progs, synProg, udpProg := d.filterProgs(want)
	var errs []error
	for _, w := range d.workers {
		// The SYN ring first: the frames it takes over are not lost
		// meanwhile (received twice for an instant, at worst).
		if w.syn != nil {
			if err := w.syn.SetFilter(synProg); err != nil {
				errs = append(errs, fmt.Errorf("SYN ring filter: %w", err))
			}
		}
		if w.udp != nil {
			if err := w.udp.SetFilter(udpProg); err != nil {
				errs = append(errs, fmt.Errorf("UDP ring filter: %w", err))
			}
		}
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

// filterProgs assembles the filters of both sides, of the SYN rings and
// of the UDP rings: the connection openings to the VIPs go to the SYN rings
// (ring.SYNOnly), the UDP frames to the VIPs to the UDP rings
// (ring.UDPOnly), the sides' rings take the rest (ring.SYNExclude with
// SplitUDP). A filter too large for the kernel becomes none (nil: every
// frame is copied), and then the SYN and UDP rings take nothing.
func (d *Daemon) filterProgs(fs [2]ring.Filter) (progs [2][]bpf.RawInstruction, syn, udp []bpf.RawInstruction) {
	drop, _ := ring.Filter{}.Assemble()
	split := true
	for side, f := range fs {
		f.SYN, f.SplitUDP = ring.SYNExclude, true
		p, err := f.Assemble()
		if err != nil {
			// The same filter without the split, or none.
			split = false
			f.SYN = ring.SYNAll
			if p, err = f.Assemble(); err != nil {
				d.log.Warn("ring filter disabled: every frame is copied", zap.Int("side", side), zap.Error(err))
				p = nil
			}
		}
		progs[side] = p
	}
	sf := ring.Filter{DstAddrs: fs[forwarder.VIPSide].DstAddrs, SYN: ring.SYNOnly}
	syn, err := sf.Assemble()
	uf := ring.Filter{DstAddrs: fs[forwarder.VIPSide].DstAddrs, SYN: ring.UDPOnly}
	udp, uerr := uf.Assemble()
	if err != nil || uerr != nil || !split {
		// The SYNs stay in the sides' rings.
		for side, f := range fs {
			if p, err := f.Assemble(); err == nil {
				progs[side] = p
			}
		}
		syn, udp = drop, drop
	}
	return progs, syn, udp
}

// Reload re-reads the rules file and the keepalived.conf and makes the
// table match them in one transaction: the rules file's services (see
// ReloadChanges), leaving the keepalived.conf's services alone, and the
// keepalived.conf's services; then the health engine takes the new
// keepalived.conf (keepalivedManager's finishReload). Services and real
// servers present before and after keep their objects, counters and
// connections. Both files are read and checked before anything changes;
// on error nothing changes.
//
// The difference between the table and the files is computed from the
// transaction's own view of the table and applied in that same
// transaction, so a command that changes the table meanwhile (gvsadm on
// the control socket) runs either wholly before or wholly after it: its
// change is neither lost nor half undone, and it cannot make the reload
// fail.
func (d *Daemon) Reload() (err error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if f := d.cfg.OnReload; f != nil {
		defer func() { f(err) }()
	}
	if err := d.reloadTable(); err != nil {
		return err
	}
	return d.Sync()
}

// reloadTable is Reload without the Sync: the table and the health engine
// (d.reloadMu held).
func (d *Daemon) reloadTable() error {
	if d.cfg.RulesFile == "" && d.ka == nil {
		return errNoReload
	}
	var ka *kaPlan
	var kaOld *kaPlan
	if d.ka != nil {
		var err error
		if ka, err = d.ka.prepareReload(); err != nil {
			return err
		}
		kaOld = d.ka.current()
	}
	var next *ipvs.Table
	var skip func(ipvs.ServiceKey) bool
	if d.cfg.RulesFile != "" {
		cmds, err := readRules(d.cfg.RulesFile)
		if err != nil {
			return err
		}
		var keys []ipvs.ServiceKey
		if next, keys, err = rulesTable(cmds); err != nil {
			return fmt.Errorf("%s: %w", d.cfg.RulesFile, err)
		}
		if ka != nil {
			skip = func(k ipvs.ServiceKey) bool { k = k.Norm(); return kaOld.owned[k] || ka.owned[k] }
		}
		for _, k := range keys {
			if skip != nil && skip(k) {
				return fmt.Errorf("service %v is defined both in %s and in %s: define it in one of them", k.Norm(), d.cfg.RulesFile, d.cfg.KeepalivedConf)
			}
		}
	}
	var batch []ipvs.Change
	err := d.table.Update(func(tx *ipvs.Tx) error {
		if next != nil {
			batch = diffRules(tx, next, skip)
			for _, c := range batch {
				if err := c.Apply(tx); err != nil {
					return fmt.Errorf("%s: %w", d.cfg.RulesFile, err)
				}
			}
		}
		if ka != nil {
			return d.ka.stageReload(tx, kaOld, ka)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if next != nil {
		d.log.Info("rules reloaded", zap.String("file", d.cfg.RulesFile), zap.Int("commands", len(batch)))
	}
	if ka != nil {
		return d.ka.finishReload(kaOld, ka)
	}
	return nil
}

func readRules(path string) ([]*ipvsadm.Command, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmds, err := ipvsadm.ParseRules(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cmds, nil
}

// ReloadChanges returns the batch that turns cur into the table described
// by cmds (a rules file): the file is applied to a scratch table, and the
// difference is expressed as typed changes: DeleteService/EditService/
// AddService for services, DeleteDest/EditDest/AddDest for real servers and
// SetTimeouts for the timeouts. Unlike "-C, then the file", an
// unchanged service keeps its counters (IPVS zeroes a re-created service's)
// and scheduler state. Real servers added by the reload go after the kept
// ones in scheduling order.
//
// The batch describes cur as it is now; applied later, it may meet changes
// made meanwhile. Reload computes and applies it in one transaction
// (diffRules inside Table.Update).
func ReloadChanges(cur *ipvs.Table, cmds []*ipvsadm.Command) ([]ipvs.Change, error) {
	batch, _, err := reloadChanges(cur, cmds, nil)
	return batch, err
}

// errDryRun aborts the transaction reloadChanges only reads.
var errDryRun = errors.New("dry run")

// reloadChanges is ReloadChanges leaving alone the services skip reports
// (the keepalived.conf's); it also returns the keys of the file's services.
// It reads cur in a transaction that it abandons.
func reloadChanges(cur *ipvs.Table, cmds []*ipvsadm.Command, skip func(ipvs.ServiceKey) bool) ([]ipvs.Change, []ipvs.ServiceKey, error) {
	next, keys, err := rulesTable(cmds)
	if err != nil {
		return nil, nil, err
	}
	var batch []ipvs.Change
	_ = cur.Update(func(tx *ipvs.Tx) error {
		batch = diffRules(tx, next, skip)
		return errDryRun
	})
	return batch, keys, nil
}

// rulesTable applies cmds to a scratch table (ipvsadm's errors are the
// file's: a bad file changes nothing) and returns it with the keys of its
// services.
func rulesTable(cmds []*ipvsadm.Command) (*ipvs.Table, []ipvs.ServiceKey, error) {
	next := ipvs.NewTable(scheduler.New)
	if err := ipvsadm.ApplyAll(next, cmds); err != nil {
		return nil, nil, err
	}
	var keys []ipvs.ServiceKey
	next.Read(func(svcs []*ipvs.Service) {
		for _, s := range svcs {
			keys = append(keys, s.Config.ServiceKey)
		}
	})
	return next, keys, nil
}

// diffRules returns the changes that make the services of tx (the staged
// state of the live table) match those of next (a rules file's scratch
// table), leaving alone the services skip reports. Reading the live table
// only through tx, inside its Update, is what makes the result valid when
// it is applied in that same transaction.
func diffRules(tx *ipvs.Tx, next *ipvs.Table, skip func(ipvs.ServiceKey) bool) []ipvs.Change {
	type svc struct {
		cfg   ipvs.ServiceConfig
		dests []ipvs.DestConfig // newest first
	}
	// The file's services in ipvsadm's order. next is private to the
	// caller: nothing changes it while its services are read.
	var want []svc
	for _, s := range next.Services() {
		w := svc{cfg: s.Config}
		for _, d := range s.Dests() {
			w.dests = append(w.dests, d.Config())
		}
		want = append(want, w)
	}
	wanted := map[ipvs.ServiceKey]bool{}
	for _, w := range want {
		wanted[w.cfg.ServiceKey.Norm()] = true
	}
	var batch []ipvs.Change
	for _, c := range tx.Services() {
		k := c.ServiceKey.Norm()
		if skip != nil && skip(k) {
			continue
		}
		if !wanted[k] {
			batch = append(batch, ipvs.DeleteService{Key: k})
		}
	}
	for _, w := range want {
		k := w.cfg.ServiceKey
		_, present := tx.Service(k)
		if present && skip != nil && skip(k) {
			present = false
		}
		if !present {
			batch = append(batch, ipvs.AddService{Config: w.cfg})
		} else {
			batch = append(batch, ipvs.EditService{Config: w.cfg})
		}
		have := map[netip.AddrPort]bool{}
		if present {
			keep := map[netip.AddrPort]bool{}
			for _, d := range w.dests {
				keep[d.AddrPort()] = true
			}
			for _, d := range tx.Dests(k) {
				have[d.AddrPort()] = true
				if !keep[d.AddrPort()] {
					batch = append(batch, ipvs.DeleteDest{Service: k, Dest: d.AddrPort()})
				}
			}
		}
		// Newest first: add in file order.
		for i := len(w.dests) - 1; i >= 0; i-- {
			if have[w.dests[i].AddrPort()] {
				batch = append(batch, ipvs.EditDest{Service: k, Config: w.dests[i]})
			} else {
				batch = append(batch, ipvs.AddDest{Service: k, Config: w.dests[i]})
			}
		}
	}
	batch = append(batch, ipvs.SetTimeouts{Timeouts: next.Timeouts()})
	return batch
}
