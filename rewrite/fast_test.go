package rewrite

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"gvs/checksum"
)

// dirty is a Parsed with every field set to something a decode must
// overwrite, so that a field the fast path forgets shows up.
func dirty() Parsed {
	return Parsed{
		Reason: BadIHL, VLAN: true, TCI: 0xffff, EtherType: 0xffff, L3: -1, IHL: -1, End: -1,
		TOS: 0xff, TTL: 0xff, Proto: 0xff, DF: true, MF: true, FragOff: 0xffff,
		Src: [4]byte{9, 9, 9, 9}, Dst: [4]byte{9, 9, 9, 9}, L4: -1, Ports: true,
		SrcPort: 0xffff, DstPort: 0xffff, TCPFlags: 0xff, L4Csum: -1, L4Len: -1,
		ICMPType: 0xff, ICMPCode: 0xff, Embedded: true,
		Inner: Inner{L3: -1, IHL: -1, Proto: 0xff, FragOff: 0xffff, Src: [4]byte{9}, Dst: [4]byte{9}, L4: -1, Ports: true, SrcPort: 1, DstPort: 1},
	}
}

// checkDecodeCommon: the one-pass decoder of the common case accepts a
// frame only when the general decoder says IP, and then fills exactly the
// same Parsed, whatever the Parsed held before; a frame it declines leaves
// the Parsed untouched.
func checkDecodeCommon(t *testing.T, frame []byte) (taken bool) {
	t.Helper()
	var want Parsed
	v := want.decode(frame)
	got := dirty()
	if !got.decodeCommon(frame) {
		if got != dirty() {
			t.Fatalf("declined frame changed the Parsed: %+v", got)
		}
		return false
	}
	if v != IP {
		t.Fatalf("fast path accepted a frame the decoder calls %v (%v)", v, want.Reason)
	}
	if got != want {
		t.Fatalf("fast path:\n got %+v\nwant %+v", got, want)
	}
	return true
}

func TestDecodeCommon(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		taken bool
	}{
		{"tcp", build(t, tcpSYN), true},
		{"tcp vlan padded", build(t, spec{vlan: 7, proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 2, payload: 5, pad: 12, tcpFlags: TCPAck}), true},
		{"udp", build(t, udpReq), true},
		{"udp no checksum", build(t, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 2, payload: 9, udpZero: true}), true},
		{"ip options", build(t, spec{ipOpts: true, proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 2}), false},
		{"icmp", build(t, spec{proto: ProtoICMP, icmpType: ICMPEcho, src: clientIP, dst: vip}), false},
		{"first fragment", mutIP(build(t, udpReq), func(ip IPv4) { ip[ipFrag] |= ipFlagMF >> 8 }), false},
		{"bad checksum", func() []byte { f := build(t, tcpSYN); f[EthernetLen+ipCsum] ^= 1; return f }(), false},
		{"short tcp", truncIP(build(t, tcpSYN), IPv4MinLen+TCPMinLen-1), false},
		{"udp length past end", func() []byte {
			f := build(t, udpReq)
			binary.BigEndian.PutUint16(f[EthernetLen+IPv4MinLen+udpLen:], 200)
			return f
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkDecodeCommon(t, tt.frame); got != tt.taken {
				t.Fatalf("fast path taken = %v, want %v", got, tt.taken)
			}
		})
	}
}

func FuzzDecodeCommon(f *testing.F) {
	f.Add(build(f, tcpSYN))
	f.Add(build(f, spec{vlan: 3, proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 2, payload: 3, pad: 10}))
	f.Add(build(f, spec{ipOpts: true, proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 2}))
	for _, c := range malformedCorpus(f) {
		f.Add(c.frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) { checkDecodeCommon(t, frame) })
}

