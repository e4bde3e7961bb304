package rewrite

import (
	"encoding/binary"
	"testing"

	"gvs/checksum"
)

// TestNATUDPZeroChecksumComputed: IPVS's udp_dnat_handler/udp_snat_handler
// take the incremental path only for a non-zero checksum; a datagram sent
// without one (0) goes through the "full checksum calculation" branch, so
// the real server (NATIn) and the client (NATOut) get a real checksum, a
// computed 0 sent as 0xFFFF (CSUM_MANGLED_0).
func TestNATUDPZeroChecksumComputed(t *testing.T) {
	for _, c := range []struct {
		name string
		s    spec
		run  func(f []byte, p *Parsed) bool
	}{
		{"NATIn", spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 33001, dport: 7053, payload: 11, udpZero: true},
			func(f []byte, p *Parsed) bool { return NATIn(f, p, rip, 7353, toRS, false) }},
		{"NATIn vlan options", spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 33001, dport: 7053, payload: 30, udpZero: true, vlan: 7, ipOpts: true, pad: 3},
			func(f []byte, p *Parsed) bool { return NATIn(f, p, rip, 7353, toRS, false) }},
		{"NATOut", spec{proto: ProtoUDP, src: rip, dst: clientIP, sport: 7353, dport: 33001, payload: 17, udpZero: true},
			func(f []byte, p *Parsed) bool { return NATOut(f, p, vip, 7053, toRS, false) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := build(t, c.s)
			p := decode(t, f)
			if !c.run(f, p) {
				t.Fatal("rewrite refused")
			}
			have := binary.BigEndian.Uint16(f[p.L4Csum:])
			if want := refL4(t, f, p); have != want || have == 0 {
				t.Errorf("UDP checksum after NAT %#04x, want the full checksum %#04x", have, want)
			}
			gp(t, f)
		})
	}
}

// TestNATUDPZeroChecksumMangled: a zero-checksum datagram whose computed
// checksum is 0 goes out with 0xFFFF, not 0 (which would mean "none").
func TestNATUDPZeroChecksumMangled(t *testing.T) {
	s := spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 40001, dport: 7000, payload: 20, udpZero: true}
	orig := build(t, s)
	for port := 1; port <= 0xffff; port++ {
		f := clone(orig)
		p := decode(t, f)
		binary.BigEndian.PutUint16(f[p.L4+l4DstPort:], uint16(port))
		u := f[p.L4:p.End]
		if checksum.Checksum(u, checksum.Fold(checksum.PseudoHeaderV4(clientIP, rip, ProtoUDP, uint16(len(u))))) != 0 {
			continue
		}
		g := clone(orig)
		q := decode(t, g)
		NATIn(g, q, rip, uint16(port), toRS, false)
		if got := binary.BigEndian.Uint16(g[q.L4Csum:]); got != 0xffff {
			t.Errorf("port %d: computed-zero checksum sent as %#04x, want 0xffff", port, got)
		}
		gp(t, g)
		return
	}
	t.Fatal("no port gives a zero checksum")
}

// TestUDPZeroChecksumKept: where gvs cannot see the whole datagram (a first
// fragment: the kernel would have reassembled it) or does not touch the
// ports (DR), a zero UDP checksum stays 0.
func TestUDPZeroChecksumKept(t *testing.T) {
	s := spec{proto: ProtoUDP, src: clientIP, dst: vip, sport: 33001, dport: 7053, payload: 24, udpZero: true}
	t.Run("first fragment", func(t *testing.T) {
		f := mutIP(build(t, s), func(ip IPv4) { binary.BigEndian.PutUint16(ip[ipFrag:], ipFlagMF) })
		p := decode(t, f)
		NATIn(f, p, rip, 7353, toRS, false)
		if got := binary.BigEndian.Uint16(f[p.L4Csum:]); got != 0 || UDP(f[p.L4:]).DstPort() != 7353 {
			t.Errorf("first fragment: checksum %#04x port %d, want 0 and 7353", got, UDP(f[p.L4:]).DstPort())
		}
	})
	t.Run("DR", func(t *testing.T) {
		f := build(t, s)
		p := decode(t, f)
		DR(f, p, toRS, false)
		if got := binary.BigEndian.Uint16(f[p.L4Csum:]); got != 0 {
			t.Errorf("DR: checksum %#04x, want 0", got)
		}
	})
}
