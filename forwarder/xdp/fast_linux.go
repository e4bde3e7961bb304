package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The fast path for established flows (gvsd --xdp-fastpath). The Go
// pipeline stays the authority: the daemon installs a flow's rewrite plan
// in a BPF hash map after the pipeline transmitted a steady packet of it
// (the flow cache's steadyPacket: TCP with ACK and none of SYN, FIN, RST;
// UDP), and removes it when the connection leaves the steady state,
// expires or changes its target. The XDP program looks every steady
// packet up; a hit is rewritten in the driver exactly as the pipeline
// would (MACs, TTL-1 with the RFC 1624 header checksum update, NAT's
// address and port with incremental L3/L4 checksum updates) and
// redirected to the egress interface; anything else (a miss, an unusual
// packet) goes the AF_XDP way to the pipeline. Each entry counts its
// packets and bytes (atomic adds) and the last time it was used
// (bpf_ktime_get_ns, CLOCK_MONOTONIC), which the daemon folds into the
// statistics and the connection's timer.

// MaxFlows bounds the fast path's map.
const MaxFlows = 1 << 18

// Fast-path methods (FlowPlan.Method).
const (
	// FastNATIn: client -> VIP:port becomes client -> RIP:rport.
	FastNATIn = 1
	// FastNATOut: RIP:rport -> client becomes VIP:port -> client.
	FastNATOut = 2
	// FastDR: MACs and TTL only.
	FastDR = 3
)

// FlowKey is a flow's tuple as it lies in the frame (addresses and ports
// in network order) and its protocol: the fast-path map's key.
type FlowKey struct {
	Src, Dst         [4]byte
	SrcPort, DstPort [2]byte
	Proto            uint8
	_                [3]byte
}

// Reverse is the key of the opposite direction.
func (k FlowKey) Reverse() FlowKey {
	return FlowKey{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto}
}

// Ports are the key's ports in host order.
func (k *FlowKey) Ports() (sport, dport uint16) {
	return binary.BigEndian.Uint16(k.SrcPort[:]), binary.BigEndian.Uint16(k.DstPort[:])
}

// FlowPlan is a flow's rewrite plan and counters: the fast-path map's
// value. Addr and Port (network order) replace the destination (NATIn) or
// the source (NATOut); Ifindex is the egress interface; MTU the largest
// IPv4 total length forwarded (a larger packet is the pipeline's).
// Packets, Bytes (IPv4 total lengths) and Seen (CLOCK_MONOTONIC ns, the
// daemon's install time at first) are the program's. A packet more than
// Timeout ns after the entry's last one is the pipeline's: its connection
// may have expired (the daemon sets the connection's timeout less a margin
// for its own lag in folding Seen into the connection's timer).
type FlowPlan struct {
	DstMAC, SrcMAC [6]byte
	Addr           [4]byte
	Port           [2]byte
	Method         uint8
	_              uint8
	Ifindex        uint32
	MTU            uint32
	_              uint32
	Packets        uint64
	Bytes          uint64
	Seen           uint64
	Timeout        uint64
}

// Value offsets the program uses.
const (
	fpAddr    = 12
	fpPort    = 16
	fpMethod  = 18
	fpIfindex = 20
	fpMTU     = 24
	fpPackets = 32
	fpBytes   = 40
	fpSeen    = 48
	fpTimeout = 56
)

func init() {
	var p FlowPlan
	if unsafe.Sizeof(FlowKey{}) != 16 || unsafe.Sizeof(p) != 64 || unsafe.Offsetof(p.Addr) != fpAddr ||
		unsafe.Offsetof(p.Port) != fpPort || unsafe.Offsetof(p.Method) != fpMethod ||
		unsafe.Offsetof(p.Ifindex) != fpIfindex || unsafe.Offsetof(p.MTU) != fpMTU ||
		unsafe.Offsetof(p.Packets) != fpPackets || unsafe.Offsetof(p.Bytes) != fpBytes ||
		unsafe.Offsetof(p.Seen) != fpSeen || unsafe.Offsetof(p.Timeout) != fpTimeout {
		panic("xdp: FlowPlan layout")
	}
}

