package kernel

import (
	"bytes"
	"net/netip"
	"testing"
)

var (
	macA = [6]byte{0x02, 0xaa, 0, 0, 0, 1}
	macB = [6]byte{0x02, 0xbb, 0, 0, 0, 2}
	ipA  = [4]byte{198, 18, 0, 1}
	ipB  = [4]byte{198, 18, 0, 2}
	ipV  = [4]byte{198, 51, 100, 10}
)

func TestMarshalParseARP(t *testing.T) {
	p := arpPacket{EthSrc: macB, Op: arpRequest, SenderMAC: macB, SenderIP: ipB, TargetIP: ipV}
	b, err := marshalARP(broadcastMAC, p)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xbb, 0, 0, 0, 2, 0x08, 0x06, // Ethernet
		0, 1, 0x08, 0, 6, 4, 0, 1, // htype, ptype, hlen, plen, op
		0x02, 0xbb, 0, 0, 0, 2, 198, 18, 0, 2, // sender
		0, 0, 0, 0, 0, 0, 198, 51, 100, 10, // target
	}
	want = append(want, make([]byte, minFrameLen-len(want))...) // padding
	if !bytes.Equal(b, want) {
		t.Fatalf("frame\n got %x\nwant %x", b, want)
	}
	got, ok := parseARP(b)
	if !ok || got != p {
		t.Fatalf("parseARP = %+v, %v; want %+v", got, ok, p)
	}
}

func TestParseARPRejects(t *testing.T) {
	good, _ := marshalARP(broadcastMAC, arpPacket{EthSrc: macB, Op: arpRequest, SenderMAC: macB, SenderIP: ipB, TargetIP: ipV})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"truncated", good[:arpFrameLen-1]},
		{"ipv4 ethertype", mod(func(b []byte) []byte { b[12], b[13] = 0x08, 0x00; return b })},
		{"htype not ethernet", mod(func(b []byte) []byte { b[15] = 6; return b })},
		{"ptype not ipv4", mod(func(b []byte) []byte { b[16] = 0x86; b[17] = 0xdd; return b })},
		{"hlen 8", mod(func(b []byte) []byte { b[18] = 8; return b })},
		{"plen 16", mod(func(b []byte) []byte { b[19] = 16; return b })},
	}
	for _, tt := range tests {
		if p, ok := parseARP(tt.frame); ok {
			t.Errorf("%s: parsed as %+v", tt.name, p)
		}
	}
	if _, ok := parseARP(good[:arpFrameLen]); !ok {
		t.Error("unpadded 42-byte frame rejected")
	}
}

func TestARPAnswer(t *testing.T) {
	owned := func(a [4]byte) bool { return a == ipV }
	req := arpPacket{EthSrc: macB, Op: arpRequest, SenderMAC: macB, SenderIP: ipB, TargetIP: ipV}
	tests := []struct {
		name         string
		in           arpPacket
		ok, conflict bool
		dst          [6]byte
		reply        arpPacket
	}{
		{"request for vip", req, true, false, macB,
			arpPacket{EthSrc: macA, Op: arpReply, SenderMAC: macA, SenderIP: ipV, TargetMAC: macB, TargetIP: ipB}},
		{"probe (sender 0.0.0.0)", arpPacket{EthSrc: macB, Op: arpRequest, SenderMAC: macB, TargetIP: ipV}, true, false, macB,
			arpPacket{EthSrc: macA, Op: arpReply, SenderMAC: macA, SenderIP: ipV, TargetMAC: macB}},
		{"not ours", arpPacket{EthSrc: macB, Op: arpRequest, SenderMAC: macB, SenderIP: ipB, TargetIP: ipA}, false, false, [6]byte{}, arpPacket{}},
		{"reply", arpPacket{EthSrc: macB, Op: arpReply, SenderMAC: macB, SenderIP: ipB, TargetIP: ipV}, false, false, [6]byte{}, arpPacket{}},
		{"our own frame", arpPacket{EthSrc: macA, Op: arpRequest, SenderMAC: macA, SenderIP: ipA, TargetIP: ipV}, false, false, [6]byte{}, arpPacket{}},
		{"gratuitous from other host", arpPacket{EthSrc: macB, Op: arpRequest, SenderMAC: macB, SenderIP: ipV, TargetIP: ipV}, false, true, [6]byte{}, arpPacket{}},
	}
	for _, tt := range tests {
		dst, reply, conflict, ok := arpAnswer(tt.in, macA, owned)
		if ok != tt.ok || conflict != tt.conflict || dst != tt.dst || reply != tt.reply {
			t.Errorf("%s: got dst %x reply %+v conflict %v ok %v; want %x %+v %v %v",
				tt.name, dst, reply, conflict, ok, tt.dst, tt.reply, tt.conflict, tt.ok)
		}
	}
}

func TestGratuitousARP(t *testing.T) {
	g := gratuitousARP(macA, ipV)
	b, err := marshalARP(broadcastMAC, g)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := parseARP(b)
	if !ok || p.Op != arpRequest || p.SenderIP != ipV || p.TargetIP != ipV || p.SenderMAC != macA || p.TargetMAC != ([6]byte{}) {
		t.Fatalf("gratuitous ARP = %+v, %v", p, ok)
	}
	if !bytes.Equal(b[:6], broadcastMAC[:]) {
		t.Errorf("not broadcast: %x", b[:6])
	}
}

func TestAddrSet(t *testing.T) {
	in := []netip.Addr{
		netip.MustParseAddr("198.51.100.2"),
		netip.AddrFrom16(netip.MustParseAddr("198.51.100.1").As16()),
		netip.MustParseAddr("198.51.100.2"),
		netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("0.0.0.0"),
		netip.MustParseAddr("224.0.0.1"),
		{},
	}
	s, bad := newAddrSet(in)
	got := s.sorted()
	if len(got) != 2 || got[0] != netip.MustParseAddr("198.51.100.1") || got[1] != netip.MustParseAddr("198.51.100.2") {
		t.Errorf("set = %v", got)
	}
	if len(bad) != 4 {
		t.Errorf("skipped = %v, want 4 addresses", bad)
	}
}

// FuzzParseARP: parsing never panics, and whatever parses re-encodes to a
// frame that parses to the same message.
func FuzzParseARP(f *testing.F) {
	req, _ := marshalARP(broadcastMAC, arpPacket{EthSrc: macB, Op: arpRequest, SenderMAC: macB, SenderIP: ipB, TargetIP: ipV})
	f.Add(req)                            // a well-formed request
	f.Add(req[:arpFrameLen])              // unpadded
	f.Add(req[:arpFrameLen-1])            // one byte short
	f.Add([]byte{})                       // empty
	f.Add(bytes.Repeat([]byte{0xff}, 60)) // all ones: hlen/plen 255
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := parseARP(b)
		if !ok {
			return
		}
		var dst [6]byte
		copy(dst[:], b)
		out, err := marshalARP(dst, p)
		if err != nil {
			t.Fatalf("marshal %+v: %v", p, err)
		}
		q, ok := parseARP(out)
		if !ok || q != p {
			t.Fatalf("round trip: %+v -> %+v (%v)", p, q, ok)
		}
	})
}
