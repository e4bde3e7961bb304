package rewrite

import (
	"testing"
)

// hot holds one frame of each kind the per-packet functions see.
type hot struct {
	tcp, udp, icmpIn, icmpOut []byte
	pt, pu, pi, po            Parsed
}

func newHot(t testing.TB) *hot {
	h := &hot{
		tcp:     build(t, spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 40000, dport: 80, payload: 64, vlan: 3}),
		udp:     build(t, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 40001, dport: 7000, payload: 64, partial: true}),
		icmpIn:  icmpErr(t, ICMPDestUnreach, clientIP, vip, replyTC, 0, 0, false),
		icmpOut: icmpErr(t, ICMPDestUnreach, rip, clientIP, spec{proto: ProtoTCP, src: clientIP, dst: rip, sport: 1, dport: 8080}, 0, 0, false),
	}
	// A frame that did not decode would leave the tests and benchmarks
	// measuring an early return.
	for _, d := range []struct {
		p *Parsed
		f []byte
	}{{&h.pt, h.tcp}, {&h.pu, h.udp}, {&h.pi, h.icmpIn}, {&h.po, h.icmpOut}} {
		if v := d.p.Decode(d.f); v != IP {
			t.Fatalf("hot frame: Decode = %v (%v)", v, d.p.Reason)
		}
	}
	if !h.pi.Embedded || !h.po.Embedded {
		t.Fatal("hot ICMP frames are not embedded errors")
	}
	return h
}

func TestNoAllocs(t *testing.T) {
	h := newHot(t)
	work := make([]byte, 2048)
	var out [ICMPErrorMaxFrame]byte
	var p Parsed
	// Each function runs on a fresh copy so the TTL never runs out.
	tests := map[string]func(){
		"Decode":          func() { p.Decode(h.tcp) },
		"DecodeICMPError": func() { p.Decode(h.icmpIn) },
		"DecTTL":          func() { DecTTL(IPv4(copyTo(work, h.tcp)[h.pt.L3:])) },
		"DR":              func() { DR(copyTo(work, h.tcp), &h.pt, toRS, false) },
		"NATIn":           func() { NATIn(copyTo(work, h.tcp), &h.pt, rip, 8080, toRS, false) },
		"NATInPartial":    func() { NATIn(copyTo(work, h.udp), &h.pu, rip, 8080, toRS, true) },
		"NATOut":          func() { NATOut(copyTo(work, h.udp), &h.pu, vip, 80, toRS, false) },
		"CompleteL4":      func() { CompleteL4(copyTo(work, h.udp), &h.pu) },
		"TUN": func() {
			copy(work[TUNHeadroom:], h.tcp)
			TUN(work[:TUNHeadroom+len(h.tcp)], TUNHeadroom, &h.pt, dip, rip, 1, toRS, false)
		},
		"ICMPIn":          func() { ICMPIn(copyTo(work, h.icmpIn), &h.pi, rip, 8080, toRS) },
		"ICMPOut":         func() { ICMPOut(copyTo(work, h.icmpOut), &h.po, vip, 80, toRS) },
		"TimeExceeded":    func() { TimeExceeded(out[:], h.tcp, &h.pt, dip, toRS, 1) },
		"FragNeeded":      func() { FragNeeded(out[:], h.tcp, &h.pt, dip, 1400, toRS, 1) },
		"PortUnreachable": func() { PortUnreachable(out[:], h.udp, &h.pu, dip, toRS, 1) },
		"Addrs":           func() { _, _ = h.pt.SrcAddr(), h.pt.DstAddr() },
	}
	for name, fn := range tests {
		if n := testing.AllocsPerRun(200, fn); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
}

func copyTo(dst, src []byte) []byte { return dst[:copy(dst, src)] }

func BenchmarkDecode(b *testing.B) {
	h := newHot(b)
	for _, c := range []struct {
		name  string
		frame []byte
	}{{"TCP", h.tcp}, {"UDP", h.udp}, {"ICMPError", h.icmpIn}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var p Parsed
			for b.Loop() {
				p.Decode(c.frame)
			}
		})
	}
}

// The rewrite benchmarks restore the frame's TTL byte and checksum by
// copying the 64-byte original back each round (a few ns, included).
func benchRewrite(b *testing.B, frame []byte, fn func(f []byte)) {
	b.ReportAllocs()
	work := make([]byte, len(frame))
	for b.Loop() {
		copy(work, frame)
		fn(work)
	}
}

func BenchmarkDR(b *testing.B) {
	h := newHot(b)
	benchRewrite(b, h.tcp, func(f []byte) { DR(f, &h.pt, toRS, false) })
}

func BenchmarkNATIn(b *testing.B) {
	h := newHot(b)
	b.Run("TCP", func(b *testing.B) {
		benchRewrite(b, h.tcp, func(f []byte) { NATIn(f, &h.pt, rip, 8080, toRS, false) })
	})
	b.Run("UDPPartial", func(b *testing.B) {
		benchRewrite(b, h.udp, func(f []byte) { NATIn(f, &h.pu, rip, 8080, toRS, true) })
	})
}

func BenchmarkNATOut(b *testing.B) {
	h := newHot(b)
	benchRewrite(b, h.tcp, func(f []byte) { NATOut(f, &h.pt, vip, 80, toRS, false) })
}

func BenchmarkTUN(b *testing.B) {
	h := newHot(b)
	buf := make([]byte, TUNHeadroom+len(h.tcp))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf[TUNHeadroom:], h.tcp)
		TUN(buf, TUNHeadroom, &h.pt, dip, rip, 1, toRS, false)
	}
}

func BenchmarkICMPIn(b *testing.B) {
	h := newHot(b)
	benchRewrite(b, h.icmpIn, func(f []byte) { ICMPIn(f, &h.pi, rip, 8080, toRS) })
}

func BenchmarkTimeExceeded(b *testing.B) {
	h := newHot(b)
	var out [ICMPErrorMaxFrame]byte
	b.ReportAllocs()
	for b.Loop() {
		TimeExceeded(out[:], h.tcp, &h.pt, dip, toRS, 1)
	}
}

// BenchmarkDecodeNATIn is the per-packet work of a NAT director.
func BenchmarkDecodeNATIn(b *testing.B) {
	h := newHot(b)
	var p Parsed
	benchRewrite(b, h.tcp, func(f []byte) {
		if p.Decode(f) == IP {
			NATIn(f, &p, rip, 8080, toRS, false)
		}
	})
}
