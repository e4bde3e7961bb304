package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Map sizes.
const (
	// MaxRules bounds the rules of one program (hash map entries).
	MaxRules = 1 << 16
	// MaxQueues bounds the RX queues one program redirects (XSKMAP size).
	MaxQueues = 256
)

// Program is the XDP program attached to one interface, with its maps: the
// XSKMAP (RX queue -> AF_XDP socket), the rules (which frames are gvs's:
// exact and any ports in a hash map, port ranges in an LPM trie,
// ranges_linux.go) and the interface's own MAC.
type Program struct {
	prog       *ebpf.Program
	xsks       *ebpf.Map
	rules      *ebpf.Map
	ranges     *ebpf.Map
	conf       *ebpf.Map
	link       link.Link
	mode       Mode
	have       map[ruleKey]bool
	haveRanges map[rangeKey]bool
}

// AttachConfig says how to attach a Program.
type AttachConfig struct {
	// Ifindex is the interface.
	Ifindex int
	// MAC is the interface's address: only frames addressed to it are
	// redirected (the kernel's PACKET_HOST; broadcast, multicast and other
	// hosts' frames are the kernel's).
	MAC [6]byte
	// Modes are the attach modes to try, in order; empty: Native, then
	// Generic.
	Modes []Mode
	// Flows, when not nil, enables the fast path for established flows
	// (fast_linux.go) with this map.
	Flows *FlowMap
}

// Attach loads the program and attaches it to the interface, trying each
// mode in turn. Until SetRules, nothing is redirected.
func Attach(cfg AttachConfig) (*Program, error) {
	modes := cfg.Modes
	if len(modes) == 0 {
		modes = []Mode{Native, Generic}
	}
	p, err := load(cfg.MAC, true, cfg.Flows)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, m := range modes {
		l, err := link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: cfg.Ifindex, Flags: m.flags()})
		if err == nil {
			p.link, p.mode = l, m
			return p, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", m, err))
	}
	p.Close()
	return nil, fmt.Errorf("xdp: attach to ifindex %d: %w", cfg.Ifindex, errors.Join(errs...))
}

// load creates the maps and loads the program (withXSK false: the
// program returns XDP_REDIRECT itself, for tests).
func load(mac [6]byte, withXSK bool, flows *FlowMap) (*Program, error) {
	p := &Program{have: map[ruleKey]bool{}, haveRanges: map[rangeKey]bool{}}
	var err error
	if p.xsks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gvs_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: MaxQueues}); err != nil {
		return nil, fmt.Errorf("xdp: XSKMAP: %w", err)
	}
	if p.rules, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gvs_rules", Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: MaxRules}); err != nil {
		p.Close()
		return nil, fmt.Errorf("xdp: rules map: %w", err)
	}
	if p.ranges, err = ebpf.NewMap(rangeMapSpec()); err != nil {
		p.Close()
		return nil, fmt.Errorf("xdp: port range map: %w", err)
	}
	if p.conf, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gvs_conf", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}); err != nil {
		p.Close()
		return nil, fmt.Errorf("xdp: config map: %w", err)
	}
	var conf [8]byte
	copy(conf[:], mac[:])
	if err := p.conf.Put(uint32(0), conf); err != nil {
		p.Close()
		return nil, fmt.Errorf("xdp: config map: %w", err)
	}
	xsks := -1
	if withXSK {
		xsks = p.xsks.FD()
	}
	p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "gvs_xdp",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: instructions(p.conf.FD(), p.rules.FD(), p.ranges.FD(), xsks, flows.fd(), flows.idsFD(), flows.ctrsFD()),
	})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("xdp: load program: %w", err)
	}
	return p, nil
}

// Mode is the mode the program runs in.
func (p *Program) Mode() Mode { return p.mode }

// SetSocket makes frames of RX queue queue go to the AF_XDP socket fd.
func (p *Program) SetSocket(queue, fd int) error {
	return p.xsks.Put(uint32(queue), uint32(fd))
}

