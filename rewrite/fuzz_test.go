package rewrite

import (
	"encoding/binary"
	"testing"

	"gvs/internal/oracle"
)

// FuzzRewrite: on any frame Decode accepts, every rewrite — NAT in and
// out, DR, IPIP encapsulation (TUN) and the ICMP-error rewrites of the
// quoted packet — keeps the frame consistent. Oracles, with the RFC 1071
// sum of internal/oracle (not package checksum):
//
//   - the (outer) IPv4 header checksum is valid and the TTL is the input's
//     minus one (TUN: the inner TTL; the outer TTL is the inner's);
//   - the total length is unchanged (TUN: the outer is the inner's plus
//     20, and the returned frame ends where the IP packet does);
//   - the transport checksum verifies whenever it verified before (or was
//     partial) and equals a full recomputation (CompleteL4);
//   - the addresses and ports are the ones asked for, and nothing else in
//     the IP packet changed (DR, TUN: nothing but TTL and checksums);
//   - ICMP: the ICMP checksum and the quoted IPv4 header checksum verify,
//     the quoted address and port are rewritten, and a quoted transport
//     checksum inside the quote changed exactly by the rewritten fields.
func FuzzRewrite(f *testing.F) {
	f.Add(build(f, tcpSYN), uint32(0xc6130002), uint16(8080), uint8(0))
	f.Add(build(f, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 3, dport: 4, payload: 9, vlan: 2}), uint32(1), uint16(0), uint8(1))
	f.Add(build(f, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 3, dport: 4, udpZero: true, ipOpts: true}), uint32(0xffffffff), uint16(0xffff), uint8(2))
	f.Add(icmpErr(f, ICMPDestUnreach, clientIP, vip, replyTC, 0, 0, false), uint32(0x0a000001), uint16(1), uint8(3))
	f.Add(icmpErr(f, ICMPTimeExceeded, rip, clientIP, spec{proto: ProtoUDP, src: clientIP, dst: rip, sport: 5, dport: 6}, 0, 0, false), uint32(7), uint16(7), uint8(4))
	// Whole quotes (the quoted transport checksum is inside), VLAN, options.
	f.Add(icmpErr(f, ICMPDestUnreach, routerIP, vip, spec{proto: ProtoTCP, src: vip, dst: clientIP, sport: 80, dport: 999, payload: 3}, 1000, 3, true), uint32(0xc6130002), uint16(8080), uint8(3))
	f.Add(icmpErr(f, ICMPDestUnreach, rip, clientIP, spec{proto: ProtoUDP, src: clientIP, dst: rip, sport: 999, dport: 53, payload: 5}, 1000, 0, false), uint32(0xcb007101), uint16(53), uint8(4))
	// TUN: TCP, partial TCP, UDP without checksum, VLAN with options, padding.
	f.Add(build(f, spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, payload: 30, df: true, tos: 3}), uint32(0xc6130002), uint16(7), uint8(5))
	f.Add(build(f, spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, payload: 31}), uint32(0xc6130002), uint16(7), uint8(5|0x80))
	f.Add(build(f, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 53, udpZero: true, pad: 6}), uint32(0xc6130002), uint16(7), uint8(5))
	f.Add(build(f, spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 1, dport: 53, vlan: 9, ipOpts: true, payload: 7}), uint32(0xc6130002), uint16(7), uint8(5|0x80))
	f.Add(icmpErr(f, ICMPDestUnreach, routerIP, vip, replyTC, 0, 0, false), uint32(0xc6130002), uint16(7), uint8(5))
	// NAT and DR with partial input.
	f.Add(build(f, spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, payload: 5}), uint32(0xc6130002), uint16(8080), uint8(0|0x80))
	f.Add(build(f, spec{proto: ProtoUDP, src: rip, dst: clientIP, sport: 53, dport: 1, payload: 5}), uint32(0xcb007101), uint16(53), uint8(1|0x80))
	f.Add(build(f, spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, payload: 5}), uint32(0), uint16(0), uint8(2|0x80))
	f.Fuzz(func(t *testing.T, frame []byte, addr uint32, port uint16, op uint8) {
		checkRewrite(t, frame, addr, port, op, nil)
	})
}

