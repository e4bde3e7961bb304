//go:build linux

package kernel

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
)

func TestResolverInNetNS(t *testing.T) {
	requireNetNS(t)
	dir, peer := newNS(t, "ra"), newNS(t, "rb")
	vethPair(t, dir, "a0", "198.18.0.1/24", peer, "b0", "198.18.0.2/24")
	// The peer announces a new MAC with a gratuitous ARP (arp_notify).
	peer.sh(t, "echo 1 > /proc/sys/net/ipv4/conf/all/arp_notify")

	var a0, b0 *net.Interface
	var r *Resolver
	dir.do(t, func() {
		var err error
		if a0, err = net.InterfaceByName("a0"); err != nil {
			t.Fatal(err)
		}
		// A long refresh: changes must arrive through notifications.
		if r, err = NewResolver(ResolverConfig{Logger: zaptest.NewLogger(t), RefreshInterval: time.Hour, RetryInterval: 100 * time.Millisecond}); err != nil {
			t.Fatalf("NewResolver: %v", err)
		}
	})
	defer r.Close()
	peer.do(t, func() {
		var err error
		if b0, err = net.InterfaceByName("b0"); err != nil {
			t.Fatal(err)
		}
	})
	h, err := netlink.NewHandleAt(dir.h)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	// Initially unknown: not wanted, and the kernel has no entry.
	if _, ok := r.Lookup(peerAddr); ok {
		t.Fatal("Lookup of an address never wanted succeeded")
	}
	if mac := peerNeighMAC(h, a0.Index, peerAddr); mac != ([6]byte{}) {
		t.Fatalf("director already knows the peer (%x)", mac)
	}

	r.Want(peerAddr)
	var n Neighbor
	if !eventually(2*time.Second, func() (ok bool) { n, ok = r.Lookup(peerAddr); return ok }) {
		t.Fatalf("peer %v not resolved within 2 s", peerAddr)
	}
	want := Neighbor{IfIndex: a0.Index, LinkMAC: [6]byte(a0.HardwareAddr), NextHop: peerAddr,
		MAC: [6]byte(b0.HardwareAddr), Src: dirAddr, MTU: 1500}
	if n != want {
		t.Errorf("Lookup(%v) = %+v, want %+v", peerAddr, n, want)
	}
	// A v4-mapped form finds the same entry.
	if m, ok := r.Lookup(netip.AddrFrom16(peerAddr.As16())); !ok || m != n {
		t.Errorf("Lookup(v4-mapped) = %+v, %v", m, ok)
	}

	// The peer changes its MAC: the cache follows.
	newMAC := [6]byte{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	peer.ip(t, "link", "set", "b0", "address", net.HardwareAddr(newMAC[:]).String())
	if !eventually(2*time.Second, func() bool { n, _ = r.Lookup(peerAddr); return n.MAC == newMAC }) {
		t.Errorf("MAC after change = %x, want %x", n.MAC, newMAC)
	}

	// MTU change on the egress link.
	dir.ip(t, "link", "set", "a0", "mtu", "1400")
	if !eventually(2*time.Second, func() bool { n, _ = r.Lookup(peerAddr); return n.MTU == 1400 }) {
		t.Errorf("MTU after change = %d, want 1400", n.MTU)
	}

	// A destination without a route: miss, until a route appears.
	far := netip.MustParseAddr("198.19.200.1")
	r.Want(far)
	if _, ok := r.Lookup(far); ok {
		t.Errorf("Lookup(%v) succeeded without a route", far)
	}
	client := netip.MustParseAddr("198.19.5.7")
	if _, ok := r.Gateway(client); ok {
		t.Errorf("Gateway(%v) succeeded without a route", client)
	}
	dir.ip(t, "route", "add", "198.19.0.0/16", "via", peerAddr.String())
	want = Neighbor{IfIndex: a0.Index, LinkMAC: [6]byte(a0.HardwareAddr), NextHop: peerAddr, MAC: newMAC, Src: dirAddr, MTU: 1400}
	if !eventually(2*time.Second, func() (ok bool) { n, ok = r.Lookup(far); return ok }) || n != want {
		t.Errorf("Lookup(%v) via gateway = %+v, want %+v", far, n, want)
	}
	// Replies to clients: the gateway from the route table.
	if !eventually(2*time.Second, func() (ok bool) { n, ok = r.Gateway(client); return ok }) || n != want {
		t.Errorf("Gateway(%v) = %+v, want %+v", client, n, want)
	}
	// An on-link client is its own next hop.
	if n, ok := r.Gateway(peerAddr); !ok || n.NextHop != peerAddr || n.MAC != newMAC {
		t.Errorf("Gateway(%v) = %+v, %v", peerAddr, n, ok)
	}
	// An on-link address nobody answers for: a miss, never a wrong MAC.
	ghost := netip.MustParseAddr("198.18.0.77")
	r.Want(ghost)
	time.Sleep(300 * time.Millisecond)
	if n, ok := r.Lookup(ghost); ok {
		t.Errorf("Lookup(%v) = %+v for an address nobody answers", ghost, n)
	}
	if n, ok := r.Gateway(ghost); ok {
		t.Errorf("Gateway(%v) = %+v for an address nobody answers", ghost, n)
	}

	r.Unwant(peerAddr)
	if _, ok := r.Lookup(peerAddr); ok {
		t.Error("Lookup succeeded after Unwant")
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	r.Want(peerAddr) // after Close: returns, does nothing
}

// A next hop that changes its MAC without announcing it: the periodic
// refresh makes the kernel re-probe STALE entries, so the cache follows.
func TestResolverRevalidatesStaleInNetNS(t *testing.T) {
	requireNetNS(t)
	dir, peer := newNS(t, "sa"), newNS(t, "sb")
	vethPair(t, dir, "a0", "198.18.0.1/24", peer, "b0", "198.18.0.2/24")
	// Fast neighbour timers on the director so the re-probe fits the test.
	dir.sh(t, "echo 0 > /proc/sys/net/ipv4/neigh/a0/delay_first_probe_time; echo 100 > /proc/sys/net/ipv4/neigh/a0/retrans_time_ms")
	var r *Resolver
	dir.do(t, func() {
		var err error
		if r, err = NewResolver(ResolverConfig{RefreshInterval: 200 * time.Millisecond, RetryInterval: 50 * time.Millisecond}); err != nil {
			t.Fatalf("NewResolver: %v", err)
		}
	})
	defer r.Close()
	r.Want(peerAddr)
	var n Neighbor
	if !eventually(2*time.Second, func() (ok bool) { n, ok = r.Lookup(peerAddr); return ok }) {
		t.Fatal("peer not resolved")
	}
	newMAC := [6]byte{0x02, 0x66, 0x55, 0x44, 0x33, 0x22}
	peer.ip(t, "link", "set", "b0", "address", net.HardwareAddr(newMAC[:]).String()) // arp_notify is off
	// Age the director's entry to STALE as time would.
	dir.ip(t, "neigh", "replace", peerAddr.String(), "lladdr", net.HardwareAddr(n.MAC[:]).String(), "dev", "a0", "nud", "stale")
	if !eventually(3*time.Second, func() bool { n, _ = r.Lookup(peerAddr); return n.MAC == newMAC }) {
		t.Errorf("MAC = %x after silent change, want %x", n.MAC, newMAC)
	}
}
