// Package rewrite is the per-packet header work of gvs: views over frame
// bytes, a decoder that never allocates, the in-place rewrites of the IPVS
// forwarding methods, and builders for the ICMP errors a router sends.
//
// # Views
//
// Ethernet, IPv4, TCP, UDP and ICMPv4 are named []byte types with getters
// and setters at fixed offsets (the RFC diagrams sit above the offset
// constants). They do not check bounds; Decode validates a frame once and
// the views are then used on the offsets it reports.
//
// # Decoding
//
// Parsed.Decode fills a caller-owned Parsed from an Ethernet frame and
// returns a Verdict: IP (IPv4, described by Parsed), ARP (for the control
// path), NotIP (leave it to the kernel) or Malformed (drop and count
// Parsed.Reason, a Reason whose String is a stable counter name).
//
// # Rewrites
//
// All rewrites change the frame in place, decrement the TTL first (and do
// nothing but return false when it is <= 1, see DecTTL) and keep every
// checksum valid with RFC 1624 incremental updates from package checksum:
//
//   - DR: MAC addresses only (IPVS "Route", ipvsadm -g).
//   - NATIn / NATOut: destination or source address and port (IPVS "Masq",
//     -m), IPv4 and TCP/UDP checksums updated; a UDP datagram without a
//     checksum (0) gets its full checksum, as IPVS gives it.
//   - TUN: IPIP encapsulation into headroom in front of the frame (IPVS
//     "Tunnel", -i), moving only the Ethernet header.
//   - ICMPIn / ICMPOut: ICMP errors related to a NAT connection, outer and
//     quoted headers translated (IPVS ip_vs_nat_icmp).
//
// Frames whose transport checksum the sending kernel left to offload
// (CHECKSUM_PARTIAL, seen as TP_STATUS_CSUMNOTREADY) are rewritten with
// csumPartial set: the full TCP/UDP checksum is then computed from scratch,
// see CompleteL4.
//
// # ICMP errors
//
// TimeExceeded, FragNeeded and PortUnreachable build a complete Ethernet
// frame into a caller-provided buffer (ICMPErrorMaxFrame bytes always
// suffice) and refuse (ok false) where RFC 1812 forbids an error.
//
// Nothing in this package allocates, locks or logs; every function is safe
// for concurrent use on distinct frames. IPv4 only; IPv6 is left for later.
package rewrite
