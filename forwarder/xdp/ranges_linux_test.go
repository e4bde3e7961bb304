package xdp

import (
	"math/rand/v2"
	"testing"
)

// TestPortBlocks: the blocks of a range cover exactly its ports, each
// aligned to its size, at most 30 of them, and 1024-65535 takes 6.
func TestPortBlocks(t *testing.T) {
	ranges := [][2]uint16{{1, 65535}, {1024, 65535}, {20, 21}, {5000, 5010}, {1, 1}, {65535, 65535}, {32767, 32768}, {2, 65534}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		a, b := uint16(r.IntN(65535)+1), uint16(r.IntN(65535)+1)
		ranges = append(ranges, [2]uint16{min(a, b), max(a, b)})
	}
	for _, rg := range ranges {
		blocks := portBlocks(rg[0], rg[1])
		if len(blocks) > 30 {
			t.Errorf("%d-%d: %d blocks", rg[0], rg[1], len(blocks))
		}
		var covered [1 << 16]uint8
		for _, b := range blocks {
			size := uint32(1) << (16 - b.bits)
			if b.bits > 16 || uint32(b.port)&(size-1) != 0 {
				t.Fatalf("%d-%d: block %d/%d not aligned", rg[0], rg[1], b.port, b.bits)
			}
			for p := uint32(b.port); p < uint32(b.port)+size; p++ {
				covered[p]++
			}
		}
		for p := range covered {
			in := p >= int(rg[0]) && p <= int(rg[1])
			if (in && covered[p] != 1) || (!in && covered[p] != 0) {
				t.Fatalf("%d-%d: port %d covered %d times", rg[0], rg[1], p, covered[p])
			}
		}
	}
	if n := len(portBlocks(1024, 65535)); n != 6 {
		t.Errorf("1024-65535: %d blocks, want 6", n)
	}
}
