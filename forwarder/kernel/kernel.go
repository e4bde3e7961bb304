package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"gvs/ipvs"
)

// ErrUnsupported is returned by every constructor on platforms other than
// Linux.
var ErrUnsupported = errors.New("kernel: not supported on this platform")

// ErrOffloadStuck is wrapped by DisableGRO's error when a receive offload
// stays on because the driver does not let it change. The interface still
// works; oversized frames are then dropped by the data path, so the caller
// should warn rather than fail.
var ErrOffloadStuck = errors.New("offload cannot be disabled")

// errInvalidRule is wrapped by IngressRule.Validate.
var errInvalidRule = errors.New("invalid ingress rule")

// Direction says which end of a packet an IngressRule matches.
type Direction uint8

const (
	// MatchDst matches the IPv4 destination (and destination port): traffic
	// addressed to a virtual service.
	MatchDst Direction = iota
	// MatchSrc matches the IPv4 source (and source port): NAT replies from a
	// real server.
	MatchSrc
)

// String gives "daddr" or "saddr", the nft words for the two directions.
func (d Direction) String() string {
	switch d {
	case MatchDst:
		return "daddr"
	case MatchSrc:
		return "saddr"
	}
	return fmt.Sprintf("direction%d", uint8(d))
}

// IngressRule is one "drop at netdev ingress" match: IPv4 frames arriving on
// Interface whose destination (MatchDst) or source (MatchSrc) is Addr, and,
// when Proto is set, whose L4 protocol is Proto, and, when Port is set too,
// whose destination or source port is Port (or, when PortMax is set, in
// Port..PortMax). Fragments other than the first carry no port: rules with
// a port do not match them.
type IngressRule struct {
	Interface string
	Dir       Direction
	Addr      netip.Addr    // IPv4 (a v4-mapped IPv6 address is accepted)
	Proto     ipvs.Protocol // 0: any protocol; then Port must be 0
	Port      uint16        // 0: any port of Proto
	// PortMax, if not 0, makes the rule match the ports Port..PortMax
	// (Port at least 1, PortMax above Port). 0: Port alone.
	PortMax uint16
	// Frags makes the rule match only IPv4 fragments after the first
	// (fragment offset not 0) of Proto (not 0) to or from Addr, whatever
	// their ports: those carry no transport header, so a port rule never
	// matches them ("ip frag-off & 0x1fff != 0"). Port must be 0.
	Frags bool
}

// ifNameMax is IFNAMSIZ-1, the longest interface name Linux accepts.
const ifNameMax = 15

// Validate reports whether the rule can be installed.
func (r IngressRule) Validate() error {
	switch {
	case r.Interface == "" || len(r.Interface) > ifNameMax:
		return fmt.Errorf("%w: interface name %q", errInvalidRule, r.Interface)
	case r.Dir != MatchDst && r.Dir != MatchSrc:
		return fmt.Errorf("%w: %v", errInvalidRule, r.Dir)
	case !r.Addr.Unmap().Is4():
		return fmt.Errorf("%w: address %v is not IPv4", errInvalidRule, r.Addr)
	case r.Port != 0 && !hasPorts(r.Proto):
		return fmt.Errorf("%w: port %d with protocol %v", errInvalidRule, r.Port, r.Proto)
	case r.Frags && (r.Proto == 0 || r.Port != 0):
		return fmt.Errorf("%w: fragments need a protocol and no port", errInvalidRule)
	case r.PortMax != 0 && (r.Port == 0 || r.PortMax <= r.Port):
		return fmt.Errorf("%w: port range %d-%d", errInvalidRule, r.Port, r.PortMax)
	}
	return nil
}

// String gives an nft-like description, e.g. "eth0: ip daddr 198.51.100.1 tcp dport 80 drop".
func (r IngressRule) String() string {
	s := fmt.Sprintf("%s: ip %v %v", r.Interface, r.Dir, r.Addr.Unmap())
	if r.Proto != ipvs.ProtoIP {
		s += " " + protoName(r.Proto)
		if r.Port != 0 {
			p := "dport"
			if r.Dir == MatchSrc {
				p = "sport"
			}
			s += fmt.Sprintf(" %s %d", p, r.Port)
			if r.PortMax != 0 {
				s += fmt.Sprintf("-%d", r.PortMax)
			}
		}
	}
	if r.Frags {
		s += " frag-off & 0x1fff != 0"
	}
	return s + " drop"
}

// protoSCTP is not in ipvs.Protocol's named set but IPVS balances it.
const protoSCTP = 132

func hasPorts(p ipvs.Protocol) bool {
	return p == ipvs.ProtoTCP || p == ipvs.ProtoUDP || p == protoSCTP
}

func protoName(p ipvs.Protocol) string {
	switch p {
	case ipvs.ProtoTCP:
		return "tcp"
	case ipvs.ProtoUDP:
		return "udp"
	case ipvs.ProtoICMP:
		return "icmp"
	case protoSCTP:
		return "sctp"
	}
	return fmt.Sprintf("l4proto %d", uint8(p))
}

// Neighbor is everything the data path needs to put an IPv4 packet on the
// wire towards one destination: the egress link, the next hop and its MAC,
// the source address the kernel would use and the MTU of the path.
//
// It is a plain value (no slices) so that lookups copy it without allocating.
type Neighbor struct {
	IfIndex int        // egress interface index
	LinkMAC [6]byte    // our MAC on the egress interface (Ethernet source)
	NextHop netip.Addr // gateway, or the destination itself when on-link
	MAC     [6]byte    // next hop's MAC (Ethernet destination)
	Src     netip.Addr // preferred source address for this destination
	MTU     int        // route MTU if set, else the egress link's MTU
}

// TableName derives the nftables table name from the daemon's control
// socket name, e.g. "@gvsd" gives "gvs_gvsd", so that two daemons (in one
// namespace with different sockets, or in different namespaces) never share
// a table. Characters other than letters, digits, '-' and '_' become '_'.
func TableName(socket string) string {
	b := []byte("gvs_")
	for _, c := range []byte(strings.TrimPrefix(socket, "@")) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// IngressPriority is the priority of gvs's netdev ingress chains: well
// before anything else an administrator hooks at ingress.
const IngressPriority = -500

// ChainName is the name of the base chain for interface ifname.
func ChainName(ifname string) string { return "ingress_" + ifname }

// ARPStats are an ARPResponder's counters since it was created.
type ARPStats struct {
	Requests   uint64 // ARP requests received (the socket filter passes only requests)
	Replies    uint64 // replies sent for our addresses
	Gratuitous uint64 // gratuitous announcements sent
	Conflicts  uint64 // gratuitous ARPs from another host claiming one of our addresses
	Errors     uint64 // send failures
}

// ResolverConfig tunes a Resolver. The zero value is usable.
type ResolverConfig struct {
	// Logger receives resolution changes and netlink trouble; nil: no logs.
	Logger *zap.Logger
	// RefreshInterval is the period of the full re-read of links, routes
	// and neighbours (change notifications keep the cache current between
	// two re-reads); it also re-validates STALE next hops. Default 30 s.
	RefreshInterval time.Duration
	// RetryInterval is the shortest time between two resolution triggers
	// for one next hop. Default 1 s.
	RetryInterval time.Duration
}
