package rewrite

import (
	"bytes"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Fragment cuts as ip_do_fragment: 8-byte multiples but the last, MF on
// all but the last, offsets in 8-byte units, header checksums, DF clear,
// the same ID; later fragments keep only copied options (record route,
// not copied, becomes NOOPs). The pieces put back together are the
// original packet.
func TestFragment(t *testing.T) {
	for _, tt := range []struct {
		name  string
		s     spec
		mtu   int
		sizes []int // IP lengths of the fragments
	}{
		{"udp 3000 at 1500", spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 53, payload: 2972, df: true}, 1500, []int{1500, 1500, 40}},
		{"options, mtu 576", spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 53, payload: 1200, ipOpts: true}, 576, []int{572, 572, 148}},
		{"fits in one", spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, payload: 100, tcpFlags: TCPAck}, 1500, []int{140}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := build(t, tt.s)
			p := decode(t, f)
			var dst [FragmentBufLen]byte
			var frags [MaxFragments][]byte
			n, ok := Fragment(dst[:], f, p.L3, tt.mtu, frags[:])
			if !ok || n != len(tt.sizes) {
				t.Fatalf("Fragment: %d, %v; want %d fragments", n, ok, len(tt.sizes))
			}
			hlen := p.IHL
			var data []byte
			for i, fr := range frags[:n] {
				if !bytes.Equal(fr[:p.L3], f[:p.L3]) {
					t.Errorf("fragment %d: link header differs", i)
				}
				pkt := gopacket.NewPacket(fr, layers.LayerTypeEthernet, gopacket.Default)
				ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				if !ok {
					t.Fatalf("fragment %d does not decode: %v", i, pkt.ErrorLayer())
				}
				if int(ip.Length) != tt.sizes[i] || len(fr) != p.L3+tt.sizes[i] || int(ip.IHL)*4 != hlen {
					t.Errorf("fragment %d: length %d (frame %d) ihl %d, want %d", i, ip.Length, len(fr), ip.IHL, tt.sizes[i])
				}
				last := i == n-1
				if ip.Flags&layers.IPv4DontFragment != 0 || (ip.Flags&layers.IPv4MoreFragments != 0) == last && n > 1 {
					t.Errorf("fragment %d: flags %v", i, ip.Flags)
				}
				if int(ip.FragOffset)*8 != len(data) || ip.Id != 0x1234 || ip.TTL != 64 {
					t.Errorf("fragment %d: offset %d id %#x", i, ip.FragOffset, ip.Id)
				}
				if !last && (len(fr)-p.L3-hlen)%8 != 0 {
					t.Errorf("fragment %d: payload not a multiple of 8", i)
				}
				if IPv4(fr[p.L3:]).Checksum() != headerChecksum(fr[p.L3:p.L3+hlen]) {
					t.Errorf("fragment %d: bad header checksum", i)
				}
				if tt.s.ipOpts && i > 0 && !bytes.Equal(fr[p.L3+20:p.L3+hlen], bytes.Repeat([]byte{1}, hlen-20)) {
					t.Errorf("fragment %d: options % x, want NOOPs", i, fr[p.L3+20:p.L3+hlen])
				}
				data = append(data, fr[p.L3+hlen:]...)
			}
			if !bytes.Equal(data, f[p.L3+hlen:p.End]) {
				t.Error("the fragments' payloads are not the packet's")
			}
		})
	}
	f := build(t, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 53, payload: 3000})
	p := decode(t, f)
	var dst [FragmentBufLen]byte
	var frags [2][]byte
	if _, ok := Fragment(dst[:], f, p.L3, 1500, frags[:]); ok {
		t.Error("3 fragments into 2 slots")
	}
	if _, ok := Fragment(dst[:], f, p.L3, 27, frags[:]); ok {
		t.Error("fragments of less than 8 bytes")
	}
}

// headerChecksum is the IPv4 header checksum computed from scratch.
func headerChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i < len(h); i += 2 {
		if i == 10 {
			continue
		}
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
