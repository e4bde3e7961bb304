package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/checksum"
	"gvs/rewrite"
)

var (
	testVIP   = netip.MustParseAddr("198.51.100.10")
	testVIPs  = newVIPSet([]netip.Addr{netip.MustParseAddr("203.0.113.7"), testVIP})
	clientIP  = net.IP{198, 18, 1, 11}
	directIP  = net.IP{198, 18, 2, 1}
	realSrvIP = net.IP{198, 18, 2, 11}
)

// innerUDP builds a checksummed client -> dst UDP datagram.
func innerUDP(t testing.TB, dst net.IP, payload string) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolUDP, SrcIP: clientIP, DstIP: dst, Id: 7}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9000}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, udp, gopacket.Payload(payload))
}

// outer wraps inner in an IPIP header director -> real server.
func outer(t testing.TB, inner []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: directIP, DstIP: realSrvIP, Flags: layers.IPv4DontFragment}
	return serialize(t, ip, gopacket.Payload(inner))
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(buf.Bytes())
}

// fixSum recomputes the IPv4 header checksum of the header at b.
func fixSum(b []byte) { rewrite.IPv4(b).FixChecksum() }

func TestDecapsulate(t *testing.T) {
	inner := innerUDP(t, testVIP.AsSlice(), "hello")
	good := outer(t, inner)

	mutate := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	tests := []struct {
		name string
		pkt  []byte
		want verdict
	}{
		{"ok", good, verdictOK},
		{"ok with ethernet padding", append(slices.Clone(good), 0, 0, 0, 0, 0, 0), verdictOK},
		{"ok second vip", outer(t, innerUDP(t, net.IP{203, 0, 113, 7}, "x")), verdictOK},
		{"empty", nil, verdictShort},
		{"19 bytes", good[:19], verdictShort},
		{"ipv6", mutate(func(b []byte) []byte { b[0] = 0x65; return b }), verdictNotIPv4},
		{"ihl 4", mutate(func(b []byte) []byte { b[0] = 0x44; return b }), verdictBadHeader},
		{"total longer than packet", good[:len(good)-1], verdictBadHeader},
		{"total shorter than header", mutate(func(b []byte) []byte { b[2], b[3] = 0, 10; fixSum(b); return b }), verdictBadHeader},
		{"bad outer checksum", mutate(func(b []byte) []byte { b[10] ^= 0xff; return b }), verdictBadChecksum},
		{"udp not ipip", serialize(t, &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: directIP, DstIP: realSrvIP}, gopacket.Payload(inner)), verdictNotIPIP},
		{"more fragments", mutate(func(b []byte) []byte { b[6] = 0x20; fixSum(b); return b }), verdictFragment},
		{"fragment offset", mutate(func(b []byte) []byte { b[7] = 1; fixSum(b); return b }), verdictFragment},
		{"inner truncated", outer(t, inner[:15]), verdictInnerBad},
		{"inner ipv6", outer(t, append([]byte{0x60}, inner[1:]...)), verdictInnerBad},
		{"inner total too long", outer(t, inner[:len(inner)-1]), verdictInnerBad},
		{"inner ihl 3", outer(t, append([]byte{0x43}, inner[1:]...)), verdictInnerBad},
		{"inner other destination", outer(t, innerUDP(t, net.IP{198, 51, 100, 11}, "x")), verdictNotVIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := slices.Clone(tt.pkt)
			got, v := decapsulate(tt.pkt, testVIPs)
			if v != tt.want {
				t.Fatalf("verdict %v, want %v", v, tt.want)
			}
			if !bytes.Equal(tt.pkt, orig) {
				t.Fatal("decapsulate modified its input")
			}
			if v != verdictOK {
				if got != nil {
					t.Fatalf("drop verdict returned %d bytes", len(got))
				}
				return
			}
			// The inner packet comes out byte for byte, with nothing
			// after its own total length.
			hl := int(tt.pkt[0]&0xf) * 4
			total := int(binary.BigEndian.Uint16(tt.pkt[2:]))
			if !bytes.Equal(got, tt.pkt[hl:total]) {
				t.Fatalf("inner = %x, want %x", got, tt.pkt[hl:total])
			}
			p := gopacket.NewPacket(got, layers.LayerTypeIPv4, gopacket.Default)
			if el := p.ErrorLayer(); el != nil {
				t.Fatalf("inner does not decode: %v", el.Error())
			}
		})
	}
}

func TestDecapsulateKeepsInnerUnchanged(t *testing.T) {
	inner := innerUDP(t, testVIP.AsSlice(), "payload bytes")
	got, v := decapsulate(outer(t, inner), testVIPs)
	if v != verdictOK || !bytes.Equal(got, inner) {
		t.Fatalf("got %v %x, want ok %x", v, got, inner)
	}
	if checksum.Checksum(got[:20], 0) != 0 {
		t.Fatal("inner header checksum no longer verifies")
	}
}

func TestDecapsulateNoAllocs(t *testing.T) {
	pkt := outer(t, innerUDP(t, testVIP.AsSlice(), "hello"))
	allocs := testing.AllocsPerRun(1000, func() {
		if _, v := decapsulate(pkt, testVIPs); v != verdictOK {
			t.Fatal(v)
		}
	})
	if allocs != 0 {
		t.Fatalf("decapsulate allocates %v times per packet", allocs)
	}
}

func BenchmarkDecapsulate(b *testing.B) {
	pkt := outer(b, innerUDP(b, testVIP.AsSlice(), strings.Repeat("x", 1000)))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, v := decapsulate(pkt, testVIPs); v != verdictOK {
			b.Fatal(v)
		}
	}
}

