package xdp

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Port ranges (Rule.PortMax) live in a map of their own, an LPM trie: a
// range is split into the aligned power-of-two blocks that cover it
// exactly (1024-65535: 1024/6, 2048/5, ..., 32768/1 in bits of the port),
// each an entry whose prefix is the address, protocol and kind, then the
// block's high port bits. One lookup with the frame's port answers "is it
// in some range": no loop for the verifier, any number of ranges per
// address. The program asks it only after the exact-port and any-port
// lookups of the rules hash map missed, so those keep their cost.

// MaxRangePrefixes bounds the range map's entries (a range takes at most
// 30).
const MaxRangePrefixes = 1 << 16

// rangeMapSpec is the LPM trie: key {u32 prefixlen; addr[4], proto, kind,
// port[2]}, the prefix covering the first 48 bits and then port bits.
func rangeMapSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name: "gvs_ranges", Type: ebpf.LPMTrie, KeySize: rangeKeyLen, ValueSize: 1,
		MaxEntries: MaxRangePrefixes, Flags: unix.BPF_F_NO_PREALLOC,
	}
}

const (
	rangeKeyLen   = 12
	rangeFixedLen = 48 // address, protocol, kind
	// rangeKeyOff is the key's place on the program's stack (fp-24 ..
	// fp-13): below the rules key at fp-8.
	rangeKeyOff = -24
)

// rangeKey is one block of a range: the ports whose first bits bits equal
// port's.
type rangeKey struct {
	addr  [4]byte
	proto uint8
	kind  uint8
	port  uint16
	bits  uint8
}

func (k rangeKey) bytes() [rangeKeyLen]byte {
	var b [rangeKeyLen]byte
	binary.NativeEndian.PutUint32(b[0:], uint32(rangeFixedLen)+uint32(k.bits))
	copy(b[4:8], k.addr[:])
	b[8], b[9] = k.proto, k.kind
	binary.BigEndian.PutUint16(b[10:], k.port)
	return b
}

// rangeKeys are the map entries of a range rule (r.PortMax set).
func (r Rule) rangeKeys() ([]rangeKey, error) {
	switch {
	case r.Local || r.Frags || (r.Proto != protoTCP && r.Proto != protoUDP):
		return nil, fmt.Errorf("xdp: port range %d-%d for %v: TCP or UDP destination or source rules only", r.Port, r.PortMax, r.Addr)
	case r.Port == 0 || r.PortMax < r.Port:
		return nil, fmt.Errorf("xdp: port range %d-%d for %v", r.Port, r.PortMax, r.Addr)
	}
	a := r.Addr.Unmap()
	if !a.Is4() {
		return nil, fmt.Errorf("xdp: rule address %v is not IPv4", r.Addr)
	}
	kind := uint8(kindSrc)
	if r.Dst {
		kind = kindDst
	}
	var out []rangeKey
	for _, b := range portBlocks(r.Port, r.PortMax) {
		out = append(out, rangeKey{addr: a.As4(), proto: r.Proto, kind: kind, port: b.port, bits: b.bits})
	}
	return out, nil
}

// portBlock is the ports whose first bits bits (of 16) are port's.
type portBlock struct {
	port uint16
	bits uint8
}

// portBlocks splits lo..hi into the fewest aligned power-of-two blocks:
// from lo, each time the largest block lo is aligned to that ends by hi.
func portBlocks(lo, hi uint16) []portBlock {
	var out []portBlock
	for p := uint32(lo); p <= uint32(hi); {
		size := uint32(1) << 16
		for p&(size-1) != 0 || p+size-1 > uint32(hi) {
			size >>= 1
		}
		bits := uint8(16)
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		out = append(out, portBlock{port: uint16(p), bits: bits})
		p += size
	}
	return out
}

// rangeLookup emits a range map lookup of the frame's address (at
// R7+addrOff) and port (R8+portOff), protocol R9, kind, and a jump to
// found on a hit.
func rangeLookup(rangesFD int, addrOff, portOff int16, kind int32, found string) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, rangeKeyOff, rangeFixedLen+16, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, addrOff, asm.Word),
		asm.StoreMem(asm.R10, rangeKeyOff+4, asm.R1, asm.Word),
		asm.StoreMem(asm.R10, rangeKeyOff+8, asm.R9, asm.Byte),
		asm.StoreImm(asm.R10, rangeKeyOff+9, int64(kind), asm.Byte),
		asm.LoadMem(asm.R1, asm.R8, portOff, asm.Half),
		asm.StoreMem(asm.R10, rangeKeyOff+10, asm.R1, asm.Half),
		asm.LoadMapPtr(asm.R1, rangesFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, rangeKeyOff),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, found),
	}
}
