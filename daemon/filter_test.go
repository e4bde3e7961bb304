package daemon

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/bpf"

	"gvs/internal/frames"
)

// runProg runs an assembled filter over a frame in x/net/bpf's VM (the
// kernel's semantics for the instructions used) and reports acceptance.
func runProg(tb testing.TB, raw []bpf.RawInstruction, frame []byte) bool {
	tb.Helper()
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		tb.Fatal("cannot disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := vm.Run(frame)
	if err != nil {
		tb.Fatal(err)
	}
	return n > 0
}

// refAccept is the filter's meaning written plainly.
func refAccept(f Filter, b []byte) bool {
	l3 := 14
	if len(b) < 14 {
		return false
	}
	et := binary.BigEndian.Uint16(b[12:])
	if et == 0x8100 || et == 0x88a8 {
		if len(b) < 18 || binary.BigEndian.Uint16(b[16:]) != 0x0800 {
			return false
		}
		l3 = 18
	} else if et != 0x0800 {
		return false
	}
	// Loads beyond the frame end the program with "drop", as in the
	// kernel: a truncated IPv4 header is never accepted by a later test.
	if f.ICMP {
		if len(b) < l3+10 {
			return false
		}
		if b[l3+9] == ipProtoICMP {
			return true
		}
	}
	for _, m := range []struct {
		off   int
		addrs []netip.Addr
	}{{16, f.Dst}, {12, f.Src}} {
		if len(m.addrs) == 0 {
			continue
		}
		if len(b) < l3+m.off+4 {
			return false
		}
		if slices.Contains(m.addrs, netip.AddrFrom4([4]byte(b[l3+m.off:l3+m.off+4]))) {
			return true
		}
	}
	return false
}

var (
	vipA   = netip.MustParseAddr("198.51.100.10")
	ripA   = netip.MustParseAddr("198.18.2.11")
	cliA   = netip.MustParseAddr("198.18.1.11")
	otherA = netip.MustParseAddr("198.18.2.50")
	l2     = frames.L2{Src: frames.DerivedMAC(cliA), Dst: frames.DerivedMAC(vipA)}
)

func TestFilter(t *testing.T) {
	toVIP := frames.TCP(l2, frames.IP{Src: cliA, Dst: vipA}, frames.TCPSeg{SrcPort: 40000, DstPort: 80, SYN: true})
	toVIPTagged := frames.TCP(frames.L2{Src: l2.Src, Dst: l2.Dst, VLAN: 5}, frames.IP{Src: cliA, Dst: vipA}, frames.TCPSeg{SrcPort: 1, DstPort: 80})
	fromRIP := frames.TCP(l2, frames.IP{Src: ripA, Dst: cliA}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true})
	other := frames.UDP(l2, frames.IP{Src: otherA, Dst: cliA}, frames.UDPDgram{SrcPort: 1, DstPort: 2})
	icmp := frames.ICMPEcho(l2, frames.IP{Src: otherA, Dst: cliA}, 1, 1)
	arp := frames.ARPRequest(l2.Src, cliA, vipA)

	vipF := Filter{Dst: []netip.Addr{vipA}}
	dipF := Filter{Src: []netip.Addr{ripA}, ICMP: true}
	union := Filter{Dst: []netip.Addr{vipA}, Src: []netip.Addr{ripA}, ICMP: true}
	tests := []struct {
		name  string
		f     Filter
		frame []byte
		want  bool
	}{
		{"vip side: to VIP", vipF, toVIP, true},
		{"vip side: to VIP, tagged", vipF, toVIPTagged, true},
		{"vip side: NAT reply", vipF, fromRIP, false},
		{"vip side: ICMP", vipF, icmp, false},
		{"vip side: ARP", vipF, arp, false},
		{"dip side: NAT reply", dipF, fromRIP, true},
		{"dip side: ICMP from anyone", dipF, icmp, true},
		{"dip side: to VIP", dipF, toVIP, false},
		{"dip side: other UDP", dipF, other, false},
		{"union: to VIP", union, toVIP, true},
		{"union: reply", union, fromRIP, true},
		{"union: other", union, other, false},
		{"empty filter drops all", Filter{}, toVIP, false},
		{"runt frame", union, toVIP[:20], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prog, err := tc.f.Assemble()
			if err != nil {
				t.Fatal(err)
			}
			if got := runProg(t, prog, tc.frame); got != tc.want {
				t.Errorf("accept = %v, want %v", got, tc.want)
			}
			if ref := refAccept(tc.f, tc.frame); ref != tc.want {
				t.Errorf("reference = %v, want %v (test bug)", ref, tc.want)
			}
		})
	}
}

func TestFilterLimits(t *testing.T) {
	if _, err := (Filter{Dst: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}).Assemble(); err == nil {
		t.Error("IPv6 address accepted")
	}
	many := make([]netip.Addr, 2100)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	if _, err := (Filter{Dst: many}).Assemble(); err == nil {
		t.Error("a program over BPF_MAXINSNS accepted")
	}
	p, err := (Filter{Dst: many[:2000]}).Assemble()
	if err != nil {
		t.Fatal(err)
	}
	f := frames.UDP(l2, frames.IP{Src: cliA, Dst: many[1999]}, frames.UDPDgram{SrcPort: 1, DstPort: 2})
	if !runProg(t, p, f) {
		t.Error("last of 2000 addresses not matched")
	}
	mapped := netip.AddrFrom16(vipA.As16())
	if !(Filter{Dst: []netip.Addr{mapped, vipA}}).Equal(Filter{Dst: []netip.Addr{vipA}}) {
		t.Error("v4-mapped and duplicate addresses must not matter")
	}
}

// FuzzFilter checks the program against the reference on arbitrary frames.
func FuzzFilter(f *testing.F) {
	f.Add(frames.TCP(l2, frames.IP{Src: cliA, Dst: vipA}, frames.TCPSeg{SrcPort: 1, DstPort: 80, SYN: true}), true)
	f.Add(frames.TCP(frames.L2{VLAN: 9}, frames.IP{Src: ripA, Dst: cliA}, frames.TCPSeg{SrcPort: 8080, DstPort: 2}), false)
	f.Add(frames.ICMPEcho(l2, frames.IP{Src: otherA, Dst: cliA}, 1, 1), true)
	f.Add([]byte{}, false)
	f.Add(make([]byte, 17), true)
	f.Fuzz(func(t *testing.T, b []byte, icmp bool) {
		flt := Filter{Dst: []netip.Addr{vipA}, Src: []netip.Addr{ripA}, ICMP: icmp}
		prog, err := flt.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := runProg(t, prog, b), refAccept(flt, b); got != want {
			t.Errorf("program %v, reference %v for % x", got, want, b)
		}
	})
}
