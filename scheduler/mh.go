package scheduler

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sync/atomic"

	"gvs/ipvs"

	"github.com/cespare/xxhash/v2"
)

// MHTableSizes are the Maglev table sizes IPVS allows
// (CONFIG_IP_VS_MH_TAB_INDEX 8..17 selects one).
var MHTableSizes = [...]int{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

// DefaultMHTableSize is IPVS's default Maglev table size (index 12).
const DefaultMHTableSize = 4093

// Fixed hash keys, so that every director builds the same table and maps a
// client to the same slot. mhKey1 gives destination offsets and lookups,
// mhKey2 destination skips (the roles of IPVS's hash1 and hash2).
const (
	mhKey1 uint64 = 0x9E3779B97F4A7C15
	mhKey2 uint64 = 0xC2B2AE3D27D4EB4F
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

// mh is Maglev hashing (ip_vs_mh.c, Eisenbud et al. NSDI'16 §3.4).
//
// gvs differs from IPVS on purpose in two ways: the hash keys are fixed
// constants and the table is populated from the destinations sorted by
// (address, port) rather than in list order, so that two directors with the
// same destinations build identical tables whatever order they were added
// in. Each destination's (offset, skip) come from a keyed 64-bit xxhash of
// its address (16 bytes, IPv4 as v4-mapped) and port; IPVS uses hsiphash
// of addr+port.
//
// Weights: as in IPVS, each destination fills turns = (last_weight/gcd) >>
// rshift slots per round (at least 1 when last_weight != 0), rshift capping
// max(last_weight)/gcd to tabBits bits. The last non-zero weight is used, so
// quiescing a destination to weight 0 keeps its slots; lookups then return
// nil for it, or with mh-fallback (ipvs.SvcSched1) probe other slots as the
// kernel does. With mh-port (ipvs.SvcSched2) the source port is hashed too.
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
		a := d.Addr.As16()
		lw := d.LastWeight()
		turns := (lw / g) >> shift
		if turns == 0 && lw != 0 {
			turns = 1
		}
		setups[i] = mhSetup{
			offset: uint32(mhHash(mhKey1, &a, d.Port, 0) % uint64(s.size)),
			skip:   uint32(mhHash(mhKey2, &a, d.Port, 0)%uint64(s.size-1)) + 1,
			turns:  turns,
		}
	}
	return setups
}

// mhPopulate fills a Maglev lookup table of m slots (m prime) from the
// backends' permutations: round after round, each backend in order claims
// its next `turns` preferred free slots, until the table is full. It
// returns the backend index of each slot, or -1 everywhere when no backend
// has turns.
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

// mhHash is the keyed hash of an address, a port and a probe offset.
func mhHash(key uint64, addr *[16]byte, port uint16, offset uint32) uint64 {
	var b [30]byte
	binary.LittleEndian.PutUint64(b[0:], key)
	copy(b[8:24], addr[:])
	binary.BigEndian.PutUint16(b[24:], port)
	binary.LittleEndian.PutUint32(b[26:], offset)
	return xxhash.Sum64(b[:])
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
	a := f.SrcAddr.As16()
	ihash := uint32(mhHash(mhKey1, &a, port, 0) % uint64(s.size))
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
		d := t[mhHash(mhKey1, &a, port, roffset)%uint64(s.size)]
		if d == nil {
			return nil
		}
		if live(d) {
			return d
		}
	}
	return nil
}
