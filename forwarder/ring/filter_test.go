package ring

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
)

var (
	vip1   = netip.MustParseAddr("198.18.0.100")
	vip2   = netip.MustParseAddr("198.18.0.101")
	rs1    = netip.MustParseAddr("198.19.0.1")
	client = netip.MustParseAddr("198.18.1.1")
	other  = netip.MustParseAddr("198.18.9.9")
)

// Packet types (SKF_AD_PKTTYPE, linux/if_packet.h).
const (
	pktHost      = 0 // PACKET_HOST
	pktBroadcast = 1 // PACKET_BROADCAST
	pktMulticast = 2 // PACKET_MULTICAST
	pktOtherHost = 3 // PACKET_OTHERHOST
)

// runFilter runs a program on a frame addressed to the interface's MAC.
func runFilter(tb testing.TB, raw []bpf.RawInstruction, frame []byte) bool {
	tb.Helper()
	return runFilterType(tb, raw, frame, pktHost)
}

// vmFor returns a VM for the program on frames of the given packet type.
// x/net/bpf's VM implements no ancillary loads but the length: the
// packet-type load becomes a constant load of pkttype (one instruction for
// one, so no jump moves). Any other ancillary load fails the test.
func vmFor(tb testing.TB, raw []bpf.RawInstruction, pkttype uint32) *bpf.VM {
	tb.Helper()
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		tb.Fatalf("program does not disassemble: %v", raw)
	}
	for i, in := range insns {
		if ext, ok := in.(bpf.LoadExtension); ok {
			if ext.Num == bpf.ExtLen { // the VM's own
				continue
			}
			if ext.Num != bpf.ExtType {
				tb.Fatalf("instruction %d: unexpected ancillary load %v", i, ext)
			}
			insns[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: pkttype}
		}
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		tb.Fatalf("NewVM: %v", err)
	}
	return vm
}

// runFilterType runs a program on a frame of the given packet type in
// x/net/bpf's VM.
func runFilterType(tb testing.TB, raw []bpf.RawInstruction, frame []byte, pkttype uint32) bool {
	tb.Helper()
	vm := vmFor(tb, raw, pkttype)
	n, err := vm.Run(frame)
	if err != nil {
		tb.Fatalf("vm.Run: %v", err)
	}
	return n > 0
}

// refMatch is an independent statement of Filter's semantics, including the
// kernel's rule that a load beyond the frame drops it, for frames of
// packet type pkttype.
func refMatch(f Filter, b []byte, pkttype uint32) bool {
	only := f.SYN == SYNOnly || f.SYN == UDPOnly
	if only {
		f.ICMP, f.ARP, f.SrcAddrs = false, false, nil
	}
	if len(b) < 14 {
		return false
	}
	et, l3 := binary.BigEndian.Uint16(b[12:]), 14
	if et == etherTypeVLAN || et == etherTypeQinQ {
		if len(b) < 18 {
			return false
		}
		et, l3 = binary.BigEndian.Uint16(b[16:]), 18
	}
	switch et {
	case etherTypeARP:
		return f.ARP
	case etherTypeIPv4:
		if pkttype != pktHost {
			return false // not addressed to us: never VIP traffic
		}
	default:
		return false
	}
	if !only {
		if len(b) < l3+10 {
			return false
		}
		if b[l3+9] == 1 {
			// Only unfragmented errors of types 3, 4, 11 (or too short
			// to tell: the pipeline counts those).
			if binary.BigEndian.Uint16(b[l3+6:])&0x3fff != 0 {
				return false
			}
			if at := l3 + int(b[l3]&0xf)*4; at < len(b) && b[at] != 3 && b[at] != 4 && b[at] != 11 {
				return false
			}
			if f.ICMP {
				return true
			}
		}
	}
	in := func(set []netip.Addr, off int) (match, short bool) {
		if len(b) < l3+off+4 {
			return false, true
		}
		a := netip.AddrFrom4([4]byte(b[l3+off : l3+off+4]))
		return slices.ContainsFunc(set, func(x netip.Addr) bool { return x.Unmap() == a }), false
	}
	if len(f.DstAddrs) > 0 {
		m, short := in(f.DstAddrs, 16)
		if short {
			return false
		}
		if m {
			if f.SYN == SYNAll {
				return true
			}
			udp := b[l3+9] == 17 // read before the destination: present
			if f.SYN == UDPOnly {
				return udp
			}
			if udp && f.SplitUDP && f.SYN == SYNExclude {
				return false
			}
			syn, short := refSYN(b, l3)
			if short {
				return false
			}
			return syn == (f.SYN == SYNOnly)
		}
	}
	if only {
		return false
	}
	if len(f.SrcAddrs) > 0 {
		m, _ := in(f.SrcAddrs, 12)
		return m
	}
	return false
}