// FlowMap is the fast path's map, shared by the programs of both
// interfaces.
type FlowMap struct {
	m *ebpf.Map
}

// NewFlowMap creates the map.
func NewFlowMap() (*FlowMap, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "gvs_flows", Type: ebpf.Hash, KeySize: 16, ValueSize: 64, MaxEntries: MaxFlows})
	if err != nil {
		return nil, fmt.Errorf("xdp: flow map: %w", err)
	}
	return &FlowMap{m: m}, nil
}

func (f *FlowMap) fd() int {
	if f == nil {
		return -1
	}
	return f.m.FD()
}

// Install adds a flow's plan unless the flow has one (installed reports
// a new entry). It does not allocate.
func (f *FlowMap) Install(k *FlowKey, p *FlowPlan) (installed bool, err error) {
	err = f.m.Update(unsafe.Pointer(k), unsafe.Pointer(p), ebpf.UpdateNoExist)
	if errors.Is(err, ebpf.ErrKeyExist) {
		return false, nil
	}
	return err == nil, err
}

// Lookup reads a flow's plan and counters.
func (f *FlowMap) Lookup(k *FlowKey, p *FlowPlan) bool {
	return f.m.Lookup(unsafe.Pointer(k), unsafe.Pointer(p)) == nil
}

// Remove deletes a flow's entry and returns its last counters (ok false:
// there was none).
func (f *FlowMap) Remove(k *FlowKey, p *FlowPlan) bool {
	return f.m.LookupAndDelete(unsafe.Pointer(k), unsafe.Pointer(p)) == nil
}

// readChunk is how many entries one BPF_MAP_LOOKUP_BATCH call reads.
const readChunk = 1024

// ErrNoBatch is ReadAll's error where the kernel has no batch lookup for
// hash maps (before Linux 5.6): read the entries one by one instead.
var ErrNoBatch = errors.New("xdp: the kernel has no batch map lookup")

// ReadAll appends every entry of the map to keys and plans (of equal
// length: pairwise) and returns them: a few BPF_MAP_LOOKUP_BATCH calls, where a Lookup per
// entry costs a system call each (the daemon's fold reads the whole map
// every 100 ms). An entry added or removed while it reads may or may not
// be in the result; every entry present throughout is, once.
func (f *FlowMap) ReadAll(keys []FlowKey, plans []FlowPlan) ([]FlowKey, []FlowPlan, error) {
	var cursor ebpf.MapBatchCursor
	for {
		n0 := len(keys)
		keys = slices.Grow(keys, readChunk)[:n0+readChunk]
		plans = slices.Grow(plans[:n0], readChunk)[:n0+readChunk]
		n, err := f.m.BatchLookup(&cursor, keys[n0:], plans[n0:], nil)
		keys, plans = keys[:n0+n], plans[:n0+n]
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return keys, plans, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return keys[:0], plans[:0], ErrNoBatch
		case err != nil:
			return keys, plans, err
		}
	}
}

// Close releases the map.
func (f *FlowMap) Close() error {
	if f == nil {
		return nil
	}
	return f.m.Close()
}

// FrameKey reads the key of a frame the fast path could take: untagged
// IPv4 without options or fragmentation, TCP or UDP with its header in the
// frame. steady reports a packet the pipeline's flow cache would take (TCP:
// ACK without SYN, FIN, RST; UDP). It reads the frame only.
func FrameKey(frame []byte) (k FlowKey, steady, ok bool) {
	if len(frame) < ethHdrLen+ipv4MinHdrLen+8 || frame[12] != 0x08 || frame[13] != 0 || frame[14] != 0x45 ||
		binary.BigEndian.Uint16(frame[20:])&0x3fff != 0 {
		return k, false, false
	}
	proto := frame[23]
	switch proto {
	case protoUDP:
		steady = true
	case protoTCP:
		if len(frame) < ethHdrLen+ipv4MinHdrLen+20 {
			return k, false, false
		}
		f := frame[47]
		steady = f&0x10 != 0 && f&0x07 == 0
	default:
		return k, false, false
	}
	copy(k.Src[:], frame[26:30])
	copy(k.Dst[:], frame[30:34])
	copy(k.SrcPort[:], frame[34:36])
	copy(k.DstPort[:], frame[36:38])
	k.Proto = proto
	return k, steady, true
}

