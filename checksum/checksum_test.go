package checksum

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
)

// refSum is the slow RFC 1071 reference: 16-bit big-endian words added one
// at a time into a wide accumulator, folded at the end.
func refSum(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// refChecksum is the reference checksum of b with the checksum field at
// csumOff (even) treated as zero.
func refChecksum(b []byte, csumOff int, initial uint32) uint16 {
	c := append([]byte(nil), b...)
	c[csumOff], c[csumOff+1] = 0, 0
	return ^refSum(c, initial)
}

func TestSumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096+8)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	lengths := []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 1499, 1500, 4095, 4096}
	for off := 0; off < 8; off++ {
		for _, n := range lengths {
			for _, init := range []uint32{0, 1, 0xffff, 0x1fffe, 0xffffffff} {
				b := buf[off : off+n]
				got := Fold(Sum(b, init))
				want := refSum(b, init)
				if got != want {
					t.Fatalf("off %d len %d init %#x: Fold(Sum) = %#04x, reference %#04x", off, n, init, got, want)
				}
			}
		}
	}
}

func TestSumEdgeValues(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want uint16 // folded, not complemented
	}{
		{"empty", nil, 0},
		{"one byte is a high byte", []byte{0x12}, 0x1200},
		{"all ones", []byte{0xff, 0xff, 0xff, 0xff}, 0xffff},
		{"end-around carry", []byte{0xff, 0xff, 0x00, 0x01}, 0x0001},
		// RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
		{"rfc1071 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0xddf2},
		{"many carries in 64-bit lanes", bytesOf(0xff, 64), 0xffff},
		{"odd tail after lanes", append(bytesOf(0xff, 40), 0x01), 0x0100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Fold(Sum(tt.b, 0)); got != tt.want {
				t.Errorf("Fold(Sum(%x)) = %#04x, want %#04x", tt.b, got, tt.want)
			}
		})
	}
}

func bytesOf(v byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v
	}
	return b
}

func TestChecksumKnownIPv4Header(t *testing.T) {
	// A real IPv4 header (Wikipedia's example), checksum b861.
	hdr := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := Checksum(hdr, 0); got != 0xb861 {
		t.Fatalf("Checksum = %#04x, want 0xb861", got)
	}
	binary.BigEndian.PutUint16(hdr[10:], 0xb861)
	if got := Checksum(hdr, 0); got != 0 {
		t.Fatalf("Checksum over a valid header = %#04x, want 0", got)
	}
}

func TestSumChaining(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 999)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	for cut := 0; cut <= len(b); cut += 2 {
		s := Sum(b[cut:], Sum(b[:cut], 0))
		if got, want := Fold(s), refSum(b, 0); got != want {
			t.Fatalf("cut %d: chained %#04x, whole %#04x", cut, got, want)
		}
		c := Combine(Sum(b[:cut], 0), Sum(b[cut:], 0))
		if got, want := Fold(c), refSum(b, 0); got != want {
			t.Fatalf("cut %d: combined %#04x, whole %#04x", cut, got, want)
		}
	}
	if got := Combine(0xffffffff, 1); Fold(got) != 1 {
		t.Fatalf("Combine carry: Fold = %#x, want 1", Fold(got))
	}
}

func TestPseudoHeaderV4(t *testing.T) {
	src, dst := [4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 254}
	ph := []byte{192, 0, 2, 1, 198, 51, 100, 254, 0, 6, 0x05, 0xdc}
	if got, want := Fold(PseudoHeaderV4(src, dst, 6, 1500)), refSum(ph, 0); got != want {
		t.Fatalf("PseudoHeaderV4 = %#04x, want %#04x", got, want)
	}
	// The largest inputs must not overflow the 32-bit sum.
	ff := [4]byte{255, 255, 255, 255}
	if got := Fold(PseudoHeaderV4(ff, ff, 255, 0xffff)); got != refSum([]byte{255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 255, 255}, 0) {
		t.Fatalf("PseudoHeaderV4 all ones = %#04x", got)
	}
}

