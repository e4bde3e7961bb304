// The connection sync hook (lvssync): the master's records and the
// backup_only switch.

package forwarder

import (
	"sync/atomic"

	"gvs/conntrack"
	"gvs/lvssync"
)

// syncHook is the pipeline's part of the sync daemons, set by the daemon
// and read by every worker without a lock.
type syncHook struct {
	// producers are the master sync daemon's queues, one per worker (nil:
	// no master runs).
	producers atomic.Pointer[[]*lvssync.Producer]
	// standby is backup_only while a backup sync daemon runs: the
	// director forwards nothing (ip_vs_in_hook and ip_vs_out_hook accept
	// every packet untouched).
	standby atomic.Bool
}

// syncScratch is a worker's room for building records.
type syncScratch struct {
	rec  lvssync.Conn
	tmpl conntrack.Conn
}

// SetSyncMaster gives the workers the master sync daemon's producer queues
// (Sender.Producer(i) for worker i; nil: no master). The connection table
// decides when a record is due (conntrack.Table.SetSync).
func (p *Pipeline) SetSyncMaster(producers []*lvssync.Producer) {
	if producers == nil {
		p.sync.producers.Store(nil)
		return
	}
	p.sync.producers.Store(&producers)
}

// SetStandby switches the director off (on: backup_only is set and the
// backup sync daemon runs): every frame is passed to the kernel untouched,
// as IPVS's hooks do then.
func (p *Pipeline) SetStandby(on bool) { p.sync.standby.Store(on) }

// Standby reports whether the director is switched off by backup_only.
func (p *Pipeline) Standby() bool { return p.sync.standby.Load() }

// Workers is the number of workers made so far.
func (p *Pipeline) Workers() int { return int(p.workers.Load()) }

// syncConn queues the records the input packet that just filled c makes
// due: the connection's (c.Sync, decided by the table under its lock) and
// its controlling template's (ip_vs_sync_conn's second step; for a
// one-packet connection, never synced itself, the only one). A full queue
// drops the record and counts it (lvssync.Producer); nothing blocks and
// nothing allocates.
func (w *Worker) syncConn(c *conntrack.Conn, now int64) {
	if !c.Sync && c.Flags&conntrack.FlagControlled == 0 {
		return
	}
	ps := w.p.sync.producers.Load()
	if ps == nil || w.id >= len(*ps) {
		return
	}
	pr := (*ps)[w.id]
	sc := &w.sync
	if c.Sync {
		c.Record(now, &sc.rec)
		pr.Enqueue(&sc.rec)
	}
	if c.Flags&conntrack.FlagControlled != 0 && w.p.conns.SyncTemplate(c, now, &sc.tmpl) {
		sc.tmpl.Record(now, &sc.rec)
		pr.Enqueue(&sc.rec)
	}
}
