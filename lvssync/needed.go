package lvssync

import "time"

// HZ is the tick rate of the times the sync-needed rule works in: one tick
// is a millisecond, as jiffies on a HZ=1000 kernel.
const HZ = 1000

// Ticks converts a duration to ticks.
func Ticks(d time.Duration) uint64 { return uint64(d / time.Millisecond) }

// SyncSettings are the sysctls of the sync-needed rule.
type SyncSettings struct {
	Threshold     int    // sync_threshold[0] (default 3)
	Period        int    // sync_threshold[1], "sync_period" (default 50)
	RefreshPeriod uint64 // sync_refresh_period in ticks (default 0)
	Retries       int    // sync_retries, 0..3 (default 0)
	PersistMode   bool   // sync_persist_mode
}

// DefaultSyncSettings are the kernel's defaults.
var DefaultSyncSettings = SyncSettings{Threshold: 3, Period: 50}

// ConnFacts are what the rule reads of a connection (or template).
type ConnFacts struct {
	Protocol uint8
	Flags    uint32
	// State and OldState are the kernel's state numbers (TCPEstablished,
	// ...); OldState is the state at the last sync (cp->old_state).
	State, OldState uint16
	Timeout         uint64 // the connection's current timeout, in ticks
	// SyncEndtime is cp->sync_endtime: the tick the last sync's timeout
	// ends at, rounded down to a multiple of 4, with the number of retries
	// so far in the low 2 bits. 0 for a new connection.
	SyncEndtime uint64
	// InPersistence: the connection is controlled (directly or through its
	// controller) by a persistence template.
	InPersistence bool
}

// Verdict is the rule's answer.
type Verdict struct {
	// Sync: send a record. The caller then stores OldState = State and
	// SyncEndtime = Endtime in the connection. If it stores SyncEndtime
	// with compare-and-swap (from ConnFacts.SyncEndtime) and loses, it
	// sends the record only when Force is set (the kernel's cmpxchg).
	Sync    bool
	Force   bool
	Endtime uint64
}

// Needed is ip_vs_sync_conn_needed for a connection that saw its pkts-th
// incoming packet at tick now (pkts is the connection's in_pkts after the
// increment; for a connection flagged ONE_PACKET the kernel passes the
// threshold). It also applies the check ip_vs_sync_conn makes first: a
// ONE_PACKET connection is never synced.
//
// After a connection, the kernel considers the template controlling it, with
// pkts = ++template.in_pkts (or the threshold when the controller is not a
// template): in version 1 always, in version 0 only when the connection
// itself was synced. The caller makes that second call.
//
// Needed allocates nothing and reads no clock.
func Needed(s *SyncSettings, c *ConnFacts, pkts int, now uint64) Verdict {
	if c.Flags&FlagOnePacket != 0 {
		return Verdict{}
	}
	orig := c.SyncEndtime
	n := (now + c.Timeout) &^ 3
	force := false
	switch {
	case c.Flags&FlagTemplate != 0:
	case s.PersistMode && c.InPersistence:
		return Verdict{}
	case c.Protocol == ProtoTCP:
		const syncable = 1<<TCPEstablished | 1<<TCPFinWait | 1<<TCPClose | 1<<TCPCloseWait | 1<<TCPTimeWait
		if c.State >= 32 || (1<<c.State)&syncable == 0 {
			return Verdict{}
		}
		force = c.State != c.OldState
		if force && c.State != TCPEstablished {
			return Verdict{Sync: true, Force: true, Endtime: n}
		}
	case c.Protocol == ProtoSCTP:
		const syncable = 1<<SCTPEstablished | 1<<SCTPShutdownSent | 1<<SCTPShutdownReceived | 1<<SCTPShutdownAckSent | 1<<SCTPClosed
		if c.State >= 32 || (1<<c.State)&syncable == 0 {
			return Verdict{}
		}
		force = c.State != c.OldState
		if force && c.State != SCTPEstablished {
			return Verdict{Sync: true, Force: true, Endtime: n}
		}
	}

	if r := s.RefreshPeriod; r > 0 {
		diff := int64(n - orig)
		if diff < 0 {
			diff = -diff
		}
		minDiff := max(c.Timeout>>1, 10*HZ)
		if diff < int64(min(r, minDiff)) {
			retries := int(orig & 3)
			if retries >= s.Retries {
				return Verdict{}
			}
			// time_before(now, orig - timeout + refresh/8)
			if int64(now-(orig-c.Timeout+r>>3)) < 0 {
				return Verdict{}
			}
			n |= uint64(retries + 1)
		}
	}
	if s.Period > 0 {
		if c.Flags&FlagTemplate == 0 && pkts%s.Period != s.Threshold {
			return Verdict{}
		}
	} else if s.RefreshPeriod == 0 && pkts != s.Threshold {
		return Verdict{}
	}
	return Verdict{Sync: true, Force: force, Endtime: n}
}
