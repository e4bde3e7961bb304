package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

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
			ErrorCallback: func(err error) {
				if ctx.Err() == nil { // not the subscription ending at shutdown
					d.log.Warn("address notifications", zap.Error(err))
				}
			},
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

// linkState is what the link watcher knows of one configured interface.
type linkState struct {
	index int  // 0: not seen yet
	up    bool // administratively up with carrier
	gone  bool // removed, not re-created yet
}

// watchLinks follows the configured interfaces through netlink link and
// address notifications (blocking on them: nothing runs while nothing
// changes). It logs each transition once (link down, link up, interface
// removed, interface re-created), and when an interface of a configured
// name has a new index (re-created) and is usable again (it has its IPv4
// address) it moves the rings, the ARP responder and the nftables chains
// to it (reopenRings). A link that goes down and up keeps its rings: the
// kernel re-attaches a packet socket to its device when it comes up.
func (d *Daemon) watchLinks(ctx context.Context) {
	names := d.interfaces()
	state := make(map[string]*linkState, len(names))
	cur := make(map[string]string, len(names)) // configured name -> current name
	for _, n := range names {
		state[n] = &linkState{}
		cur[n] = n
	}
	var links chan netlink.LinkUpdate
	var addrs chan netlink.AddrUpdate
	var done chan struct{}
	defer func() {
		if done != nil {
			close(done)
		}
	}()
	onErr := func(err error) {
		if ctx.Err() == nil { // not the subscription ending at shutdown
			d.log.Warn("link notifications", zap.Error(err))
		}
	}
	subscribe := func() bool {
		if done != nil {
			close(done)
		}
		done = make(chan struct{})
		links = make(chan netlink.LinkUpdate, 64)
		addrs = make(chan netlink.AddrUpdate, 64)
		// ListExisting: after a resubscription the current state arrives
		// as notifications, so nothing that happened in between is missed.
		err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr, ListExisting: true})
		if err == nil {
			err = netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
		}
		if err != nil {
			d.log.Error("cannot follow the interfaces: a removed and re-created interface is not taken up again", zap.Error(err))
			return false
		}
		return true
	}
	if !subscribe() {
		return
	}
	pending := false // a re-created interface waits for reopenRings
	var lastErr string
	reconcile := func() {
		for _, st := range state {
			if st.gone {
				pending = true
				return // not back yet
			}
		}
		err := d.reconcileLinks()
		pending = err != nil
		if err != nil && err.Error() != lastErr {
			// Once per distinct reason (a re-created interface without its
			// address yet, say).
			d.log.Info("interface not taken up yet", zap.Error(err))
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-links:
			if !ok {
				if !subscribe() {
					return
				}
				continue
			}
			a := u.Attrs()
			// An interface keeps its index when renamed: the one the
			// rings are on is found by index first, by configured name
			// otherwise (not seen yet, removed, or re-created).
			var st *linkState
			name := a.Name // the configured name
			for n, s := range state {
				if s.index != 0 && s.index == a.Index && !s.gone {
					st, name = s, n
					break
				}
			}
			if st == nil {
				if s := state[a.Name]; s != nil && cur[a.Name] == a.Name {
					st = s
				}
			}
			if st == nil {
				continue
			}
			if u.Header.Type == unix.RTM_DELLINK {
				if !st.gone && (st.index == 0 || st.index == a.Index) {
					st.gone, st.up = true, false
					d.log.Warn("interface removed: not forwarding on it until an interface of that name is back",
						zap.String("interface", a.Name), zap.Int("ifindex", a.Index))
					if cur[name] != name { // it had been renamed: the configured name is awaited
						cur[name] = name
						d.renameLink(a.Name, name)
					}
				}
				continue
			}
			renamed := !st.gone && st.index == a.Index && a.Name != cur[name]
			if renamed {
				d.log.Info("interface renamed: forwarding on it and hiding its traffic from the kernel under its new name",
					zap.String("interface", cur[name]), zap.String("new_name", a.Name), zap.Int("ifindex", a.Index))
				old := cur[name]
				cur[name] = a.Name
				d.renameLink(old, a.Name)
			}
			recreated := st.gone || st.index != 0 && st.index != a.Index
			if recreated {
				d.log.Info("interface re-created", zap.String("interface", a.Name), zap.Int("ifindex", a.Index))
			}
			st.index, st.gone = a.Index, false
			up := a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_RUNNING != 0
			if up != st.up {
				st.up = up
				if up {
					d.log.Info("link up", zap.String("interface", a.Name), zap.Int("ifindex", a.Index))
				} else {
					d.log.Warn("link down", zap.String("interface", a.Name), zap.Int("ifindex", a.Index),
						zap.String("oper_state", a.OperState.String()))
				}
			}
			if recreated || renamed || pending || d.linkChanged(a) {
				reconcile()
			}
		case u, ok := <-addrs:
			if !ok {
				if !subscribe() {
					return
				}
				continue
			}
			for _, st := range state {
				if st.index == u.LinkIndex && !st.gone {
					reconcile()
					break
				}
			}
		}
	}
}

