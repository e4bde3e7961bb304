package scheduler

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sync/atomic"

	"gvs/ipvs"
)

// MHTableSizes are the Maglev table sizes IPVS allows
// (CONFIG_IP_VS_MH_TAB_INDEX 8..17 selects one).
var MHTableSizes = [...]int{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

// DefaultMHTableSize is IPVS's default Maglev table size (index 12).
const DefaultMHTableSize = 4093

// hsipKey is the kernel's hsiphash_key_t on a 64-bit build: two unsigned
// longs.
type hsipKey [2]uint64

// The kernel's fixed mh keys (generate_hash_secret): hash1 gives
// destination offsets and lookups, hash2 destination skips.
var (
	mhHash1 = hsipKey{2654435761, 2654435761}
	mhHash2 = hsipKey{2654446892, 2654446892}
)

// NewMH makes an mh scheduler with a table of size m, which must be one of
// MHTableSizes. New("mh", flags) uses DefaultMHTableSize.
func NewMH(flags ipvs.SvcFlags, m int) (ipvs.Scheduler, error) {
	return newMH(flags&ipvs.SvcSchedMask, m)
}

func newMH(flags ipvs.SvcFlags, m int) (*mh, error) {
	idx := slices.Index(MHTableSizes[:], m)
	if idx < 0 {
		return nil, fmt.Errorf("scheduler: mh table size %d is not one of %v", m, MHTableSizes)
	}
	// IP_VS_MH_TAB_BITS = CONFIG_IP_VS_MH_TAB_INDEX / 2, index = 8 + idx.
	return &mh{flags: flags, size: uint32(m), tabBits: (8 + idx) / 2}, nil
}

// mh is Maglev hashing (ip_vs_mh.c, Eisenbud et al. NSDI'16 §3.4), bit for
// bit the kernel's x86_64 build: the same hash (ip_vs_mh_hashkey: hsiphash,
// SipHash-1-3 on 64-bit words, of offset + port + folded address with the
// fixed keys of generate_hash_secret), the same permutations, turns and
// population, the same lookup and fallback.
//
// One difference on purpose: the table is populated from the destinations
// sorted by (address, port) rather than in list order, so that two
// directors with the same destinations build identical tables whatever
// order they were added in. gvs's table is therefore the kernel's for a
// kernel whose destination list is in ascending address:port order. The
// kernel adds a destination at the head of its list (list_add_rcu), so
// that is a kernel where the destinations were added in descending order.
//
// Weights: each destination fills turns = (last_weight/gcd) >> rshift
// slots per round (at least 1 when last_weight != 0), rshift capping
// max(last_weight)/gcd to tabBits bits. The last non-zero weight is used,
// so quiescing a destination to weight 0 keeps its slots; lookups then
// return nil for it, or with mh-fallback (ipvs.SvcSched1) rehash with
// other offsets as the kernel does. With mh-port (ipvs.SvcSched2) the
// source port is hashed too.
type mh struct {
	flags   ipvs.SvcFlags
	size    uint32
	tabBits int
	table   atomic.Pointer[[]*ipvs.Dest]
}

func (*mh) Name() string { return "mh" }

// mhSetup is one backend's permutation parameters (ip_vs_mh_dest_setup).
type mhSetup struct {
	offset, skip uint32
	turns        int
}

func (s *mh) Update(svc *ipvs.Service) {
	ds := slices.Clone(svc.Dests())
	slices.SortFunc(ds, func(a, b *ipvs.Dest) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	table := make([]*ipvs.Dest, s.size)
	for slot, b := range mhPopulate(int(s.size), s.setups(ds)) {
		if b >= 0 {
			table[slot] = ds[b]
		}
	}
	s.table.Store(&table)
}

// setups computes each destination's permutation and turns
// (ip_vs_mh_permutate with ip_vs_mh_gcd_weight and ip_vs_mh_shift_weight).
// All turns are 0 when no destination ever had a non-zero weight.
func (s *mh) setups(ds []*ipvs.Dest) []mhSetup {
	g, maxW := 0, 0
	for _, d := range ds {
		if w := d.LastWeight(); w > 0 {
			g = gcd(w, g)
			maxW = max(maxW, w)
		}
	}
	setups := make([]mhSetup, len(ds))
	if g == 0 {
		return setups
	}
	shift := max(bits.Len(uint(maxW/g))-s.tabBits, 0)
	for i, d := range ds {
		fold := mhFold(d.Addr)
		lw := d.LastWeight()
		turns := (lw / g) >> shift
		if turns == 0 && lw != 0 {
			turns = 1
		}
		setups[i] = mhSetup{
			offset: mhHashKey(fold, d.Port, &mhHash1, 0) % s.size,
			skip:   mhHashKey(fold, d.Port, &mhHash2, 0)%(s.size-1) + 1,
			turns:  turns,
		}
	}
	return setups
}

// mhPopulate fills a Maglev lookup table of m slots (m prime) from the
// backends' permutations (ip_vs_mh_populate): round after round, each
// backend in order claims its next `turns` preferred free slots, until the
// table is full. It returns the backend index of each slot, or -1
// everywhere when no backend has turns.
func mhPopulate(m int, setups []mhSetup) []int32 {
	entry := make([]int32, m)
	for i := range entry {
		entry[i] = -1
	}
	perm := make([]uint32, len(setups))
	some := false
	for i, st := range setups {
		perm[i] = st.offset % uint32(m)
		some = some || st.turns > 0
	}
	if !some {
		return entry
	}
	filled := 0
	for {
		for i, st := range setups {
			for t := 0; t < st.turns; t++ {
				c := perm[i]
				for entry[c] >= 0 {
					c += st.skip
					if c >= uint32(m) {
						c -= uint32(m)
					}
				}
				perm[i] = c
				entry[c] = int32(i)
				if filled++; filled == m {
					return entry
				}
			}
		}
	}
}

// mhFold is ip_vs_mh_hashkey's addr_fold in host order: an IPv4 address
// as a number, an IPv6 address as the XOR of its four 32-bit words.
func mhFold(a netip.Addr) uint32 {
	b := a.As16()
	if a.Is4() {
		return binary.BigEndian.Uint32(b[12:])
	}
	return binary.BigEndian.Uint32(b[0:]) ^ binary.BigEndian.Uint32(b[4:]) ^
		binary.BigEndian.Uint32(b[8:]) ^ binary.BigEndian.Uint32(b[12:])
}

// mhHashKey is ip_vs_mh_hashkey: the hsiphash of the 32-bit sum
// offset + port + folded address (the kernel hashes that unsigned int in
// memory; x86_64 is little-endian, so its bytes are the value's LE bytes).
func mhHashKey(fold uint32, port uint16, key *hsipKey, offset uint32) uint32 {
	return hsiphash32(offset+uint32(port)+fold, key)
}

// sipRound is SipHash's round (SIPROUND).
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// hsipInit is HPREAMBLE of the 64-bit build: SipHash's initial state keyed
// with key.
func hsipInit(key *hsipKey) (uint64, uint64, uint64, uint64) {
	return 0x736f6d6570736575 ^ key[0], 0x646f72616e646f6d ^ key[1],
		0x6c7967656e657261 ^ key[0], 0x7465646279746573 ^ key[1]
}

// hsipFinal is HPOSTAMBLE of the 64-bit build: absorb the last word b
// (length << 56 | tail bytes) with one round, finalize with three, and
// return the low 32 bits of v0^v1^v2^v3.
func hsipFinal(v0, v1, v2, v3, b uint64) uint32 {
	v3 ^= b
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= b
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return uint32((v0 ^ v1) ^ (v2 ^ v3))
}

// hsiphash is the kernel's hsiphash on a 64-bit build (BITS_PER_LONG ==
// 64), where it is SipHash-1-3 with 64-bit words truncated to 32 bits.
func hsiphash(data []byte, key *hsipKey) uint32 {
	v0, v1, v2, v3 := hsipInit(key)
	b := uint64(len(data)) << 56
	for ; len(data) >= 8; data = data[8:] {
		m := binary.LittleEndian.Uint64(data)
		v3 ^= m
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= m
	}
	for i, c := range data {
		b |= uint64(c) << (8 * i)
	}
	return hsipFinal(v0, v1, v2, v3, b)
}

// hsiphash32 is hsiphash of the 4 bytes of a little-endian uint32
// (hsiphash_1u32): no full word, the value is the tail.
func hsiphash32(x uint32, key *hsipKey) uint32 {
	v0, v1, v2, v3 := hsipInit(key)
	return hsipFinal(v0, v1, v2, v3, 4<<56|uint64(x))
}

func (s *mh) Schedule(_ *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	tp := s.table.Load()
	if tp == nil {
		return nil
	}
	t := *tp
	var port uint16
	if s.flags&ipvs.SvcSched2 != 0 {
		port = flowPort(f)
	}
	fold := mhFold(f.SrcAddr)
	// ip_vs_mh_get.
	ihash := mhHashKey(fold, port, &mhHash1, 0) % s.size
	d := t[ihash]
	if d == nil {
		return nil
	}
	if live(d) {
		return d
	}
	if s.flags&ipvs.SvcSched1 == 0 {
		return nil
	}
	// ip_vs_mh_get_fallback: rehash with offsets ihash, ihash+1, ...
	for off := uint32(0); off < s.size; off++ {
		roffset := (off + ihash) % s.size
		d := t[mhHashKey(fold, port, &mhHash1, roffset)%s.size]
		if d == nil {
			return nil
		}
		if live(d) {
			return d
		}
	}
	return nil
}
