package conntrack

// InLive is In for IPVS's ip_vs_in order, which checks the server status
// before the state machine: when the live connection with key k is bound
// to a dest that is not available (deleted from its service), the packet
// neither moves the state nor re-arms the timer nor counts (IPVS drops it
// with only a reference put) and the connection is left as it was (the
// caller may Remove it: expire_nodest_conn). Otherwise it is In.
//
// found reports a live connection (c is filled from it); avail that its
// dest was available and the packet was applied. One lookup, one shard
// lock, as In.
func (t *Table) InLive(k InKey, tcpFlags uint8, now int64, c *Conn) (found, avail bool) {
	return t.in(k, tcpFlags, now, c, true)
}