// renameLink records that the interface named old is now named name
// (renamed, or removed after a rename: the configured name again) and
// syncs what refers to interfaces by name: the nftables ingress chains,
// which the kernel hooks to a device by its name, so that the renamed
// interface's VIP traffic stays hidden from the kernel's own stack.
func (d *Daemon) renameLink(old, name string) {
	d.mu.Lock()
	for i := range d.ifNames {
		if d.ifNames[i] == old {
			d.ifNames[i] = name
		}
	}
	d.mu.Unlock()
	if err := d.Sync(); err != nil {
		d.log.Warn("syncing after an interface rename", zap.String("interface", name), zap.Error(err))
	}
}

// linkChanged reports whether a notification shows another MAC or MTU than
// the links the data path uses.
func (d *Daemon) linkChanged(a *netlink.LinkAttrs) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.links {
		if l.Name == a.Name {
			return l.Index != a.Index || l.MTU != a.MTU || !bytes.Equal(l.MAC[:], a.HardwareAddr)
		}
	}
	return false
}

// reconcileLinks reads the configured interfaces and brings the data path
// to them: new rings when one has another index than the rings', or an MTU
// that needs other ring slots (logged "rings re-opened"), new link data
// (MAC, MTU, address) otherwise. An
// interface that cannot be read (absent, no IPv4 address yet) is an error.
func (d *Daemon) reconcileLinks() error {
	d.mu.Lock()
	names := d.ifNames
	d.mu.Unlock()
	vip, err := ReadLink(names[forwarder.VIPSide])
	if err != nil {
		return err
	}
	dip := vip
	if !d.oneArm {
		if dip, err = ReadLink(names[forwarder.DIPSide]); err != nil {
			return err
		}
	}
	d.mu.Lock()
	cur := d.links
	d.mu.Unlock()
	switch {
	case vip.Index != cur[forwarder.VIPSide].Index || dip.Index != cur[forwarder.DIPSide].Index ||
		// The rings' slots are sized for the MTU: a frame of a larger
		// one would be cut short in them (oversize), so they are
		// opened again, as for a re-created interface.
		ringFrameSize(vip.MTU) != ringFrameSize(cur[forwarder.VIPSide].MTU) ||
		ringFrameSize(dip.MTU) != ringFrameSize(cur[forwarder.DIPSide].MTU):
		start := time.Now()
		if err := d.reopenRings(vip, dip); err != nil {
			return fmt.Errorf("reopening the rings: %w", err)
		}
		d.log.Info("rings re-opened", zap.String("vip_if", vip.Name), zap.Int("vip_ifindex", vip.Index),
			zap.String("dip_if", dip.Name), zap.Int("dip_ifindex", dip.Index), zap.Duration("took", time.Since(start)))
	case vip != cur[forwarder.VIPSide] || dip != cur[forwarder.DIPSide]:
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.env.SetLinks(vip, dip); err != nil {
			return err
		}
		d.links = [2]LinkInfo{vip, dip}
		d.log.Info("interfaces changed", zap.Any("vip", vip), zap.Any("dip", dip))
	}
	return nil
}
