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
			if u := w.p.unreach; u != nil && u.Unreachable(c.DAddr) {
				// __ip_vs_get_out_rt's dst_link_failure: ICMP host
				// unreachable to the client, from the VIP.
				return w.icmpError(pk, HostUnreach, w.connResult(pk, c, false), p.Dst, 0)
			}
			return w.connDrop(pk, c, false, NoRoute)
		}
	}
	mtu, frag := tx.mtu, false
	if c.Method == ipvs.Tunnel {
		mtu -= rewrite.TUNHeadroom // the outer IPv4 header
		if mtu < 68 {
			return w.connDrop(pk, c, false, TooBig) // __ip_vs_get_out_rt
		}
	}
	if ipLen := p.End - p.L3; ipLen > mtu {
		if w.mustFragNeeded(pk, c) {
			return w.icmpError(pk, FragNeeded, w.connResult(pk, c, false), p.Dst, mtu)
		}
		frag = true
	} else if pk.fragMax != 0 {
		frag = true // a reassembled datagram: ip_finish_output fragments it
	}
	out := frame[:p.End] // Ethernet padding is not forwarded
	switch c.Method {
	case ipvs.Masq:
		ok = rewrite.NATIn(frame, p, c.DAddr.As4(), c.DPort, tx.macs, pk.partial)
	case ipvs.Tunnel:
		if c.Dest.TunType() != ipvs.TunIPIP {
			return w.connDrop(pk, c, false, TunTypeUnsupported)
		}
		out, ok = rewrite.TUN(pk.buf[:pk.off+pk.n], pk.off, p, tx.src, c.DAddr.As4(), w.nextID(), tx.macs, pk.partial)
		if ok && p.DF && w.p.set.Get(ipvs.SysPmtuDisc) == 0 {
			// ip_vs_tunnel_xmit copies the inner DF only with pmtu_disc.
			rewrite.ClearDF(rewrite.IPv4(out[p.L3:]))
		}
	default: // Route, Local
		ok = rewrite.DR(frame, p, tx.macs, pk.partial)
	}
	if !ok {
		return w.connDrop(pk, c, false, RewriteFailed)
	}
	if frag {
		return w.fragment(w.connResult(pk, c, false), tx.link, out, tx.mtu)
	}
	return w.transmit(pk, c, false, tx.link, out)
}

// mustFragNeeded reports whether a client's packet of connection c too big
// for the egress MTU gets ICMP fragmentation needed, as IPVS's
// ensure_mtu_is_adequate decides: with DF, except an ICMP error forwarded
// for its connection, and except through a tunnel while pmtu_disc is 0.
// Any other is fragmented (IPVS sends with ignore_df).
func (w *Worker) mustFragNeeded(pk *packet, c *conntrack.Conn) bool {
	if !w.parsed.DF || pk.related {
		return false
	}
	return c.Method != ipvs.Tunnel || w.p.set.Get(ipvs.SysPmtuDisc) != 0
}

// fragment sends out, the rewritten packet (behind a link header of
// w.parsed.L3 bytes), as IPv4 fragments of at most mtu bytes on link, as
// the kernel's ip_fragment does after IPVS: the Result res with Frags. A
// packet that needs more than rewrite.MaxFragments fragments is dropped
// (TooBig).
//
// A datagram the pipeline reassembled (pk.fragMax) always leaves as
// fragments, as ip_finish_output sends every packet with a frag_max_size
// through ip_fragment: ip_do_fragment cuts it at the smaller of the MTU
// and its largest fragment's size, and keeps DF on the fragments when the
// reassembled datagram has it (IPSKB_FRAG_PMTU: the largest fragment had
// DF).
func (w *Worker) fragment(res *Result, link int, out []byte, mtu int) *Result {
	df := false
	if fm := w.pkt.fragMax; fm != 0 {
		mtu, df = min(mtu, fm), w.parsed.DF
	}
	n, ok := rewrite.FragmentDF(w.large.fragBuf[:], out, w.parsed.L3, mtu, w.large.frags[:], df)
	if !ok {
		res.Action, res.Reason = Drop, TooBig
		return w.count(res)
	}
	w.Counters.Reasons[Fragmented].Add(1)
	res.Action, res.Link, res.Frame, res.Frags = Transmit, link, w.large.frags[0], uint8(n)
	return w.count(res)
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
	frag := false
	if ipLen := p.End - p.L3; ipLen > tx.mtu {
		if p.DF {
			return w.icmpError(pk, FragNeeded, w.connResult(pk, c, true), w.linkAddr(pk.link), tx.mtu)
		}
		frag = true
	} else if pk.fragMax != 0 {
		frag = true // as in xmitIn
	}
	if !rewrite.NATOut(frame, p, c.VAddr.As4(), c.VPort, tx.macs, pk.partial) {
		return w.connDrop(pk, c, true, RewriteFailed)
	}
	if frag {
		return w.fragment(w.connResult(pk, c, true), tx.link, frame[:p.End], tx.mtu)
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
	r.Dest, r.State, r.Method, r.New, r.Out, r.Frags = c.Dest, c.State, c.Method, pk.isNew, out, 0
	w.Counters.Actions[Transmit].Add(1)
	return r
}