// PlanFor makes the plan of flow k from out, the frame the pipeline
// transmitted for a packet of it, for method (FastNATIn, FastNATOut,
// FastDR): the MACs and the new address and port are out's, so that the
// program's rewrite of the flow's next packets is the pipeline's. ok is
// false when out does not fit the method (not the flow's packet).
func PlanFor(k *FlowKey, out []byte, method uint8, ifindex, mtu int) (p FlowPlan, ok bool) {
	ok2 := false
	ok2 = len(out) >= ethHdrLen+ipv4MinHdrLen+8 && out[12] == 0x08 && out[13] == 0 && out[14] == 0x45 && out[23] == k.Proto
	if !ok2 || ifindex <= 0 || mtu <= 0 {
		return p, false
	}
	copy(p.DstMAC[:], out[0:6])
	copy(p.SrcMAC[:], out[6:12])
	src, dst := [4]byte(out[26:30]), [4]byte(out[30:34])
	sport, dport := [2]byte(out[34:36]), [2]byte(out[36:38])
	switch method {
	case FastNATIn:
		if src != k.Src || sport != k.SrcPort {
			return p, false
		}
		p.Addr, p.Port = dst, dport
	case FastNATOut:
		if dst != k.Dst || dport != k.DstPort {
			return p, false
		}
		p.Addr, p.Port = src, sport
	case FastDR:
		if src != k.Src || dst != k.Dst || sport != k.SrcPort || dport != k.DstPort {
			return p, false
		}
	default:
		return p, false
	}
	p.Method, p.Ifindex, p.MTU = method, uint32(ifindex), uint32(mtu)
	return p, true
}

