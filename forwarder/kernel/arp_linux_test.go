//go:build linux

package kernel

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// arpPeer is a raw ARP socket in the peer namespace.
type arpPeer struct {
	t    *testing.T
	conn *packet.Conn
	mac  [6]byte
	ip   [4]byte
}

// ask sends "who-has target tell peer" and returns the first reply for
// target seen within wait.
func (p *arpPeer) ask(target netip.Addr, wait time.Duration) (dst [6]byte, reply arpPacket, ok bool) {
	p.t.Helper()
	return p.askVia(broadcastMAC, target, wait)
}

// askVia is ask with the request sent to the Ethernet address ethDst.
func (p *arpPeer) askVia(ethDst [6]byte, target netip.Addr, wait time.Duration) (dst [6]byte, reply arpPacket, ok bool) {
	p.t.Helper()
	req := arpPacket{EthSrc: p.mac, Op: arpRequest, SenderMAC: p.mac, SenderIP: p.ip, TargetIP: target.As4()}
	frame, err := marshalARP(ethDst, req)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.conn.WriteTo(frame, &packet.Addr{HardwareAddr: ethDst[:]}); err != nil {
		p.t.Fatalf("sending ARP request: %v", err)
	}
	buf := make([]byte, 1514)
	_ = p.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return dst, reply, false
		}
		got, ok := parseARP(buf[:n])
		if ok && got.Op == arpReply && got.SenderIP == target.As4() {
			copy(dst[:], buf[:6])
			return dst, got, true
		}
	}
}