// checkRewrite runs one rewrite and its oracles; fault, when set, changes
// the output before the oracles look at it.
func checkRewrite(t testing.TB, frame []byte, addr uint32, port uint16, op uint8, fault func(out []byte, p *Parsed)) {
	t.Helper()
	var p Parsed
	if p.Decode(frame) != IP {
		return
	}
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], addr)
	g := clone(frame)
	hadZeroUDP := p.Proto == ProtoUDP && p.L4Csum != 0 && binary.BigEndian.Uint16(g[p.L4Csum:]) == 0
	whole := !p.IsFragment() && p.Ports && !hadZeroUDP
	if whole {
		CompleteL4(g, &p) // start from a correct transport checksum
	}
	partial := false
	if op&0x80 != 0 && whole {
		// Checksum offload: the field holds the folded pseudo-header sum.
		n := p.End - p.L4
		if p.Proto == ProtoUDP {
			n = udpFieldLen(g[p.L4:p.End])
		}
		binary.BigEndian.PutUint16(g[p.L4Csum:], oracle.Sum1071(nil, oracle.Pseudo4(g[p.L3:], p.Proto, n)))
		partial = true
	}
	in := clone(g)
	inIP := in[p.L3:p.End]
	var out []byte // the frame after the rewrite
	var ok bool
	kind := op & 0x7f % 7
	switch kind {
	case 0:
		ok, out = NATIn(g, &p, a, port, toRS, partial), g
	case 1:
		ok, out = NATOut(g, &p, a, port, toRS, partial), g
	case 2:
		ok, out = DR(g, &p, toRS, partial), g
	case 3:
		ok, out = ICMPIn(g, &p, a, port, toRS), g
	case 4:
		ok, out = ICMPOut(g, &p, a, port, toRS), g
	default:
		headroom := TUNHeadroom + int(op%3)
		buf := make([]byte, headroom+len(g))
		copy(buf[headroom:], g)
		out, ok = TUN(buf, headroom, &p, dip, a, port, toRS, partial)
	}
	if !ok {
		if p.TTL > 1 && kind != 3 && kind != 4 && kind < 5 {
			t.Fatalf("op %d refused a frame with TTL %d", kind, p.TTL)
		}
		return
	}
	if fault != nil {
		fault(out, &p)
	}
	ip := out[p.L3:]
	if oracle.Sum1071(ip[:IPv4(ip).HeaderLen()], 0) != 0xffff {
		t.Fatal("IPv4 header checksum invalid")
	}
	fwd := ip // the forwarded packet (TUN: the inner one)
	if kind >= 5 {
		if len(out) != p.L3+IPv4MinLen+(p.End-p.L3) {
			t.Fatalf("TUN frame of %d bytes, want %d", len(out), p.L3+IPv4MinLen+(p.End-p.L3))
		}
		o := IPv4(ip)
		if o.Protocol() != ProtoIPIP || o.HeaderLen() != IPv4MinLen || int(o.TotalLen()) != IPv4MinLen+p.End-p.L3 ||
			o.Src() != dip || o.Dst() != a || binary.BigEndian.Uint16(o[4:]) != port {
			t.Fatalf("outer header %x", o[:IPv4MinLen])
		}
		if o.DF() != IPv4(inIP).DF() {
			t.Fatal("outer DF is not the inner's")
		}
		fwd = ip[IPv4MinLen:]
		if o.TTL() != IPv4(fwd).TTL() {
			t.Fatalf("outer TTL %d, inner %d", o.TTL(), IPv4(fwd).TTL())
		}
		if oracle.Sum1071(fwd[:IPv4(fwd).HeaderLen()], 0) != 0xffff {
			t.Fatal("inner IPv4 header checksum invalid")
		}
	}
	fwd = fwd[:p.End-p.L3]
	if int(IPv4(fwd).TotalLen()) != len(fwd) {
		t.Fatalf("total length %d, packet %d", IPv4(fwd).TotalLen(), len(fwd))
	}
	if IPv4(fwd).TTL() != p.TTL-1 {
		t.Fatalf("TTL %d, input %d", IPv4(fwd).TTL(), p.TTL)
	}
	ihl, l4 := p.IHL, p.L4-p.L3
	if whole {
		if l4Verifies(fwd, p.Proto, l4) != true {
			t.Fatal("transport checksum does not verify")
		}
		have := binary.BigEndian.Uint16(fwd[p.L4Csum-p.L3:])
		q := p // the input's offsets in the output frame
		if kind >= 5 {
			q.L3, q.L4, q.L4Csum, q.End = q.L3+IPv4MinLen, q.L4+IPv4MinLen, q.L4Csum+IPv4MinLen, q.End+IPv4MinLen
		}
		full := clone(out)
		CompleteL4(full, &q)
		want := binary.BigEndian.Uint16(full[q.L4Csum:])
		if have != want {
			t.Fatalf("L4 checksum %#04x, full recompute %#04x", have, want)
		}
	} else if hadZeroUDP && !p.IsFragment() {
		c := binary.BigEndian.Uint16(fwd[p.L4Csum-p.L3:])
		switch {
		case (kind == 2 || kind >= 5) && c != 0:
			t.Fatal("DR/TUN filled in a UDP checksum of 0")
		case (kind == 0 || kind == 1) && c != 0 && !l4Verifies(fwd, p.Proto, l4):
			// NAT may compute one (IPVS's full checksum path); then it verifies.
			t.Fatal("NAT filled in a UDP checksum that does not verify")
		}
	}
	// What changed.
	a0, b0 := clone(fwd), clone(inIP)
	for _, x := range [][]byte{a0, b0} {
		x[8], x[10], x[11] = 0, 0, 0 // TTL, header checksum
		if p.L4Csum != 0 && (whole || kind <= 1 || kind == 3 || kind == 4) {
			c := p.L4Csum - p.L3
			x[c], x[c+1] = 0, 0
		}
	}
	setAddrPort := func(x []byte, addrOff, portOff int) {
		copy(x[addrOff:addrOff+4], a[:])
		if p.Ports && !p.IsFragment() {
			binary.BigEndian.PutUint16(x[l4+portOff:], port)
		}
	}
	switch kind {
	case 0:
		setAddrPort(b0, 16, 2)
	case 1:
		setAddrPort(b0, 12, 0)
	case 3, 4:
		outerOff, innerOff, portOff := 16, 12, 0
		if kind == 4 {
			outerOff, innerOff, portOff = 12, 16, 2
		}
		copy(b0[outerOff:outerOff+4], a[:])
		q := p.Inner.L3 - p.L3
		qi := p.Inner.L4 - p.L3
		if oracle.Sum1071(fwd[l4:], 0) != 0xffff {
			t.Fatal("ICMP checksum invalid")
		}
		if oracle.Sum1071(fwd[q:q+p.Inner.IHL], 0) != 0xffff {
			t.Fatal("quoted IPv4 header checksum invalid")
		}
		copy(b0[q+innerOff:q+innerOff+4], a[:])
		b0[q+10], b0[q+11], a0[q+10], a0[q+11] = 0, 0, 0, 0
		if p.Inner.Ports {
			binary.BigEndian.PutUint16(b0[qi+portOff:], port)
			cs := qi + 6
			if p.Inner.Proto == ProtoTCP {
				cs = qi + 16
			}
			if cs+2 <= len(fwd) {
				// The quoted checksum moved by exactly the rewritten fields:
				// ~new + old fields == ~old + new fields (one's complement).
				oldC, newC := binary.BigEndian.Uint16(inIP[cs:]), binary.BigEndian.Uint16(fwd[cs:])
				if p.Inner.Proto == ProtoUDP && oldC == 0 {
					if newC != 0 {
						t.Fatal("quoted UDP checksum 0 filled in")
					}
				} else {
					var s1, s2 uint32 = uint32(^newC), uint32(^oldC)
					for _, w := range [][]byte{inIP[q+innerOff : q+innerOff+4], inIP[qi+portOff : qi+portOff+2]} {
						s1 += uint32(oracle.Sum1071(w, 0))
					}
					for _, w := range [][]byte{fwd[q+innerOff : q+innerOff+4], fwd[qi+portOff : qi+portOff+2]} {
						s2 += uint32(oracle.Sum1071(w, 0))
					}
					if x, y := oracle.Sum1071(nil, s1), oracle.Sum1071(nil, s2); x != y && !(x|y == 0xffff && x&y == 0) {
						t.Fatalf("quoted checksum %#04x -> %#04x does not match the rewrite", oldC, newC)
					}
				}
				a0[cs], a0[cs+1], b0[cs], b0[cs+1] = 0, 0, 0, 0
			}
		}
	}
	_ = ihl
	if string(a0) != string(b0) {
		t.Fatalf("op %d changed more than it should:\nin  %x\nout %x", kind, b0, a0)
	}
}

