//go:build linux

package kernel

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.uber.org/zap/zaptest"

	"gvs/ipvs"
)

var (
	dirAddr    = netip.MustParseAddr("198.18.0.1")
	peerAddr   = netip.MustParseAddr("198.18.0.2")
	clientAddr = netip.MustParseAddr("198.18.3.2")
	vip        = netip.MustParseAddr("198.51.100.10")
	vipAny     = netip.MustParseAddr("198.51.100.20")
	vipTCP     = netip.MustParseAddr("198.51.100.30")
	noDeliver  = 250 * time.Millisecond // how long "not delivered" waits
)

// udpProbe sends a fresh payload from "from" to "to" and reports whether
// it arrived at rx within wait.
type udpProbe struct {
	t   *testing.T
	seq int
}

func (p *udpProbe) delivered(from *net.UDPConn, to netip.AddrPort, rx *net.UDPConn, wait time.Duration) bool {
	p.t.Helper()
	p.seq++
	msg := []byte(fmt.Sprintf("probe-%d", p.seq))
	if _, err := from.WriteToUDPAddrPort(msg, to); err != nil {
		p.t.Fatalf("send to %v: %v", to, err)
	}
	buf := make([]byte, 64)
	deadline := time.Now().Add(wait)
	for {
		_ = rx.SetReadDeadline(deadline)
		n, _, err := rx.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if bytes.Equal(buf[:n], msg) {
			return true
		}
	}
}

