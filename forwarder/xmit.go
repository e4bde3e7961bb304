// Transmission: the TTL and MTU checks, the rewrite for the forwarding
// method and the Result of a frame that leaves.

package forwarder

import (
	"gvs/conntrack"
	"gvs/ipvs"
	"gvs/rewrite"
)

// xmitIn sends a client's packet (described by w.parsed) to the real server
// of connection c with c's method. tx is the flow's cached transmit plan
// (nil: none).
func (w *Worker) xmitIn(pk *packet, c *conntrack.Conn, tx *txPlan) *Result {
	p := &w.parsed
	frame := pk.frame()
	if p.TTL <= 1 {
		return w.icmpError(pk, TTLExceeded, w.connResult(pk, c, false), p.Dst, 0)
	}
	// A cached flow's plan is checked here, inline (plan is too big to
	// inline; the call would cost more than the check).
	ok := true
	if g := w.p.gen; tx == nil || g == nil || tx.gen != g.Generation()+1 {
		if tx, ok = w.plan(tx, c.DAddr); !ok {
			return w.connDrop(pk, c, false, NoRoute)
		}
	}
	mtu := tx.mtu
	if c.Method == ipvs.Tunnel {
		mtu -= rewrite.TUNHeadroom // the outer IPv4 header
	}
	if ipLen := p.End - p.L3; ipLen > mtu {
		if !p.DF {
			return w.connDrop(pk, c, false, TooBig)
		}
		return w.icmpError(pk, FragNeeded, w.connResult(pk, c, false), p.Dst, mtu)
	}
	out := frame[:p.End] // Ethernet padding is not forwarded
	switch c.Method {
	case ipvs.Masq:
		ok = rewrite.NATIn(frame, p, c.DAddr.As4(), c.DPort, tx.macs, pk.partial)
	case ipvs.Tunnel:
		if c.Dest.TunType() != ipvs.TunIPIP {
			return w.connDrop(pk, c, false, TunTypeUnsupported)
		}
		w.ipid++
		out, ok = rewrite.TUN(pk.buf[:pk.off+pk.n], pk.off, p, tx.src, c.DAddr.As4(), w.ipid, tx.macs, pk.partial)
	default: // Route, Local
		ok = rewrite.DR(frame, p, tx.macs, pk.partial)
	}
	if !ok {
		return w.connDrop(pk, c, false, RewriteFailed)
	}
	return w.transmit(pk, c, false, tx.link, out)
}

// xmitOut sends a NAT reply to the client as coming from the VIP. tx is
// the flow's cached transmit plan (nil: none).
func (w *Worker) xmitOut(pk *packet, c *conntrack.Conn, tx *txPlan) *Result {
	p := &w.parsed
	frame := pk.frame()
	if p.TTL <= 1 {
		return w.icmpError(pk, TTLExceeded, w.connResult(pk, c, true), w.linkAddr(pk.link), 0)
	}
	ok := true
	if g := w.p.gen; tx == nil || g == nil || tx.gen != g.Generation()+1 { // as in xmitIn
		if tx, ok = w.plan(tx, c.CAddr); !ok {
			return w.connDrop(pk, c, true, NoRoute)
		}
	}
	if ipLen := p.End - p.L3; ipLen > tx.mtu {
		if !p.DF {
			return w.connDrop(pk, c, true, TooBig)
		}
		return w.icmpError(pk, FragNeeded, w.connResult(pk, c, true), w.linkAddr(pk.link), tx.mtu)
	}
	if !rewrite.NATOut(frame, p, c.VAddr.As4(), c.VPort, tx.macs, pk.partial) {
		return w.connDrop(pk, c, true, RewriteFailed)
	}
	return w.transmit(pk, c, true, tx.link, frame[:p.End])
}

// connResult sets the worker's Result to describe connection c of packet
// pk (not yet counted: the caller decides the action).
func (w *Worker) connResult(pk *packet, c *conntrack.Conn, out bool) *Result {
	w.res = Result{Dest: c.Dest, State: c.State, Method: c.Method, New: pk.isNew, Out: out}
	return &w.res
}

// connDrop drops a frame of connection c for reason r.
func (w *Worker) connDrop(pk *packet, c *conntrack.Conn, out bool, r Reason) *Result {
	res := w.connResult(pk, c, out)
	res.Action, res.Reason = Drop, r
	return w.count(res)
}

// transmit is the Result of a frame of connection c leaving on link: the
// worker's Result written once, and counted.
func (w *Worker) transmit(pk *packet, c *conntrack.Conn, out bool, link int, frame []byte) *Result {
	// Field by field: a composite literal is built on the stack and
	// copied, and the copy's wide loads of its narrow stores stall. The
	// counter's locked add comes last: it drains the stores, so that the
	// caller's copy of the Result reads them from the cache.
	r := &w.res
	r.Action, r.Link, r.Frame, r.Reason = Transmit, link, frame, ReasonNone
	r.Dest, r.State, r.Method, r.New, r.Out = c.Dest, c.State, c.Method, pk.isNew, out
	w.Counters.Actions[Transmit].Add(1)
	return r
}