// SetRules replaces the program's rules with rules (entries no longer
// wanted are removed after the new ones are in: a frame matching both the
// old and the new set is never passed to the kernel in between) and sets
// whether every ICMP error addressed to the interface is redirected.
func (p *Program) SetRules(rules []Rule, icmpErrors bool) error {
	want := make(map[ruleKey]bool, len(rules)+1)
	wantRanges := map[rangeKey]bool{}
	for _, r := range rules {
		if r.PortMax != 0 {
			ks, err := r.rangeKeys()
			if err != nil {
				return err
			}
			for _, k := range ks {
				wantRanges[k] = true
			}
			continue
		}
		k, err := r.key()
		if err != nil {
			return err
		}
		want[k] = true
	}
	if icmpErrors {
		want[ruleKey{kind: kindICMPAny}] = true
	}
	if len(want) > MaxRules {
		return fmt.Errorf("xdp: %d rules, at most %d", len(want), MaxRules)
	}
	if len(wantRanges) > MaxRangePrefixes {
		return fmt.Errorf("xdp: port ranges of %d blocks, at most %d", len(wantRanges), MaxRangePrefixes)
	}
	var errs []error
	for k := range wantRanges {
		if !p.haveRanges[k] {
			if err := p.ranges.Put(k.bytes(), uint8(1)); err != nil {
				errs = append(errs, err)
				continue
			}
			p.haveRanges[k] = true
		}
	}
	for k := range want {
		if !p.have[k] {
			if err := p.rules.Put(k.bytes(), uint8(1)); err != nil {
				errs = append(errs, err)
				continue
			}
			p.have[k] = true
		}
	}
	for k := range p.have {
		if !want[k] {
			if err := p.rules.Delete(k.bytes()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
				continue
			}
			delete(p.have, k)
		}
	}
	for k := range p.haveRanges {
		if !wantRanges[k] {
			if err := p.ranges.Delete(k.bytes()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
				continue
			}
			delete(p.haveRanges, k)
		}
	}
	return errors.Join(errs...)
}

// Close detaches the program and releases its maps.
func (p *Program) Close() error {
	var errs []error
	if p.link != nil {
		errs = append(errs, p.link.Close())
	}
	for _, c := range []interface{ Close() error }{p.prog, p.xsks, p.rules, p.ranges, p.conf} { // not the flow map: shared
		switch v := c.(type) {
		case *ebpf.Program:
			if v != nil {
				errs = append(errs, v.Close())
			}
		case *ebpf.Map:
			if v != nil {
				errs = append(errs, v.Close())
			}
		}
	}
	return errors.Join(errs...)
}

// Rule selects frames for the AF_XDP sockets: IPv4 frames whose destination
// (Dst) or source address is Addr, of protocol Proto (6 TCP, 17 UDP, 1
// ICMP) and, for TCP and UDP, destination (Dst) or source port Port (0:
// any port), or, with PortMax set, a port in Port..PortMax (the nftables
// drops' ranges: an FTP service's data ports). For ICMP only errors
// (destination unreachable, source quench, time exceeded, parameter
// problem) match, and Port is ignored.
//
// A Frags rule selects IPv4 fragments instead (MF set or a fragment
// offset, the first fragment included) of protocol Proto to (Dst) or from
// Addr, whatever their ports: the pipeline reassembles them (the nftables
// drops' Frags rules; the first fragment goes with the others, so that the
// datagram is whole in one place). Port must be 0. Fragments match Frags
// rules only, and never take the fast path.
//
// A Local rule names an address of the host: a source match addressed to
// it is passed to the kernel (the nftables drops' "fib daddr type local"
// exception).
type Rule struct {
	Local bool
	Dst   bool
	Frags bool
	Addr  netip.Addr
	Proto uint8
	Port  uint16
	// PortMax, if not 0, is the last port of the range Port..PortMax
	// (Port at least 1, PortMax not below it); TCP and UDP only.
	PortMax uint16
}

// Rule kinds, the key's last byte.
const (
	kindDst     = 1
	kindSrc     = 2
	kindICMPAny = 3
	kindLocal   = 4
	kindFragDst = 5
	kindFragSrc = 6
)

// ruleKey is the rules map's key, as the program builds it on its stack:
// the address and port as they lie in the frame (network order), the
// protocol and the kind.
type ruleKey struct {
	addr  [4]byte
	port  uint16
	proto uint8
	kind  uint8
}