// l4Verifies checks the TCP/UDP checksum of the IPv4 packet ip whose
// transport header starts at l4. A UDP checksum covers the datagram by
// its own length field (RFC 768), which may be less than the IP payload.
func l4Verifies(ip []byte, proto uint8, l4 int) bool {
	seg := ip[l4:]
	if proto == ProtoUDP {
		if binary.BigEndian.Uint16(seg[6:]) == 0 {
			return true
		}
		seg = seg[:udpFieldLen(seg)]
	}
	return oracle.Sum1071(seg, oracle.Pseudo4(ip, proto, len(seg))) == 0xffff
}

// udpFieldLen is the UDP length field of seg, bounded by len(seg).
func udpFieldLen(seg []byte) int {
	return min(int(binary.BigEndian.Uint16(seg[4:])), len(seg))
}

// TestFuzzRewriteOraclesFail: each oracle notices a fault injected into a
// rewritten frame.
func TestFuzzRewriteOraclesFail(t *testing.T) {
	tcp := build(t, spec{proto: ProtoTCP, src: clientIP, dst: vip, sport: 1, dport: 80, payload: 30})
	icmp := icmpErr(t, ICMPDestUnreach, routerIP, vip, spec{proto: ProtoTCP, src: vip, dst: clientIP, sport: 80, dport: 999, payload: 3}, 1000, 0, false)
	flip := func(off func(p *Parsed) int) func(out []byte, p *Parsed) {
		return func(out []byte, p *Parsed) { out[off(p)] ^= 0x10 }
	}
	tests := []struct {
		name  string
		frame []byte
		op    uint8
		fault func(out []byte, p *Parsed)
	}{
		{"ip checksum", tcp, 0, flip(func(p *Parsed) int { return p.L3 + 10 })},
		{"ttl", tcp, 2, func(out []byte, p *Parsed) { out[p.L3+8]++; out[p.L3+10]-- }},
		{"tcp checksum", tcp, 0, flip(func(p *Parsed) int { return p.L4Csum })},
		{"nat port", tcp, 0, func(out []byte, p *Parsed) { out[p.L4+2]++; out[p.L4Csum]-- }}, // checksum kept right
		{"dr payload", tcp, 2, func(out []byte, p *Parsed) { out[p.End-1]++; out[p.End-2]-- }},
		{"tun outer ttl", tcp, 5, func(out []byte, p *Parsed) { out[p.L3+8]--; out[p.L3+10]++ }},
		{"tun inner checksum", tcp, 5, flip(func(p *Parsed) int { return p.L3 + 20 + 10 })},
		{"tun inner tcp", tcp, 5 | 0x80, flip(func(p *Parsed) int { return p.L4Csum + 20 })},
		{"icmp checksum", icmp, 3, flip(func(p *Parsed) int { return p.L4 + 2 })},
		{"quoted ip checksum", icmp, 3, func(out []byte, p *Parsed) {
			// Swap the quoted IP checksum with the quoted TCP sequence
			// number's first word: the ICMP checksum stays right.
			i, j := p.Inner.L3+10, p.Inner.L4+4
			out[i], out[i+1], out[j], out[j+1] = out[j], out[j+1], out[i], out[i+1]
		}},
		{"quoted tcp checksum", icmp, 3, func(out []byte, p *Parsed) {
			// The quoted TCP checksum and its data offset byte move in
			// opposite directions: the ICMP checksum stays right.
			out[p.Inner.L4+16]++
			out[p.Inner.L4+12]--
		}},
	}
	for _, tt := range tests {
		rec := &oracle.Recorder{T: t}
		msg := rec.Catch(func() { checkRewrite(rec, tt.frame, 0xc6130002, 8080, tt.op, tt.fault) })
		if msg == "" {
			t.Errorf("%s: no oracle failed", tt.name)
		} else {
			t.Logf("%s: %s", tt.name, msg)
		}
	}
	rec := &oracle.Recorder{T: t}
	for _, tt := range tests {
		if msg := rec.Catch(func() { checkRewrite(rec, tt.frame, 0xc6130002, 8080, tt.op, nil) }); msg != "" {
			t.Errorf("%s without a fault: %s", tt.name, msg)
		}
	}
}