func TestARPResponderInNetNS(t *testing.T) {
	requireNetNS(t)
	dir, peer := newNS(t, "aa"), newNS(t, "ab")
	vethPair(t, dir, "a0", "198.18.0.1/24", peer, "b0", "198.18.0.2/24")
	// The peer reaches the VIPs on-link, so its kernel ARPs for them.
	peer.ip(t, "route", "add", "198.51.100.0/24", "dev", "b0")

	vip1 := netip.MustParseAddr("198.51.100.1")
	vip2 := netip.MustParseAddr("198.51.100.2")
	vip3 := netip.MustParseAddr("198.51.100.3")
	vip4 := netip.MustParseAddr("198.51.100.4")

	var r *ARPResponder
	var dirMAC [6]byte
	dir.do(t, func() {
		var err error
		if r, err = NewARPResponder("a0", zaptest.NewLogger(t)); err != nil {
			t.Fatalf("NewARPResponder: %v", err)
		}
		ifi, err := net.InterfaceByName("a0")
		if err != nil {
			t.Fatal(err)
		}
		copy(dirMAC[:], ifi.HardwareAddr)
	})
	defer r.Close()
	if got := r.MAC(); [6]byte(got) != dirMAC {
		t.Errorf("MAC() = %v, want %v", got, net.HardwareAddr(dirMAC[:]))
	}
	if err := r.SetAddrs([]netip.Addr{vip1, vip3, netip.MustParseAddr("2001:db8::1")}); err == nil {
		t.Error("SetAddrs accepted an IPv6 address without error")
	}
	if got := r.Addrs(); len(got) != 2 || got[0] != vip1 || got[1] != vip3 {
		t.Errorf("Addrs() = %v, want [%v %v]", got, vip1, vip3)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() { defer wg.Done(); runErr = r.Run(ctx) }()

	p := &arpPeer{t: t, ip: peerAddr.As4()}
	var peerIdx int
	peer.do(t, func() {
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			t.Fatal(err)
		}
		peerIdx = ifi.Index
		copy(p.mac[:], ifi.HardwareAddr)
		if p.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil); err != nil {
			t.Fatalf("peer ARP socket: %v", err)
		}
	})
	defer p.conn.Close()

	// A request for a VIP gets a unicast reply with our MAC. Run opens its
	// socket in its goroutine: on a busy machine the first requests can
	// come before it listens, so ask again for a while.
	var dst [6]byte
	var reply arpPacket
	ok := false
	for try := 0; try < 5 && !ok; try++ {
		dst, reply, ok = p.ask(vip1, time.Second)
	}
	if !ok {
		t.Fatalf("no ARP reply for %v", vip1)
	}
	want := arpPacket{EthSrc: dirMAC, Op: arpReply, SenderMAC: dirMAC, SenderIP: vip1.As4(), TargetMAC: p.mac, TargetIP: p.ip}
	if reply != want || dst != p.mac {
		t.Errorf("reply to %v = %+v (eth dst %x), want %+v (eth dst %x)", vip1, reply, dst, want, p.mac)
	}
	// Not ours: no reply.
	if _, _, ok := p.ask(vip2, 250*time.Millisecond); ok {
		t.Errorf("reply for %v, which is not in the set", vip2)
	}
	// A request unicast to our MAC is answered; one to another host's MAC
	// (a bridge flooding it to us) is not, as the kernel's arp_rcv drops it.
	if _, _, ok := p.askVia(dirMAC, vip1, time.Second); !ok {
		t.Errorf("no reply for %v to a request unicast to our MAC", vip1)
	}
	if _, _, ok := p.askVia([6]byte{0x02, 0, 0, 0, 0, 0x77}, vip1, 250*time.Millisecond); ok {
		t.Errorf("reply for %v to a request addressed to another host's MAC", vip1)
	}
	// The set changes at runtime.
	if err := r.SetAddrs([]netip.Addr{vip2, vip3}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := p.ask(vip2, time.Second); !ok {
		t.Errorf("no reply for %v after SetAddrs", vip2)
	}
	if _, _, ok := p.ask(vip1, 250*time.Millisecond); ok {
		t.Errorf("reply for %v after it was removed", vip1)
	}

	// The peer's kernel resolves a VIP through the responder.
	h, err := netlink.NewHandleAt(peer.h)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: peerIdx, Family: netlink.FAMILY_V4, IP: vip3.AsSlice(), Flags: netlink.NTF_USE}); err != nil {
		t.Fatalf("triggering resolution in peer: %v", err)
	}
	if !eventually(2*time.Second, func() bool { return peerNeighMAC(h, peerIdx, vip3) == dirMAC }) {
		t.Errorf("peer kernel did not resolve %v to %x", vip3, dirMAC)
	}

	// Gratuitous ARP updates the peer's existing (wrong) entry.
	stale := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	peer.ip(t, "neigh", "replace", vip4.String(), "lladdr", stale.String(), "dev", "b0", "nud", "stale")
	if err := r.Gratuitous(vip4); err != nil {
		t.Fatalf("Gratuitous: %v", err)
	}
	if !eventually(2*time.Second, func() bool { return peerNeighMAC(h, peerIdx, vip4) == dirMAC }) {
		t.Errorf("peer entry for %v is %x after gratuitous ARP, want %x", vip4, peerNeighMAC(h, peerIdx, vip4), dirMAC)
	}
	if err := r.Gratuitous(netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("Gratuitous accepted IPv6")
	}

	st := r.Stats()
	if st.Replies < 3 || st.Gratuitous != 1 || st.Errors != 0 || st.Requests < st.Replies {
		t.Errorf("stats = %+v", st)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Errorf("Run returned %v after cancel", runErr)
	}
	// Run after Close returns nil at once.
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Errorf("Run after Close: %v", err)
	}
}

// peerNeighMAC returns the MAC of a usable neighbour entry for a, or zero.
func peerNeighMAC(h *netlink.Handle, ifindex int, a netip.Addr) (mac [6]byte) {
	ns, err := h.NeighList(ifindex, netlink.FAMILY_V4)
	if err != nil {
		return mac
	}
	for _, n := range ns {
		if n.IP.Equal(a.AsSlice()) && n.State&usableNUD != 0 && len(n.HardwareAddr) == 6 {
			copy(mac[:], n.HardwareAddr)
		}
	}
	return mac
}