func (r Rule) key() (ruleKey, error) {
	a := r.Addr.Unmap()
	if !a.Is4() {
		return ruleKey{}, fmt.Errorf("xdp: rule address %v is not IPv4", r.Addr)
	}
	k := ruleKey{addr: a.As4(), proto: r.Proto, port: r.Port, kind: kindSrc}
	if r.Dst {
		k.kind = kindDst
	}
	if r.Frags {
		if r.Port != 0 || r.Proto == 0 {
			return ruleKey{}, fmt.Errorf("xdp: fragment rule for %v needs a protocol and no port", r.Addr)
		}
		k.kind = kindFragSrc
		if r.Dst {
			k.kind = kindFragDst
		}
	}
	if r.Local {
		k = ruleKey{addr: a.As4(), kind: kindLocal}
	}
	if r.Proto == protoICMP {
		k.port = 0
	}
	return k, nil
}

func (k ruleKey) bytes() [8]byte {
	var b [8]byte
	copy(b[:4], k.addr[:])
	binary.BigEndian.PutUint16(b[4:], k.port)
	b[6], b[7] = k.proto, k.kind
	return b
}

const (
	protoICMP = 1
	protoIPIP = 4
	protoTCP  = 6
	protoUDP  = 17
)

// XDP return codes and struct xdp_md offsets.
const (
	xdpAborted    = 0
	xdpPass       = 2
	xdpRedirect   = 4
	mdData        = 0
	mdDataEnd     = 4
	mdRxQueue     = 16
	ethHdrLen     = 14
	vlanTagLen    = 4
	ipv4MinHdrLen = 20
)

