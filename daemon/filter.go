package daemon

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/net/bpf"
)

// Filter describes what one RX ring accepts: IPv4 frames to one of Dst (the
// VIPs), IPv4 frames from one of Src (NAT real servers) and, with ICMP, every
// IPv4 ICMP frame (errors about connections, which may come from any router).
// Frames are matched untagged or with one 802.1Q/802.1ad tag in the data.
// Everything else stays out of the ring. It differs from ring.Filter by the
// ICMP match, which the DIP side needs.
type Filter struct {
	Dst  []netip.Addr
	Src  []netip.Addr
	ICMP bool
}

// Equal reports whether two filters accept the same frames (address order
// and duplicates do not matter).
func (f Filter) Equal(g Filter) bool {
	a1, e1 := ipv4Words(f.Dst)
	a2, e2 := ipv4Words(g.Dst)
	b1, e3 := ipv4Words(f.Src)
	b2, e4 := ipv4Words(g.Src)
	return e1 == nil && e2 == nil && e3 == nil && e4 == nil &&
		f.ICMP == g.ICMP && slices.Equal(a1, a2) && slices.Equal(b1, b2)
}

const (
	// filterAccept is the snap length returned for an accepted frame: more
	// than any frame.
	filterAccept = 1 << 18
	// bpfMaxInsns is BPF_MAXINSNS, the kernel's limit for a classic program.
	bpfMaxInsns = 4096
	ipProtoICMP = 1
)

// Assemble compiles the filter to a classic BPF program for an RX ring.
// Addresses must be IPv4 (v4-mapped IPv6 is unmapped).
func (f Filter) Assemble() ([]bpf.RawInstruction, error) {
	dst, err := ipv4Words(f.Dst)
	if err != nil {
		return nil, fmt.Errorf("filter destination: %w", err)
	}
	src, err := ipv4Words(f.Src)
	if err != nil {
		return nil, fmt.Errorf("filter source: %w", err)
	}
	p := f.program(dst, src)
	if len(p) > bpfMaxInsns {
		return nil, fmt.Errorf("filter needs %d instructions, the kernel allows %d (too many addresses)", len(p), bpfMaxInsns)
	}
	return bpf.Assemble(p)
}

// program lays the filter out; every jump is short and forward:
//
//	 0  ldh [12]
//	 1  jeq #0x0800 -> 10
//	 2  jeq #0x8100 -> 5
//	 3  jeq #0x88a8 -> 5
//	 4  ret #0
//	 5  ldh [16]
//	 6  jeq #0x0800 -> 8
//	 7  ret #0
//	 8  ldx #18
//	 9  ja 11
//	10  ldx #14
//	11  ldb [x+9]; jne #1, skip 1; ret #accept    (ICMP)
//	    ld [x+16]; jne #addr, skip 1; ret #accept (per destination)
//	    ld [x+12]; jne #addr, skip 1; ret #accept (per source)
//	    ret #0
func (f Filter) program(dst, src []uint32) []bpf.Instruction {
	p := make([]bpf.Instruction, 0, 16+2*(len(dst)+len(src)))
	p = append(p,
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 8},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x8100, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x88a8, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.LoadAbsolute{Off: 16, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.LoadConstant{Dst: bpf.RegX, Val: 18},
		bpf.Jump{Skip: 1},
		bpf.LoadConstant{Dst: bpf.RegX, Val: 14},
	)
	if f.ICMP {
		p = append(p,
			bpf.LoadIndirect{Off: 9, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ipProtoICMP, SkipTrue: 1},
			bpf.RetConstant{Val: filterAccept},
		)
	}
	p = matchWords(p, 16, dst)
	p = matchWords(p, 12, src)
	return append(p, bpf.RetConstant{Val: 0})
}

func matchWords(p []bpf.Instruction, off uint32, keys []uint32) []bpf.Instruction {
	if len(keys) == 0 {
		return p
	}
	p = append(p, bpf.LoadIndirect{Off: off, Size: 4})
	for _, k := range keys {
		p = append(p,
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: k, SkipTrue: 1},
			bpf.RetConstant{Val: filterAccept},
		)
	}
	return p
}

// ipv4Words converts addresses to sorted, deduplicated big-endian words.
func ipv4Words(addrs []netip.Addr) ([]uint32, error) {
	w := make([]uint32, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("%v is not an IPv4 address", a)
		}
		b := a.As4()
		w = append(w, binary.BigEndian.Uint32(b[:]))
	}
	slices.Sort(w)
	return slices.Compact(w), nil
}
