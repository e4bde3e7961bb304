package conntrack

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"gvs/ipvs"
)

// Keys are packed, pointer-free values: comparable with ==, cheap to copy,
// and free of netip.Addr's internal pointer, so building one per packet
// costs nothing and the table never keeps a reference to caller memory.
// Addresses are 16 bytes; IPv4 is stored v4-mapped (netip.Addr.As16), so
// IPv6 needs no other layout.

// InKey identifies a connection by its client-side tuple, as packets from
// the client carry it: (protocol, client address:port, virtual address:port).
type InKey struct {
	CAddr [16]byte
	VAddr [16]byte
	CPort uint16
	VPort uint16
	Proto ipvs.Protocol
}

// NewInKey builds an InKey from netip values.
func NewInKey(proto ipvs.Protocol, c, v netip.AddrPort) InKey {
	return InKey{Proto: proto, CAddr: c.Addr().As16(), CPort: c.Port(), VAddr: v.Addr().As16(), VPort: v.Port()}
}

// InKeyV4 builds an InKey from raw IPv4 addresses, as a packet parser has them.
func InKeyV4(proto ipvs.Protocol, caddr [4]byte, cport uint16, vaddr [4]byte, vport uint16) InKey {
	return InKey{Proto: proto, CAddr: Mapped4(caddr), CPort: cport, VAddr: Mapped4(vaddr), VPort: vport}
}

// ReplyKey identifies a NAT connection by the tuple its replies carry:
// (protocol, real server address:port, client address:port).
type ReplyKey struct {
	DAddr [16]byte
	CAddr [16]byte
	DPort uint16
	CPort uint16
	Proto ipvs.Protocol
}

// NewReplyKey builds a ReplyKey from netip values; d is the real server
// (the reply's source) and c the client (the reply's destination).
func NewReplyKey(proto ipvs.Protocol, d, c netip.AddrPort) ReplyKey {
	return ReplyKey{Proto: proto, DAddr: d.Addr().As16(), DPort: d.Port(), CAddr: c.Addr().As16(), CPort: c.Port()}
}

// ReplyKeyV4 builds a ReplyKey from raw IPv4 addresses.
func ReplyKeyV4(proto ipvs.Protocol, daddr [4]byte, dport uint16, caddr [4]byte, cport uint16) ReplyKey {
	return ReplyKey{Proto: proto, DAddr: Mapped4(daddr), DPort: dport, CAddr: Mapped4(caddr), CPort: cport}
}

// TemplateKey is the lookup key of a persistence template, as
// ip_vs_sched_persist looks one up: (protocol, client network, virtual
// address or fwmark, virtual port). VPort is 0 for port-0, FTP (21) and
// fwmark services, so one template then covers every port. The template's
// destination is the value found, not part of the key.
type TemplateKey struct {
	CNet  [16]byte
	VAddr [16]byte
	VPort uint16
	Proto ipvs.Protocol
}

// NewTemplateKey builds the template key of a client for a (proto, VIP,
// vport) service; the client address is masked to bits (the -M netmask as a
// prefix length of the address family: 0..32 for IPv4, 0..128 for IPv6;
// out-of-range values mean "whole address").
func NewTemplateKey(proto ipvs.Protocol, client netip.Addr, bits int, vaddr netip.Addr, vport uint16) TemplateKey {
	return TemplateKey{Proto: proto, CNet: maskAddr(client, bits), VAddr: vaddr.As16(), VPort: vport}
}

// NewFWMarkTemplateKey builds the template key of a client for a
// firewall-mark service: protocol IP, the mark stored in the virtual address
// as IPv4 0.0.0.<mark> (which is how ipvsadm -Lnc shows it), port 0.
func NewFWMarkTemplateKey(mark uint32, client netip.Addr, bits int) TemplateKey {
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], mark)
	return TemplateKey{Proto: ipvs.ProtoIP, CNet: maskAddr(client, bits), VAddr: Mapped4(m)}
}

// Mapped4 returns the v4-mapped 16-byte form of an IPv4 address, the same
// bytes as netip.AddrFrom4(a).As16().
func Mapped4(a [4]byte) (m [16]byte) {
	// Two word stores instead of sixteen byte stores: this is on every
	// packet's path.
	binary.BigEndian.PutUint64(m[8:], 0xffff<<32|uint64(binary.BigEndian.Uint32(a[:])))
	return m
}