// instructions assembles the program. In C it would read:
//
//	if (data + 34 > end) return PASS;
//	if (eth.type != IPv4) goto tagged;
//	conf = lookup(conf, 0); if (!conf || eth.dst != conf.mac) return PASS;
//	match(data, fast, redirect);                  // matchIPv4
//	redirect: return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
//	tagged:                                       // an 802.1p priority tag
//	if (eth.type != 0x8100 && eth.type != 0x88a8 || data + 38 > end ||
//	    tag.tci & 0x0fff || tag.type != IPv4) return PASS;
//	conf = lookup(conf, 0); if (!conf || eth.dst != conf.mac) return PASS;
//	match(data + 4, ports_tag, redirect_tag);     // never the fast path
//	redirect_tag: memmove(data + 4, data, 12); bpf_xdp_adjust_head(ctx, 4); goto redirect;
//
// where match(data, tcpudp, redirect) reads (tcpudp: the fast path, which
// falls back to ports, or ports itself):
//
//	if (ip.frag_off & (MF|0x1fff)) {                 // a fragment, first or later
//		if (lookup(rules, {ip.dst, 0, ip.proto, FRAG_DST})) goto redirect;
//		if (lookup(rules, {ip.src, 0, ip.proto, FRAG_SRC})) goto srchit;
//		return PASS;                            // never the fast path
//	}
//	if (ip.proto == ICMP) {
//		if (l4 + 4 > end || !is_error(icmp.type)) return PASS;
//		if (lookup(rules, {0, 0, 0, ICMP_ANY}) ||
//		    lookup(rules, {ip.dst, 0, ICMP, DST})) goto redirect;
//		if (lookup(rules, {ip.src, 0, ICMP, SRC})) goto srchit;
//		return PASS;
//	}
//	if (ip.proto != TCP && ip.proto != UDP || l4 + 4 > end) return PASS;
//	goto tcpudp;
//	ports:
//	if (lookup(rules, {ip.dst, dport, proto, DST}) || lookup(rules, {ip.dst, 0, proto, DST})) goto redirect;
//	if (lookup(rules, {ip.src, sport, proto, SRC}) || lookup(rules, {ip.src, 0, proto, SRC})) goto srchitports;
//	if (lookup(ranges, {64, ip.dst, proto, DST, dport})) goto redirect;  // port ranges, last
//	if (lookup(ranges, {64, ip.src, proto, SRC, sport})) goto srchit;
//	return PASS;
//	srchitports: if (!lookup(rules, {ip.dst, 0, 0, LOCAL})) goto redirect;
//		if (lookup(ranges, {64, ip.dst, proto, DST, dport})) goto redirect;  // a destination match first
//		return PASS;
//	srchit: if (lookup(rules, {ip.dst, 0, 0, LOCAL})) return PASS;  // the host's own connection
//		goto redirect;
//
// Registers kept across helper calls: R6 ctx, R7 data (IPv4 header at
// +14; a priority-tagged frame's data+4), R8 the L4 header, R9 the protocol. With xsksFD < 0 (tests) the
// program returns XDP_REDIRECT itself instead of calling the helper. With
// flowsFD >= 0, TCP and UDP frames try the fast path (fastPath) first.
func instructions(confFD, rulesFD, rangesFD, xsksFD, flowsFD, idsFD, ctrsFD int) asm.Instructions {
	const (
		pass        = "pass"
		redirect    = "redirect"
		redirectTag = "redirect-tag"
	)
	// macCheck compares the frame's destination MAC (at R7) with the
	// interface's (conf[0..6]).
	macCheck := func() asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, confFD),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, pass),
			asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
			asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
			asm.JNE.Reg(asm.R1, asm.R2, pass),
			asm.LoadMem(asm.R1, asm.R7, 4, asm.Half),
			asm.LoadMem(asm.R2, asm.R0, 4, asm.Half),
			asm.JNE.Reg(asm.R1, asm.R2, pass),
		}
	}
	p := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, mdDataEnd, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Imm(asm.R3, ethHdrLen+ipv4MinHdrLen),
		asm.JGT.Reg(asm.R3, asm.R2, pass),
		// EtherType 0x0800, loaded little-endian; anything else may be
		// a priority tag (tagged, out of line).
		asm.LoadMem(asm.R3, asm.R7, 12, asm.Half),
		asm.JNE.Imm(asm.R3, 0x0008, "tagged"),
	}
	p = append(p, macCheck()...)
	tcpUDP := "ports"
	if flowsFD >= 0 {
		tcpUDP = "fast"
	}
	p = append(p, matchIPv4(rulesFD, rangesFD, "", tcpUDP, redirect)...)
	p = append(p,
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol(pass),
		asm.Return(),
	)
	if xsksFD < 0 {
		// Tests: the verdict itself, without a socket behind it.
		p = append(p, asm.Mov.Imm(asm.R0, xdpRedirect).WithSymbol(redirect), asm.Return())
	} else {
		p = append(p,
			asm.LoadMapPtr(asm.R1, xsksFD).WithSymbol(redirect),
			asm.LoadMem(asm.R2, asm.R6, mdRxQueue, asm.Word),
			asm.Mov.Imm(asm.R3, xdpPass),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		)
	}
	// An 802.1p priority tag: an 802.1Q (or 802.1ad) tag of VLAN ID 0
	// followed by IPv4 (R2 still data_end, R3 the EtherType). The kernel
	// takes such a frame as untagged (__netif_receive_skb_core clears
	// the tag; TPACKET mode's worker forwards it, priorityTagged), so it
	// is matched like one, with R7 at data+4: the Ethernet header's
	// EtherType and the IPv4 header where the rules expect them. It never
	// takes the fast path; redirected, it loses its tag (redirectTag), as
	// the pipeline sees it in TPACKET mode; passed, it keeps it. Any other
	// VLAN is the kernel's (a VLAN device's).
	p = append(p,
		asm.JEq.Imm(asm.R3, 0x0081, "tag").WithSymbol("tagged"), // 0x8100
		asm.JNE.Imm(asm.R3, 0xa888, pass),                       // 0x88a8
		asm.Mov.Reg(asm.R3, asm.R7).WithSymbol("tag"),
		asm.Add.Imm(asm.R3, ethHdrLen+vlanTagLen+ipv4MinHdrLen),
		asm.JGT.Reg(asm.R3, asm.R2, pass),
		// The TCI's VLAN ID (network order 0x0fff: loaded little-endian
		// 0xff0f), then the inner EtherType.
		asm.LoadMem(asm.R3, asm.R7, 14, asm.Half),
		asm.And.Imm(asm.R3, 0xff0f),
		asm.JNE.Imm(asm.R3, 0, pass),
		asm.LoadMem(asm.R3, asm.R7, 16, asm.Half),
		asm.JNE.Imm(asm.R3, 0x0008, pass),
	)
	p = append(p, macCheck()...)
	p = append(p, asm.Add.Imm(asm.R7, vlanTagLen))
	p = append(p, matchIPv4(rulesFD, rangesFD, "-tag", "ports-tag", redirectTag)...)
	// Redirected: the MAC addresses move 4 bytes up over the tag (from
	// the end: the regions overlap), and the head follows them.
	p = append(p,
		asm.LoadMem(asm.R1, asm.R7, 4, asm.Word).WithSymbol(redirectTag),
		asm.StoreMem(asm.R7, 8, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
		asm.StoreMem(asm.R7, 4, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, -4, asm.Word),
		asm.StoreMem(asm.R7, 0, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, vlanTagLen),
		asm.FnXdpAdjustHead.Call(),
		asm.JEq.Imm(asm.R0, 0, redirect),
		asm.Mov.Imm(asm.R0, xdpAborted), // cannot fail: the frame is longer than 14 bytes
		asm.Return(),
	)
	if flowsFD >= 0 {
		p = append(p, fastPath(flowsFD, idsFD, ctrsFD, "ports")...)
	}
	return p
}