func TestForUDP(t *testing.T) {
	tests := []struct{ in, want uint16 }{{0, 0xffff}, {1, 1}, {0xffff, 0xffff}, {0x1234, 0x1234}}
	for _, tt := range tests {
		if got := ForUDP(tt.in); got != tt.want {
			t.Errorf("ForUDP(%#x) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

// checkIncremental changes the 16-bit words at word offsets off..off+n/2 of
// b (a buffer whose checksum field is at csumOff) to repl and compares the
// incremental update with a full recomputation.
func checkIncremental(t *testing.T, b []byte, csumOff, off int, repl []byte, pseudo uint32) {
	t.Helper()
	binary.BigEndian.PutUint16(b[csumOff:], refChecksum(b, csumOff, pseudo))
	csum := binary.BigEndian.Uint16(b[csumOff:])
	switch len(repl) {
	case 2:
		old := binary.BigEndian.Uint16(b[off:])
		copy(b[off:], repl)
		csum = Update16(csum, old, binary.BigEndian.Uint16(repl))
	case 4:
		var old, nw [4]byte
		copy(old[:], b[off:])
		copy(nw[:], repl)
		copy(b[off:], repl)
		csum = UpdateAddr(csum, old, nw)
		if u := Update32(binary.BigEndian.Uint16(b[csumOff:]), binary.BigEndian.Uint32(old[:]), binary.BigEndian.Uint32(nw[:])); u != csum {
			t.Fatalf("Update32 %#04x != UpdateAddr %#04x", u, csum)
		}
	default:
		t.Fatalf("bad replacement length %d", len(repl))
	}
	binary.BigEndian.PutUint16(b[csumOff:], csum)
	full := refChecksum(b, csumOff, pseudo)
	if csum == full {
		return
	}
	// The only legal difference: data whose sum is zero checksums to 0xFFFF
	// in full, while eqn. 3 yields the equivalent 0.
	if isZeroSum(b, csumOff, pseudo) && csum == 0 && full == 0xffff {
		return
	}
	t.Fatalf("incremental %#04x, full recompute %#04x (len %d, field at %d)", csum, full, len(b), off)
}

func isZeroSum(b []byte, csumOff int, pseudo uint32) bool {
	c := append([]byte(nil), b...)
	c[csumOff], c[csumOff+1] = 0, 0
	return refSum(c, pseudo) == 0 && pseudo == 0
}

func TestIncrementalRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20000; i++ {
		n := 20 + r.IntN(100)*2
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		csumOff := 2 * r.IntN(n/2)
		width := 2 + 2*r.IntN(2)
		off := 2 * r.IntN((n-width)/2+1)
		if off < csumOff+2 && csumOff < off+width {
			continue // the change may not overlap the checksum field
		}
		repl := make([]byte, width)
		for j := range repl {
			repl[j] = byte(r.Uint32())
		}
		pseudo := uint32(0)
		if r.IntN(2) == 0 {
			pseudo = r.Uint32() & 0x3ffff
		}
		checkIncremental(t, b, csumOff, off, repl, pseudo)
	}
}

func TestIncrementalEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		off     int
		repl    []byte
		csumOff int
	}{
		{"to all ones", []byte{0x00, 0x00, 0x12, 0x34, 0x00, 0x00}, 2, []byte{0xff, 0xff}, 0},
		{"from all ones", []byte{0x00, 0x00, 0xff, 0xff, 0x00, 0x01}, 2, []byte{0x00, 0x00}, 0},
		{"sum becomes 0xffff", []byte{0x00, 0x00, 0x00, 0x01, 0xff, 0xfe}, 2, []byte{0x00, 0x01}, 0},
		{"address to zero", []byte{0x45, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01}, 4, []byte{0, 0, 0, 0}, 2},
		{"address to ones", []byte{0x45, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01}, 4, []byte{255, 255, 255, 255}, 2},
		{"no change", []byte{0x45, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01}, 4, []byte{0x0a, 0x00, 0x00, 0x01}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkIncremental(t, append([]byte(nil), tt.b...), tt.csumOff, tt.off, tt.repl, 0)
		})
	}
}

// FuzzIncremental: a random packet and a random change of one 16- or 32-bit
// field; the incremental update must equal the full recomputation.
func FuzzIncremental(f *testing.F) {
	// A TCP-like header with its checksum at 16, changing the dst port.
	f.Add([]byte("\x1f\x90\x00\x50\x00\x00\x00\x01\x00\x00\x00\x00\x50\x02\xff\xff\x00\x00\x00\x00"), uint8(16), uint8(2), uint32(8080), false)
	// An IPv4 header with its checksum at 10, changing the dst address.
	f.Add([]byte("\x45\x00\x00\x14\x00\x00\x40\x00\x40\x06\x00\x00\xc6\x12\x00\x01\xcb\x00\x71\x0a"), uint8(10), uint8(16), uint32(0xc6120203), true)
	// Zero data: the 0 versus 0xFFFF corner.
	f.Add(make([]byte, 8), uint8(0), uint8(4), uint32(0), true)
	f.Add([]byte{1}, uint8(0), uint8(0), uint32(1), false)
	f.Fuzz(func(t *testing.T, data []byte, csumOff, off uint8, val uint32, wide bool) {
		if len(data)%2 == 1 {
			data = data[:len(data)-1]
		}
		width := 2
		if wide {
			width = 4
		}
		if len(data) < 2+width {
			return
		}
		co := int(csumOff) % (len(data) / 2) * 2
		o := int(off) % ((len(data)-width)/2 + 1) * 2
		if o < co+2 && co < o+width {
			return
		}
		repl := make([]byte, 4)
		binary.BigEndian.PutUint32(repl, val)
		if !wide {
			repl = repl[2:]
		}
		checkIncremental(t, data, co, o, repl, 0)
	})
}

func TestNoAllocs(t *testing.T) {
	b := make([]byte, 1500)
	var sink uint32
	tests := map[string]func(){
		"Sum":            func() { sink += Sum(b, 0) },
		"Checksum":       func() { sink += uint32(Checksum(b[:20], 0)) },
		"PseudoHeaderV4": func() { sink += PseudoHeaderV4([4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, 6, 40) },
		"Update16":       func() { sink += uint32(Update16(1, 2, 3)) },
		"UpdateAddr":     func() { sink += uint32(UpdateAddr(1, [4]byte{1}, [4]byte{2})) },
	}
	for name, fn := range tests {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s allocates %v times per run", name, n)
		}
	}
	_ = sink
}

var benchSink uint32

func BenchmarkSum(b *testing.B) {
	for _, n := range []int{20, 64, 1500, 9000} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i)
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				benchSink += Sum(buf, 0)
			}
		})
	}
}

func BenchmarkUpdateAddr(b *testing.B) {
	b.ReportAllocs()
	c := uint16(0x1234)
	for b.Loop() {
		c = UpdateAddr(c, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2})
	}
	benchSink += uint32(c)
}
