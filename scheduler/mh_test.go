package scheduler

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"gvs/ipvs"
)

// The kernel's hsiphash self-test for 64-bit builds (lib/test_siphash.c,
// lib/tests/siphash_kunit.c): vector i is hsiphash of the bytes 0..i-1
// with the key bytes 0..15.
var (
	kernelHsipTestKey     = hsipKey{0x0706050403020100, 0x0f0e0d0c0b0a0908}
	kernelHsipTestVectors = [64]uint32{
		0x050fc4dc, 0x7d57ca93, 0x4dc7d44d, 0xe7ddf7fb, 0x88d38328, 0x49533b67,
		0xc59f22a7, 0x9bb11140, 0x8d299a8e, 0x6c063de4, 0x92ff097f, 0xf94dc352,
		0x57b4d9a2, 0x1229ffa7, 0xc0f95d34, 0x2a519956, 0x7d908b66, 0x63dbd80c,
		0xb473e63e, 0x8d297d1c, 0xa6cce040, 0x2b45f844, 0xa320872e, 0xdae6c123,
		0x67349c8c, 0x705b0979, 0xca9913a5, 0x4ade3b35, 0xef6cd00d, 0x4ab1e1f4,
		0x43c5e663, 0x8c21d1bc, 0x16a7b60d, 0x7a8ff9bf, 0x1f2a753e, 0xbf186b91,
		0xada26206, 0xa3c33057, 0xae3a36a1, 0x7b108392, 0x99e41531, 0x3f1ad944,
		0xc8138825, 0xc28949a6, 0xfaf8876b, 0x9f042196, 0x68b1d623, 0x8b5114fd,
		0xdf074c46, 0x12cc86b3, 0x0a52098f, 0x9d292f9a, 0xa2f41f12, 0x43a71ed0,
		0x73f0bce6, 0x70a7e980, 0x243c6d75, 0xfdb71513, 0xa67d8a08, 0xb7e8f148,
		0xf7a644ee, 0x0f1837f2, 0x4b6694e0, 0xb7bbb3a8,
	}
)

func TestHsiphashKernelVectors(t *testing.T) {
	var in [64]byte
	for i := range in {
		in[i] = byte(i)
	}
	for i, want := range kernelHsipTestVectors {
		if got := hsiphash(in[:i], &kernelHsipTestKey); got != want {
			t.Errorf("hsiphash(0..%d) = %#08x, kernel %#08x", i-1, got, want)
		}
	}
	// The kernel's hsiphash_1u32 check: the u32 0x03020100 is the bytes 0..3.
	if got, want := hsiphash32(0x03020100, &kernelHsipTestKey), kernelHsipTestVectors[4]; got != want {
		t.Errorf("hsiphash32(0x03020100) = %#08x, kernel %#08x", got, want)
	}
	// hsiphash32 is hsiphash of the little-endian bytes of any u32.
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		x := r.Uint32()
		k := hsipKey{r.Uint64(), r.Uint64()}
		if got, want := hsiphash32(x, &k), hsiphash(binary.LittleEndian.AppendUint32(nil, x), &k); got != want {
			t.Fatalf("hsiphash32(%#x) = %#x, hsiphash of its bytes %#x", x, got, want)
		}
	}
}

// kmhDest is a destination as the reference below sees it: struct
// ip_vs_dest's fields that ip_vs_mh.c reads.
type kmhDest struct {
	addr       netip.Addr
	port       uint16
	weight     int
	lastWeight int
	overload   bool
}

// kmhAdd and kmhEdit set weight and last_weight as __ip_vs_update_dest
// does: "keep the last_weight with latest non-0 weight".
func kmhAdd(addr netip.Addr, port uint16, w int) *kmhDest {
	d := &kmhDest{addr: addr, port: port}
	d.weight, d.lastWeight = w, w
	return d
}

func (d *kmhDest) edit(w int) {
	if w != 0 {
		d.lastWeight = w
	}
	d.weight = w
}

// kmh is a slow, literal transcription of ip_vs_mh.c (x86_64 build) used
// as the reference for the mh scheduler: dests is svc->destinations in
// list order.
type kmh struct {
	size, tabBits int
	af6           bool
	dests         []*kmhDest
	lookup        []*kmhDest
	gcd, rshift   int
}

type kmhSetup struct {
	offset, skip, perm uint32
	turns              int
}

