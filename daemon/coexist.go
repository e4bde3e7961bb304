package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"gvs/forwarder/kernel"
	"gvs/forwarder/ring"
	"gvs/ipvs"
)

// Derived is everything the daemon computes from the service table to
// share the interfaces with the kernel: see Derive.
type Derived struct {
	// VIPs are the addresses of the (non-fwmark) services, sorted.
	VIPs []netip.Addr
	// MasqRIPs are the addresses of the NAT (-m) real servers, sorted:
	// their replies come back through the director.
	MasqRIPs []netip.Addr
	// RIPs are the addresses of every real server, sorted (resolver wants).
	RIPs []netip.Addr
	// Ingress are the nftables netdev-ingress drops: traffic to each
	// service on the VIP interface, NAT replies from each masqueraded real
	// server's port on the DIP interface.
	Ingress []kernel.IngressRule
	// FWMarkServices counts fwmark services, which gvs cannot match at
	// ingress (the mark is set later, by netfilter): neither filters nor
	// drops cover them.
	FWMarkServices int
}

// Derive computes the Derived state of table for a director whose VIP
// interface is vipIf and DIP interface dipIf (the same name when one-armed).
func Derive(table *ipvs.Table, vipIf, dipIf string) Derived {
	var d Derived
	vips := map[netip.Addr]bool{}
	masq := map[netip.Addr]bool{}
	rips := map[netip.Addr]bool{}
	type replyKey struct {
		addr  netip.Addr
		proto ipvs.Protocol
		port  uint16
	}
	replies := map[replyKey]bool{}
	table.Read(func(svcs []*ipvs.Service) {
		for _, s := range svcs {
			k := s.Config.ServiceKey
			if k.FWMark != 0 {
				d.FWMarkServices++
			} else if a := k.Addr.Unmap(); a.Is4() {
				vips[a] = true
				d.Ingress = append(d.Ingress, kernel.IngressRule{
					Interface: vipIf, Dir: kernel.MatchDst, Addr: a, Proto: k.Proto, Port: k.Port,
				})
				// Fragments after the first carry no port: the port
				// rule cannot see them. gvs reassembles the service's
				// datagrams, so the kernel must not get them either.
				d.Ingress = append(d.Ingress, kernel.IngressRule{
					Interface: vipIf, Dir: kernel.MatchDst, Addr: a, Proto: k.Proto, Frags: true,
				})
				if k.Proto == ipvs.ProtoTCP && k.Port == ftpPort {
					d.Ingress = append(d.Ingress, ftpRules(vipIf, a)...)
				}
			}
			for _, dst := range s.Dests() {
				a := dst.Addr.Unmap()
				if !a.Is4() {
					continue
				}
				rips[a] = true
				if dst.Method() != ipvs.Masq {
					continue
				}
				masq[a] = true
				proto := k.Proto
				if k.FWMark != 0 {
					// A fwmark service covers every protocol: match the
					// address and port for both TCP and UDP.
					for _, p := range [2]ipvs.Protocol{ipvs.ProtoTCP, ipvs.ProtoUDP} {
						replies[replyKey{a, p, dst.Port}] = true
					}
					continue
				}
				replies[replyKey{a, proto, dst.Port}] = true
			}
		}
	})
	fragSrc := map[kernel.IngressRule]bool{}
	for k := range replies {
		d.Ingress = append(d.Ingress, kernel.IngressRule{
			Interface: dipIf, Dir: kernel.MatchSrc, Addr: k.addr, Proto: k.proto, Port: k.port,
		})
		// And the later fragments of a real server's replies, which
		// gvs reassembles and forwards (not those to the director).
		fragSrc[kernel.IngressRule{Interface: dipIf, Dir: kernel.MatchSrc, Addr: k.addr, Proto: k.proto, Frags: true}] = true
	}
	for r := range fragSrc {
		d.Ingress = append(d.Ingress, r)
	}
	slices.SortFunc(d.Ingress, cmpRule)
	d.VIPs = sortedAddrs(vips)
	d.MasqRIPs = sortedAddrs(masq)
	d.RIPs = sortedAddrs(rips)
	return d
}

// ftpPort is the FTP control port: IPVS's service lookup falls back to a
// TCP port-21 service for port 20 and the unprivileged ports.
const ftpPort = 21