// fastPath emits the fast path: entered with R6 ctx, R7 data (IPv4 header
// at +14, checked to +34), R8 the L4 header (checked for 4 bytes), R9 the
// protocol (TCP or UDP); a miss jumps to miss with R6-R9 as they were. In
// C:
//
//	if (ip.ver_ihl != 0x45 || ip.MF || eth.src & 1 || ip.ttl <= 1) goto miss;
//	if (data + 14 + ip.tot_len > end) goto miss;
//	TCP: tot_len >= 40, 20 <= doff*4 <= tot_len-20, ACK && !(SYN|FIN|RST)
//	UDP: 8 <= ulen <= tot_len-20, csum != 0
//	if (ipcsum(ip) not valid) goto miss;
//	v = lookup(flows, {src, dst, sport, dport, proto}); if (!v || tot_len > v.mtu) goto miss;
//	now = ktime_get_ns(); if (now - v.seen > v.timeout) goto miss;
//	v.seen = now; atomic v.packets += 1; atomic v.bytes += tot_len;
//	eth.dst, eth.src = v.macs; ip.ttl--;
//	NAT: address, port := v.addr, v.port; checksums updated (RFC 1624)
//	trim the Ethernet padding (bpf_xdp_adjust_tail);
//	return bpf_redirect(v.ifindex, 0);
//
// Checksum arithmetic works on 16-bit words loaded little-endian: the
// one's complement sum is byte-order independent (RFC 1071), so the
// results are the network-order ones, byte-swapped, as stored.
func fastPath(flowsFD int, miss string) asm.Instructions {
	const (
		tcp        = "fast_tcp"
		udp        = "fast_udp"
		key        = "fast_key"
		hitMiss    = "fast_hitmiss"
		natOut     = "fast_natout"
		ipDone     = "fast_ipdone"
		udpCs      = "fast_udpcs"
		csStore    = "fast_csstore"
		send       = "fast_send"
		redirect   = "fast_redirect"
		xdpAborted = 0
		ip         = ethHdrLen
	)
	// fold folds the sum in r (< 2^32) to 16 bits, with t as scratch.
	fold := func(r, t asm.Register) asm.Instructions {
		var ins asm.Instructions
		for range 2 {
			ins = append(ins,
				asm.Mov.Reg(t, r), asm.RSh.Imm(t, 16),
				asm.And.Imm(r, 0xffff), asm.Add.Reg(r, t))
		}
		return ins
	}
	p := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R7, ip, asm.Byte).WithSymbol("fast"),
		asm.JNE.Imm(asm.R1, 0x45, miss),
		asm.LoadMem(asm.R1, asm.R7, ip+6, asm.Byte),
		asm.And.Imm(asm.R1, 0x20), // MF
		asm.JNE.Imm(asm.R1, 0, miss),
		asm.LoadMem(asm.R1, asm.R7, 6, asm.Byte),
		asm.And.Imm(asm.R1, 1), // a group source MAC: a martian
		asm.JNE.Imm(asm.R1, 0, miss),
		asm.LoadMem(asm.R1, asm.R7, ip+8, asm.Byte),
		asm.JLT.Imm(asm.R1, 2, miss), // TTL
		asm.LoadMem(asm.R1, asm.R7, ip+2, asm.Half),
		asm.HostTo(asm.BE, asm.R1, asm.Half), // R1: total length
		asm.LoadMem(asm.R2, asm.R6, mdDataEnd, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Reg(asm.R3, asm.R1),
		asm.Add.Imm(asm.R3, ethHdrLen),
		asm.JGT.Reg(asm.R3, asm.R2, miss), // Ethernet padding is trimmed at send
		asm.JEq.Imm(asm.R9, protoUDP, udp),
		// TCP.
		asm.JLT.Imm(asm.R1, 40, miss).WithSymbol(tcp),
		asm.Mov.Reg(asm.R3, asm.R8),
		asm.Add.Imm(asm.R3, 20),
		asm.JGT.Reg(asm.R3, asm.R2, miss),
		asm.LoadMem(asm.R3, asm.R8, 12, asm.Byte),
		asm.RSh.Imm(asm.R3, 4),
		asm.LSh.Imm(asm.R3, 2),
		asm.JLT.Imm(asm.R3, 20, miss),
		asm.Add.Imm(asm.R3, ipv4MinHdrLen),
		asm.JGT.Reg(asm.R3, asm.R1, miss),
		asm.LoadMem(asm.R3, asm.R8, 13, asm.Byte),
		asm.Mov.Reg(asm.R4, asm.R3),
		asm.And.Imm(asm.R4, 0x10), // ACK
		asm.JEq.Imm(asm.R4, 0, miss),
		asm.And.Imm(asm.R3, 0x07), // FIN, SYN, RST
		asm.JNE.Imm(asm.R3, 0, miss),
		asm.Ja.Label(key),
		// UDP.
		asm.Mov.Reg(asm.R3, asm.R8).WithSymbol(udp),
		asm.Add.Imm(asm.R3, 8),
		asm.JGT.Reg(asm.R3, asm.R2, miss),
		asm.LoadMem(asm.R3, asm.R8, 4, asm.Half),
		asm.HostTo(asm.BE, asm.R3, asm.Half),
		asm.JLT.Imm(asm.R3, 8, miss),
		asm.Add.Imm(asm.R3, ipv4MinHdrLen),
		asm.JGT.Reg(asm.R3, asm.R1, miss),
		// No checksum: NAT computes it in full (the pipeline's).
		asm.LoadMem(asm.R3, asm.R8, 6, asm.Half),
		asm.JEq.Imm(asm.R3, 0, miss),
		// The IPv4 header checksum must verify (the pipeline drops a
		// header that does not).
		asm.LoadMem(asm.R3, asm.R7, ip, asm.Word).WithSymbol(key),
	}
	for off := int16(4); off < 20; off += 4 {
		p = append(p, asm.LoadMem(asm.R4, asm.R7, ip+off, asm.Word), asm.Add.Reg(asm.R3, asm.R4))
	}
	p = append(p,
		asm.Mov.Reg(asm.R4, asm.R3),
		asm.RSh.Imm(asm.R4, 32),
		asm.Mov.Reg32(asm.R3, asm.R3),
		asm.Add.Reg(asm.R3, asm.R4))
	p = append(p, fold(asm.R3, asm.R4)...)
	p = append(p, fold(asm.R3, asm.R4)...) // a 33-bit sum needs a third
	p = append(p,
		asm.JNE.Imm(asm.R3, 0xffff, miss),
		// The key at fp-16.
		asm.LoadMem(asm.R3, asm.R7, ip+12, asm.Word),
		asm.StoreMem(asm.R10, -16, asm.R3, asm.Word),
		asm.LoadMem(asm.R3, asm.R7, ip+16, asm.Word),
		asm.StoreMem(asm.R10, -12, asm.R3, asm.Word),
		asm.LoadMem(asm.R3, asm.R8, 0, asm.Word),
		asm.StoreMem(asm.R10, -8, asm.R3, asm.Word),
		asm.StoreMem(asm.R10, -4, asm.R9, asm.Word),
		asm.StoreMem(asm.R10, -24, asm.R1, asm.DWord), // total length
		asm.StoreMem(asm.R10, -32, asm.R6, asm.DWord), // ctx
		asm.LoadMapPtr(asm.R1, flowsFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, miss),
		asm.Mov.Reg(asm.R6, asm.R0), // R6: the plan
		asm.LoadMem(asm.R1, asm.R10, -24, asm.DWord),
		asm.LoadMem(asm.R2, asm.R6, fpMTU, asm.Word),
		asm.JGT.Reg(asm.R1, asm.R2, hitMiss),
		// Idle for longer than its timeout: the pipeline's.
		asm.FnKtimeGetNs.Call(),
		asm.LoadMem(asm.R1, asm.R6, fpSeen, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.R0),
		asm.Sub.Reg(asm.R2, asm.R1),
		asm.LoadMem(asm.R3, asm.R6, fpTimeout, asm.DWord),
		asm.JGT.Reg(asm.R2, asm.R3, hitMiss),
		// Counted: forwarded from here on.
		asm.StoreMem(asm.R6, fpSeen, asm.R0, asm.DWord),
		asm.LoadMem(asm.R1, asm.R10, -24, asm.DWord),
		asm.Mov.Imm(asm.R2, 1),
		asm.AddAtomic.Mem(asm.R6, asm.R2, asm.DWord, fpPackets),
		asm.AddAtomic.Mem(asm.R6, asm.R1, asm.DWord, fpBytes),
		// MACs.
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
		asm.StoreMem(asm.R7, 0, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 4, asm.Word),
		asm.StoreMem(asm.R7, 4, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 8, asm.Word),
		asm.StoreMem(asm.R7, 8, asm.R1, asm.Word),
		// TTL-1: the TTL/protocol word w (little-endian ttl | proto<<8)
		// becomes w-1, adding ^w + (w-1) = 0xfffe to the sum.
		asm.LoadMem(asm.R1, asm.R7, ip+8, asm.Byte),
		asm.Sub.Imm(asm.R1, 1),
		asm.StoreMem(asm.R7, ip+8, asm.R1, asm.Byte),
		asm.LoadMem(asm.R2, asm.R7, ip+10, asm.Half),
		asm.Xor.Imm(asm.R2, 0xffff),
		asm.Add.Imm(asm.R2, 0xfffe),
		asm.Mov.Imm(asm.R5, 0), // R5: the address and port terms, for L4
		asm.LoadMem(asm.R1, asm.R6, fpMethod, asm.Byte),
		asm.JEq.Imm(asm.R1, FastDR, ipDone),
		asm.JEq.Imm(asm.R1, FastNATOut, natOut),
	)
	// nat replaces the address at IPv4 offset addrOff and the port at L4
	// offset portOff: R5 gets ^old + new of both, R2 the address's.
	nat := func(addrOff, portOff int16, sym string) asm.Instructions {
		ins := asm.Instructions{
			asm.LoadMem(asm.R3, asm.R7, ip+addrOff, asm.Word).WithSymbol(sym),
			asm.LoadMem(asm.R4, asm.R6, fpAddr, asm.Word),
			asm.StoreMem(asm.R7, ip+addrOff, asm.R4, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R3),
			asm.And.Imm(asm.R1, 0xffff),
			asm.Xor.Imm(asm.R1, 0xffff),
			asm.Add.Reg(asm.R5, asm.R1),
			asm.RSh.Imm(asm.R3, 16),
			asm.Xor.Imm(asm.R3, 0xffff),
			asm.Add.Reg(asm.R5, asm.R3),
			asm.Mov.Reg(asm.R1, asm.R4),
			asm.And.Imm(asm.R1, 0xffff),
			asm.Add.Reg(asm.R5, asm.R1),
			asm.RSh.Imm(asm.R4, 16),
			asm.Add.Reg(asm.R5, asm.R4),
			asm.Add.Reg(asm.R2, asm.R5),
			asm.LoadMem(asm.R3, asm.R8, portOff, asm.Half),
			asm.LoadMem(asm.R4, asm.R6, fpPort, asm.Half),
			asm.StoreMem(asm.R8, portOff, asm.R4, asm.Half),
			asm.Xor.Imm(asm.R3, 0xffff),
			asm.Add.Reg(asm.R5, asm.R3),
			asm.Add.Reg(asm.R5, asm.R4),
			asm.Ja.Label(ipDone),
		}
		return ins
	}
	p = append(p, nat(16, 2, "fast_natin")...)
	p = append(p, nat(12, 0, natOut)...)
	// The IPv4 header checksum.
	p = append(p, asm.Mov.Reg(asm.R2, asm.R2).WithSymbol(ipDone))
	p = append(p, fold(asm.R2, asm.R3)...)
	p = append(p,
		asm.Xor.Imm(asm.R2, 0xffff),
		asm.StoreMem(asm.R7, ip+10, asm.R2, asm.Half),
		asm.LoadMem(asm.R1, asm.R6, fpMethod, asm.Byte),
		asm.JEq.Imm(asm.R1, FastDR, send), // DR: the L4 checksum stands
		// The L4 checksum: TCP at +16, UDP at +6 (not 0: checked).
		asm.JEq.Imm(asm.R9, protoUDP, udpCs),
		asm.LoadMem(asm.R1, asm.R8, 16, asm.Half),
		asm.Xor.Imm(asm.R1, 0xffff),
		asm.Add.Reg(asm.R1, asm.R5),
	)
	p = append(p, fold(asm.R1, asm.R3)...)
	p = append(p,
		asm.Xor.Imm(asm.R1, 0xffff),
		asm.StoreMem(asm.R8, 16, asm.R1, asm.Half),
		asm.Ja.Label(send),
		asm.LoadMem(asm.R1, asm.R8, 6, asm.Half).WithSymbol(udpCs),
		asm.Xor.Imm(asm.R1, 0xffff),
		asm.Add.Reg(asm.R1, asm.R5),
	)
	p = append(p, fold(asm.R1, asm.R3)...)
	p = append(p,
		asm.Xor.Imm(asm.R1, 0xffff),
		asm.JNE.Imm(asm.R1, 0, csStore),
		asm.Mov.Imm(asm.R1, 0xffff), // UDP: a computed 0 is sent as 0xffff
		asm.StoreMem(asm.R8, 6, asm.R1, asm.Half).WithSymbol(csStore),
		// Ethernet padding is not forwarded (the pipeline's frame ends
		// with the IPv4 packet): trim it.
		asm.LoadMem(asm.R1, asm.R10, -32, asm.DWord).WithSymbol(send),
		asm.FnXdpGetBuffLen.Call(),
		asm.LoadMem(asm.R1, asm.R10, -24, asm.DWord),
		asm.Add.Imm(asm.R1, ethHdrLen),
		asm.JEq.Reg(asm.R0, asm.R1, redirect),
		asm.Sub.Reg(asm.R1, asm.R0), // minus the padding
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.LoadMem(asm.R1, asm.R10, -32, asm.DWord),
		asm.FnXdpAdjustTail.Call(),
		asm.JEq.Imm(asm.R0, 0, redirect),
		asm.Mov.Imm(asm.R0, xdpAborted),
		asm.Return(),
		asm.LoadMem(asm.R1, asm.R6, fpIfindex, asm.Word).WithSymbol(redirect),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		// A hit the pipeline must take (too big): restore ctx.
		asm.LoadMem(asm.R6, asm.R10, -32, asm.DWord).WithSymbol(hitMiss),
		asm.Ja.Label(miss),
	)
	return p
}
