// The director's own answers: ICMP errors (time exceeded, fragmentation
// needed, port unreachable) and, for packets IPVS leaves to the host's
// stack, the RST or port unreachable that stack would send (rate-limited).

package forwarder

import (
	"time"

	"gvs/rewrite"
)

// The RST rate limit of a worker: resetBurst RSTs at once, then one per
// resetInterval.
const (
	resetInterval = int64(time.Millisecond)
	resetBurst    = 64
)

// allowReset takes a token from the worker's RST bucket (a GCRA: no
// state but one time).
func (w *Worker) allowReset(now int64) bool {
	tat := max(w.rstTAT, now)
	if tat-now > (resetBurst-1)*resetInterval {
		return false
	}
	w.rstTAT = tat + resetInterval
	return true
}

// localStack answers a packet IPVS leaves to the host's stack (NF_ACCEPT)
// as that stack would with nothing listening on the VIP: TCP with a RST
// (none to a RST), UDP with ICMP port unreachable — after checking the
// transport checksum, as the stack does (a frame whose checksum is only
// partial, pk.partial, is taken as good). In gvsd the host never gets
// the VIP's traffic (ingress drops), so the pipeline sends the answer.
// why is the Result's reason.
func (w *Worker) localStack(pk *packet, why Reason) *Result {
	p := &w.parsed
	frame, link := pk.frame(), pk.link
	if !pk.partial && !rewrite.L4ChecksumOK(frame, p) {
		return w.drop(BadL4Checksum)
	}
	if p.Proto == rewrite.ProtoUDP {
		return w.icmpReply(pk, why) // port unreachable
	}
	if p.TCPFlags&rewrite.TCPRst != 0 {
		return w.drop(why)
	}
	if !w.allowReset(pk.now) {
		w.Counters.Reasons[ResetLimited].Add(1)
		return w.drop(why)
	}
	m := rewrite.MACs{Dst: [6]byte(frame[6:12]), Src: w.p.env.Links()[link].MAC}
	out, ok := rewrite.TCPReset(w.scratch[:], frame, p, m)
	if !ok {
		w.Counters.Reasons[NoReply].Add(1)
		return w.drop(why)
	}
	w.Counters.Reasons[Reset].Add(1)
	r := &w.res
	*r = Result{Action: Reply, Link: link, Frame: out, Reason: why}
	return w.count(r)
}

// icmpReply answers the frame's sender with an ICMP error from the address
// the frame was sent to (the VIP), as the kernel does for a local address.
func (w *Worker) icmpReply(pk *packet, why Reason) *Result {
	w.res = Result{}
	return w.icmpError(pk, why, &w.res, w.parsed.Dst, 0)
}

// icmpError answers the frame's sender, on the link it came in on, with the
// ICMP error for why — time exceeded (TTLExceeded), fragmentation needed
// with mtu (FragNeeded), port unreachable (NoDest) — sent from src. When the
// rules forbid an error (about an ICMP error, a broadcast...) the frame is
// dropped and NoReply counted too.
func (w *Worker) icmpError(pk *packet, why Reason, res *Result, src [4]byte, mtu int) *Result {
	p := &w.parsed
	frame, link := pk.frame(), pk.link
	m := rewrite.MACs{Dst: [6]byte(frame[6:12]), Src: w.p.env.Links()[link].MAC}
	var out []byte
	var ok bool
	switch why {
	case TTLExceeded:
		out, ok = rewrite.TimeExceeded(w.scratch[:], frame, p, src, m)
	case FragNeeded:
		out, ok = rewrite.FragNeeded(w.scratch[:], frame, p, src, uint16(mtu), m)
	default: // NoDest
		out, ok = rewrite.PortUnreachable(w.scratch[:], frame, p, src, m)
	}
	res.Reason = why
	if !ok {
		res.Action = Drop
		w.Counters.Reasons[NoReply].Add(1)
		return w.count(res)
	}
	res.Action, res.Link, res.Frame = Reply, link, out
	return w.count(res)
}

// linkAddr is the director's own address on a link.
func (w *Worker) linkAddr(link int) [4]byte {
	return w.p.env.Links()[link].Prefix.Addr().As4()
}