// The rewrites fold several incremental checksum updates into one; the
// result must be the very bits of the updates applied one by one
// (checksum.Update16 and UpdateAddr), 0x0000 and 0xFFFF included.
func TestFoldedUpdatesMatchSequential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	special := []uint16{0, 1, 0xfeff, 0xff00, 0xfffe, 0xffff}
	pick := func() uint16 {
		if r.IntN(4) == 0 {
			return special[r.IntN(len(special))]
		}
		return uint16(r.Uint32())
	}
	addr := func() [4]byte {
		var a [4]byte
		binary.BigEndian.PutUint16(a[:], pick())
		binary.BigEndian.PutUint16(a[2:], pick())
		return a
	}
	for i := 0; i < 200000; i++ {
		csum, oldPort, newPort := pick(), pick(), pick()
		oldA, newA := addr(), addr()
		ttl := uint8(2 + r.IntN(254))
		proto := uint8(r.Uint32())

		// DecTTL against Update16.
		ip := make(IPv4, IPv4MinLen)
		ip[ipVerIHL], ip[ipTTL], ip[ipProto] = 0x45, ttl, proto
		ip.SetChecksum(csum)
		w := uint16(ttl)<<8 | uint16(proto)
		DecTTL(ip)
		if got, want := ip.Checksum(), checksum.Update16(csum, w, w-0x100); got != want {
			t.Fatalf("DecTTL(csum %#04x, ttl %d): %#04x, want %#04x", csum, ttl, got, want)
		}

		// NATIn's header update against DecTTL then UpdateAddr; fixL4
		// against UpdateAddr then Update16 (TCP).
		frame := make([]byte, EthernetLen+IPv4MinLen+TCPMinLen)
		h := IPv4(frame[EthernetLen:])
		h[ipVerIHL], h[ipTTL], h[ipProto] = 0x45, ttl, ProtoTCP
		h.SetDst(oldA)
		h.SetChecksum(csum)
		tcp := TCP(frame[EthernetLen+IPv4MinLen:])
		tcp.SetDstPort(oldPort)
		tcp.SetChecksum(csum)
		p := Parsed{L3: EthernetLen, L4: EthernetLen + IPv4MinLen, Proto: ProtoTCP, Ports: true,
			L4Csum: EthernetLen + IPv4MinLen + tcpCsum, L4Len: TCPMinLen}
		if !NATIn(frame, &p, newA, newPort, toRS, false) {
			t.Fatal("NATIn refused")
		}
		tw := uint16(ttl)<<8 | ProtoTCP
		wantIP := checksum.UpdateAddr(checksum.Update16(csum, tw, tw-0x100), oldA, newA)
		if got := h.Checksum(); got != wantIP {
			t.Fatalf("NATIn header checksum %#04x, want %#04x (csum %#04x %v->%v)", got, wantIP, csum, oldA, newA)
		}
		wantL4 := checksum.Update16(checksum.UpdateAddr(csum, oldA, newA), oldPort, newPort)
		if got := tcp.Checksum(); got != wantL4 {
			t.Fatalf("NATIn TCP checksum %#04x, want %#04x", got, wantL4)
		}
	}
}

// TUN computes the outer header checksum from registers: it must be the
// header's real checksum, for every TOS, DF, length and ID.
func TestTUNOuterChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		s := spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 2, payload: r.IntN(300),
			tos: uint8(r.Uint32()), df: r.IntN(2) == 0, ttl: uint8(2 + r.IntN(254))}
		frame := build(t, s)
		var p Parsed
		if p.Decode(frame) != IP {
			t.Fatal("test frame does not decode")
		}
		buf := make([]byte, TUNHeadroom+len(frame))
		copy(buf[TUNHeadroom:], frame)
		out, ok := TUN(buf, TUNHeadroom, &p, [4]byte(binary.BigEndian.AppendUint32(nil, r.Uint32())), rip, uint16(r.Uint32()), toRS, false)
		if !ok {
			t.Fatal("TUN refused")
		}
		o := IPv4(out[EthernetLen:])
		if !ipValid(o) || o.Checksum() != recomputed(o) {
			t.Fatalf("outer checksum %#04x, recomputed %#04x", o.Checksum(), recomputed(o))
		}
	}
}

// recomputed is the header checksum of ip computed from scratch.
func recomputed(ip IPv4) uint16 {
	h := append([]byte(nil), ip[:ip.HeaderLen()]...)
	h[ipCsum], h[ipCsum+1] = 0, 0
	return checksum.Checksum(h, 0)
}