// refSYN reports whether the IPv4 packet at b[l3:] opens a TCP connection:
// TCP, not a fragment after the first, SYN set and ACK clear. Flags that
// lie beyond the frame make no opening (the established ring takes the
// frame and the pipeline counts it malformed). short is never set: the
// frame's destination, read before, proves the bytes up to it there.
func refSYN(b []byte, l3 int) (syn, short bool) {
	if b[l3+9] != 6 || binary.BigEndian.Uint16(b[l3+6:])&0x1fff != 0 {
		return false, false
	}
	at := l3 + int(b[l3]&0xf)*4 + 13
	if at >= len(b) {
		return false, false
	}
	return b[at]&0x12 == 0x02, false
}

func TestFilter(t *testing.T) {
	lb := Filter{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ARP: true}
	tagged := func(s frameSpec) frameSpec { s.vlanTCI = 100; return s }
	toVIP := frameSpec{src: client, dst: vip1, sport: 1000, dport: 80}
	fromRS := frameSpec{src: rs1, dst: client, sport: 80, dport: 1000}
	stray := frameSpec{src: client, dst: other, sport: 1000, dport: 80}
	arp := frameSpec{etherType: etherTypeARP, src: client, dst: vip1}
	ipv6 := frameSpec{etherType: 0x86dd}
	short := buildFrame(toVIP)[:14+19] // IPv4 header cut before the end of the destination
	icmp := frameSpec{src: other, dst: client, ipProto: 1}
	// The two sides of a director: VIPs on one, NAT replies and ICMP
	// errors from anyone on the other, and their union on one arm.
	vipSide := Filter{DstAddrs: []netip.Addr{vip1}}
	dipSide := Filter{SrcAddrs: []netip.Addr{rs1}, ICMP: true}
	oneArm := Filter{DstAddrs: []netip.Addr{vip1}, SrcAddrs: []netip.Addr{rs1}, ICMP: true}

	tests := []struct {
		name    string
		filter  Filter
		frame   []byte
		want    bool
		pkttype uint32 // 0: PACKET_HOST
	}{
		{"dst vip", lb, buildFrame(toVIP), true, 0},
		// Frames not addressed to the interface's MAC (flooded unknown
		// unicast, broadcast, multicast) are never forwarded...
		{"dst vip, other host's MAC", lb, buildFrame(toVIP), false, pktOtherHost},
		{"dst vip, broadcast MAC", lb, buildFrame(toVIP), false, pktBroadcast},
		{"dst vip, multicast MAC", lb, buildFrame(toVIP), false, pktMulticast},
		{"802.1Q dst vip, other host's MAC", lb, buildFrame(tagged(toVIP)), false, pktOtherHost},
		{"src real server, other host's MAC", lb, buildFrame(fromRS), false, pktOtherHost},
		{"dip side: icmp, other host's MAC", dipSide, buildFrame(icmp), false, pktOtherHost},
		{"one arm: icmp, broadcast MAC", oneArm, buildFrame(icmp), false, pktBroadcast},
		// ...but ARP requests are broadcast.
		{"arp broadcast", lb, buildFrame(arp), true, pktBroadcast},
		{"802.1Q arp broadcast", lb, buildFrame(tagged(arp)), true, pktBroadcast},
		{"arp other host", lb, buildFrame(arp), true, pktOtherHost},
		{"dst second vip", lb, buildFrame(frameSpec{src: client, dst: vip2}), true, 0},
		{"src real server", lb, buildFrame(fromRS), true, 0},
		{"stray ipv4", lb, buildFrame(stray), false, 0},
		{"arp", lb, buildFrame(arp), true, 0},
		{"ipv6", lb, buildFrame(ipv6), false, 0},
		{"802.1Q dst vip", lb, buildFrame(tagged(toVIP)), true, 0},
		{"802.1ad dst vip", lb, buildFrame(frameSpec{src: client, dst: vip1, vlanTCI: 5, vlanTPID: etherTypeQinQ}), true, 0},
		{"802.1Q src real server", lb, buildFrame(tagged(fromRS)), true, 0},
		{"802.1Q stray", lb, buildFrame(tagged(stray)), false, 0},
		{"802.1Q arp", lb, buildFrame(tagged(arp)), true, 0},
		{"802.1Q ipv6", lb, buildFrame(tagged(ipv6)), false, 0},
		{"short ipv4", lb, short, false, 0},
		{"runt", lb, []byte{1, 2, 3}, false, 0},
		{"empty", lb, nil, false, 0},
		{"tag without inner type", lb, buildFrame(tagged(toVIP))[:17], false, 0},
		{"arp disabled", Filter{DstAddrs: []netip.Addr{vip1}}, buildFrame(arp), false, 0},
		{"802.1Q arp disabled", Filter{DstAddrs: []netip.Addr{vip1}}, buildFrame(tagged(arp)), false, 0},
		{"dst only: src rs ignored", Filter{DstAddrs: []netip.Addr{vip1}}, buildFrame(fromRS), false, 0},
		{"src only: dst vip ignored", Filter{SrcAddrs: []netip.Addr{rs1}}, buildFrame(toVIP), false, 0},
		{"src only: src rs", Filter{SrcAddrs: []netip.Addr{rs1}}, buildFrame(fromRS), true, 0},
		{"empty filter drops ipv4", Filter{}, buildFrame(toVIP), false, 0},
		{"empty filter drops arp", Filter{}, buildFrame(arp), false, 0},
		{"arp only", Filter{ARP: true}, buildFrame(arp), true, 0},
		{"arp only drops ipv4", Filter{ARP: true}, buildFrame(toVIP), false, 0},
		{"v4-mapped vip", Filter{DstAddrs: []netip.Addr{netip.AddrFrom16(vip1.As16())}}, buildFrame(toVIP), true, 0},
		{"icmp disabled", lb, buildFrame(icmp), false, 0},
		{"vip side: to vip", vipSide, buildFrame(toVIP), true, 0},
		{"vip side: nat reply", vipSide, buildFrame(fromRS), false, 0},
		{"vip side: icmp", vipSide, buildFrame(icmp), false, 0},
		{"dip side: nat reply", dipSide, buildFrame(fromRS), true, 0},
		{"dip side: icmp from anyone", dipSide, buildFrame(icmp), true, 0},
		{"dip side: 802.1Q icmp", dipSide, buildFrame(tagged(icmp)), true, 0},
		{"dip side: 802.1ad icmp", dipSide, buildFrame(frameSpec{src: other, dst: client, ipProto: 1, vlanTCI: 3, vlanTPID: etherTypeQinQ}), true, 0},
		{"dip side: to vip", dipSide, buildFrame(toVIP), false, 0},
		{"dip side: stray udp", dipSide, buildFrame(stray), false, 0},
		{"dip side: arp", dipSide, buildFrame(arp), false, 0},
		{"dip side: icmp cut before protocol", dipSide, buildFrame(icmp)[:14+9], false, 0},
		{"dip side: nat reply cut before protocol", dipSide, buildFrame(fromRS)[:14+9], false, 0},
		{"one arm: to vip", oneArm, buildFrame(toVIP), true, 0},
		{"one arm: nat reply", oneArm, buildFrame(fromRS), true, 0},
		{"one arm: icmp", oneArm, buildFrame(icmp), true, 0},
		{"one arm: stray", oneArm, buildFrame(stray), false, 0},
		{"one arm: runt", oneArm, buildFrame(toVIP)[:20], false, 0},
		{"icmp only", Filter{ICMP: true}, buildFrame(icmp), true, 0},
		{"icmp only drops udp", Filter{ICMP: true}, buildFrame(toVIP), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := tt.filter.Assemble()
			if err != nil {
				t.Fatalf("Assemble: %v", err)
			}
			if got := runFilterType(t, raw, tt.frame, tt.pkttype); got != tt.want {
				t.Errorf("VM accepts = %v, want %v", got, tt.want)
			}
			if got := refMatch(tt.filter, tt.frame, tt.pkttype); got != tt.want {
				t.Errorf("reference accepts = %v, want %v (test table or reference is wrong)", got, tt.want)
			}
		})
	}
}

