package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// buildTools builds gvs-testsrv and gvs-decap in parallel.
func buildTools(t *testing.T) (testsrv, decap string) {
	t.Helper()
	dir := t.TempDir()
	ctx := ctxT(t, 2*time.Minute)
	var wg sync.WaitGroup
	var err1, err2 error
	wg.Go(func() { testsrv, err1 = Build(ctx, dir, "gvs/cmd/gvs-testsrv") })
	wg.Go(func() { decap, err2 = Build(ctx, dir, "gvs/cmd/gvs-decap") })
	wg.Wait()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return testsrv, decap
}

// ipipPacket builds outer src -> dst (protocol 4) around a UDP datagram
// inner src -> inner dst, all checksums valid.
func ipipPacket(t *testing.T, src, dst netip.Addr, isrc, idst netip.AddrPort, payload string) []byte {
	t.Helper()
	inner := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolUDP, SrcIP: isrc.Addr().AsSlice(), DstIP: idst.Addr().AsSlice()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(isrc.Port()), DstPort: layers.UDPPort(idst.Port())}
	if err := udp.SetNetworkLayerForChecksum(inner); err != nil {
		t.Fatal(err)
	}
	outer := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, outer, inner, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sendRaw sends a complete IPv4 packet from namespace ns with a raw socket.
func sendRaw(t *testing.T, ns string, pkt []byte) {
	t.Helper()
	dst := [4]byte(pkt[16:20])
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst})
	})
	if err != nil {
		t.Fatalf("raw send from %s: %v", ns, err)
	}
}

