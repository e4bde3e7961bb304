package main

import (
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/checksum"
)

func testSpec() *synSpec {
	return &synSpec{
		SrcMAC: net.HardwareAddr{2, 0, 198, 18, 1, 12},
		DstMAC: net.HardwareAddr{2, 0, 198, 18, 1, 1},
		Spoof:  netip.MustParsePrefix("198.19.0.0/16"),
		VIP:    netip.MustParseAddr("198.51.100.10"),
		Ports:  []uint16{80, 8080},
	}
}

// The flood's frames are valid SYNs with correct checksums, as a packet
// decoder sees them.
func TestSynFrame(t *testing.T) {
	s := testSpec()
	b := make([]byte, 256)
	for i, src := range []netip.Addr{netip.MustParseAddr("198.19.3.4"), netip.MustParseAddr("198.19.255.254")} {
		n := s.synFrame(b, src, uint16(40000+i), 8080, 0xdeadbeef+uint32(i))
		if n != 60 {
			t.Fatalf("frame length %d, want 60", n)
		}
		pkt := gopacket.NewPacket(b[:n], layers.LayerTypeEthernet, gopacket.Default)
		eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if eth == nil || ip == nil || tcp == nil {
			t.Fatalf("not Ethernet/IPv4/TCP: %v", pkt)
		}
		if eth.SrcMAC.String() != s.SrcMAC.String() || eth.DstMAC.String() != s.DstMAC.String() {
			t.Errorf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
		}
		if !ip.SrcIP.Equal(src.AsSlice()) || !ip.DstIP.Equal(s.VIP.AsSlice()) || ip.TTL != 64 || ip.Length != 44 {
			t.Errorf("IP %v -> %v ttl %d len %d", ip.SrcIP, ip.DstIP, ip.TTL, ip.Length)
		}
		if !tcp.SYN || tcp.ACK || tcp.RST || tcp.FIN || tcp.SrcPort != layers.TCPPort(40000+i) || tcp.DstPort != 8080 || tcp.Seq != 0xdeadbeef+uint32(i) {
			t.Errorf("TCP %+v", tcp)
		}
		if len(tcp.Options) != 1 || tcp.Options[0].OptionType != layers.TCPOptionKindMSS {
			t.Errorf("TCP options %v", tcp.Options)
		}
		if checksum.Checksum(b[14:34], 0) != 0 {
			t.Error("bad IPv4 header checksum")
		}
		sa, da := src.As4(), s.VIP.As4()
		if checksum.Checksum(b[34:58], checksum.Fold(checksum.PseudoHeaderV4(sa, da, 6, 24))) != 0 {
			t.Error("bad TCP checksum")
		}
	}
}

// Spoofed sources stay inside the network, are never its network or
// broadcast address, and their ports are unprivileged.
func TestSource(t *testing.T) {
	s := testSpec()
	x := xorshift(1)
	seen := map[netip.Addr]bool{}
	for range 100000 {
		a, port := s.source(x.next())
		if !s.Spoof.Contains(a) || a == s.Spoof.Addr() || a == netip.MustParseAddr("198.19.255.255") {
			t.Fatalf("source %v outside %v or reserved", a, s.Spoof)
		}
		if port < 1024 {
			t.Fatalf("port %d", port)
		}
		seen[a] = true
	}
	if len(seen) < 50000 {
		t.Errorf("only %d distinct sources in 100000 draws", len(seen))
	}
	// Edge: the bound tells the extremes apart.
	if a, _ := s.source(0); a != netip.MustParseAddr("198.19.0.1") {
		t.Errorf("source(0) = %v", a)
	}
	if a, _ := s.source(65533); a != netip.MustParseAddr("198.19.255.254") {
		t.Errorf("source(65533) = %v", a)
	}
}

func TestParseFloodFlags(t *testing.T) {
	ok := []string{"-dev", "eth0", "-src-mac", "02:00:c6:12:01:0c", "-dst-mac", "02:00:c6:12:01:01", "-vip", "198.51.100.10", "-ports", "80,8080", "-duration", "30s"}
	f, err := parseFloodFlags(ok, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.spec.Ports) != 2 || f.spec.Ports[1] != 8080 || f.spec.Spoof.String() != "198.19.0.0/16" || f.rate != 0 {
		t.Errorf("parsed %+v", f)
	}
	for _, bad := range [][]string{
		{"-dev", "eth0", "-src-mac", "02:00:c6:12:01:0c", "-dst-mac", "02:00:c6:12:01:01", "-vip", "198.51.100.10"}, // no duration
		{"-src-mac", "02:00:c6:12:01:0c", "-dst-mac", "02:00:c6:12:01:01", "-vip", "198.51.100.10", "-duration", "1s"},
		{"-dev", "eth0", "-src-mac", "x", "-dst-mac", "02:00:c6:12:01:01", "-vip", "198.51.100.10", "-duration", "1s"},
		{"-dev", "eth0", "-src-mac", "02:00:c6:12:01:0c", "-dst-mac", "02:00:c6:12:01:01", "-vip", "2001:db8::1", "-duration", "1s"},
		{"-dev", "eth0", "-src-mac", "02:00:c6:12:01:0c", "-dst-mac", "02:00:c6:12:01:01", "-vip", "198.51.100.10", "-duration", "1s", "-ports", "80,0"},
		{"-dev", "eth0", "-src-mac", "02:00:c6:12:01:0c", "-dst-mac", "02:00:c6:12:01:01", "-vip", "198.51.100.10", "-duration", "1h"},
		{"-dev", "eth0", "-src-mac", "02:00:c6:12:01:0c", "-dst-mac", "02:00:c6:12:01:01", "-vip", "198.51.100.10", "-duration", "1s", "-spoof", "198.19.0.0/31"},
	} {
		if _, err := parseFloodFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFloodFlags(%q) accepted", bad)
		}
	}
}

func TestParseFloodSent(t *testing.T) {
	out := "flood ready\nflood: sent 4714496 frames in 12.081s (390254/s), kernel accepted 4714496\n"
	sent, rate, ok := parseFloodSent(out)
	if !ok || sent != 4714496 || rate != 390254 {
		t.Errorf("parseFloodSent = %d, %v, %v", sent, rate, ok)
	}
	if _, _, ok := parseFloodSent("flood ready\n"); ok {
		t.Error("no summary line, and parseFloodSent found one")
	}
}