func maskAddr(a netip.Addr, bits int) [16]byte {
	if p, err := a.Prefix(bits); err == nil {
		return p.Addr().As16()
	}
	return a.As16()
}

// addrOf turns a stored address back into a netip.Addr (IPv4 unmapped).
func addrOf(b [16]byte) netip.Addr {
	if binary.BigEndian.Uint64(b[:8]) == 0 && binary.BigEndian.Uint32(b[8:12]) == 0xffff {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b).Unmap()
}

// Hash domains, so that a template and a connection with equal bytes never
// collide by construction.
const (
	kindConn     = 1
	kindTemplate = 2
)

// XXH64's primes.
const (
	xxP1 uint64 = 11400714785074694791
	xxP2 uint64 = 14029467366897019727
	xxP3 uint64 = 1609587929392839161
	xxP4 uint64 = 9650029242287828579
	xxP5 uint64 = 2870177450012600261
)

// The hashes below are XXH64 (github.com/cespare/xxhash/v2's Sum64) of a
// packed key that starts with the seed, computed on registers for the two
// fixed key layouts: the same values as xxhash.Sum64 over the bytes (a test
// checks it against the library), without building the byte buffer. Fed a
// buffer, the library's word loads straddle the buffer's narrower stores
// (a store-forwarding stall), which cost more than the rest of a lookup.

func xxRound(acc, lane uint64) uint64 {
	return bits.RotateLeft64(acc+lane*xxP2, 31) * xxP1
}

// xxLane folds one 8-byte lane of a short input's tail into h.
func xxLane(h, lane uint64) uint64 {
	return bits.RotateLeft64(h^xxRound(0, lane), 27)*xxP1 + xxP4
}

// xxTail4 folds the final 4 bytes and avalanches.
func xxTail4(h uint64, w uint32) uint64 {
	h ^= uint64(w) * xxP1
	h = bits.RotateLeft64(h, 23)*xxP2 + xxP3
	h ^= h >> 33
	h *= xxP2
	h ^= h >> 29
	h *= xxP3
	h ^= h >> 32
	return h
}

// hashConn is the hash of a connection: the seeded xxhash of (protocol,
// client address, client port), i.e. XXH64 of the 28 bytes seed (LE) |
// client address | client port (LE) | protocol | kindConn. Both the in-key
// and the reply key contain exactly these fields, so both indexes of a
// connection live in the same shard and one lock serves In and Out (IPVS
// hashes connections the same way). Conns differing only in the virtual or
// real side share a hash and are told apart by the full compare.
func hashConn(seed uint64, proto ipvs.Protocol, caddr *[16]byte, cport uint16) uint64 {
	h := xxP5 + 28
	h = xxLane(h, seed)
	h = xxLane(h, binary.LittleEndian.Uint64(caddr[0:8]))
	h = xxLane(h, binary.LittleEndian.Uint64(caddr[8:16]))
	return xxTail4(h, uint32(cport)|uint32(proto)<<16|kindConn<<24)
}

// hashTemplate is the seeded xxhash of a whole TemplateKey: XXH64 of the 44
// bytes seed | client network | virtual address | virtual port (LE) |
// protocol | kindTemplate.
func hashTemplate(seed uint64, t *TemplateKey) uint64 {
	var xs uint64 // XXH64's own seed: 0, as Sum64 (the table's seed is in the key)
	v1 := xxRound(xs+xxP1+xxP2, seed)
	v2 := xxRound(xs+xxP2, binary.LittleEndian.Uint64(t.CNet[0:8]))
	v3 := xxRound(xs, binary.LittleEndian.Uint64(t.CNet[8:16]))
	v4 := xxRound(xs-xxP1, binary.LittleEndian.Uint64(t.VAddr[0:8]))
	h := bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
	for _, v := range [4]uint64{v1, v2, v3, v4} {
		h = (h^xxRound(0, v))*xxP1 + xxP4
	}
	h += 44
	h = xxLane(h, binary.LittleEndian.Uint64(t.VAddr[8:16]))
	return xxTail4(h, uint32(t.VPort)|uint32(t.Proto)<<16|kindTemplate<<24)
}