func kmhHashkey(af6 bool, addr netip.Addr, port uint16, key *hsipKey, offset uint32) uint32 {
	a := addr.As16()
	var addrFold uint32 // ntohl(addr_fold)
	if af6 {
		addrFold = binary.BigEndian.Uint32(a[0:4]) ^ binary.BigEndian.Uint32(a[4:8]) ^
			binary.BigEndian.Uint32(a[8:12]) ^ binary.BigEndian.Uint32(a[12:16])
	} else {
		addrFold = binary.BigEndian.Uint32(a[12:16])
	}
	v := offset + uint32(port) + addrFold
	var mem [4]byte // unsigned int v in x86_64 memory
	binary.LittleEndian.PutUint32(mem[:], v)
	return hsiphash(mem[:], key)
}

// changed is ip_vs_mh_dest_changed (and init_svc): gcd, rshift, reassign.
func (s *kmh) changed() {
	// ip_vs_mh_gcd_weight
	g := 0
	for _, d := range s.dests {
		if w := d.lastWeight; w > 0 {
			if g > 0 {
				g = gcd(w, g)
			} else {
				g = w
			}
		}
	}
	s.gcd = g
	// ip_vs_mh_shift_weight
	s.rshift = 0
	if g >= 1 {
		weight := 0
		for _, d := range s.dests {
			if d.lastWeight > weight {
				weight = d.lastWeight
			}
		}
		mw := weight / g
		fls := 0
		for x := mw; x != 0; x >>= 1 {
			fls++
		}
		if shift := fls - s.tabBits; shift >= 0 {
			s.rshift = shift
		}
	}
	if s.lookup == nil {
		s.lookup = make([]*kmhDest, s.size)
	}
	// ip_vs_mh_reassign -> ip_vs_mh_permutate
	setup := make([]kmhSetup, len(s.dests))
	if s.gcd >= 1 {
		for i, d := range s.dests {
			ds := &setup[i]
			ds.offset = kmhHashkey(s.af6, d.addr, d.port, &mhHash1, 0) % uint32(s.size)
			ds.skip = kmhHashkey(s.af6, d.addr, d.port, &mhHash2, 0)%uint32(s.size-1) + 1
			ds.perm = ds.offset
			lw := d.lastWeight
			ds.turns = (lw / s.gcd) >> s.rshift
			if ds.turns == 0 && lw != 0 {
				ds.turns = 1
			}
		}
	}
	// ip_vs_mh_populate
	if s.gcd < 1 {
		clear(s.lookup)
		return
	}
	table := make([]bool, s.size)
	head := len(s.dests) // p == &svc->destinations
	p := head
	n, dtCount := 0, 0
	for n < s.size {
		if p == head {
			p = 0
		}
		ds := 0
		for p != head {
			if setup[ds].turns < 1 {
				p++
				ds++
				continue
			}
			c := setup[ds].perm
			for table[c] {
				setup[ds].perm += setup[ds].skip
				if setup[ds].perm >= uint32(s.size) {
					setup[ds].perm -= uint32(s.size)
				}
				c = setup[ds].perm
			}
			table[c] = true
			s.lookup[c] = s.dests[p]
			if n++; n == s.size {
				return
			}
			if dtCount++; dtCount >= setup[ds].turns {
				dtCount = 0
				p++
				ds++
			}
		}
	}
}

func kmhUnavailable(d *kmhDest) bool { return d.weight <= 0 || d.overload }

// schedule is ip_vs_mh_schedule for a packet from addr:port (port 0
// unless mh-port) with or without mh-fallback.
func (s *kmh) schedule(addr netip.Addr, port uint16, fallback bool) *kmhDest {
	size := uint32(s.size)
	if !fallback { // ip_vs_mh_get
		hash := kmhHashkey(s.af6, addr, port, &mhHash1, 0) % size
		dest := s.lookup[hash]
		if dest == nil || kmhUnavailable(dest) {
			return nil
		}
		return dest
	}
	// ip_vs_mh_get_fallback
	ihash := kmhHashkey(s.af6, addr, port, &mhHash1, 0) % size
	dest := s.lookup[ihash]
	if dest == nil {
		return nil
	}
	if !kmhUnavailable(dest) {
		return dest
	}
	for offset := uint32(0); offset < size; offset++ {
		roffset := (offset + ihash) % size
		hash := kmhHashkey(s.af6, addr, port, &mhHash1, roffset) % size
		dest = s.lookup[hash]
		if dest == nil {
			break
		}
		if !kmhUnavailable(dest) {
			return dest
		}
	}
	return nil
}

