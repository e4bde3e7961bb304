package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

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

// watchAddrs follows the host's IPv4 address changes (netlink) and
// re-evaluates the ARP answers after each burst of them; every 10 s it
// re-evaluates anyway, in case a notification was lost.
func (d *Daemon) watchAddrs(ctx context.Context) {
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	subscribe := func() bool {
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			ErrorCallback: func(err error) { d.log.Warn("address notifications", zap.Error(err)) },
		})
		if err != nil {
			d.log.Warn("cannot follow the host's addresses: ARP answers follow them only every 10 s", zap.Error(err))
			return false
		}
		return true
	}
	subscribed := subscribe()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok { // the subscription ended (error): subscribe again
				ch = make(chan netlink.AddrUpdate, 64)
				subscribed = subscribe()
				continue
			}
			// Take the rest of the burst (keepalived adds several).
			for drained := false; !drained; {
				select {
				case _, ok := <-ch:
					drained = !ok
				default:
					drained = true
				}
			}
			d.hostAddrsChanged()
		case <-tick.C:
			if !subscribed {
				subscribed = subscribe()
			}
			d.hostAddrsChanged()
		}
	}
}