// matchIPv4 emits the rule matching of an IPv4 frame whose destination MAC
// is the interface's: R6 ctx, R7 the frame (the IPv4 header at +14, the
// first 20 bytes of it checked), sets R8 and R9 and jumps to pass or
// redirect. TCP and UDP go to tcpUDP first (the fast path, or the labels
// "ports"+sfx). Its labels end in sfx: the program has it twice, for
// untagged frames and for priority-tagged ones.
func matchIPv4(rulesFD, rangesFD int, sfx, tcpUDP, redirect string) asm.Instructions {
	const pass = "pass"
	// lookup emits a rules-map lookup of the key at fp-8 and a jump to
	// redirect when found.
	lookupTo := func(found string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, rulesFD),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(),
			asm.JNE.Imm(asm.R0, 0, found),
		}
	}
	lookup := func() asm.Instructions { return lookupTo(redirect) }
	// A source match (a real server's reply) addressed to one of the
	// host's own addresses is the host's (its health check, an
	// administrator's curl): srcHit passes it.
	srcHit := "srchit" + sfx
	// key stores a key at fp-8: the address word (from R7+addrOff), port
	// (the u16 at R8+portOff, or 0 when portOff < 0), protocol (R9) and
	// kind.
	key := func(addrOff int16, portOff int16, kind int32) asm.Instructions {
		ins := asm.Instructions{
			asm.LoadMem(asm.R1, asm.R7, addrOff, asm.Word),
			asm.StoreMem(asm.R10, -8, asm.R1, asm.Word),
		}
		if portOff >= 0 {
			ins = append(ins, asm.LoadMem(asm.R1, asm.R8, portOff, asm.Half))
			ins = append(ins, asm.StoreMem(asm.R10, -4, asm.R1, asm.Half))
		} else {
			ins = append(ins, asm.StoreImm(asm.R10, -4, 0, asm.Half))
		}
		ins = append(ins,
			asm.StoreMem(asm.R10, -2, asm.R9, asm.Byte),
			asm.StoreImm(asm.R10, -1, int64(kind), asm.Byte),
		)
		return ins
	}
	const (
		ipSrc = ethHdrLen + 12
		ipDst = ethHdrLen + 16
	)
	p := asm.Instructions{
		// MF and the fragment offset (network order 0x3fff: bytes
		// 0x3f,0xff, loaded little-endian 0xff3f): a fragment is matched
		// by address and protocol alone (frag), whole in the pipeline.
		asm.LoadMem(asm.R9, asm.R7, ethHdrLen+9, asm.Byte),
		asm.LoadMem(asm.R1, asm.R7, ethHdrLen+6, asm.Half),
		asm.And.Imm(asm.R1, 0xff3f),
		asm.JNE.Imm(asm.R1, 0, "frag"+sfx),
		// L4 header: R8 = data + 14 + IHL*4, checked against the end
		// for 4 bytes (ports, or ICMP type and code).
		asm.LoadMem(asm.R1, asm.R7, ethHdrLen, asm.Byte),
		asm.And.Imm(asm.R1, 0x0f),
		asm.LSh.Imm(asm.R1, 2),
		asm.JLT.Imm(asm.R1, ipv4MinHdrLen, pass),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.Add.Reg(asm.R8, asm.R1),
		asm.Add.Imm(asm.R8, ethHdrLen),
		asm.LoadMem(asm.R2, asm.R6, mdDataEnd, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R8),
		asm.Add.Imm(asm.R3, 4),
		asm.JGT.Reg(asm.R3, asm.R2, pass),
		asm.JEq.Imm(asm.R9, protoTCP, tcpUDP),
		asm.JEq.Imm(asm.R9, protoUDP, tcpUDP),
		asm.JNE.Imm(asm.R9, protoICMP, pass),
		// ICMP: errors only.
		asm.LoadMem(asm.R1, asm.R8, 0, asm.Byte),
		asm.JEq.Imm(asm.R1, 3, "icmperr"+sfx),  // destination unreachable
		asm.JEq.Imm(asm.R1, 4, "icmperr"+sfx),  // source quench
		asm.JEq.Imm(asm.R1, 11, "icmperr"+sfx), // time exceeded
		asm.JEq.Imm(asm.R1, 12, "icmperr"+sfx), // parameter problem
		asm.Ja.Label(pass),
		asm.StoreImm(asm.R10, -8, 0, asm.Word).WithSymbol("icmperr" + sfx),
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.StoreImm(asm.R10, -1, kindICMPAny, asm.Byte),
	}
	p = append(p, lookup()...)
	p = append(p, key(ipDst, -1, kindDst)...)
	p = append(p, lookup()...)
	p = append(p, key(ipSrc, -1, kindSrc)...)
	p = append(p, lookupTo(srcHit)...)
	p = append(p, asm.Ja.Label(pass))
	// TCP, UDP: exact port, then any port; destination, then source;
	// then the port ranges (ranges_linux.go), after every hash lookup so
	// that those cost what they did. A source hit goes to srcHitPorts,
	// which asks the destination ranges before passing a frame to a
	// local address: a destination match wins.
	srcHitPorts := "srchitports" + sfx
	ports := key(ipDst, 2, kindDst)
	ports[0] = ports[0].WithSymbol("ports" + sfx)
	p = append(p, ports...)
	p = append(p, lookup()...)
	p = append(p, key(ipDst, -1, kindDst)...)
	p = append(p, lookup()...)
	p = append(p, key(ipSrc, 0, kindSrc)...)
	p = append(p, lookupTo(srcHitPorts)...)
	p = append(p, key(ipSrc, -1, kindSrc)...)
	p = append(p, lookupTo(srcHitPorts)...)
	p = append(p, rangeLookup(rangesFD, ipDst, 2, kindDst, redirect)...)
	p = append(p, rangeLookup(rangesFD, ipSrc, 0, kindSrc, srcHit)...)
	p = append(p, asm.Ja.Label(pass))
	localPorts := key(ipDst, -1, kindLocal)
	localPorts[0] = localPorts[0].WithSymbol(srcHitPorts)
	localPorts = append(localPorts, asm.StoreImm(asm.R10, -2, 0, asm.Byte)) // any protocol
	p = append(p, localPorts...)
	p = append(p,
		asm.LoadMapPtr(asm.R1, rulesFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, redirect),
	)
	p = append(p, rangeLookup(rangesFD, ipDst, 2, kindDst, redirect)...)
	p = append(p, asm.Ja.Label(pass))
	// Fragments: destination, then source, by address and protocol.
	frag := key(ipDst, -1, kindFragDst)
	frag[0] = frag[0].WithSymbol("frag" + sfx)
	p = append(p, frag...)
	p = append(p, lookup()...)
	p = append(p, key(ipSrc, -1, kindFragSrc)...)
	p = append(p, lookupTo(srcHit)...)
	p = append(p, asm.Ja.Label(pass))
	local := key(ipDst, -1, kindLocal)
	local[0] = local[0].WithSymbol(srcHit)
	local = append(local, asm.StoreImm(asm.R10, -2, 0, asm.Byte)) // any protocol
	p = append(p, local...)
	p = append(p, lookupTo(pass)...)
	p = append(p, asm.Ja.Label(redirect))
	return p
}
