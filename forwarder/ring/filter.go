package ring

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/net/bpf"
)

// Filter describes the frames an RX ring accepts: IPv4 frames whose
// destination is in DstAddrs (the VIPs), IPv4 frames whose source is in
// SrcAddrs (real servers answering through a NAT director), every IPv4
// ICMP error if ICMP is set (errors about connections, which may come from
// any router), and ARP frames if ARP is set. Anything else is dropped in
// the kernel, before it is copied into the ring. Of ICMP, only unfragmented
// errors the pipeline relates to connections (destination unreachable,
// source quench, time exceeded) are ever accepted: it leaves every other
// ICMP packet (echo...) to the kernel, which has its own copy.
//
// IPv4 frames are accepted only when they were addressed to the
// interface's own MAC (the kernel's packet type PACKET_HOST): a bridge or
// switch that floods unknown unicast delivers copies of other hosts' frames
// (PACKET_OTHERHOST), and broadcast or multicast frames are not VIP traffic
// either. The kernel's IP stack drops the same frames before routing; a
// director that forwarded them would send duplicates. ARP frames are
// accepted whatever their destination (requests are broadcast).
//
// Frames are matched untagged (the kernel strips the outer VLAN tag before
// the filter runs, see the package documentation) and with one 802.1Q or
// 802.1ad tag still in the data. IPv4 frames too short to hold the compared
// protocol byte or address are dropped. An empty Filter drops everything.
//
// SYN splits the frames to DstAddrs by whether they open a TCP connection
// (see SYNMode), so that a second ring can take the new connections apart
// from the established traffic. With SYNExclude, SplitUDP also leaves out
// every UDP frame to DstAddrs (fragments included), which a third ring
// takes (UDPOnly): a UDP flood then overflows that ring, not the ring of
// the established TCP traffic.
type Filter struct {
	DstAddrs []netip.Addr
	SrcAddrs []netip.Addr
	ICMP     bool
	ARP      bool
	SYN      SYNMode
	SplitUDP bool
}

// SYNMode selects frames to the DstAddrs by whether they are connection
// openings: TCP segments with SYN set and ACK clear (a SYN-ACK, an RST, data
// are not), neither fragments after the first (they carry no TCP header).
type SYNMode uint8

const (
	// SYNAll accepts every frame to DstAddrs.
	SYNAll SYNMode = iota
	// SYNExclude accepts the frames to DstAddrs that do not open a
	// connection: the established traffic's ring.
	SYNExclude
	// SYNOnly accepts only the frames to DstAddrs that open a connection,
	// and nothing else: SrcAddrs, ICMP and ARP are ignored. The new
	// connections' ring.
	SYNOnly
	// UDPOnly accepts only the UDP frames to DstAddrs (every fragment of
	// a datagram: the IP header's protocol), and nothing else: SrcAddrs,
	// ICMP and ARP are ignored. The UDP ring, paired with SYNExclude and
	// SplitUDP.
	UDPOnly
)

// Equal reports whether f and g are the same filter: the same ICMP and ARP
// settings and the same address sets, whatever the order, duplicates or
// v4-mapped form of the addresses. A filter holding an address Assemble
// rejects is equal to no filter, so a caller comparing the filter it wants
// with the one it attached always tries again.
func (f Filter) Equal(g Filter) bool {
	if f.ICMP != g.ICMP || f.ARP != g.ARP || f.SYN != g.SYN || f.SplitUDP != g.SplitUDP {
		return false
	}
	d1, e1 := ipv4Keys(f.DstAddrs)
	d2, e2 := ipv4Keys(g.DstAddrs)
	s1, e3 := ipv4Keys(f.SrcAddrs)
	s2, e4 := ipv4Keys(g.SrcAddrs)
	return e1 == nil && e2 == nil && e3 == nil && e4 == nil &&
		slices.Equal(d1, d2) && slices.Equal(s1, s2)
}

// acceptLen is what the program returns for an accepted frame: the number
// of bytes to keep, more than any frame.
const acceptLen = 1 << 18

// maxFilterLen is BPF_MAXINSNS, the kernel's limit for a classic program.
const maxFilterLen = 4096