func TestFilterHelpers(t *testing.T) {
	dst, err := FilterIPv4Dst([]netip.Addr{vip1})
	if err != nil {
		t.Fatal(err)
	}
	src, err := FilterIPv4Src([]netip.Addr{rs1})
	if err != nil {
		t.Fatal(err)
	}
	toVIP := buildFrame(frameSpec{src: client, dst: vip1})
	fromRS := buildFrame(frameSpec{src: rs1, dst: client})
	for _, c := range []struct {
		name  string
		prog  []bpf.RawInstruction
		frame []byte
		want  bool
	}{
		{"dst/vip", dst, toVIP, true}, {"dst/rs", dst, fromRS, false},
		{"src/rs", src, fromRS, true}, {"src/vip", src, toVIP, false},
	} {
		if got := runFilter(t, c.prog, c.frame); got != c.want {
			t.Errorf("%s: accepts = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	many := make([]netip.Addr, 2100)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
	}
	tests := []struct {
		name    string
		filter  Filter
		wantErr string
	}{
		{"ipv6 dst", Filter{DstAddrs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}, "filter destination: 2001:db8::1 is not an IPv4 address"},
		{"zero src", Filter{SrcAddrs: []netip.Addr{{}}}, "filter source: invalid IP is not an IPv4 address"},
		{"too many", Filter{DstAddrs: many}, "the kernel allows 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.filter.Assemble()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Assemble error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestFilterLarge checks a list long enough that a naive "jump to a shared
// accept" layout would overflow the 8-bit jump offsets, and that duplicates
// are folded.
func TestFilterLarge(t *testing.T) {
	addrs := make([]netip.Addr, 0, 1200)
	for i := range 600 {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		addrs = append(addrs, a, a)
	}
	f := Filter{DstAddrs: addrs, ARP: true}
	raw, err := f.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(raw), 17+18+1+2*600+1; got != want { // head 6, vlan 4, accept 1, ldx/ja/ldx 3, pkttype 3, ICMP 18
		t.Errorf("program length %d, want %d (duplicates folded)", got, want)
	}
	for _, i := range []int{0, 1, 255, 256, 599} {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		if !runFilter(t, raw, buildFrame(frameSpec{src: client, dst: a})) {
			t.Errorf("address #%d %v not accepted", i, a)
		}
	}
	if runFilter(t, raw, buildFrame(frameSpec{src: client, dst: netip.MustParseAddr("198.18.2.88")})) {
		t.Error("address #600 accepted")
	}
}

// TestFilterMaxAddrs checks that a director with 2000 addresses in all
// still gets a program, and that the last address is matched.
func TestFilterMaxAddrs(t *testing.T) {
	many := make([]netip.Addr, 2000)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	f := Filter{DstAddrs: many[:1999], SrcAddrs: many[1999:], ICMP: true, ARP: true}
	raw, err := f.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	if !runFilter(t, raw, buildFrame(frameSpec{src: many[1999], dst: client})) {
		t.Error("last of 2000 addresses not matched")
	}
	if !runFilter(t, raw, buildFrame(frameSpec{src: client, dst: many[1998]})) {
		t.Error("last destination not matched")
	}
}

func TestFilterEqual(t *testing.T) {
	mapped := netip.AddrFrom16(vip1.As16())
	bad := netip.MustParseAddr("2001:db8::1")
	base := Filter{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ICMP: true}
	tests := []struct {
		name string
		a, b Filter
		want bool
	}{
		{"same", base, base, true},
		{"zero", Filter{}, Filter{}, true},
		{"nil and empty lists", Filter{DstAddrs: []netip.Addr{}}, Filter{}, true},
		{"order", base, Filter{DstAddrs: []netip.Addr{vip2, vip1}, SrcAddrs: []netip.Addr{rs1}, ICMP: true}, true},
		{"duplicates and v4-mapped", base, Filter{DstAddrs: []netip.Addr{vip2, mapped, vip1}, SrcAddrs: []netip.Addr{rs1, rs1}, ICMP: true}, true},
		{"icmp differs", base, Filter{DstAddrs: base.DstAddrs, SrcAddrs: base.SrcAddrs}, false},
		{"arp differs", base, Filter{DstAddrs: base.DstAddrs, SrcAddrs: base.SrcAddrs, ICMP: true, ARP: true}, false},
		{"destination missing", base, Filter{DstAddrs: []netip.Addr{vip1}, SrcAddrs: base.SrcAddrs, ICMP: true}, false},
		{"source as destination", Filter{DstAddrs: []netip.Addr{rs1}}, Filter{SrcAddrs: []netip.Addr{rs1}}, false},
		{"invalid address equals nothing", Filter{DstAddrs: []netip.Addr{bad}}, Filter{DstAddrs: []netip.Addr{bad}}, false},
		{"invalid source equals nothing", Filter{SrcAddrs: []netip.Addr{{}}}, Filter{SrcAddrs: []netip.Addr{{}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Equal(tt.b); got != tt.want {
				t.Errorf("a.Equal(b) = %v, want %v", got, tt.want)
			}
			if got := tt.b.Equal(tt.a); got != tt.want {
				t.Errorf("b.Equal(a) = %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzFilter compares the assembled program in the VM with the reference
// semantics on arbitrary frames.
func FuzzFilter(f *testing.F) {
	seeds := []frameSpec{
		{src: client, dst: vip1},
		{src: rs1, dst: client},
		{src: client, dst: other, vlanTCI: 7},
		{etherType: etherTypeARP, src: client, dst: vip1, vlanTCI: 9, vlanTPID: etherTypeQinQ},
		{etherType: 0x86dd},
	}
	for _, s := range seeds {
		f.Add(buildFrame(s), uint8(0))
	}
	f.Add([]byte{}, uint8(1))
	f.Add(buildFrame(frameSpec{src: client, dst: vip1})[:30], uint8(2)) // cut inside the IPv4 header
	f.Add(buildFrame(frameSpec{src: client, dst: vip1, vlanTCI: 1})[:16], uint8(3))
	f.Add(buildFrame(frameSpec{src: other, dst: client, ipProto: 1}), uint8(4))
	f.Add(buildFrame(frameSpec{src: other, dst: client, ipProto: 1, vlanTCI: 2})[:18+10], uint8(5))
	f.Add(buildFrame(frameSpec{src: rs1, dst: client})[:14+16], uint8(4)) // source present, destination cut

	for _, fl := range []uint8{0x02, 0x12, 0x04, 0x03, 0x10} {
		f.Add(buildFrame(frameSpec{src: client, dst: vip2, ipProto: 6, tcpFlags: fl}), uint8(6|7<<5))
		f.Add(buildFrame(frameSpec{src: client, dst: vip2, ipProto: 6, tcpFlags: fl, vlanTCI: 5}), uint8(7))
	}
	f.Add(buildFrame(frameSpec{src: client, dst: vip1, ipProto: 6, tcpFlags: 2})[:14+30], uint8(6)) // flags cut
	f.Add(buildFrame(frameSpec{src: client, dst: vip1, ipProto: 6, tcpFlags: 2, fragOff: 0x2000}), uint8(7))
	f.Add(buildFrame(frameSpec{src: client, dst: vip1, ipProto: 6, tcpFlags: 2, fragOff: 3}), uint8(7))
	filters := []Filter{
		{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ARP: true},
		{DstAddrs: []netip.Addr{vip1}},
		{SrcAddrs: []netip.Addr{rs1, client}},
		{ARP: true},
		{DstAddrs: []netip.Addr{vip1}, SrcAddrs: []netip.Addr{rs1}, ICMP: true},
		{SrcAddrs: []netip.Addr{rs1}, ICMP: true},
		{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ICMP: true, SYN: SYNExclude},
		{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ICMP: true, ARP: true, SYN: SYNOnly},
		{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ICMP: true, ARP: true, SYN: SYNExclude, SplitUDP: true},
		{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ICMP: true, ARP: true, SYN: UDPOnly},
	}
	// which picks the filter (low 3 bits) and the packet type (next 2).
	vms := make([][4]*bpf.VM, len(filters))
	for i, flt := range filters {
		raw, err := flt.Assemble()
		if err != nil {
			f.Fatal(err)
		}
		for pt := range uint32(4) {
			vms[i][pt] = vmFor(f, raw, pt)
		}
	}
	f.Add(buildFrame(frameSpec{src: client, dst: vip1}), uint8(pktOtherHost<<3))
	f.Add(buildFrame(frameSpec{etherType: etherTypeARP, src: client, dst: vip1}), uint8(3|pktBroadcast<<3))
	f.Fuzz(func(t *testing.T, frame []byte, which uint8) {
		i := (int(which&7) + int(which>>5)*8) % len(filters)
		pt := uint32(which>>3) & 3
		n, err := vms[i][pt].Run(frame)
		if err != nil {
			t.Fatalf("vm.Run: %v", err)
		}
		if got, want := n > 0, refMatch(filters[i], frame, pt); got != want {
			t.Fatalf("filter %d, packet type %d on % x: VM accepts %v, reference %v", i, pt, frame, got, want)
		}
	})
}

// The frames the pipeline answers in the host's stead (RSTs, port
// unreachable, ICMP relayed for the director's IPIP packets) must reach
// it through the filters the daemon attaches (daemon.Derived.Filters):
// destination matches take every protocol and port of a VIP, and the DIP
// side takes every ICMP frame, whatever its destination.
func TestFilterHostStackAnswers(t *testing.T) {
	dip := netip.MustParseAddr("198.19.0.254")
	router := netip.MustParseAddr("198.19.0.253")
	vipSide := Filter{DstAddrs: []netip.Addr{vip1}}
	dipSide := Filter{SrcAddrs: []netip.Addr{rs1}, ICMP: true}
	oneArm := Filter{DstAddrs: []netip.Addr{vip1}, SrcAddrs: []netip.Addr{rs1}, ICMP: true}
	const tcp, icmp = 6, 1
	tests := []struct {
		name   string
		filter Filter
		spec   frameSpec
		want   bool
	}{
		// Another port of a port-21 service's VIP (FTP lookup fallback).
		{"tcp to VIP:2121", vipSide, frameSpec{ipProto: tcp, src: client, dst: vip1, sport: 40000, dport: 2121}, true},
		// A port of the VIP with no service: the pipeline passes it.
		{"tcp to VIP:22", vipSide, frameSpec{ipProto: tcp, src: client, dst: vip1, sport: 40000, dport: 22}, true},
		// Active FTP data from port 20: not scheduled, answered.
		{"tcp from port 20", vipSide, frameSpec{ipProto: tcp, src: client, dst: vip1, sport: 20, dport: 80}, true},
		{"udp from port 20", vipSide, frameSpec{src: client, dst: vip1, sport: 20, dport: 53}, true},
		// An ACK to a service port without a connection (RST).
		{"tcp ack to VIP:80", vipSide, frameSpec{ipProto: tcp, src: client, dst: vip1, sport: 40001, dport: 80}, true},
		// An ICMP error from a router about the director's IPIP packet,
		// addressed to its DIP, arrives on the DIP side.
		{"icmp to the DIP, dip side", dipSide, frameSpec{ipProto: icmp, src: router, dst: dip}, true},
		{"icmp to the DIP, one arm", oneArm, frameSpec{ipProto: icmp, src: router, dst: dip}, true},
		// An ICMP error about a NAT reply, to the VIP, on the VIP side.
		{"icmp to the VIP, vip side", vipSide, frameSpec{ipProto: icmp, src: router, dst: vip1}, true},
		// Not the director's: TCP to the DIP (its own stack's) stays out.
		{"tcp to the DIP, dip side", dipSide, frameSpec{ipProto: tcp, src: router, dst: dip, sport: 40000, dport: 22}, false},
		{"tcp to the DIP, vip side", vipSide, frameSpec{ipProto: tcp, src: client, dst: dip, sport: 40000, dport: 22}, false},
	}
	for _, tc := range tests {
		raw, err := tc.filter.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		f := buildFrame(tc.spec)
		if got := runFilter(t, raw, f); got != tc.want {
			t.Errorf("%s: accepted %v, want %v", tc.name, got, tc.want)
		}
		if got := refMatch(tc.filter, f, pktHost); got != tc.want {
			t.Errorf("%s: reference says %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestFilterSYN: the established ring's filter (SYNExclude) and the new
// connections' ring's (SYNOnly) split the frames to the VIPs between them
// by TCP flags; every other frame keeps to the established ring.
func TestFilterSYN(t *testing.T) {
	base := Filter{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ICMP: true}
	est, syn := base, base
	est.SYN, syn.SYN = SYNExclude, SYNOnly
	estProg, err := est.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	synProg, err := syn.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	tcp := func(dst netip.Addr, flags uint8) frameSpec {
		return frameSpec{src: client, dst: dst, sport: 40000, dport: 80, ipProto: 6, tcpFlags: flags}
	}
	tests := []struct {
		name     string
		s        frameSpec
		est, syn bool
	}{
		{"SYN to VIP", tcp(vip1, 0x02), false, true},
		{"SYN to second VIP", tcp(vip2, 0x02), false, true},
		{"SYN with ECE/CWR to VIP", tcp(vip1, 0xc2), false, true},
		{"SYN+RST to VIP", tcp(vip1, 0x06), false, true},
		{"SYN-ACK to VIP", tcp(vip1, 0x12), true, false},
		{"ACK to VIP", tcp(vip1, 0x10), true, false},
		{"RST to VIP", tcp(vip1, 0x04), true, false},
		{"FIN-ACK to VIP", tcp(vip1, 0x11), true, false},
		{"tagged SYN to VIP", func() frameSpec { s := tcp(vip1, 0x02); s.vlanTCI = 10; return s }(), false, true},
		{"tagged ACK to VIP", func() frameSpec { s := tcp(vip1, 0x10); s.vlanTCI = 10; return s }(), true, false},
		{"first fragment of a SYN", func() frameSpec { s := tcp(vip1, 0x02); s.fragOff = 0x2000; return s }(), false, true},
		{"later fragment, SYN-looking bytes", func() frameSpec { s := tcp(vip1, 0x02); s.fragOff = 0x2003; return s }(), true, false},
		{"UDP to VIP", frameSpec{src: client, dst: vip1, sport: 1, dport: 53}, true, false},
		{"SYN to another address", tcp(other, 0x02), false, false},
		{"SYN from a real server to a client (NAT)", frameSpec{src: rs1, dst: client, ipProto: 6, tcpFlags: 0x02}, true, false},
		{"ICMP", frameSpec{src: other, dst: client, ipProto: 1}, true, false},
		{"ARP", frameSpec{etherType: etherTypeARP, src: client, dst: vip1}, false, false},
	}
	for _, tt := range tests {
		f := buildFrame(tt.s)
		if got := runFilter(t, estProg, f); got != tt.est {
			t.Errorf("%s: established ring accepts %v, want %v", tt.name, got, tt.est)
		}
		if got := runFilter(t, synProg, f); got != tt.syn {
			t.Errorf("%s: SYN ring accepts %v, want %v", tt.name, got, tt.syn)
		}
		if ref := refMatch(est, f, pktHost); ref != tt.est {
			t.Errorf("%s: reference established %v, want %v", tt.name, ref, tt.est)
		}
		if ref := refMatch(syn, f, pktHost); ref != tt.syn {
			t.Errorf("%s: reference SYN %v, want %v", tt.name, ref, tt.syn)
		}
	}
	// TCP frames to a VIP whose flags lie beyond the frame are malformed,
	// not openings: the established ring takes them (the pipeline counts
	// them: truncated_tcp, bad_ihl), where reading the flags would end the
	// program and drop them in the kernel, uncounted.
	cut := map[string][]byte{
		"SYN cut before its flags":         buildFrame(tcp(vip1, 0x02))[:14+20+13],
		"SYN without a TCP header":         buildFrame(tcp(vip1, 0x02))[:14+20],
		"SYN with an IHL beyond the frame": func() []byte { f := buildFrame(tcp(vip1, 0x02)); f[14] = 0x4f; return f }(),
		"tagged SYN cut before its flags": func() []byte {
			s := tcp(vip1, 0x02)
			s.vlanTCI = 10
			return buildFrame(s)[:18+20+13]
		}(),
	}
	for name, f := range cut {
		if !runFilter(t, estProg, f) || runFilter(t, synProg, f) {
			t.Errorf("%s: established ring %v, SYN ring %v; want true, false", name, runFilter(t, estProg, f), runFilter(t, synProg, f))
		}
		if !refMatch(est, f, pktHost) || refMatch(syn, f, pktHost) {
			t.Errorf("%s: reference established %v, SYN %v; want true, false", name, refMatch(est, f, pktHost), refMatch(syn, f, pktHost))
		}
	}
	// Just long enough: the flags are the frame's last byte.
	if f := buildFrame(tcp(vip1, 0x02))[:14+20+14]; runFilter(t, estProg, f) || !runFilter(t, synProg, f) {
		t.Error("SYN ending with its flags byte: not in the SYN ring alone")
	}
	// Many addresses: the jump to the SYN test spans more than 255
	// instructions.
	var many []netip.Addr
	for i := range 500 {
		many = append(many, netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))
	}
	big := Filter{DstAddrs: many, SYN: SYNOnly}
	prog, err := big.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	if !runFilter(t, prog, buildFrame(tcp(many[0], 0x02))) || runFilter(t, prog, buildFrame(tcp(many[0], 0x10))) {
		t.Error("500 addresses: the first address's SYN/ACK not told apart")
	}
	if est.Equal(syn) || est.Equal(base) || !syn.Equal(Filter{DstAddrs: base.DstAddrs, SrcAddrs: base.SrcAddrs, ICMP: true, SYN: SYNOnly}) {
		t.Error("Equal ignores SYN")
	}
}

// TestFilterUDPRing: with SplitUDP the established ring's filter leaves
// the UDP frames to the VIPs (every fragment) to the UDP ring's (UDPOnly),
// so that a UDP flood overflows that ring and not the established TCP
// traffic's; the SYN ring keeps the TCP openings alone.
func TestFilterUDPRing(t *testing.T) {
	base := Filter{DstAddrs: []netip.Addr{vip1, vip2}, SrcAddrs: []netip.Addr{rs1}, ICMP: true, ARP: true}
	est, syn, udp := base, base, base
	est.SYN, est.SplitUDP = SYNExclude, true
	syn.SYN, udp.SYN = SYNOnly, UDPOnly
	var progs [3][]bpf.RawInstruction
	for i, f := range []Filter{est, syn, udp} {
		p, err := f.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		progs[i] = p
	}
	tcp := func(dst netip.Addr, flags uint8) frameSpec {
		return frameSpec{src: client, dst: dst, sport: 40000, dport: 80, ipProto: 6, tcpFlags: flags}
	}
	u := func(dst netip.Addr) frameSpec {
		return frameSpec{src: client, dst: dst, sport: 1, dport: 53, ipProto: 17}
	}
	const E, S, U = 1, 2, 4 // the rings accepting a frame
	tests := []struct {
		name  string
		s     frameSpec
		rings int
	}{
		{"UDP to VIP", u(vip1), U},
		{"UDP to second VIP", u(vip2), U},
		{"tagged UDP to VIP", func() frameSpec { s := u(vip1); s.vlanTCI = 10; return s }(), U},
		{"UDP first fragment", func() frameSpec { s := u(vip1); s.fragOff = 0x2000; return s }(), U},
		{"UDP later fragment", func() frameSpec { s := u(vip1); s.fragOff = 0x0003; return s }(), U},
		{"UDP to another address", u(other), 0},
		{"UDP from a real server (NAT)", frameSpec{src: rs1, dst: client, sport: 53, dport: 1, ipProto: 17}, E},
		{"SYN to VIP", tcp(vip1, 0x02), S},
		{"ACK to VIP", tcp(vip1, 0x10), E},
		{"later TCP fragment", func() frameSpec { s := tcp(vip1, 0x02); s.fragOff = 0x2003; return s }(), E},
		{"SCTP to VIP", frameSpec{src: client, dst: vip1, ipProto: 132}, E},
		{"ICMP error", frameSpec{src: other, dst: client, ipProto: 1}, E},
		{"ARP", frameSpec{etherType: etherTypeARP, src: client, dst: vip1}, E},
	}
	names := [3]string{"established", "SYN", "UDP"}
	for _, tt := range tests {
		f := buildFrame(tt.s)
		for i, flt := range []Filter{est, syn, udp} {
			want := tt.rings&(1<<i) != 0
			if got := runFilter(t, progs[i], f); got != want {
				t.Errorf("%s: %s ring accepts %v, want %v", tt.name, names[i], got, want)
			}
			if ref := refMatch(flt, f, pktHost); ref != want {
				t.Errorf("%s: reference %s ring %v, want %v", tt.name, names[i], ref, want)
			}
		}
	}
	// Without SplitUDP the established ring keeps UDP (the daemon's
	// fallback when the UDP ring cannot be had).
	noSplit := est
	noSplit.SplitUDP = false
	p, err := noSplit.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	if !runFilter(t, p, buildFrame(u(vip1))) {
		t.Error("SYNExclude without SplitUDP drops UDP to a VIP")
	}
	if noSplit.Equal(est) {
		t.Error("Equal ignores SplitUDP")
	}
	// Many addresses: the jumps span more than 255 instructions.
	var many []netip.Addr
	for i := range 500 {
		many = append(many, netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))
	}
	for _, tt := range []struct {
		f        Filter
		udp, ack bool
	}{
		{Filter{DstAddrs: many, SYN: UDPOnly}, true, false},
		{Filter{DstAddrs: many, SYN: SYNExclude, SplitUDP: true}, false, true},
	} {
		prog, err := tt.f.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		if runFilter(t, prog, buildFrame(u(many[499]))) != tt.udp || runFilter(t, prog, buildFrame(tcp(many[0], 0x10))) != tt.ack {
			t.Errorf("500 addresses, mode %d: UDP/ACK not told apart", tt.f.SYN)
		}
	}
}

// TestFilterICMPErrorsOnly: of ICMP, the rings take only unfragmented
// errors the pipeline relates to connections (types 3, 4, 11); echo and
// other types, and fragments, which it would leave to the kernel, stay
// out (an ICMP flood costs the worker nothing). An ICMP frame too short
// for its type goes on as an error (the pipeline counts it malformed).
func TestFilterICMPErrorsOnly(t *testing.T) {
	vipSide := Filter{DstAddrs: []netip.Addr{vip1}, SYN: SYNExclude}
	dipSide := Filter{SrcAddrs: []netip.Addr{rs1}, ICMP: true}
	icmp := func(dst netip.Addr, typ uint8) frameSpec {
		return frameSpec{src: other, dst: dst, ipProto: 1, sport: uint16(typ)<<8 | 1}
	}
	frag := func(s frameSpec, off uint16) frameSpec { s.fragOff = off; return s }
	tests := []struct {
		name     string
		frame    []byte
		vip, dip bool
	}{
		{"unreachable to VIP", buildFrame(icmp(vip1, 3)), true, true},
		{"source quench to VIP", buildFrame(icmp(vip1, 4)), true, true},
		{"time exceeded to VIP", buildFrame(icmp(vip1, 11)), true, true},
		{"time exceeded to a client", buildFrame(icmp(client, 11)), false, true},
		{"echo request to VIP", buildFrame(icmp(vip1, 8)), false, false},
		{"echo reply to VIP", buildFrame(icmp(vip1, 0)), false, false},
		{"redirect to VIP", buildFrame(icmp(vip1, 5)), false, false},
		{"first fragment of an unreachable", buildFrame(frag(icmp(vip1, 3), 0x2000)), false, false},
		{"later fragment", buildFrame(frag(icmp(vip1, 3), 0x0005)), false, false},
		{"tagged echo to VIP", func() []byte { s := icmp(vip1, 8); s.vlanTCI = 4; return buildFrame(s) }(), false, false},
		{"tagged unreachable to VIP", func() []byte { s := icmp(vip1, 3); s.vlanTCI = 4; return buildFrame(s) }(), true, true},
		{"to VIP, cut before the type", buildFrame(icmp(vip1, 8))[:14+20], true, true},
		{"to VIP, IHL beyond the frame", func() []byte { f := buildFrame(icmp(vip1, 8)); f[14] = 0x4f; return f }(), true, true},
	}
	for _, f := range []struct {
		name string
		f    Filter
		want func(vip, dip bool) bool
	}{{"vip side", vipSide, func(v, _ bool) bool { return v }}, {"dip side", dipSide, func(_, d bool) bool { return d }}} {
		prog, err := f.f.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			want := f.want(tt.vip, tt.dip)
			if got := runFilter(t, prog, tt.frame); got != want {
				t.Errorf("%s, %s: accepted %v, want %v", f.name, tt.name, got, want)
			}
			if ref := refMatch(f.f, tt.frame, pktHost); ref != want {
				t.Errorf("%s, %s: reference %v, want %v", f.name, tt.name, ref, want)
			}
		}
	}
}
