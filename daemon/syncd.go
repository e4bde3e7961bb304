package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"gvs/conntrack"
	"gvs/control"
	"gvs/ipvs"
	"gvs/lvssync"
)

// The connection sync daemons (ipvsadm --start-daemon master|backup, IPVS
// ip_vs_sync.c) of a director: the master multicasts records of the
// connections the table says are due (lvssync.Needed, per connection,
// under the shard lock; the workers queue them in their own producer
// queues), the backup creates or updates the connections it hears of,
// flagged SYNC and bound to its own matching real server. With the
// backup_only sysctl set, a director whose backup daemon runs forwards
// nothing and answers ARP for no VIP (standby); when it leaves standby, or
// its master daemon starts, it announces the VIPs it answers ARP for with
// gratuitous ARPs as keepalived does on becoming VRRP master: a burst of
// GARPRepeat, and another GARPDelay later (garp_master_repeat,
// garp_master_delay).

// Gratuitous ARPs on becoming master: keepalived's defaults.
const (
	GARPRepeat = 5
	GARPDelay  = 5 * time.Second
)

// syncDaemons is the daemon's sync state; mu serializes start and stop.
type syncDaemons struct {
	mu     sync.Mutex
	sender *lvssync.Sender
	recv   *lvssync.Receiver
	hooked bool

	// The backup's counters.
	applied, created, noDest, refused atomic.Uint64
}

// SyncStats are the backup's record counters.
type SyncStats struct {
	Applied uint64 // records that created or updated an entry
	Created uint64 // of which created one
	NoDest  uint64 // records with no matching local real server (skipped)
	Refused uint64 // records the table refused (stale, bad state, table full)
	Sent    lvssync.SenderStats
}

// SyncStats reads the sync counters.
func (d *Daemon) SyncStats() SyncStats {
	s := &d.syncd
	st := SyncStats{Applied: s.applied.Load(), Created: s.created.Load(), NoDest: s.noDest.Load(), Refused: s.refused.Load()}
	s.mu.Lock()
	if s.sender != nil {
		st.Sent = s.sender.Stats()
	}
	s.mu.Unlock()
	return st
}

// syncSettings are the sync-needed rule's sysctls.
func syncSettings(set *ipvs.Settings) (lvssync.SyncSettings, int) {
	th := set.Get2(ipvs.SysSyncThreshold)
	return lvssync.SyncSettings{
		Threshold:     int(th[0]),
		Period:        int(th[1]),
		RefreshPeriod: uint64(set.Get(ipvs.SysSyncRefreshPeriod)) * lvssync.HZ,
		Retries:       int(set.Get(ipvs.SysSyncRetries)),
		PersistMode:   set.Get(ipvs.SysSyncPersistMode) != 0,
	}, int(set.Get(ipvs.SysSyncVersion))
}

// syncQueueLen is each worker's queue length: sync_qlen_max (the kernel's
// bound of queued messages) shared by the workers, at least 64 and at
// most 16384 records each.
func syncQueueLen(set *ipvs.Settings, workers int) int {
	n := set.GetUint(ipvs.SysSyncQlenMax) / uint64(max(workers, 1))
	return int(min(max(n, 64), 16384))
}

// hookSettings follows the sync sysctls while the daemons run. s.mu held.
func (d *Daemon) hookSettings() {
	s := &d.syncd
	if s.hooked {
		return
	}
	s.hooked = true
	d.cfg.Settings.OnChange(func(k ipvs.Sysctl) {
		switch k {
		case ipvs.SysSyncThreshold, ipvs.SysSyncRefreshPeriod, ipvs.SysSyncRetries,
			ipvs.SysSyncPersistMode, ipvs.SysSyncVersion:
			s.mu.Lock()
			if s.sender != nil {
				ss, v := syncSettings(d.cfg.Settings)
				d.conns.SetSync(&ss, v)
				s.sender.SetVersion(uint8(v))
			}
			s.mu.Unlock()
		case ipvs.SysBackupOnly:
			s.mu.Lock()
			d.setStandby()
			s.mu.Unlock()
		}
	})
}

// StartSyncDaemon starts the master or backup sync daemon
// (control.SyncDaemons).
func (d *Daemon) StartSyncDaemon(cfg lvssync.Config) error {
	s := &d.syncd
	s.mu.Lock()
	defer s.mu.Unlock()
	d.hookSettings()
	switch cfg.State {
	case lvssync.Master:
		if s.sender != nil {
			return control.ErrDaemonRunning
		}
	case lvssync.Backup:
		if s.recv != nil {
			return control.ErrDaemonRunning
		}
	default:
		return fmt.Errorf("%w: state %d", lvssync.ErrConfig, cfg.State)
	}
	if _, err := net.InterfaceByName(cfg.McastIfn); err != nil {
		return fmt.Errorf("%w: %s", control.ErrNoDevice, cfg.McastIfn)
	}
	if cfg.State == lvssync.Backup {
		r, err := lvssync.NewReceiver(cfg, lvssync.HandlerFunc(d.syncConn))
		if err != nil {
			return err
		}
		s.recv = r
		d.log.Info("sync daemon started", zap.String("state", "backup"), zap.String("mcast_if", cfg.McastIfn), zap.Uint8("syncid", cfg.SyncID))
		d.setStandby()
		return nil
	}
	ss, v := syncSettings(d.cfg.Settings)
	workers := d.pipe.Workers()
	snd, err := lvssync.NewSender(cfg, lvssync.SenderOptions{
		Producers: workers, QueueLen: syncQueueLen(d.cfg.Settings, workers), V0: v == 0,
	})
	if err != nil {
		return err
	}
	s.sender = snd
	ps := make([]*lvssync.Producer, max(workers, 1))
	for i := range ps {
		ps[i] = snd.Producer(i)
	}
	d.conns.SetSync(&ss, v)
	d.pipe.SetSyncMaster(ps)
	d.log.Info("sync daemon started", zap.String("state", "master"), zap.String("mcast_if", cfg.McastIfn), zap.Uint8("syncid", cfg.SyncID))
	if !d.pipe.Standby() {
		d.announce()
	}
	return nil
}