// EtherTypes and offsets used by the filter.
const (
	etherTypeIPv4   = 0x0800
	etherTypeARP    = 0x0806
	etherTypeVLAN   = 0x8100
	etherTypeQinQ   = 0x88a8
	ipv4ProtoOff    = 9
	ipv4SrcOff      = 12
	ipv4DstOff      = 16
	untaggedL3Start = 14
	taggedL3Start   = 18
	ipProtoICMP     = 1
	ipProtoTCP      = 6
	ipProtoUDP      = 17
	ipv4FragOff     = 6
	tcpFlagsOff     = 13
	tcpSYN          = 0x02
	tcpACK          = 0x10
	fragOffMask     = 0x1fff
	// packetHost is PACKET_HOST, the packet type (SKF_AD_PKTTYPE) of a
	// frame addressed to the interface's own MAC.
	packetHost = 0
)

// FilterIPv4Dst returns a program accepting IPv4 frames (with or without a
// VLAN tag) whose destination address is in addrs.
func FilterIPv4Dst(addrs []netip.Addr) ([]bpf.RawInstruction, error) {
	return Filter{DstAddrs: addrs}.Assemble()
}

// FilterIPv4Src returns a program accepting IPv4 frames (with or without a
// VLAN tag) whose source address is in addrs.
func FilterIPv4Src(addrs []netip.Addr) ([]bpf.RawInstruction, error) {
	return Filter{SrcAddrs: addrs}.Assemble()
}

// Assemble compiles the filter to a classic BPF program for
// RXConfig.Filter or RX.SetFilter. Addresses must be IPv4 (IPv4-mapped
// IPv6 addresses are unmapped); duplicates are ignored. The program tests
// the addresses one by one, so it is limited to about 2000 addresses in
// all.
func (f Filter) Assemble() ([]bpf.RawInstruction, error) {
	dst, err := ipv4Keys(f.DstAddrs)
	if err != nil {
		return nil, fmt.Errorf("ring: filter destination: %w", err)
	}
	src, err := ipv4Keys(f.SrcAddrs)
	if err != nil {
		return nil, fmt.Errorf("ring: filter source: %w", err)
	}
	prog := f.program(dst, src)
	if len(prog) > maxFilterLen {
		return nil, fmt.Errorf("ring: filter needs %d instructions, the kernel allows %d", len(prog), maxFilterLen)
	}
	return bpf.Assemble(prog)
}

