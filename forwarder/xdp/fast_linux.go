package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The fast path for established flows (gvsd --xdp-fastpath). The Go
// pipeline stays the authority: the daemon installs a flow's rewrite plan
// in a BPF hash map after the pipeline transmitted a steady packet of it
// (the flow cache's steadyPacket: TCP with ACK and none of SYN, FIN, RST;
// UDP), and removes it when the connection leaves the steady state,
// expires or changes its target. The XDP program looks every steady
// packet up; a hit is rewritten in the driver exactly as the pipeline
// would (MACs, TTL-1 with the RFC 1624 header checksum update, NAT's
// address and port with incremental L3/L4 checksum updates, TUN's IPIP
// outer header in new headroom) and redirected to the egress interface;
// anything else (a miss, an unusual packet) goes the AF_XDP way to the
// pipeline. Each entry counts its
// packets and bytes (atomic adds) and the last time it was used
// (bpf_ktime_get_ns, CLOCK_MONOTONIC) in its counter slot (FlowPlan.Slot)
// of a second map, an array the daemon reads in memory (BPF_F_MMAPABLE):
// the daemon folds them into the statistics and the connection's timer
// without a system call or a walk of the hash map's buckets.

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
	// FastTUN: IPIP to the real server (rewrite.TUN): the inner TTL-1,
	// then an outer IPv4 header in 20 bytes of new headroom.
	FastTUN = 4
)

// FlowPlan.Flags.
const (
	// FlagCopyDF (FastTUN): the outer header copies the inner DF flag
	// (net.ipv4.vs.pmtu_disc on); without it the outer DF is clear.
	FlagCopyDF = 1
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
// the source (NATOut); for TUN, Addr is the outer destination (the real
// server) and Src the outer source (the director's address towards it).
// Ifindex is the egress interface; MTU the largest IPv4 total length
// forwarded (a larger packet is the pipeline's; for TUN the inner packet's,
// the egress MTU less the outer header).
// Slot (< MaxFlows) is the flow's counter slot (FlowMap.Counters): no two
// entries share one. A packet more than Timeout ns after the slot's Seen
// is the pipeline's: its connection may have expired (the daemon sets the
// connection's timeout less a margin for its own lag in folding Seen into
// the connection's timer). The program does not write the plan.
type FlowPlan struct {
	DstMAC, SrcMAC [6]byte
	Addr           [4]byte
	Port           [2]byte
	Method         uint8
	Flags          uint8
	Ifindex        uint32
	MTU            uint32
	Src            [4]byte
	Slot           uint32
	_              uint32
	Timeout        uint64
}

// FlowCounters is a flow's counter slot: Packets, Bytes (IPv4 total
// lengths) and Seen (CLOCK_MONOTONIC ns, set by the daemon at install) are
// the program's, which adds to them atomically (it may run on several CPUs
// at once) and stores Seen. Read them with atomic loads.
type FlowCounters struct {
	Packets uint64
	Bytes   uint64
	Seen    uint64
}

// Value offsets the program uses.
const (
	fpAddr    = 12
	fpPort    = 16
	fpMethod  = 18
	fpFlags   = 19
	fpIfindex = 20
	fpMTU     = 24
	fpSrc     = 28
	fpSlot    = 32
	fpTimeout = 40

	ctrPackets = 0
	ctrBytes   = 8
	ctrSeen    = 16
	ctrSize    = 24
)

func init() {
	var p FlowPlan
	var c FlowCounters
	if unsafe.Sizeof(FlowKey{}) != 16 || unsafe.Sizeof(p) != 48 || unsafe.Offsetof(p.Addr) != fpAddr ||
		unsafe.Offsetof(p.Port) != fpPort || unsafe.Offsetof(p.Method) != fpMethod ||
		unsafe.Offsetof(p.Flags) != fpFlags || unsafe.Offsetof(p.Src) != fpSrc ||
		unsafe.Offsetof(p.Ifindex) != fpIfindex || unsafe.Offsetof(p.MTU) != fpMTU ||
		unsafe.Offsetof(p.Slot) != fpSlot || unsafe.Offsetof(p.Timeout) != fpTimeout ||
		unsafe.Sizeof(c) != ctrSize || unsafe.Offsetof(c.Packets) != ctrPackets ||
		unsafe.Offsetof(c.Bytes) != ctrBytes || unsafe.Offsetof(c.Seen) != ctrSeen {
		panic("xdp: FlowPlan layout")
	}
}

// FlowMap is the fast path's map, shared by the programs of both
// interfaces, with the IPv4 ID counters TUN encapsulation draws from.
//
// The ID counters are the workers' own (forwarder.Worker.ShareIPID): an
// outer header the program builds for a packet that arrived on RX queue q
// takes its ID from the counter of the worker that serves q (slot q mod
// the slots in use, as the daemon assigns queues), exactly as that worker
// would have. They live in a one-element array map (BPF_F_MMAPABLE) that
// the workers address in memory: word 0 is the number of slots in use,
// words 1..MaxQueues the counters.
//
// The flows' counters (FlowCounters) are an array map of MaxFlows slots
// (BPF_F_MMAPABLE), mapped too: reading them costs no system call.
type FlowMap struct {
	m      *ebpf.Map
	ids    *ebpf.Map
	idMem  []byte // ids, mapped
	ctrs   *ebpf.Map
	ctrMem []byte // ctrs, mapped
}

// NewFlowMap creates the maps.
func NewFlowMap() (*FlowMap, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "gvs_flows", Type: ebpf.Hash, KeySize: 16, ValueSize: 48, MaxEntries: MaxFlows})
	if err != nil {
		return nil, fmt.Errorf("xdp: flow map: %w", err)
	}
	f := &FlowMap{m: m}
	f.ids, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gvs_ipids", Type: ebpf.Array, KeySize: 4, ValueSize: idsSize,
		MaxEntries: 1, Flags: unix.BPF_F_MMAPABLE})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("xdp: IPv4 ID map: %w", err)
	}
	size := (idsSize + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	if f.idMem, err = unix.Mmap(f.ids.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		f.idMem = nil
		f.Close()
		return nil, fmt.Errorf("xdp: IPv4 ID map: mmap: %w", err)
	}
	f.ctrs, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gvs_flowctrs", Type: ebpf.Array, KeySize: 4, ValueSize: ctrSize,
		MaxEntries: MaxFlows, Flags: unix.BPF_F_MMAPABLE})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("xdp: flow counter map: %w", err)
	}
	if f.ctrMem, err = unix.Mmap(f.ctrs.FD(), 0, ctrSize*MaxFlows, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		f.ctrMem = nil
		f.Close()
		return nil, fmt.Errorf("xdp: flow counter map: mmap: %w", err)
	}
	return f, nil
}