// ftpRules are the drops of the packets the pipeline takes for a TCP
// port-21 service on vip besides its own port: the service lookup
// (ipvs.Table.Lookup, as ip_vs_service_find) falls back to that service for
// TCP to port 20 and to ports 1024 and up, and the pipeline then either
// schedules them (a persistent service: FTP data connections, with the
// port-zero template) or answers them as the host's stack would (a RST;
// ip_vs_leave's FTP rule). The host must not see them too: it would send a
// second RST, or RST a passive-mode data connection gvs forwarded. Other
// ports of the VIP (1-19, 22-1023) are not looked up that way: the pipeline
// passes them to the host, and so does the kernel. Packets from client port
// 20 (ip_vs_schedule's rule) need nothing more: the pipeline takes them
// only when their destination port finds the service.
func ftpRules(vipIf string, vip netip.Addr) []kernel.IngressRule {
	return []kernel.IngressRule{
		{Interface: vipIf, Dir: kernel.MatchDst, Addr: vip, Proto: ipvs.ProtoTCP, Port: 20},
		{Interface: vipIf, Dir: kernel.MatchDst, Addr: vip, Proto: ipvs.ProtoTCP, Port: 1024, PortMax: 65535},
	}
}

// Filters returns the RX filters of the VIP side and the DIP side. A
// one-arm director has one ring per worker: its filter is the union, and
// both returned filters are equal.
func (d *Derived) Filters(oneArm bool) (vip, dip ring.Filter) {
	vip = ring.Filter{DstAddrs: d.VIPs}
	dip = ring.Filter{SrcAddrs: d.MasqRIPs, ICMP: true}
	if oneArm {
		u := ring.Filter{DstAddrs: d.VIPs, SrcAddrs: d.MasqRIPs, ICMP: true}
		return u, u
	}
	return vip, dip
}

// ARPMode says for which VIPs gvsd answers ARP (gvsd --arp).
type ARPMode uint8

const (
	// ARPAuto answers for the VIPs the host does not hold, following the
	// host's addresses live; a VIP the host has held since the daemon
	// started is the host's (keepalived, an administrator): gvsd leaves it
	// to the kernel from then on, present or not, so that a demoted VRRP
	// master stops attracting the VIP's traffic.
	ARPAuto ARPMode = iota
	// ARPOn answers for every VIP, whatever the host holds.
	ARPOn
	// ARPOff never answers: the VIP is routed to the director, or the
	// kernel answers for it.
	ARPOff
)

// ParseARPMode parses "auto", "on" or "off".
func ParseARPMode(s string) (ARPMode, error) {
	switch s {
	case "auto":
		return ARPAuto, nil
	case "on":
		return ARPOn, nil
	case "off":
		return ARPOff, nil
	}
	return ARPAuto, fmt.Errorf("--arp %q: want auto, on or off", s)
}

// String gives the mode's name, as ParseARPMode reads it.
func (m ARPMode) String() string {
	switch m {
	case ARPAuto:
		return "auto"
	case ARPOn:
		return "on"
	case ARPOff:
		return "off"
	}
	return fmt.Sprintf("ARPMode(%d)", uint8(m))
}

// ARPAddrs returns the VIPs the daemon must answer ARP for in mode: with
// ARPAuto those the host does not hold (hostHas) and has not held since
// the daemon started (hostHeld).
func (d *Derived) ARPAddrs(mode ARPMode, hostHas, hostHeld func(netip.Addr) bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range d.VIPs {
		switch mode {
		case ARPOn:
			out = append(out, a)
		case ARPAuto:
			if !hostHas(a) && !hostHeld(a) {
				out = append(out, a)
			}
		}
	}
	return out
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func cmpRule(a, b kernel.IngressRule) int {
	switch {
	case a.Interface != b.Interface:
		if a.Interface < b.Interface {
			return -1
		}
		return 1
	case a.Dir != b.Dir:
		return int(a.Dir) - int(b.Dir)
	case a.Addr != b.Addr:
		return a.Addr.Compare(b.Addr)
	case a.Proto != b.Proto:
		return int(a.Proto) - int(b.Proto)
	case a.Port != b.Port:
		return int(a.Port) - int(b.Port)
	case a.Frags != b.Frags:
		if b.Frags {
			return -1
		}
		return 1
	}
	return int(a.PortMax) - int(b.PortMax)
}

// diffAddrs returns the addresses of old that are not in cur (both sorted).
func diffAddrs(old, cur []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range old {
		if _, found := slices.BinarySearchFunc(cur, a, netip.Addr.Compare); !found {
			out = append(out, a)
		}
	}
	return out
}