// StopSyncDaemon stops the master or backup sync daemon.
func (d *Daemon) StopSyncDaemon(st lvssync.State) error {
	s := &d.syncd
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case lvssync.Master:
		if s.sender == nil {
			return control.ErrNoDaemon
		}
		d.pipe.SetSyncMaster(nil)
		d.conns.SetSync(nil, 0)
		err := s.sender.Close()
		s.sender = nil
		d.log.Info("sync daemon stopped", zap.String("state", "master"))
		return err
	case lvssync.Backup:
		if s.recv == nil {
			return control.ErrNoDaemon
		}
		err := s.recv.Close()
		s.recv = nil
		d.log.Info("sync daemon stopped", zap.String("state", "backup"))
		d.setStandby()
		return err
	}
	return control.ErrNoDaemon
}

// SyncDaemons are the running daemons' configurations.
func (d *Daemon) SyncDaemons() (master, backup *lvssync.Config) {
	s := &d.syncd
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sender != nil {
		c := s.sender.Config()
		master = &c
	}
	if s.recv != nil {
		c := s.recv.Config()
		backup = &c
	}
	return master, backup
}

// stopSyncDaemons stops whatever runs (shutdown).
func (d *Daemon) stopSyncDaemons() {
	_ = d.StopSyncDaemon(lvssync.Master)
	_ = d.StopSyncDaemon(lvssync.Backup)
}

// setStandby applies backup_only: standby while it is set and the backup
// daemon runs. Leaving standby announces the VIPs. s.mu held.
func (d *Daemon) setStandby() {
	on := d.cfg.Settings.Get(ipvs.SysBackupOnly) != 0 && d.syncd.recv != nil
	if on == d.pipe.Standby() {
		return
	}
	d.pipe.SetStandby(on)
	d.log.Info("backup_only", zap.Bool("standby", on))
	d.hostAddrsChanged() // the ARP answers follow
	if !on {
		d.announce()
	}
}

// announce sends the gratuitous ARPs of a director becoming master for
// the VIPs it answers ARP for.
func (d *Daemon) announce() {
	d.mu.Lock()
	addrs := append([]netip.Addr(nil), d.arpAddrs...)
	arp := d.arp
	d.mu.Unlock()
	if len(addrs) == 0 || arp == nil {
		return
	}
	burst := func() {
		for range GARPRepeat {
			for _, a := range addrs {
				if err := arp.Gratuitous(a); err != nil {
					d.log.Warn("gratuitous ARP", zap.Stringer("vip", a), zap.Error(err))
					return
				}
			}
		}
	}
	burst()
	time.AfterFunc(GARPDelay, burst)
}

// syncConn is the backup's lvssync.Handler: the record's service and local
// real server (ip_vs_find_dest: by service, then by address and port; a
// port-0 record matches on the address), then the table's
// ip_vs_proc_conn. A record without a local real server is skipped and
// counted (the kernel keeps such a connection unbound; gvs keeps no
// unbound connections).
func (d *Daemon) syncConn(c *lvssync.Conn) {
	s := &d.syncd
	dest := d.syncDest(c)
	if dest == nil {
		s.noDest.Add(1)
		return
	}
	th := d.cfg.Settings.Get2(ipvs.SysSyncThreshold)
	sc := conntrack.SyncedConn{
		Proto: ipvs.Protocol(c.Protocol),
		CAddr: c.CAddr, VAddr: c.VAddr, DAddr: c.DAddr,
		CPort: c.CPort, VPort: c.VPort, DPort: c.DPort,
		Flags: c.Flags, State: c.State,
		Timeout: time.Duration(c.Timeout) * time.Second,
		InPkts:  uint32(th[0]),
	}
	res, err := d.conns.Synced(&sc, dest, d.Clock())
	if err != nil {
		s.refused.Add(1)
		return
	}
	s.applied.Add(1)
	if res != conntrack.SyncUpdated {
		s.created.Add(1)
	}
}

// syncDest finds the local real server of a record.
func (d *Daemon) syncDest(c *lvssync.Conn) *ipvs.Dest {
	proto := ipvs.Protocol(c.Protocol)
	var svc *ipvs.Service
	if c.Flags&lvssync.FlagTemplate != 0 && c.Fwmark == 0 && proto == 0 && c.VAddr.Is4() {
		// A version 0 fwmark template: the mark is in the virtual address.
		a := c.VAddr.As4()
		svc = d.table.Lookup(proto, c.VAddr, c.VPort, uint32(a[0])<<24|uint32(a[1])<<16|uint32(a[2])<<8|uint32(a[3]))
	} else {
		svc = d.table.Lookup(proto, c.VAddr, c.VPort, c.Fwmark)
	}
	if svc == nil {
		return nil
	}
	for _, dst := range svc.Dests() {
		if dst.Addr == c.DAddr && (dst.Port == c.DPort || c.DPort == 0) {
			return dst
		}
	}
	return nil
}

var _ control.SyncDaemons = (*Daemon)(nil)
