package lab

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Address plan. Networks come from 198.18.0.0/15 (RFC 2544, benchmarking);
// VIPs from the documentation ranges.
var (
	clientLAN  = netip.MustParsePrefix("198.18.1.0/24")
	serverLAN  = netip.MustParsePrefix("198.18.2.0/24")
	defaultVIP = netip.MustParseAddr("198.51.100.10")
	vipRanges  = []netip.Prefix{
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
	}
)

// Host octets on the two LANs.
const (
	directorOctet   = 1   // 198.18.1.1 (vip0) and 198.18.2.1 (dip0)
	clientBase      = 10  // client N is 198.18.1.(10+N)
	serverBase      = 10  // real server N is 198.18.2.(10+N)
	serverLegBase   = 100 // real server N's client-LAN leg is 198.18.1.(100+N)
	maxClients      = 89  // 198.18.1.11 .. 198.18.1.99, below the server legs
	maxServers      = 89  // 198.18.2.11 .. 198.18.2.99 (legs up to 198.18.1.189)
	defaultClients  = 1
	defaultServers  = 3
	defaultPrefix   = "gvs"
	suffixLen       = 6 // hex digits
	maxIfNameLength = 15
)

// Interface names inside the host namespaces. They need no suffix: each
// namespace belongs to one run.
const (
	// ClientIf is a client's only interface, on the client LAN.
	ClientIf = "eth0"
	// ServerIf is a real server's interface on the server LAN.
	ServerIf = "eth0"
	// ServerLegIf is a real server's optional leg on the client LAN
	// (Options.ClientLegOnServers).
	ServerLegIf = "eth1"
	// DirectorVIPIf is the director's NIC toward the client LAN.
	DirectorVIPIf = "vip0"
	// DirectorDIPIf is the director's NIC toward the server LAN.
	DirectorDIPIf = "dip0"
)

// hostAddr returns the /24 prefix of host octet h on lan.
func hostAddr(lan netip.Prefix, h int) netip.Prefix {
	b := lan.Addr().As4()
	b[3] = byte(h)
	return netip.PrefixFrom(netip.AddrFrom4(b), lan.Bits())
}

// macFor derives a stable, locally administered unicast MAC from an IPv4
// address: 02:00:a:b:c:d. Stable MACs make captures from different runs
// comparable; the LANs of concurrent runs are separate bridges, so equal MACs
// never meet.
func macFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

// link is one veth pair: Port lives on a bridge in the bridge namespace,
// Iface in the host namespace NS.
type link struct {
	Bridge string // bridge the port is enslaved to
	Port   string // bridge-side name (carries the run suffix)
	NS     string // host namespace
	Iface         // host-side interface
	MTU    int
}

// plan is everything New will create, computed without side effects.
type plan struct {
	prefix, suffix     string
	bridgeNS           string
	clientBr, serverBr string
	director           Director
	clients            []Client
	servers            []Server
	links              []link
}

// namespaces lists every namespace of the plan, bridge namespace first.
func (p *plan) namespaces() []string {
	ns := []string{p.bridgeNS, p.director.NS}
	for _, c := range p.clients {
		ns = append(ns, c.NS)
	}
	for _, s := range p.servers {
		ns = append(ns, s.NS)
	}
	return ns
}

// newPlan lays out the topology for opts (already defaulted) and suffix.
func newPlan(opts Options, suffix string) (*plan, error) {
	p := &plan{
		prefix:   opts.Prefix,
		suffix:   suffix,
		bridgeNS: opts.Prefix + "b-" + suffix,
		clientBr: "brc-" + suffix,
		serverBr: "brs-" + suffix,
	}
	mtu := opts.ServerMTU
	iface := func(name string, a netip.Prefix) Iface {
		return Iface{Name: name, Prefix: a, MAC: macFor(a.Addr())}
	}
	p.director = Director{
		NS:      opts.Prefix + "d-" + suffix,
		VIPSide: iface(DirectorVIPIf, hostAddr(clientLAN, directorOctet)),
		DIPSide: iface(DirectorDIPIf, hostAddr(serverLAN, directorOctet)),
	}
	p.links = append(p.links,
		link{Bridge: p.clientBr, Port: "dv-" + suffix, NS: p.director.NS, Iface: p.director.VIPSide, MTU: 1500},
		link{Bridge: p.serverBr, Port: "dd-" + suffix, NS: p.director.NS, Iface: p.director.DIPSide, MTU: mtu},
	)
	for n := 1; n <= opts.Clients; n++ {
		c := Client{NS: opts.Prefix + "c" + strconv.Itoa(n) + "-" + suffix, Iface: iface(ClientIf, hostAddr(clientLAN, clientBase+n))}
		p.clients = append(p.clients, c)
		p.links = append(p.links, link{Bridge: p.clientBr, Port: "c" + strconv.Itoa(n) + "-" + suffix, NS: c.NS, Iface: c.Iface, MTU: 1500})
	}
	for n := 1; n <= opts.Servers; n++ {
		s := Server{NS: opts.Prefix + "r" + strconv.Itoa(n) + "-" + suffix, LAN: iface(ServerIf, hostAddr(serverLAN, serverBase+n))}
		p.links = append(p.links, link{Bridge: p.serverBr, Port: "r" + strconv.Itoa(n) + "-" + suffix, NS: s.NS, Iface: s.LAN, MTU: mtu})
		if opts.ClientLegOnServers {
			s.ClientLeg = iface(ServerLegIf, hostAddr(clientLAN, serverLegBase+n))
			p.links = append(p.links, link{Bridge: p.clientBr, Port: "rc" + strconv.Itoa(n) + "-" + suffix, NS: s.NS, Iface: s.ClientLeg, MTU: 1500})
		}
		p.servers = append(p.servers, s)
	}
	for _, name := range []string{p.clientBr, p.serverBr} {
		if len(name) > maxIfNameLength {
			return nil, fmt.Errorf("bridge name %q longer than %d", name, maxIfNameLength)
		}
	}
	for _, l := range p.links {
		if len(l.Port) > maxIfNameLength {
			return nil, fmt.Errorf("interface name %q longer than %d", l.Port, maxIfNameLength)
		}
	}
	return p, nil
}