func listenUDP(t *testing.T, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatalf("listen %v: %v", ap, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestIngressDropsInNetNS(t *testing.T) {
	requireNetNS(t)
	dir, peer, client := newNS(t, "ia"), newNS(t, "ib"), newNS(t, "ic")
	vethPair(t, dir, "a0", "198.18.0.1/24", peer, "b0", "198.18.0.2/24")
	// The client is behind the director, which routes: what the ingress
	// drop lets through towards a non-local address, the kernel forwards.
	vethPair(t, dir, "c0", "198.18.3.1/24", client, "d0", "198.18.3.2/24")
	dir.sh(t, "sysctl -qw net.ipv4.ip_forward=1")
	dir.ip(t, "addr", "add", "198.51.100.0/24", "dev", "lo") // VIPs local, so sockets can bind
	peer.ip(t, "route", "add", "198.51.100.0/24", "via", "198.18.0.1")
	peer.ip(t, "route", "add", "198.18.3.0/24", "via", "198.18.0.1")

	var vip5000, vip5001, vipAnyRx, vipTCPRx, dip6000 *net.UDPConn
	dir.do(t, func() {
		vip5000 = listenUDP(t, netip.AddrPortFrom(vip, 5000))
		vip5001 = listenUDP(t, netip.AddrPortFrom(vip, 5001))
		vipAnyRx = listenUDP(t, netip.AddrPortFrom(vipAny, 9999))
		vipTCPRx = listenUDP(t, netip.AddrPortFrom(vipTCP, 80))
		dip6000 = listenUDP(t, netip.AddrPortFrom(dirAddr, 6000))
	})
	var client6000 *net.UDPConn
	client.do(t, func() { client6000 = listenUDP(t, netip.AddrPortFrom(clientAddr, 6000)) })
	var fromRS, fromEphemeral *net.UDPConn
	peer.do(t, func() {
		fromRS = listenUDP(t, netip.AddrPortFrom(peerAddr, 7000))
		fromEphemeral = listenUDP(t, netip.AddrPortFrom(peerAddr, 0))
	})
	p := &udpProbe{t: t}
	type check struct {
		name string
		from *net.UDPConn
		to   netip.AddrPort
		rx   *net.UDPConn
		want bool
	}
	run := func(stage string, checks []check) {
		t.Helper()
		for _, c := range checks {
			wait := time.Second
			if !c.want {
				wait = noDeliver
			}
			if got := p.delivered(c.from, c.to, c.rx, wait); got != c.want {
				t.Errorf("%s: %s: delivered=%v, want %v", stage, c.name, got, c.want)
			}
		}
	}
	ap := netip.AddrPortFrom
	run("no rules", []check{
		{"vip:5000", fromEphemeral, ap(vip, 5000), vip5000, true},
		{"dip:6000 from rs:7000", fromRS, ap(dirAddr, 6000), dip6000, true},
		{"client:6000 from rs:7000 (forwarded)", fromRS, ap(clientAddr, 6000), client6000, true},
	})

	table := TableName("@gvsd-test-" + runID)
	rules := []IngressRule{
		{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoUDP, Port: 5000},
		{Interface: "a0", Dir: MatchSrc, Addr: peerAddr, Proto: ipvs.ProtoUDP, Port: 7000},
		{Interface: "a0", Dir: MatchDst, Addr: vipAny},
		{Interface: "a0", Dir: MatchDst, Addr: vipTCP, Proto: ipvs.ProtoTCP},
		{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoUDP, Port: 5000}, // duplicate
	}
	var in *Ingress
	dir.do(t, func() {
		var err error
		if in, err = NewIngress(table, zaptest.NewLogger(t)); err != nil {
			t.Fatalf("NewIngress: %v", err)
		}
	})
	t.Cleanup(func() { in.Close() })
	if err := in.Sync(rules); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// Idempotent: the same rules again.
	if err := in.Sync(rules); err != nil {
		t.Fatalf("second Sync: %v", err)
	}

	// Read back through the library (nft(8) is not needed).
	var conn *nftables.Conn
	dir.do(t, func() {
		var err error
		if conn, err = nftables.New(nftables.AsLasting()); err != nil {
			t.Fatal(err)
		}
	})
	defer conn.CloseLasting()
	checkTable(t, conn, table, map[string][]string{
		"a0_daddr":            {"c6336414"},
		"a0_daddr_proto":      {"c633641e06000000"},
		"a0_daddr_proto_port": {"c633640a110000001388" + "0000"},
		"a0_saddr_proto_port": {"c6120002110000001b58" + "0000"},
	})

	run("rules", []check{
		{"vip:5000 dropped", fromEphemeral, ap(vip, 5000), vip5000, false},
		{"vip:5001 passes", fromEphemeral, ap(vip, 5001), vip5001, true},
		{"vipAny dropped", fromEphemeral, ap(vipAny, 9999), vipAnyRx, false},
		{"vipTCP passes udp", fromEphemeral, ap(vipTCP, 80), vipTCPRx, true},
		// A NAT reply (to a client) never reaches the host's stack...
		{"from rs:7000 to client dropped", fromRS, ap(clientAddr, 6000), client6000, false},
		{"from other port to client passes", fromEphemeral, ap(clientAddr, 6000), client6000, true},
		// ...but the director's own connections to the real server's
		// port (health checks) get their replies.
		{"from rs:7000 to the director passes", fromRS, ap(dirAddr, 6000), dip6000, true},
		{"from other port passes", fromEphemeral, ap(dirAddr, 6000), dip6000, true},
	})

	// Replace: only port 5001 now.
	if err := in.Sync([]IngressRule{{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoUDP, Port: 5001}}); err != nil {
		t.Fatalf("Sync replace: %v", err)
	}
	run("replaced", []check{
		{"vip:5000 passes", fromEphemeral, ap(vip, 5000), vip5000, true},
		{"vip:5001 dropped", fromEphemeral, ap(vip, 5001), vip5001, false},
		{"from rs:7000 passes", fromRS, ap(clientAddr, 6000), client6000, true},
	})

	// A bad rule changes nothing.
	if err := in.Sync([]IngressRule{{Interface: "a0", Addr: netip.MustParseAddr("2001:db8::1")}}); err == nil {
		t.Error("Sync accepted an IPv6 rule")
	}
	run("after failed sync", []check{{"vip:5001 still dropped", fromEphemeral, ap(vip, 5001), vip5001, false}})

	// A crashed run leaves its table; the next one removes it on start.
	var in2 *Ingress
	dir.do(t, func() {
		var err error
		if in2, err = NewIngress(table, zaptest.NewLogger(t)); err != nil {
			t.Fatalf("NewIngress over stale table: %v", err)
		}
	})
	run("stale table removed", []check{{"vip:5001 passes", fromEphemeral, ap(vip, 5001), vip5001, true}})
	if err := in2.Sync(rules[:1]); err != nil {
		t.Fatalf("Sync after stale: %v", err)
	}
	run("new owner", []check{{"vip:5000 dropped", fromEphemeral, ap(vip, 5000), vip5000, false}})

	if err := in2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := in2.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := conn.ListTableOfFamily(table, nftables.TableFamilyNetdev); err == nil {
		t.Error("table still present after Close")
	}
	run("closed", []check{{"vip:5000 passes", fromEphemeral, ap(vip, 5000), vip5000, true}})
	// The first owner's Close finds no table and still succeeds.
	if err := in.Close(); err != nil {
		t.Errorf("Close of a table already gone: %v", err)
	}
	if err := in.Sync(rules); err == nil {
		t.Error("Sync after Close succeeded")
	}
}

// checkTable verifies the table layout: one ingress base chain on a0 at
// IngressPriority, one rule per set ending in drop, and the sets' elements
// (hex keys).
func checkTable(t *testing.T, conn *nftables.Conn, table string, sets map[string][]string) {
	t.Helper()
	tbl := &nftables.Table{Name: table, Family: nftables.TableFamilyNetdev}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyNetdev)
	if err != nil {
		t.Fatalf("listing chains: %v", err)
	}
	var chain *nftables.Chain
	for _, c := range chains {
		if c.Table.Name == table {
			if chain != nil {
				t.Fatalf("more than one chain: %q and %q", chain.Name, c.Name)
			}
			chain = c
		}
	}
	if chain == nil || chain.Name != ChainName("a0") {
		t.Fatalf("chain %s not found in %+v", ChainName("a0"), chains)
	}
	if chain.Hooknum == nil || *chain.Hooknum != *nftables.ChainHookIngress ||
		chain.Priority == nil || *chain.Priority != IngressPriority || chain.Type != nftables.ChainTypeFilter {
		t.Errorf("chain %s: hook/priority/type wrong: %+v", chain.Name, chain)
	}
	rules, err := conn.GetRules(tbl, chain)
	if err != nil {
		t.Fatalf("listing rules: %v", err)
	}
	if len(rules) != len(sets) {
		t.Errorf("%d rules, want %d (one per set)", len(rules), len(sets))
	}
	for _, r := range rules {
		v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict)
		if !ok || v.Kind != expr.VerdictDrop {
			t.Errorf("rule does not end in drop: %#v", r.Exprs[len(r.Exprs)-1])
		}
	}
	got, err := conn.GetSets(tbl)
	if err != nil {
		t.Fatalf("listing sets: %v", err)
	}
	if len(got) != len(sets) {
		t.Errorf("%d sets, want %d", len(got), len(sets))
	}
	for _, s := range got {
		want, ok := sets[s.Name]
		if !ok {
			t.Errorf("unexpected set %q", s.Name)
			continue
		}
		elems, err := conn.GetSetElements(s)
		if err != nil {
			t.Fatalf("elements of %s: %v", s.Name, err)
		}
		var keys []string
		for _, e := range elems {
			keys = append(keys, fmt.Sprintf("%x", e.Key))
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want) {
			t.Errorf("set %s: elements %v, want %v", s.Name, keys, want)
		}
	}
}

