package checksum

import (
	"encoding/binary"
	"math/bits"
)

// Sum adds the bytes of b, taken as big-endian 16-bit words, to the partial
// one's-complement sum initial and returns the new partial sum, folded to 32
// bits but not to 16. An odd final byte is padded with a zero byte, so when a
// message is summed in pieces every piece but the last must have an even
// length (or be summed at an even offset of its own, then combined).
//
// The result may be passed back as initial; several results may also be added
// with Combine. Sum uses a 64-bit accumulator with end-around carry and reads
// eight bytes at a time (RFC 1071 section 2(C)).
func Sum(b []byte, initial uint32) uint32 {
	acc := uint64(initial)
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b))<<32, c)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b))<<48, c)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<56, c)
	}
	// End-around carry: adding the last carry cannot carry again, because
	// an overflow leaves acc at most 2^64-2.
	acc += c
	// Fold 64 -> 32 bits: 2^32 ≡ 1 (mod 2^16-1), so the two halves add up.
	hi, lo := uint32(acc>>32), uint32(acc)
	s, c32 := bits.Add32(hi, lo, 0)
	return s + c32
}

// Combine adds two partial sums (from Sum, PseudoHeaderV4 or a folded
// 16-bit value) in one's-complement arithmetic.
func Combine(a, b uint32) uint32 {
	s, c := bits.Add32(a, b, 0)
	return s + c
}

// Fold reduces a partial sum to 16 bits with end-around carry. It does not
// complement: the checksum to store is ^Fold(sum). A non-zero sum folds to a
// value in 1..0xFFFF; only a zero sum folds to 0.
func Fold(sum uint32) uint16 {
	sum = sum>>16 + sum&0xffff // at most 0x1FFFE
	sum = sum>>16 + sum&0xffff // at most 0xFFFF
	return uint16(sum)
}

// Checksum returns the Internet checksum of b: the complement of the folded
// one's-complement sum of initial (a folded partial sum, e.g. of a
// pseudo-header, 0 for none) and the bytes of b. Compute it with the
// checksum field of b set to zero and store the result in that field; over a
// valid buffer, checksum field included, Checksum returns 0.
func Checksum(b []byte, initial uint16) uint16 {
	return ^Fold(Sum(b, uint32(initial)))
}

// PseudoHeaderV4 returns the partial sum of the IPv4 pseudo-header that TCP
// and UDP checksums cover (RFC 793, RFC 768): source and destination address,
// zero, protocol and the transport length (TCP header plus data, or the UDP
// length field).
func PseudoHeaderV4(src, dst [4]byte, proto uint8, length uint16) uint32 {
	return (uint32(src[0])<<8 | uint32(src[1])) +
		(uint32(src[2])<<8 | uint32(src[3])) +
		(uint32(dst[0])<<8 | uint32(dst[1])) +
		(uint32(dst[2])<<8 | uint32(dst[3])) +
		uint32(proto) + uint32(length)
}

// Update16 returns the checksum csum updated for one 16-bit word of the
// covered data changing from old to new (RFC 1624 eqn. 3). The word must sit
// at an even offset of the covered data (all header fields this project
// rewrites do).
func Update16(csum, old, new uint16) uint16 {
	s := uint32(^csum) + uint32(^old) + uint32(new)
	return ^Fold(s)
}

// Update32 returns the checksum csum updated for a 32-bit field (two
// adjacent 16-bit words at an even offset) changing from old to new.
func Update32(csum uint16, old, new uint32) uint16 {
	s := uint32(^csum) +
		uint32(^uint16(old>>16)) + uint32(^uint16(old)) +
		new>>16 + new&0xffff
	return ^Fold(s)
}

// UpdateAddr returns the checksum csum updated for an IPv4 address changing
// from old to new. It applies both to the IPv4 header checksum and to a TCP
// or UDP checksum, whose pseudo-header contains the addresses.
func UpdateAddr(csum uint16, old, new [4]byte) uint16 {
	return Update32(csum, binary.BigEndian.Uint32(old[:]), binary.BigEndian.Uint32(new[:]))
}

// ForUDP returns the value to transmit for a computed UDP checksum c: c
// itself, or 0xFFFF when c is 0, because a transmitted 0 means the datagram
// carries no checksum (RFC 768). The two are the same number in one's
// complement, so receivers accept either.
func ForUDP(c uint16) uint16 {
	if c == 0 {
		return 0xffff
	}
	return c
}
