package conntrack

import (
	"sync/atomic"

	"gvs/ipvs"
)

// SeenFunc reports the latest time (on the table's clock) a packet of the
// connection c was forwarded without going through the table, by a
// forwarder that keeps the connection's timer running on its own and
// re-arms it only when it comes due (the daemon's XDP fast path); ok is
// false when there is none. It is called by Walk, with no lock of the
// table held, and must not keep c.
type SeenFunc func(c *Conn) (at int64, ok bool)

// SetSeen makes Walk list the expiry of an ESTABLISHED TCP or UDP
// connection as at least the time fn reports plus the state's timeout:
// what the connection's timer would say had every packet re-armed it, as
// each packet re-arms it in the kernel (ip_vs_conn_put). nil removes fn.
func (t *Table) SetSeen(fn SeenFunc) {
	if fn == nil {
		t.seenFn.Store(nil)
		return
	}
	t.seenFn.Store(&fn)
}

// seenExpiry raises c's expiry to the last packet fn reports plus the
// timeout of c's state (control plane: Walk).
func (t *Table) seenExpiry(fn SeenFunc, c *Conn) {
	if c.Flags&FlagTemplate != 0 {
		return
	}
	var timeout int64
	switch {
	case c.Proto == ipvs.ProtoTCP && c.State == StateEstablished:
		timeout = t.timeouts.tcp[StateEstablished].Load()
	case c.Proto != ipvs.ProtoTCP && c.State == StateUDP:
		timeout = t.timeouts.udp.Load()
	default:
		return
	}
	if at, ok := fn(c); ok && at+timeout > c.Expires {
		c.Expires = at + timeout
	}
}

// Changes is a count that grows whenever connections are removed or
// changed other than by their own packets and timers: Remove, Flush,
// RemoveDest, drop_entry, a sync record for an existing connection. A
// caller that keeps connections' timers running on its own (the XDP fast
// path) looks its connections up again when it changed.
func (t *Table) Changes() uint64 { return t.changes.Load() }

// seenState is the Table's for SetSeen and Changes.
type seenState struct {
	seenFn  atomic.Pointer[SeenFunc]
	changes atomic.Uint64
}