// ipv4Keys converts addresses to sorted, deduplicated big-endian words.
func ipv4Keys(addrs []netip.Addr) ([]uint32, error) {
	keys := make([]uint32, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("%v is not an IPv4 address", a)
		}
		b := a.As4()
		keys = append(keys, binary.BigEndian.Uint32(b[:]))
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// program lays out the filter. Every jump goes forward by a few
// instructions, whatever the number of addresses:
//
//	    ldh [12]
//	    jeq #0x0800      -> ip14
//	    jeq #0x8100      -> vlan
//	    jeq #0x88a8      -> vlan
//	    jeq #0x0806      -> accept   (only with ARP)
//	    ret #0
//	vlan:
//	    ldh [16]
//	    jeq #0x0800      -> ip18
//	    jeq #0x0806      -> accept   (only with ARP)
//	    ret #0
//	accept:
//	    ret #acceptLen
//	ip18:
//	    ldx #18
//	    ja ip
//	ip14:
//	    ldx #14
//	ip:
//	    ld pkttype                   (SKF_AD_PKTTYPE)
//	    jeq #PACKET_HOST, skip 1; ret #0
//	    (ICMP: appendICMP; not with SYNOnly)
//	    ld [x+16]                    (destination; only with DstAddrs)
//	    jne #addr, skip 1; ret #acceptLen      (per address)
//	    ld [x+12]                    (source; only with SrcAddrs)
//	    jne #addr, skip 1; ret #acceptLen      (per address)
//	    ret #0
func (f Filter) program(dst, src []uint32) []bpf.Instruction {
	if f.SYN == SYNOnly || f.SYN == UDPOnly {
		f.ICMP, f.ARP, src = false, false, nil
	}
	if f.SYN != SYNExclude {
		f.SplitUDP = false
	}
	arp := 0
	if f.ARP {
		arp = 1
	}
	// Sizes of the fixed sections, to compute the skips.
	const (
		vlanLen   = 3 // ldh, jeq ipv4, ret (+ARP)
		acceptSec = 1
		ip18Len   = 2
	)
	p := make([]bpf.Instruction, 0, 23+2*(len(dst)+len(src)))
	// Head: 4+arp instructions after the first load, then the drop.
	// Distances are counted from the instruction after the jump.
	headRest := 3 + arp // instructions after "jeq ipv4" up to and including "ret #0"
	vlanSec := vlanLen + arp
	p = append(p,
		bpf.LoadAbsolute{Off: 12, Size: 2},
		// to ip14: skip the rest of the head, vlan, accept, ip18.
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4, SkipTrue: uint8(headRest + vlanSec + acceptSec + ip18Len)},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeVLAN, SkipTrue: uint8(headRest - 1)},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeQinQ, SkipTrue: uint8(headRest - 2)},
	)
	if f.ARP {
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeARP, SkipTrue: uint8(1 + vlanSec)})
	}
	p = append(p, bpf.RetConstant{Val: 0})
	// vlan:
	p = append(p,
		bpf.LoadAbsolute{Off: 16, Size: 2},
		// to ip18: skip the rest of vlan and accept.
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4, SkipTrue: uint8(1 + arp + acceptSec)},
	)
	if f.ARP {
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeARP, SkipTrue: 1})
	}
	p = append(p, bpf.RetConstant{Val: 0})
	// accept:
	p = append(p, bpf.RetConstant{Val: acceptLen})
	// ip18, ip14, ip:
	p = append(p,
		bpf.LoadConstant{Dst: bpf.RegX, Val: taggedL3Start},
		bpf.Jump{Skip: 1},
		bpf.LoadConstant{Dst: bpf.RegX, Val: untaggedL3Start},
		// ip: only frames to our own MAC.
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: packetHost, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
	)
	if f.SYN != SYNOnly && f.SYN != UDPOnly {
		p = appendICMP(p, f.ICMP)
	}
	if f.SYN == SYNAll {
		p = appendMatch(p, ipv4DstOff, dst)
		p = appendMatch(p, ipv4SrcOff, src)
		return append(p, bpf.RetConstant{Val: 0})
	}
	// A destination match jumps (ja: a 32-bit offset, whatever the number
	// of addresses) to the SYN test at the end:
	//
	//	    ld [x+16]; jne #addr, skip 1; ja syn      (per address)
	//	    ld [x+12]; jne #addr, skip 1; ret #acceptLen   (SYNExclude)
	//	    ret #0
	//	syn:
	//	    ldb [x+9];  jne #6 -> notsyn                 (TCP)
	//	    ldh [x+6];  jset #0x1fff -> notsyn           (first fragment)
	//	    ldb [x+0]; and #0xf; lsh #2; add x; tax      (X: TCP header)
	//	    ld len; jge x else notsyn                    (flags in the frame:
	//	    sub x; jge #14 else notsyn                    len >= X + 14)
	//	    ldb [x+13]; and #0x12; jne #0x02 -> notsyn   (SYN, no ACK)
	//	    ret #SYN verdict
	//	notsyn:
	//	    ret #other verdict
	//
	// A TCP packet whose flags lie beyond the frame (a header cut short, an
	// IHL beyond the packet, a tiny first fragment) is not an opening: it
	// goes to the established ring, where the pipeline drops it with its
	// reason (truncated_tcp, bad_ihl...). Loading the flags unchecked would
	// end the program and drop it in the kernel, uncounted by gvs.
	if len(dst) > 0 {
		p = append(p, bpf.LoadIndirect{Off: ipv4DstOff, Size: 4})
	}
	var jumps []int // indexes of the "ja syn" instructions
	for _, k := range dst {
		p = append(p, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: k, SkipTrue: 1})
		jumps = append(jumps, len(p))
		p = append(p, bpf.Jump{})
	}
	if f.SYN == SYNExclude {
		p = appendMatch(p, ipv4SrcOff, src)
	}
	p = append(p, bpf.RetConstant{Val: 0})
	syn := len(p)
	for _, j := range jumps {
		p[j] = bpf.Jump{Skip: uint32(syn - j - 1)}
	}
	if f.SYN == UDPOnly {
		//	syn:
		//	    ldb [x+9]; jeq #17 -> accept; ret #0
		return append(p,
			bpf.LoadIndirect{Off: ipv4ProtoOff, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: ipProtoUDP, SkipTrue: 1},
			bpf.RetConstant{Val: 0},
			bpf.RetConstant{Val: acceptLen},
		)
	}
	synVerdict, otherVerdict := uint32(0), uint32(acceptLen)
	if f.SYN == SYNOnly {
		synVerdict, otherVerdict = acceptLen, 0
	}
	p = append(p, bpf.LoadIndirect{Off: ipv4ProtoOff, Size: 1})
	if f.SplitUDP {
		// UDP (any fragment) goes to the UDP ring: past the 16
		// instructions of the TCP test and its two verdicts, to a drop.
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: ipProtoUDP, SkipTrue: 17})
	}
	p = append(p,
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ipProtoTCP, SkipTrue: 15},
		bpf.LoadIndirect{Off: ipv4FragOff, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: fragOffMask, SkipTrue: 13},
		bpf.LoadIndirect{Off: 0, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2},
		bpf.ALUOpX{Op: bpf.ALUOpAdd},
		bpf.TAX{},
		bpf.LoadExtension{Num: bpf.ExtLen},
		bpf.JumpIfX{Cond: bpf.JumpGreaterOrEqual, SkipFalse: 6},
		bpf.ALUOpX{Op: bpf.ALUOpSub},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: tcpFlagsOff + 1, SkipFalse: 4},
		bpf.LoadIndirect{Off: tcpFlagsOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: tcpSYN | tcpACK},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: tcpSYN, SkipTrue: 1},
		bpf.RetConstant{Val: synVerdict},
		bpf.RetConstant{Val: otherVerdict},
	)
	if f.SplitUDP {
		p = append(p, bpf.RetConstant{Val: 0})
	}
	return p
}