// hasNFTable reports whether namespace ns has an nftables table called name.
func hasNFTable(t *testing.T, ns, name string) bool {
	t.Helper()
	var found bool
	err := Do(ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTables()
		for _, tb := range tables {
			found = found || tb.Name == name
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// readUDP reads one datagram with a timeout.
func readUDP(t *testing.T, c net.PacketConn, timeout time.Duration) (string, net.Addr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("reading from %v: %v", c.LocalAddr(), err)
	}
	return string(buf[:n]), from
}

func TestTestServerAndDecap(t *testing.T) {
	Require(t)
	testsrv, decap := buildTools(t)
	l := newLab(t, Options{Servers: 2, ClientLegOnServers: true, VIPOnServers: true})
	ctx := ctxT(t, 30*time.Second)
	d, c, ss := l.Director(), l.Clients()[0], l.Servers()
	vip := l.VIP()

	for i, s := range ss {
		name := fmt.Sprintf("gvsr%d", i+1)
		p, err := l.Start(s.NS, testsrv, "--name", name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.WaitFor(ctx, "ready name="+name); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("client leg", func(t *testing.T) {
		for _, s := range ss {
			if err := Ping(ctx, c.NS, s.ClientLeg.Addr()); err != nil {
				t.Error(err)
			}
			if v, err := ReadSysctl(s.NS, "net.ipv4.conf.all.arp_ignore"); err != nil || v != "1" {
				t.Errorf("%s arp_ignore %q %v", s.NS, v, err)
			}
			if v, err := ReadSysctl(s.NS, "net.ipv4.conf.all.arp_announce"); err != nil || v != "2" {
				t.Errorf("%s arp_announce %q %v", s.NS, v, err)
			}
		}
		// With arp_ignore=1 nobody answers ARP for the VIP (held on lo).
		short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		defer cancel()
		if err := Ping(short, c.NS, vip); err == nil {
			t.Error("VIP answered on the client LAN without a director")
		}
	})

	t.Run("http via curl from director", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("CI=true: curl not installed")
			}
			t.Skip("curl not installed")
		}
		for i, s := range ss {
			out, err := l.Output(ctx, d.NS, "curl", "-sS", "--max-time", "5", "http://"+s.LAN.Addr().String()+":8080/")
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("name=gvsr%d local=%s:8080 remote=198.18.2.1:", i+1, s.LAN.Addr())
			if !strings.HasPrefix(out, want) {
				t.Fatalf("got %q, want prefix %q", out, want)
			}
		}
	})

	t.Run("udp echo and tcp sink from director", func(t *testing.T) {
		uc, err := Dial(ctx, d.NS, "udp4", ss[1].LAN.Addr().String()+":9000")
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		uc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := uc.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := uc.Read(buf)
		if err != nil || string(buf[:n]) != "gvsr2 ping" {
			t.Fatalf("udp echo %q, %v", buf[:n], err)
		}

		tc, err := Dial(ctx, d.NS, "tcp4", ss[0].LAN.Addr().String()+":9001")
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		data := []byte(strings.Repeat("lab!", 100000))
		if _, err := tc.Write(data); err != nil {
			t.Fatal(err)
		}
		tc.(*net.TCPConn).CloseWrite()
		reply, err := io.ReadAll(tc)
		sum := sha256.Sum256(data)
		if want := fmt.Sprintf("sha256=%s bytes=%d\n", hex.EncodeToString(sum[:]), len(data)); err != nil || string(reply) != want {
			t.Fatalf("sink reply %q, %v; want %q", reply, err, want)
		}
	})

	t.Run("decap", func(t *testing.T) {
		s := ss[0]
		cport := netip.AddrPortFrom(c.Addr(), 40000)

		// A socket on the VIP in the server, and the client's socket that
		// receives the real server's direct reply.
		vipConn, err := ListenPacket(ctx, s.NS, "udp4", netip.AddrPortFrom(vip, 9100).String())
		if err != nil {
			t.Fatal(err)
		}
		defer vipConn.Close()
		clientConn, err := ListenPacket(ctx, c.NS, "udp4", cport.String())
		if err != nil {
			t.Fatal(err)
		}
		defer clientConn.Close()

		dp, err := l.Start(s.NS, decap, "--if", ServerIf, "--vip", vip.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dp.WaitFor(ctx, "ready"); err != nil {
			t.Fatal(err)
		}
		if !hasNFTable(t, s.NS, "gvs_decap_decap0") {
			t.Fatal("decap did not install its nftables table")
		}
		unreach := snmpCounter(t, s.NS, "Icmp", "OutDestUnreachs")

		// 1. Inner packet reaches a socket on the VIP, source untouched.
		sendRaw(t, d.NS, ipipPacket(t, d.DIPSide.Addr(), s.LAN.Addr(), cport, netip.AddrPortFrom(vip, 9100), "hello-vip"))
		got, from := readUDP(t, vipConn, 5*time.Second)
		if got != "hello-vip" || from.String() != cport.String() {
			t.Fatalf("VIP socket got %q from %v, want %q from %v", got, from, "hello-vip", cport)
		}

		// 2. The test server on the VIP answers the client directly, from
		// the VIP, over the client-LAN leg.
		sendRaw(t, d.NS, ipipPacket(t, d.DIPSide.Addr(), s.LAN.Addr(), cport, netip.AddrPortFrom(vip, 9000), "hello-tun"))
		got, from = readUDP(t, clientConn, 5*time.Second)
		if want := netip.AddrPortFrom(vip, 9000).String(); got != "gvsr1 hello-tun" || from.String() != want {
			t.Fatalf("client got %q from %v, want %q from %s", got, from, "gvsr1 hello-tun", want)
		}

		// 3. An inner destination that is not a served VIP is not delivered.
		other := netip.MustParseAddr("198.51.100.99")
		sendRaw(t, d.NS, ipipPacket(t, d.DIPSide.Addr(), s.LAN.Addr(), cport, netip.AddrPortFrom(other, 9100), "not-ours"))
		// The capture keeps order: once this one is delivered, the decap
		// has seen the packet above.
		sendRaw(t, d.NS, ipipPacket(t, d.DIPSide.Addr(), s.LAN.Addr(), cport, netip.AddrPortFrom(vip, 9100), "last"))
		if got, _ := readUDP(t, vipConn, 5*time.Second); got != "last" {
			t.Fatalf("VIP socket got %q, want the packet after the not-ours one", got)
		}

		if err := dp.Stop(); err != nil {
			t.Fatal(err)
		}
		stats, err := dp.WaitFor(ctx, "stats ")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stats, "decapsulated=3 ") || !strings.Contains(stats, "not-vip=1 ") {
			t.Fatalf("decap counters: %s", stats)
		}
		// The nftables drop kept the kernel from answering protocol 4
		// with ICMP protocol unreachable.
		if got := snmpCounter(t, s.NS, "Icmp", "OutDestUnreachs"); got != unreach {
			t.Fatalf("server sent %d ICMP unreachables", got-unreach)
		}
		// ...and the table and the device are gone with the process.
		if hasNFTable(t, s.NS, "gvs_decap_decap0") {
			t.Fatal("nftables table left after exit")
		}
		if out, err := l.Output(ctx, s.NS, "ip", "link", "show", "decap0"); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("tun device left: %s %v", out, err)
		}

		// Without the drop the kernel does answer: the check above can fail.
		dp, err = l.Start(s.NS, decap, "--if", ServerIf, "--vip", vip.String(), "--no-nft")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dp.WaitFor(ctx, "ready"); err != nil {
			t.Fatal(err)
		}
		sendRaw(t, d.NS, ipipPacket(t, d.DIPSide.Addr(), s.LAN.Addr(), cport, netip.AddrPortFrom(vip, 9100), "again"))
		if got, _ := readUDP(t, vipConn, 5*time.Second); got != "again" {
			t.Fatalf("VIP socket got %q", got)
		}
		deadline := time.Now().Add(3 * time.Second)
		for snmpCounter(t, s.NS, "Icmp", "OutDestUnreachs") == unreach {
			if time.Now().After(deadline) {
				t.Fatal("no ICMP unreachable without the nftables drop")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := dp.Stop(); err != nil {
			t.Fatal(err)
		}
	})
}
