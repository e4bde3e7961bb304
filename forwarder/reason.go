package forwarder

import "gvs/rewrite"

// Action is what the pipeline decided for a frame.
type Action uint8

const (
	// Drop: the frame goes nowhere; Result.Reason says why (a counter).
	Drop Action = iota
	// Transmit: send Result.Frame on Result.Link (forwarded traffic).
	Transmit
	// Reply: the director answers the sender with Result.Frame (an ICMP
	// error) on Result.Link, the link the frame arrived on.
	Reply
	// Pass: not gvs's traffic; leave it to the host's kernel.
	Pass
	// Control: an ARP frame, for the control path (ARP replies for VIPs).
	Control
	numActions
)

var actionNames = [numActions]string{"drop", "transmit", "reply", "pass", "control"}

func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return "unknown"
}

// Reason names why a frame was dropped or answered. The first values are
// the parser's (rewrite.Reason, same numbers and names); the rest are the
// pipeline's own. Every reason is a per-worker counter.
type Reason uint8

// ReasonNone: no reason (a frame that was not dropped).
const ReasonNone Reason = 0

// The pipeline's reasons, numbered after the parser's.
const (
	// TTLExceeded: TTL <= 1; an ICMP time exceeded went back (Reply).
	TTLExceeded Reason = Reason(rewrite.NumReasons) + iota
	// NoDest: a service with no available real server; ICMP port
	// unreachable went back (Reply), as ip_vs_leave does.
	NoDest
	// NoConn: a TCP segment to a service that is neither a SYN nor part of
	// a known connection.
	NoConn
	// DestRemoved: a packet of a connection whose real server was deleted
	// (IPVS drops these while expire_nodest_conn is 0).
	DestRemoved
	// TableFull: the connection table is at capacity.
	TableFull
	// Fragment: an IPv4 fragment addressed to a VIP (gvs does not
	// reassemble; the daemon's fanout defragments before delivery).
	Fragment
	// FragNeeded: a DF packet too big for the egress link; ICMP
	// fragmentation needed went back (Reply).
	FragNeeded
	// TooBig: a packet without DF too big for the egress link (gvs does not
	// fragment).
	TooBig
	// NoRoute: no next hop or neighbour MAC for the destination.
	NoRoute
	// NoReply: the pipeline wanted to send an ICMP error but the rules
	// forbid one (about an ICMP error, a broadcast...).
	NoReply
	// RewriteFailed: a rewrite refused the frame (should not happen after
	// parsing; counted to be seen).
	RewriteFailed
	// TunTypeUnsupported: a tunnel real server configured for GUE or GRE
	// (--tun-type); gvs encapsulates IPIP only.
	TunTypeUnsupported
	// NumReasons is the number of reasons, for counter arrays.
	NumReasons
)

var ownReasonNames = [...]string{
	"ttl_exceeded", "no_dest", "no_conn", "dest_removed", "table_full",
	"fragment", "frag_needed", "too_big", "no_route", "no_reply", "rewrite_failed",
	"tun_type_unsupported",
}

// String is the reason's counter name (snake_case, stable).
func (r Reason) String() string {
	switch {
	case r == ReasonNone:
		return ""
	case r < Reason(rewrite.NumReasons):
		return rewrite.Reason(r).String()
	case r < NumReasons:
		return ownReasonNames[r-Reason(rewrite.NumReasons)]
	}
	return "unknown"
}