// Counters is counter slot i (< MaxFlows) in memory, shared with the
// program: use atomic loads and stores.
func (f *FlowMap) Counters(i uint32) *FlowCounters {
	return (*FlowCounters)(unsafe.Pointer(&f.ctrMem[uintptr(i%MaxFlows)*ctrSize]))
}

// idsSize is the ID map's value: the slots in use and MaxQueues counters.
const idsSize = 4 * (1 + MaxQueues)

// IDCounters sets the number of ID slots in use (the workers that serve RX
// queues: worker k serves queues k, k+n, ...) and returns their counters,
// for the workers' ShareIPID.
func (f *FlowMap) IDCounters(n int) ([]*uint32, error) {
	if n < 1 || n > MaxQueues {
		return nil, fmt.Errorf("xdp: %d IPv4 ID slots, want 1..%d", n, MaxQueues)
	}
	c := make([]*uint32, n)
	for i := range c {
		c[i] = (*uint32)(unsafe.Pointer(&f.idMem[4+4*i]))
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&f.idMem[0])), uint32(n))
	return c, nil
}

func (f *FlowMap) fd() int {
	if f == nil {
		return -1
	}
	return f.m.FD()
}

func (f *FlowMap) idsFD() int {
	if f == nil {
		return -1
	}
	return f.ids.FD()
}