// TestIngressEnsure: a table (or a chain of it) removed behind the owner's
// back is noticed and installed again with the last Sync's rules.
func TestIngressEnsure(t *testing.T) {
	requireNetNS(t)
	dir, peer := newNS(t, "ea"), newNS(t, "eb")
	vethPair(t, dir, "a0", "198.18.0.1/24", peer, "b0", "198.18.0.2/24")
	dir.ip(t, "addr", "add", "198.51.100.0/24", "dev", "lo")
	peer.ip(t, "route", "add", "198.51.100.0/24", "via", "198.18.0.1")
	var rx *net.UDPConn
	var in *Ingress
	var conn *nftables.Conn
	table := TableName("@gvsd-ensure-" + runID)
	dir.do(t, func() {
		rx = listenUDP(t, netip.AddrPortFrom(vip, 5000))
		var err error
		if in, err = NewIngress(table, zaptest.NewLogger(t)); err != nil {
			t.Fatalf("NewIngress: %v", err)
		}
		if conn, err = nftables.New(nftables.AsLasting()); err != nil {
			t.Fatal(err)
		}
	})
	defer conn.CloseLasting()
	t.Cleanup(func() { in.Close() })
	var from *net.UDPConn
	peer.do(t, func() { from = listenUDP(t, netip.AddrPortFrom(peerAddr, 0)) })
	p := &udpProbe{t: t}
	to := netip.AddrPortFrom(vip, 5000)
	dropped := func(stage string) {
		t.Helper()
		if p.delivered(from, to, rx, noDeliver) {
			t.Errorf("%s: vip:5000 delivered, want dropped", stage)
		}
	}
	ensure := func(stage string, want bool) {
		t.Helper()
		got, err := in.Ensure()
		if err != nil || got != want {
			t.Errorf("%s: Ensure() = %v, %v; want %v, nil", stage, got, err, want)
		}
	}

	ensure("before Sync", false)
	if err := in.Sync([]IngressRule{{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoUDP, Port: 5000}}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	dropped("synced")
	ensure("intact", false)

	tbl := &nftables.Table{Name: table, Family: nftables.TableFamilyNetdev}
	conn.DelTable(tbl) // nft delete table netdev <table>
	if err := conn.Flush(); err != nil {
		t.Fatalf("deleting the table by hand: %v", err)
	}
	if !p.delivered(from, to, rx, time.Second) {
		t.Fatal("table deleted, yet vip:5000 still dropped: the test does not test anything")
	}
	ensure("table deleted", true)
	dropped("restored")
	ensure("restored", false)

	conn.DelChain(&nftables.Chain{Name: ChainName("a0"), Table: tbl}) // nft delete chain
	if err := conn.Flush(); err != nil {
		t.Fatalf("deleting the chain by hand: %v", err)
	}
	ensure("chain deleted", true)
	dropped("chain restored")

	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	ensure("closed", false)
	if _, err := conn.ListTableOfFamily(table, nftables.TableFamilyNetdev); err == nil {
		t.Error("Ensure after Close brought the table back")
	}
}

// TestIngressPortRangeInNetNS: the rules the daemon derives for a TCP
// port-21 service (its port, port 20 and the range 1024-65535, which the
// pipeline also takes: IPVS's FTP lookup fallback) drop TCP to exactly those
// ports of that VIP, and nothing else: other ports, other protocols, other
// addresses reach the host's stack.
func TestIngressPortRangeInNetNS(t *testing.T) {
	requireNetNS(t)
	dir, peer := newNS(t, "ra"), newNS(t, "rb")
	vethPair(t, dir, "a0", "198.18.0.1/24", peer, "b0", "198.18.0.2/24")
	dir.ip(t, "addr", "add", "198.51.100.0/24", "dev", "lo")
	peer.ip(t, "route", "add", "198.51.100.0/24", "via", "198.18.0.1")

	tcpPorts := []uint16{19, 20, 21, 22, 1023, 1024, 2000, 65535}
	listeners := map[netip.AddrPort]net.Listener{}
	var udp2000 *net.UDPConn
	dir.do(t, func() {
		for _, a := range []netip.Addr{vip, vipTCP} {
			for _, port := range tcpPorts {
				ap := netip.AddrPortFrom(a, port)
				ln, err := net.Listen("tcp4", ap.String())
				if err != nil {
					t.Fatalf("listen %v: %v", ap, err)
				}
				t.Cleanup(func() { ln.Close() })
				listeners[ap] = ln
			}
		}
		udp2000 = listenUDP(t, netip.AddrPortFrom(vip, 2000))
	})
	var from *net.UDPConn
	peer.do(t, func() { from = listenUDP(t, netip.AddrPortFrom(peerAddr, 0)) })
	connects := func(ap netip.AddrPort, wait time.Duration) bool {
		var ok bool
		peer.do(t, func() {
			c, err := net.DialTimeout("tcp4", ap.String(), wait)
			if err == nil {
				ok = true
				c.Close()
			}
		})
		return ok
	}

	in := newTestIngress(t, dir, TableName("@gvsd-range-"+runID))
	rules := []IngressRule{
		{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoTCP, Port: 21},
		{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoTCP, Port: 20},
		{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoTCP, Port: 1024, PortMax: 65535},
	}
	if err := in.Sync(rules); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	dropped := map[uint16]bool{20: true, 21: true, 1024: true, 2000: true, 65535: true}
	for _, port := range tcpPorts {
		ap := netip.AddrPortFrom(vip, port)
		want := !dropped[port]
		wait := time.Second
		if !want {
			wait = noDeliver
		}
		if got := connects(ap, wait); got != want {
			t.Errorf("TCP to %v: connected=%v, want %v", ap, got, want)
		}
		// Another VIP's same port is not the FTP service's.
		if other := netip.AddrPortFrom(vipTCP, port); !connects(other, time.Second) {
			t.Errorf("TCP to %v: not connected, want connected (no rule for that address)", other)
		}
	}
	p := &udpProbe{t: t}
	if !p.delivered(from, netip.AddrPortFrom(vip, 2000), udp2000, time.Second) {
		t.Error("UDP to vip:2000 dropped by the TCP range rule")
	}

	// Replacing the range by a narrower one moves the drop.
	if err := in.Sync([]IngressRule{{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoTCP, Port: 2000, PortMax: 2001}}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for port, want := range map[uint16]bool{1024: true, 2000: false, 65535: true} {
		ap := netip.AddrPortFrom(vip, port)
		wait := time.Second
		if !want {
			wait = noDeliver
		}
		if got := connects(ap, wait); got != want {
			t.Errorf("after replace: TCP to %v: connected=%v, want %v", ap, got, want)
		}
	}
}

// newTestIngress creates an Ingress in ns, closed at cleanup.
func newTestIngress(t *testing.T, ns *testNS, table string) *Ingress {
	t.Helper()
	var in *Ingress
	ns.do(t, func() {
		var err error
		if in, err = NewIngress(table, zaptest.NewLogger(t)); err != nil {
			t.Fatalf("NewIngress: %v", err)
		}
	})
	t.Cleanup(func() { in.Close() })
	return in
}

// A Frags rule drops the fragments after the first of a protocol to an
// address, which a port rule never sees: a 4000-byte UDP datagram (three
// fragments over the 1500-byte link) to a port no rule names is lost, a
// small one is not; without the rule the big one arrives.
func TestIngressFragsInNetNS(t *testing.T) {
	requireNetNS(t)
	dir, peer := newNS(t, "fa"), newNS(t, "fb")
	vethPair(t, dir, "a0", "198.18.0.1/24", peer, "b0", "198.18.0.2/24")
	dir.ip(t, "addr", "add", "198.51.100.0/24", "dev", "lo")
	peer.ip(t, "route", "add", "198.51.100.0/24", "via", "198.18.0.1")
	var rx, from *net.UDPConn
	dir.do(t, func() { rx = listenUDP(t, netip.AddrPortFrom(vip, 2000)) })
	peer.do(t, func() { from = listenUDP(t, netip.AddrPortFrom(peerAddr, 0)) })
	big := func(wait time.Duration) bool {
		msg := bytes.Repeat([]byte("x"), 4000)
		if _, err := from.WriteToUDPAddrPort(msg, netip.AddrPortFrom(vip, 2000)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8192)
		_ = rx.SetReadDeadline(time.Now().Add(wait))
		n, _, err := rx.ReadFromUDPAddrPort(buf)
		return err == nil && n == 4000
	}
	if !big(time.Second) {
		t.Fatal("no rule: the fragmented datagram did not arrive")
	}
	in := newTestIngress(t, dir, TableName("@gvsd-frag-"+runID))
	if err := in.Sync([]IngressRule{
		{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoUDP, Port: 53},
		{Interface: "a0", Dir: MatchDst, Addr: vip, Proto: ipvs.ProtoUDP, Frags: true},
	}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if big(noDeliver) {
		t.Error("fragments after the first reached the stack")
	}
	p := &udpProbe{t: t}
	if !p.delivered(from, netip.AddrPortFrom(vip, 2000), rx, time.Second) {
		t.Error("an unfragmented datagram to another port was dropped")
	}
}