// ICMP types the pipeline relates to a connection (rewrite's
// isRelatedError): destination unreachable, source quench, time exceeded.
const (
	icmpDestUnreach  = 3
	icmpSourceQuench = 4
	icmpTimeExceeded = 11
	ipv4MFAndOffMask = 0x3fff
)

// appendICMP keeps out of the ring every ICMP frame the pipeline would
// leave to the kernel anyway (Pass): anything but an unfragmented error of
// a type it relates to a connection (echo requests and replies, other
// types, fragments). An ICMP flood (pings to a VIP) then costs the worker
// nothing and cannot crowd out the established traffic in its ring. An
// error is accepted when accept is set (Filter.ICMP), else it goes on to
// the address matches with X restored; so is an ICMP frame too short for
// its type byte (the pipeline counts it malformed). (X is stored before
// the first jump to the drop: the kernel's check that scratch memory is
// written before it is read follows the program in order, across a ret.)
//
//	    ldb [x+9]; jne #1 -> rest
//	    stx M[0]
//	    ldh [x+6]; jset #0x3fff -> drop          (MF or an offset: Pass)
//	    ldb [x+0]; and #0xf; lsh #2; add x; tax  (X: ICMP header)
//	    ld len; jgt x else error                 (type byte in the frame)
//	    ldb [x+0]; jeq #3 -> error; jeq #4 -> error; jeq #11 -> error
//	drop:
//	    ret #0
//	error:
//	    ret #acceptLen                           (accept)
//	    ldx M[0]                                 (else)
//	rest:
func appendICMP(p []bpf.Instruction, accept bool) []bpf.Instruction {
	return append(p,
		bpf.LoadIndirect{Off: ipv4ProtoOff, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ipProtoICMP, SkipTrue: 16},
		bpf.StoreScratch{Src: bpf.RegX, N: 0},
		bpf.LoadIndirect{Off: ipv4FragOff, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: ipv4MFAndOffMask, SkipTrue: 11},
		bpf.LoadIndirect{Off: 0, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2},
		bpf.ALUOpX{Op: bpf.ALUOpAdd},
		bpf.TAX{},
		bpf.LoadExtension{Num: bpf.ExtLen},
		bpf.JumpIfX{Cond: bpf.JumpGreaterThan, SkipFalse: 5},
		bpf.LoadIndirect{Off: 0, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpDestUnreach, SkipTrue: 3},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpSourceQuench, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpTimeExceeded, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		icmpErrorVerdict(accept),
	)
}

// icmpErrorVerdict is appendICMP's last instruction: accept, or restore X
// for the address matches.
func icmpErrorVerdict(accept bool) bpf.Instruction {
	if accept {
		return bpf.RetConstant{Val: acceptLen}
	}
	return bpf.LoadScratch{Dst: bpf.RegX, N: 0}
}

// appendMatch loads the 32-bit word at X+off and accepts when it equals
// one of keys.
func appendMatch(p []bpf.Instruction, off uint32, keys []uint32) []bpf.Instruction {
	if len(keys) == 0 {
		return p
	}
	p = append(p, bpf.LoadIndirect{Off: off, Size: 4})
	for _, k := range keys {
		p = append(p,
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: k, SkipTrue: 1},
			bpf.RetConstant{Val: acceptLen},
		)
	}
	return p
}
