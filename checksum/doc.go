// Package checksum implements the Internet checksum: the RFC 1071
// one's-complement sum over a byte slice, the IPv4 pseudo-header sum of TCP
// and UDP, and RFC 1624 incremental updates for rewritten 16- and 32-bit
// fields (ports, addresses, TTL), so that a NAT rewrite never has to walk the
// payload again.
//
// # Sums and checksums
//
// A "sum" is a partial one's-complement sum kept in a uint32 that may not be
// folded yet; sums of independent pieces can be added together (with
// Combine or plain addition of a few values, see Sum). Fold reduces a sum to
// 16 bits without complementing it. A "checksum" is the complemented folded
// sum, the value written into a header:
//
//	csum := checksum.Checksum(hdr, 0)                         // hdr with its checksum field zeroed
//	csum := ^checksum.Fold(checksum.Sum(seg, pseudo))         // same thing, by hand
//
// A buffer is valid when the checksum over it, checksum field included, is 0
// (its folded sum is 0xFFFF).
//
// # Incremental updates
//
// Update16, Update32 and UpdateAddr implement RFC 1624 equation 3,
//
//	HC' = ~(~HC + ~m + m')
//
// which, unlike the older equation of RFC 1141, never turns a valid checksum
// into the "negative zero" 0xFFFF. For any buffer whose sum is not zero (every
// IPv4 header, every TCP or UDP segment with its pseudo-header) the result is
// exactly what a full recomputation gives.
//
// # UDP
//
// In UDP a transmitted checksum of 0 means "no checksum" (RFC 768). A
// datagram that arrived without a checksum keeps 0 through any rewrite (test
// the old value before updating), and a computed 0 is sent as 0xFFFF, which
// is the same number in one's complement (see ForUDP).
//
// All functions are pure, safe for concurrent use and do not allocate.
package checksum