func (f *FlowMap) ctrsFD() int {
	if f == nil {
		return -1
	}
	return f.ctrs.FD()
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

// Lookup reads a flow's plan.
func (f *FlowMap) Lookup(k *FlowKey, p *FlowPlan) bool {
	return f.m.Lookup(unsafe.Pointer(k), unsafe.Pointer(p)) == nil
}

// Remove deletes a flow's entry and returns its plan (ok false: there was
// none).
func (f *FlowMap) Remove(k *FlowKey, p *FlowPlan) bool {
	return f.m.LookupAndDelete(unsafe.Pointer(k), unsafe.Pointer(p)) == nil
}

// Close releases the maps. The counters IDCounters returned must not be
// used any more.
func (f *FlowMap) Close() error {
	if f == nil {
		return nil
	}
	var errs []error
	if f.idMem != nil {
		errs = append(errs, unix.Munmap(f.idMem))
		f.idMem = nil
	}
	if f.ctrMem != nil {
		errs = append(errs, unix.Munmap(f.ctrMem))
		f.ctrMem = nil
	}
	if f.ctrs != nil {
		errs = append(errs, f.ctrs.Close())
	}
	if f.ids != nil {
		errs = append(errs, f.ids.Close())
	}
	errs = append(errs, f.m.Close())
	return errors.Join(errs...)
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
// FastDR, FastTUN) with flags (FlagCopyDF: TUN's outer header copies the
// inner DF, net.ipv4.vs.pmtu_disc): the MACs and the new address and port
// (TUN: the outer addresses) are out's, so that the program's rewrite of
// the flow's next packets is the pipeline's. mtu is the egress MTU. ok is
// false when out does not fit the method (not the flow's packet, or an
// outer DF that contradicts flags) or a TUN packet could not be forwarded
// within mtu.
func PlanFor(k *FlowKey, out []byte, method uint8, ifindex, mtu int, flags uint8) (p FlowPlan, ok bool) {
	proto := k.Proto
	if method == FastTUN {
		proto = protoIPIP
	}
	ok2 := len(out) >= ethHdrLen+ipv4MinHdrLen+8 && out[12] == 0x08 && out[13] == 0 && out[14] == 0x45 && out[23] == proto
	if !ok2 || ifindex <= 0 || mtu <= 0 {
		return p, false
	}
	copy(p.DstMAC[:], out[0:6])
	copy(p.SrcMAC[:], out[6:12])
	if method == FastTUN {
		const in = ethHdrLen + ipv4MinHdrLen // the inner header
		if len(out) < in+ipv4MinHdrLen+8 || out[in] != 0x45 || out[in+9] != k.Proto ||
			[4]byte(out[in+12:in+16]) != k.Src || [4]byte(out[in+16:in+20]) != k.Dst ||
			[2]byte(out[in+20:in+22]) != k.SrcPort || [2]byte(out[in+22:in+24]) != k.DstPort {
			return p, false
		}
		// An inner DF shows what the pipeline does with it.
		innerDF, outerDF := out[in+6]&0x40 != 0, out[ethHdrLen+6]&0x40 != 0
		if innerDF && outerDF != (flags&FlagCopyDF != 0) {
			return p, false
		}
		// The pipeline's xmitIn: larger than the MTU less the outer
		// header is fragmented or answered with fragmentation needed;
		// below 68 it is dropped.
		if mtu -= ipv4MinHdrLen; mtu < 68 {
			return p, false
		}
		p.Src, p.Addr = [4]byte(out[26:30]), [4]byte(out[30:34])
		p.Method, p.Flags, p.Ifindex, p.MTU = method, flags&FlagCopyDF, uint32(ifindex), uint32(mtu)
		return p, true
	}
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
//	if (ip.ver_ihl != 0x45 || ip.frag_off & (MF|0x1fff) || eth.src & 1 || ip.ttl <= 1) goto miss;
//	if (data + 14 + ip.tot_len > end) goto miss;
//	TCP: tot_len >= 40, 20 <= doff*4 <= tot_len-20, ACK && !(SYN|FIN|RST)
//	UDP: 8 <= ulen <= tot_len-20, csum != 0
//	if (ipcsum(ip) not valid) goto miss;
//	v = lookup(flows, {src, dst, sport, dport, proto}); if (!v || tot_len > v.mtu) goto miss;
//	now = ktime_get_ns(); c = lookup(ctrs, v.slot); if (!c || now - c.seen > v.timeout) goto miss;
//	c.seen = now; atomic c.packets += 1; atomic c.bytes += tot_len;
//	eth.dst, eth.src = v.macs; ip.ttl--;
//	NAT: address, port := v.addr, v.port; checksums updated (RFC 1624)
//	trim the Ethernet padding (bpf_xdp_adjust_tail);
//	TUN: bpf_xdp_adjust_head(-20); eth = {v.macs, IPv4};
//	     outer = {0x45, inner.tos (CE -> ECT(0)), tot_len+20,
//	              ++ids[rx_queue % ids.slots], v.flags & COPY_DF ? inner.DF : 0,
//	              inner.ttl, IPIP, csum, v.src, v.addr};
//	return bpf_redirect(v.ifindex, 0);
//
// Checksum arithmetic works on 16-bit words loaded little-endian: the
// one's complement sum is byte-order independent (RFC 1071), so the
// results are the network-order ones, byte-swapped, as stored.
func fastPath(flowsFD, idsFD, ctrsFD int, miss string) asm.Instructions {
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
		xmit       = "fast_xmit"
		aborted    = "fast_aborted"
		tos        = "fast_tos"
		idMod      = "fast_idmod"
		idSlot     = "fast_idslot"
		outerDF    = "fast_df"
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
	// sum20 sums the 20-byte header at R7+off into R3 (as 16-bit words,
	// folded), with R4 as scratch.
	sum20 := func(off int16) asm.Instructions {
		ins := asm.Instructions{asm.LoadMem(asm.R3, asm.R7, off, asm.Word)}
		for o := off + 4; o < off+20; o += 4 {
			ins = append(ins, asm.LoadMem(asm.R4, asm.R7, o, asm.Word), asm.Add.Reg(asm.R3, asm.R4))
		}
		ins = append(ins,
			asm.Mov.Reg(asm.R4, asm.R3),
			asm.RSh.Imm(asm.R4, 32),
			asm.Mov.Reg32(asm.R3, asm.R3),
			asm.Add.Reg(asm.R3, asm.R4))
		ins = append(ins, fold(asm.R3, asm.R4)...)
		return append(ins, fold(asm.R3, asm.R4)...) // a 33-bit sum needs a third
	}
	p := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R7, ip, asm.Byte).WithSymbol("fast"),
		asm.JNE.Imm(asm.R1, 0x45, miss),
		// Unfragmented only: MF clear, offset 0 (the caller sends
		// fragments to the pipeline before; kept as the fast path's own
		// rule). Network order 0x3fff, loaded little-endian.
		asm.LoadMem(asm.R1, asm.R7, ip+6, asm.Half),
		asm.And.Imm(asm.R1, 0xff3f),
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
	}
	verify := sum20(ip)
	verify[0] = verify[0].WithSymbol(key)
	p = append(p, verify...)
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
		// The counter slot (fp-40: now, fp-48: the slot).
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.R10, -40, asm.R0, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, fpSlot, asm.Word),
		asm.StoreMem(asm.R10, -48, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, ctrsFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -48),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, hitMiss),
		// Idle for longer than its timeout: the pipeline's.
		asm.LoadMem(asm.R2, asm.R10, -40, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, ctrSeen, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.Sub.Reg(asm.R3, asm.R1),
		asm.LoadMem(asm.R4, asm.R6, fpTimeout, asm.DWord),
		asm.JGT.Reg(asm.R3, asm.R4, hitMiss),
		// Counted: forwarded from here on.
		asm.StoreMem(asm.R0, ctrSeen, asm.R2, asm.DWord),
		asm.LoadMem(asm.R1, asm.R10, -24, asm.DWord),
		asm.Mov.Imm(asm.R2, 1),
		asm.AddAtomic.Mem(asm.R0, asm.R2, asm.DWord, ctrPackets),
		asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, ctrBytes),
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
		asm.JEq.Imm(asm.R1, FastTUN, ipDone), // the inner header's TTL
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
		asm.JEq.Imm(asm.R1, FastDR, send), // DR, TUN: the L4 checksum stands
		asm.JEq.Imm(asm.R1, FastTUN, send),
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
		asm.Mov.Imm(asm.R0, xdpAborted).WithSymbol(aborted),
		asm.Return(),
		asm.LoadMem(asm.R1, asm.R6, fpMethod, asm.Byte).WithSymbol(redirect),
		asm.JNE.Imm(asm.R1, FastTUN, xmit),
	)
	// TUN (rewrite.TUN): 20 bytes of headroom for the outer header, the
	// Ethernet header in front of it, the inner packet where it was.
	const (
		outer = ethHdrLen
		inner = ethHdrLen + ipv4MinHdrLen
	)
	p = append(p,
		asm.LoadMem(asm.R1, asm.R10, -32, asm.DWord),
		asm.Mov.Imm(asm.R2, -ipv4MinHdrLen),
		asm.FnXdpAdjustHead.Call(),
		asm.JNE.Imm(asm.R0, 0, aborted),
		asm.LoadMem(asm.R1, asm.R10, -32, asm.DWord),
		asm.LoadMem(asm.R7, asm.R1, mdData, asm.Word),
		asm.LoadMem(asm.R2, asm.R1, mdDataEnd, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Imm(asm.R3, inner+ipv4MinHdrLen),
		asm.JGT.Reg(asm.R3, asm.R2, aborted),
		// Ethernet: the plan's MACs, IPv4.
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
		asm.StoreMem(asm.R7, 0, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 4, asm.Word),
		asm.StoreMem(asm.R7, 4, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 8, asm.Word),
		asm.StoreMem(asm.R7, 8, asm.R1, asm.Word),
		asm.StoreImm(asm.R7, 12, 0x0008, asm.Half), // 0x0800, little-endian
		asm.StoreImm(asm.R7, outer, 0x45, asm.Byte),
		// TOS: the inner one, ECN CE as ECT(0) (INET_ECN_encapsulate).
		asm.LoadMem(asm.R1, asm.R7, inner+1, asm.Byte),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.And.Imm(asm.R2, 0x03),
		asm.JNE.Imm(asm.R2, 0x03, tos),
		asm.Xor.Imm(asm.R1, 0x01),
		asm.StoreMem(asm.R7, outer+1, asm.R1, asm.Byte).WithSymbol(tos),
		// Total length.
		asm.LoadMem(asm.R1, asm.R10, -24, asm.DWord),
		asm.Add.Imm(asm.R1, ipv4MinHdrLen),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.StoreMem(asm.R7, outer+2, asm.R1, asm.Half),
		// ID: the next of the counter of the worker that serves the RX
		// queue (slot rx_queue % slots; slot 0 while no slots are set).
		asm.LoadMapValue(asm.R1, idsFD, 0),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R10, -32, asm.DWord),
		asm.LoadMem(asm.R3, asm.R3, mdRxQueue, asm.Word),
		asm.JNE.Imm(asm.R2, 0, idMod),
		asm.Mov.Imm(asm.R3, 0),
		asm.Ja.Label(idSlot),
		asm.Mod.Reg32(asm.R3, asm.R2).WithSymbol(idMod),
		asm.And.Imm(asm.R3, MaxQueues-1).WithSymbol(idSlot),
		asm.LSh.Imm(asm.R3, 2),
		asm.Add.Reg(asm.R1, asm.R3),
		asm.Mov.Imm(asm.R2, 1),
		fetchAdd(asm.R1, asm.R2, asm.Word, 4),
		asm.Add.Imm(asm.R2, 1),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.R7, outer+4, asm.R2, asm.Half),
		// Flags and fragment offset: the inner DF with FlagCopyDF.
		asm.LoadMem(asm.R1, asm.R7, inner+6, asm.Byte),
		asm.And.Imm(asm.R1, 0x40),
		asm.LoadMem(asm.R2, asm.R6, fpFlags, asm.Byte),
		asm.And.Imm(asm.R2, FlagCopyDF),
		asm.JNE.Imm(asm.R2, 0, outerDF),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R7, outer+6, asm.R1, asm.Half).WithSymbol(outerDF), // little-endian: DF in the first byte
		// TTL: the inner one (decremented), protocol IPIP, addresses.
		asm.LoadMem(asm.R1, asm.R7, inner+8, asm.Byte),
		asm.StoreMem(asm.R7, outer+8, asm.R1, asm.Byte),
		asm.StoreImm(asm.R7, outer+9, protoIPIP, asm.Byte),
		asm.StoreImm(asm.R7, outer+10, 0, asm.Half),
		asm.LoadMem(asm.R1, asm.R6, fpSrc, asm.Word),
		asm.StoreMem(asm.R7, outer+12, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, fpAddr, asm.Word),
		asm.StoreMem(asm.R7, outer+16, asm.R1, asm.Word),
	)
	p = append(p, sum20(outer)...)
	p = append(p,
		asm.Xor.Imm(asm.R3, 0xffff),
		asm.StoreMem(asm.R7, outer+10, asm.R3, asm.Half),
		asm.LoadMem(asm.R1, asm.R6, fpIfindex, asm.Word).WithSymbol(xmit),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		// A hit the pipeline must take (too big): restore ctx.
		asm.LoadMem(asm.R6, asm.R10, -32, asm.DWord).WithSymbol(hitMiss),
		asm.Ja.Label(miss),
	)
	return p
}

// fetchAdd is asm.FetchAdd.Mem with the operation also in the immediate:
// cilium/ebpf v0.22.0's Instruction.Marshal takes the immediate before it
// moves an atomic operation there, so FetchAdd would be encoded as a plain
// atomic add (imm 0) and leave src as it was.
func fetchAdd(dst, src asm.Register, size asm.Size, off int16) asm.Instruction {
	ins := asm.FetchAdd.Mem(dst, src, size, off)
	ins.Constant = int64(asm.FetchAdd >> 8) // BPF_ADD | BPF_FETCH
	return ins
}