// mhCase is one random configuration: the same destinations given to gvs
// (in a shuffled list) and to the reference (sorted, gvs's build order).
type mhCase struct {
	svc  *ipvs.Service
	ref  *kmh
	gvs  map[*kmhDest]*ipvs.Dest
	af6  bool
	desc string
}

func randAddr(r *rand.Rand, af6 bool) netip.Addr {
	if af6 {
		var a [16]byte
		copy(a[:], []byte{0x20, 0x01, 0x0d, 0xb8})
		for i := 4; i < 16; i++ {
			if r.IntN(3) == 0 {
				a[i] = byte(r.IntN(256))
			}
		}
		return netip.AddrFrom16(a)
	}
	// A narrow range, so that some addr+port sums coincide.
	return netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(2)), byte(r.IntN(256))})
}

func newMHCase(t *testing.T, r *rand.Rand, size, tabBits int) *mhCase {
	af6 := r.IntN(5) == 0
	n := 1 + r.IntN(12)
	scale := []int{1, 1, 2, 3, 10, 256}[r.IntN(6)] // gcd > 1 often
	seen := map[netip.AddrPort]bool{}
	var kd []*kmhDest
	for len(kd) < n {
		a, p := randAddr(r, af6), uint16(80+r.IntN(3))
		if seen[netip.AddrPortFrom(a, p)] {
			continue
		}
		seen[netip.AddrPortFrom(a, p)] = true
		w := scale * r.IntN(6) // 0 sometimes
		if r.IntN(10) == 0 {
			w = r.IntN(65536) // large: rshift
		}
		d := kmhAdd(a, p, w)
		if r.IntN(4) == 0 { // an edit: quiesce or reweight
			d.edit(scale * r.IntN(3))
		}
		d.overload = r.IntN(8) == 0
		kd = append(kd, d)
	}
	// The reference's list is gvs's build order: sorted by address:port.
	slices.SortFunc(kd, func(a, b *kmhDest) int {
		return netip.AddrPortFrom(a.addr, a.port).Compare(netip.AddrPortFrom(b.addr, b.port))
	})
	ref := &kmh{size: size, tabBits: tabBits, af6: af6, dests: kd}
	ref.changed()

	// gvs: the same destinations, made and edited through the model, in a
	// shuffled list.
	svc := testService(0)
	m := map[*kmhDest]*ipvs.Dest{}
	var list []*ipvs.Dest
	desc := ""
	for _, k := range kd {
		d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: k.addr, Port: k.port, Method: ipvs.Route, Weight: k.lastWeight})
		if k.weight != k.lastWeight {
			setWeight(d, k.weight)
		}
		if k.overload {
			setOverload(d, true)
		}
		if d.Weight() != k.weight || d.LastWeight() != k.lastWeight {
			t.Fatalf("model: weight %d last %d, kernel %d last %d", d.Weight(), d.LastWeight(), k.weight, k.lastWeight)
		}
		m[k] = d
		list = append(list, d)
		desc += fmt.Sprintf(" %v:%d/w%d/lw%d/o%v", k.addr, k.port, k.weight, k.lastWeight, k.overload)
	}
	r.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	svc.SetDests(list)
	return &mhCase{svc: svc, ref: ref, gvs: m, af6: af6, desc: desc}
}

