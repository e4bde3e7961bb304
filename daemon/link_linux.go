package daemon

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"gvs/forwarder"
)

// ReadLink reads an interface's index, MAC, MTU and first IPv4
// address/prefix from the kernel (the calling thread's network namespace).
func ReadLink(name string) (LinkInfo, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return LinkInfo{}, fmt.Errorf("interface %s: %w", name, err)
	}
	a := l.Attrs()
	if len(a.HardwareAddr) != 6 {
		return LinkInfo{}, fmt.Errorf("interface %s: no Ethernet address", name)
	}
	li := LinkInfo{Index: a.Index, Link: forwarder.Link{Name: name, MTU: a.MTU}}
	copy(li.MAC[:], a.HardwareAddr)
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return LinkInfo{}, fmt.Errorf("interface %s: addresses: %w", name, err)
	}
	for _, ad := range addrs {
		if ad.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(ad.IP.To4())
		if !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		li.Prefix = netip.PrefixFrom(ip, ones)
		break
	}
	if !li.Prefix.IsValid() {
		return LinkInfo{}, fmt.Errorf("interface %s: no IPv4 address (the director needs one per side for ICMP errors and tunnels)", name)
	}
	return li, nil
}

// hostAddrs lists every IPv4 address configured on the host (any
// interface, lo included).
func hostAddrs() (map[netip.Addr]bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing host addresses: %w", err)
	}
	m := make(map[netip.Addr]bool, len(addrs))
	for _, ad := range addrs {
		if ad.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ad.IP.To4()); ok {
			m[ip] = true
		}
	}
	return m, nil
}