func FuzzDecapsulate(f *testing.F) {
	good := outer(f, innerUDP(f, testVIP.AsSlice(), "seed"))
	f.Add(good)                             // well-formed IPIP to a VIP
	f.Add(good[:19])                        // truncated outer header
	f.Add(good[:24])                        // truncated inner header
	f.Add(append(slices.Clone(good), 0, 0)) // trailing link-layer padding
	f.Add([]byte{0x4f, 0, 0xff, 0xff})      // IHL 15, huge total length, 4 bytes
	f.Add(outer(f, []byte{0x45, 0, 0, 20})) // inner header cut at its length field
	f.Fuzz(func(t *testing.T, pkt []byte) {
		inner, v := decapsulate(pkt, testVIPs)
		if v >= numVerdicts {
			t.Fatalf("verdict %d out of range", v)
		}
		if v != verdictOK {
			return
		}
		if len(inner) < 20 || inner[0]>>4 != 4 || int(binary.BigEndian.Uint16(inner[2:])) != len(inner) {
			t.Fatalf("accepted malformed inner packet %x", inner)
		}
		if !testVIPs.contains([4]byte(inner[16:20])) {
			t.Fatalf("accepted inner destination %v", inner[16:20])
		}
		// inner must alias pkt (no copy), inside the outer packet.
		off := cap(pkt) - cap(inner)
		if off < 20 || off+len(inner) > len(pkt) {
			t.Fatalf("inner at offset %d len %d outside packet of %d", off, len(inner), len(pkt))
		}
	})
}

func TestParseFlags(t *testing.T) {
	v1, v2, v3 := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("198.51.100.11")
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr string
	}{
		{"minimal", []string{"--if", "eth0", "--vip", "198.51.100.10"}, config{iface: "eth0", tun: "decap0", vips: []netip.Addr{v1}}, ""},
		{"comma and repeat", []string{"--if=eth0", "--vip=198.51.100.10, 203.0.113.7", "--vip", "198.51.100.11", "--tun", "t1", "--no-nft"},
			config{iface: "eth0", tun: "t1", vips: []netip.Addr{v1, v2, v3}, noNFT: true}, ""},
		{"v4-mapped vip", []string{"--if", "eth0", "--vip", "::ffff:198.51.100.10"}, config{iface: "eth0", tun: "decap0", vips: []netip.Addr{v1}}, ""},
		{"no if", []string{"--vip", "198.51.100.10"}, config{}, "--if is required"},
		{"no vip", []string{"--if", "eth0"}, config{}, "--vip is required"},
		{"ipv6 vip", []string{"--if", "eth0", "--vip", "2001:db8::1"}, config{}, "only IPv4"},
		{"garbage vip", []string{"--if", "eth0", "--vip", "nope"}, config{}, "invalid value"},
		{"long tun", []string{"--if", "eth0", "--vip", "198.51.100.10", "--tun", "sixteen-chars-xx"}, config{}, "need 1 to 15"},
		{"extra args", []string{"--if", "eth0", "--vip", "198.51.100.10", "x"}, config{}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.iface != tt.want.iface || got.tun != tt.want.tun || got.noNFT != tt.want.noNFT || !slices.Equal(got.vips, tt.want.vips) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeReader returns its packets in order, then errDone.
type fakeReader struct{ pkts [][]byte }

var errDone = errors.New("done")

func (f *fakeReader) ReadFrom(b []byte) (int, net.Addr, error) {
	if len(f.pkts) == 0 {
		return 0, nil, errDone
	}
	n := copy(b, f.pkts[0])
	f.pkts = f.pkts[1:]
	return n, nil, nil
}

// recorder keeps every written packet; it fails writes of exactly failLen bytes.
type recorder struct {
	got     [][]byte
	failLen int
}

func (r *recorder) Write(p []byte) (int, error) {
	if len(p) == r.failLen {
		return 0, errors.New("injected")
	}
	r.got = append(r.got, slices.Clone(p))
	return len(p), nil
}

func TestCapture(t *testing.T) {
	in1 := innerUDP(t, testVIP.AsSlice(), "one")
	in2 := innerUDP(t, testVIP.AsSlice(), "two!")
	in3 := innerUDP(t, testVIP.AsSlice(), "three-fails")
	r := &fakeReader{pkts: [][]byte{
		outer(t, in1),
		outer(t, innerUDP(t, net.IP{198, 51, 100, 99}, "other")),
		{0x45},
		outer(t, in2),
		outer(t, in3),
	}}
	w := &recorder{failLen: len(in3)}
	var cnt counters
	err := capture(r, w, testVIPs, &cnt)
	if !errors.Is(err, errDone) {
		t.Fatalf("capture returned %v, want the reader's error", err)
	}
	if len(w.got) != 2 || !bytes.Equal(w.got[0], in1) || !bytes.Equal(w.got[1], in2) {
		t.Fatalf("wrote %x", w.got)
	}
	want := counters{writeErrs: 1}
	want.byVerdict[verdictOK] = 3
	want.byVerdict[verdictNotVIP] = 1
	want.byVerdict[verdictShort] = 1
	if cnt != want {
		t.Fatalf("counters %v, want %v", &cnt, &want)
	}
	if s := cnt.String(); !strings.Contains(s, "decapsulated=3 ") || !strings.HasSuffix(s, "write-errors=1") {
		t.Fatalf("counters string %q", s)
	}
}

func TestCaptureFilterAssembles(t *testing.T) {
	raw, err := captureFilter()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 6 {
		t.Fatalf("filter has %d instructions, want 6", len(raw))
	}
}