// TestMHMatchesKernel compares the mh scheduler with the literal
// transcription of ip_vs_mh.c over random destination sets (weights with
// gcd > 1, zero and large weights, quiesced and overloaded destinations,
// IPv4 and IPv6), table sizes, clients, and the fallback and port modes.
func TestMHMatchesKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for iter := range 150 {
		size, tabBits := DefaultMHTableSize, 6
		if iter%3 == 0 {
			size, tabBits = 251, 4 // index 8
		}
		c := newMHCase(t, r, size, tabBits)
		var flags ipvs.SvcFlags
		switch iter % 4 {
		case 1:
			flags = ipvs.SvcSched1
		case 2:
			flags = ipvs.SvcSched2
		case 3:
			flags = ipvs.SvcSched1 | ipvs.SvcSched2
		}
		s, err := newMH(flags, size)
		if err != nil {
			t.Fatal(err)
		}
		s.Update(c.svc)
		tab := *s.table.Load()
		for i, k := range c.ref.lookup {
			if want := c.gvs[k]; tab[i] != want {
				t.Fatalf("case %d (%s): slot %d differs", iter, c.desc, i)
			}
		}
		for range 300 {
			f := &ipvs.Flow{
				Proto:   []ipvs.Protocol{ipvs.ProtoTCP, ipvs.ProtoUDP, ipvs.ProtoSCTP, ipvs.ProtoICMP}[r.IntN(4)],
				SrcAddr: randAddr(r, c.af6), SrcPort: uint16(r.IntN(65536)),
				DstAddr: netip.MustParseAddr("192.0.2.1"), DstPort: 80,
			}
			port := uint16(0)
			if flags&ipvs.SvcSched2 != 0 && f.Proto != ipvs.ProtoICMP {
				port = f.SrcPort
			}
			want := c.gvs[c.ref.schedule(f.SrcAddr, port, flags&ipvs.SvcSched1 != 0)]
			if got := s.Schedule(c.svc, f); got != want {
				t.Fatalf("case %d flags %#x (%s): client %v:%d got %v, kernel %v",
					iter, flags, c.desc, f.SrcAddr, f.SrcPort, addrPortOf(got), addrPortOf(want))
			}
		}
	}
}

func addrPortOf(d *ipvs.Dest) string {
	if d == nil {
		return "none"
	}
	return d.AddrPort().String()
}

// mhKernelServers are the real servers of the golden replay case
// mh-kernel, in the order its rules add them (descending, so that the
// kernel's list, newest first, is gvs's sorted build order). 198.18.2.14
// is added with weight 2 and then quiesced (-e -w 0): it keeps its slots.
var mhKernelServers = []struct {
	addr       string
	add, final int
}{
	{"198.18.2.14", 2, 0}, {"198.18.2.13", 3, 3}, {"198.18.2.12", 2, 2}, {"198.18.2.11", 1, 1},
}

// mhKernelPicks are the picks of the mh-kernel case for clients
// 198.18.5.1..12 (source ports 30000..30011): on port 53 plain mh, on
// port 54 mh with mh-fallback,mh-port ("-": no destination). The golden
// check in package forwarder expects the same.
var mhKernelPicks = [2][12]string{
	{".13", "-", ".12", ".11", ".12", "-", ".11", ".11", ".12", "-", "-", "-"},
	{".13", ".13", ".11", ".12", ".13", ".13", ".12", ".12", ".12", ".13", ".12", ".13"},
}

// TestMHKernelExamples pins the mh-kernel case's client -> server
// mappings, checked against the transcription above.
func TestMHKernelExamples(t *testing.T) {
	for svcIdx, port := range []uint16{53, 54} {
		flags := ipvs.SvcFlags(0)
		if port == 54 {
			flags = ipvs.SvcSched1 | ipvs.SvcSched2
		}
		svc := testService(flags)
		ref := &kmh{size: DefaultMHTableSize, tabBits: 6}
		var list []*ipvs.Dest
		for _, sv := range mhKernelServers {
			a := netip.MustParseAddr(sv.addr)
			d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: a, Port: port, Method: ipvs.Route, Weight: sv.add})
			setWeight(d, sv.final)
			list = append([]*ipvs.Dest{d}, list...)
			k := kmhAdd(a, port, sv.add)
			k.edit(sv.final)
			ref.dests = append([]*kmhDest{k}, ref.dests...) // list_add_rcu: at the head
		}
		svc.SetDests(list)
		ref.changed()
		s := mustNew(t, "mh", flags)
		s.Update(svc)
		for i, want := range mhKernelPicks[svcIdx] {
			c := netip.AddrFrom4([4]byte{198, 18, 5, byte(1 + i)})
			f := &ipvs.Flow{Proto: ipvs.ProtoUDP, SrcAddr: c, SrcPort: uint16(30000 + i),
				DstAddr: netip.MustParseAddr("198.51.100.10"), DstPort: port}
			got, gotRef := "-", "-"
			if d := s.Schedule(svc, f); d != nil {
				got = strings.TrimPrefix(d.Addr.String(), "198.18.2")
			}
			rp := uint16(0)
			if port == 54 {
				rp = f.SrcPort
			}
			if d := ref.schedule(c, rp, port == 54); d != nil {
				gotRef = strings.TrimPrefix(d.addr.String(), "198.18.2")
			}
			if got != want || gotRef != want {
				t.Errorf("port %d client %v: gvs %s, transcription %s, want %s", port, c, got, gotRef, want)
			}
		}
	}
}
