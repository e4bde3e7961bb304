package forwarder

import "gvs/rewrite"

// Action is what the pipeline decided for a frame.
type Action uint8

const (
	// Drop: the frame goes nowhere; Result.Reason says why (a counter).
	Drop Action = iota
	// Transmit: send Result.Frame on Result.Link (forwarded traffic).
	Transmit
	// Reply: the director answers with Result.Frame (an ICMP error or a
	// TCP RST) on Result.Link: the link the frame arrived on, except for
	// an ICMP error relayed to a client (TunICMP), which leaves towards it.
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
	// a known connection. IPVS leaves it to the host's TCP, which answers
	// with a RST: gvs sends that RST (Reply; see Reset), except to a RST.
	NoConn
	// DestRemoved: a packet of a connection whose real server was deleted
	// (IPVS drops these while expire_nodest_conn is 0).
	DestRemoved
	// TableFull: the connection table is at capacity.
	TableFull
	// Fragment: an IPv4 fragment (TCP or UDP, to a VIP or passing
	// through) taken into reassembly, or a duplicate of one ignored; the
	// datagram takes the walk with its last fragment (defrag.go).
	Fragment
	// FragNeeded: a DF packet too big for the egress link; ICMP
	// fragmentation needed went back (Reply), as IPVS's
	// ensure_mtu_is_adequate (not for a forwarded ICMP error, nor through
	// a tunnel while pmtu_disc is 0: those are fragmented).
	FragNeeded
	// TooBig: a packet too big for the egress link that cannot be
	// fragmented (more than rewrite.MaxFragments fragments), or a tunnel
	// whose MTU less the outer header is below 68 (IPVS drops those).
	TooBig
	// NoRoute: no next hop or neighbour MAC for the destination. The
	// kernel would answer a real server it cannot reach with ICMP host
	// unreachable (dst_link_failure -> ipv4_link_failure) — but only
	// once neighbour resolution has failed: while it runs, the neighbour
	// layer queues the packet. A live Env answers "no" in both cases
	// and cannot tell them apart, so gvs drops silently in both.
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
	// Reset counts the TCP RSTs the pipeline sent in the host's stead
	// (the Reply's own reason says why: NoConn, FTPData, FTPPort).
	Reset
	// ResetLimited counts RSTs the worker's rate limit suppressed (the
	// frame is dropped).
	ResetLimited
	// FTPData: a first packet from client port 20, which IPVS never
	// schedules ("Not scheduling FTPDATA"): the host's stack answers (TCP:
	// RST, UDP: port unreachable).
	FTPData
	// FTPPort: a packet to another port of a non-persistent port-21 TCP
	// service's VIP (found by the FTP fallback of the service lookup),
	// which IPVS leaves to the host's stack (RST).
	FTPPort
	// BadL4Checksum: a segment the host's stack would answer (RST, port
	// unreachable) has a bad TCP or UDP checksum: the stack drops it.
	BadL4Checksum
	// TunICMP: an ICMP error about one of the director's IPIP packets was
	// relayed to the client, as from the VIP (Reply).
	TunICMP
	// TunICMPNoDF: fragmentation needed about an IPIP packet whose client
	// packet had no DF: consumed, nothing relayed (IPVS's ignore_ipip).
	TunICMPNoDF
	// ICMPLimited counts ICMP errors the kernel's rate limits suppressed
	// (icmp_msgs_per_sec/icmp_msgs_burst and the per-destination
	// icmp_ratelimit; see allowICMP): the frame is dropped with the
	// Result's own reason (TTLExceeded, NoDest...).
	ICMPLimited
	// MartianSource: a source address the kernel's routing drops before
	// IPVS sees the packet (ip_route_input_slow's martian_source): 0/8,
	// 127/8, 224/4 (multicast), 255.255.255.255, or one of the director's
	// own addresses (its link addresses, the VIPs).
	MartianSource
	// MartianMAC: a frame whose source MAC is a group (multicast or
	// broadcast) address, which no station sends.
	MartianMAC
	// NATNoConn: a packet from a NAT real server's address and port that
	// matched no connection, answered with ICMP port unreachable to the
	// real server (Reply) because nat_icmp_send is set (ip_vs_out).
	NATNoConn
	// Fragmented counts packets the pipeline sent as IPv4 fragments
	// (too big for the egress MTU, no DF, as the kernel's ip_fragment; the
	// Result's reason is none, the frames are Result.Frags).
	Fragmented
	// FragTimeout: a datagram not reassembled within ipfrag_time (30 s);
	// with its first fragment in, ICMP time exceeded (fragment
	// reassembly time exceeded) went back (Reply), as ip_expire.
	FragTimeout
	// FragEvicted counts datagrams whose reassembly a new datagram ended
	// because every one of the worker's slots was taken.
	FragEvicted
	// FragBad: a fragment that discards its whole datagram as the
	// kernel's ip_frag_queue does (an overlap, a length at odds with the
	// last fragment's, a zero-length fragment, beyond 65535 bytes) or as
	// gvs's bound does (more than 64 fragments).
	FragBad
	// NumReasons is the number of reasons, for counter arrays.
	NumReasons
)

var ownReasonNames = [...]string{
	"ttl_exceeded", "no_dest", "no_conn", "dest_removed", "table_full",
	"fragment", "frag_needed", "too_big", "no_route", "no_reply", "rewrite_failed",
	"tun_type_unsupported", "reset", "reset_limited", "ftp_data", "ftp_port",
	"bad_l4_checksum", "tun_icmp", "tun_icmp_no_df", "icmp_limited",
	"martian_source", "martian_mac", "nat_no_conn", "fragmented",
	"frag_timeout", "frag_evicted", "frag_bad",
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
