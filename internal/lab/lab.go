// Package lab builds and tears down the gvs test lab: a small network of
// Linux network namespaces used by the end-to-end tests, `make demo` and the
// benchmark harness. It needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and the `ip`
// command from iproute2.
//
// Topology (every name carries a random per-run suffix SFX; P is
// Options.Prefix, "gvs" by default):
//
//	client LAN 198.18.1.0/24 (bridge brc-SFX)        server LAN 198.18.2.0/24 (bridge brs-SFX)
//	┌─────────────┐                                   ┌──────────────────────┐
//	│ Pc1-SFX     │ eth0 .11 ─┐      ┌─ vip0 .1 ┐      │ Pr1-SFX              │
//	│ client 1..N │           ├──────┤ Pd-SFX   ├─────┤ eth0 198.18.2.11     │
//	└─────────────┘           │      └─ dip0 .1 ┘      │ eth1 198.18.1.101 ¹  │
//	                          └── eth1 of each real server ¹         ... rN  │
//	                                                   └──────────────────────┘
//	¹ only with Options.ClientLegOnServers (DR and TUN: replies go straight to the client)
//
// Both bridges live in their own namespace Pb-SFX, so they are real L2
// segments and the director namespace holds nothing but its two NICs. All
// veths have one end on a bridge; the host ends use the fixed names ClientIf,
// ServerIf, ServerLegIf, DirectorVIPIf and DirectorDIPIf and stable MAC
// addresses derived from their IPv4 address (02:00 + the four octets).
//
// Routing: clients have a default route via the director's vip0
// (198.18.1.1); real servers via the director's dip0 (198.18.2.1), which is
// what NAT needs; with a client-LAN leg their replies to clients leave by
// that leg (a connected route). The director starts with ip_forward=0.
// IPv6 is disabled in every namespace, so nothing but test traffic crosses
// the LANs.
//
// Close removes everything a Lab created, and Cleanup removes what crashed
// runs left behind.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures New. The zero value is a valid NAT lab with one client
// and three real servers. DR and TUN labs set ClientLegOnServers and
// VIPOnServers.
type Options struct {
	// Prefix starts every namespace name; default "gvs". Cleanup(Prefix)
	// removes stale namespaces of crashed runs.
	Prefix string
	// Clients is the number of client namespaces (1..89, default 1).
	Clients int
	// Servers is the number of real-server namespaces (1..89, default 3).
	Servers int
	// VIP is the virtual IP (IPv4, from 198.51.100.0/24 or 203.0.113.0/24);
	// default 198.51.100.10.
	VIP netip.Addr

	// ClientLegOnServers gives every real server a second interface
	// (ServerLegIf, 198.18.1.(100+N)/24) on the client LAN, like the kernel
	// IPVS selftest: in DR and TUN mode the replies go from the real server
	// straight to the client through it.
	ClientLegOnServers bool
	// VIPOnServers puts the VIP on every real server's lo with
	// arp_ignore=1, arp_announce=2 and rp_filter=0, as DR and TUN real
	// servers need.
	VIPOnServers bool
	// VIPOnDirector puts the VIP on the director's lo (as kernel IPVS
	// setups do). gvsd must then keep the kernel from answering VIP traffic
	// itself.
	VIPOnDirector bool
	// DirectorForwarding sets net.ipv4.ip_forward=1 on the director
	// (default off: gvs forwards, not the kernel).
	DirectorForwarding bool
	// ServerMTU is the MTU of the server LAN (default 1500). TUN mode adds
	// 20 bytes per packet, so a larger value avoids fragmentation-needed.
	ServerMTU int
	// KeepOffloads leaves tx checksum offload, TSO and GSO on (to test
	// CHECKSUM_PARTIAL and super-frame handling); by default they are off
	// on every endpoint.
	KeepOffloads bool
}

func (o Options) withDefaults() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if o.Clients == 0 {
		o.Clients = defaultClients
	}
	if o.Servers == 0 {
		o.Servers = defaultServers
	}
	if !o.VIP.IsValid() {
		o.VIP = defaultVIP
	}
	if o.ServerMTU == 0 {
		o.ServerMTU = 1500
	}
	switch {
	case o.Clients < 1 || o.Clients > maxClients:
		return o, fmt.Errorf("lab: Clients %d out of range 1..%d", o.Clients, maxClients)
	case o.Servers < 1 || o.Servers > maxServers:
		return o, fmt.Errorf("lab: Servers %d out of range 1..%d", o.Servers, maxServers)
	case !o.VIP.Is4() || !slices.ContainsFunc(vipRanges, func(p netip.Prefix) bool { return p.Contains(o.VIP) }):
		return o, fmt.Errorf("lab: VIP %v is not an IPv4 address in %v", o.VIP, vipRanges)
	case o.ServerMTU < 576 || o.ServerMTU > 9000:
		return o, fmt.Errorf("lab: ServerMTU %d out of range 576..9000", o.ServerMTU)
	case len(o.Prefix) > 16:
		return o, fmt.Errorf("lab: Prefix %q longer than 16", o.Prefix)
	}
	for _, r := range o.Prefix {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return o, fmt.Errorf("lab: Prefix %q: only a-z and 0-9 allowed", o.Prefix)
		}
	}
	return o, nil
}

// Iface is one interface of a lab host.
type Iface struct {
	// Name is the interface name inside the host's namespace.
	Name string
	// Prefix is its address with the LAN's prefix length.
	Prefix netip.Prefix
	// MAC is its hardware address.
	MAC net.HardwareAddr
}

// Addr is the interface's IPv4 address.
func (i Iface) Addr() netip.Addr { return i.Prefix.Addr() }

// IsValid reports whether the interface exists in the lab (a real server's
// ClientLeg is zero without Options.ClientLegOnServers).
func (i Iface) IsValid() bool { return i.Name != "" }

func (i Iface) clone() Iface {
	i.MAC = slices.Clone(i.MAC)
	return i
}

// Client is a client namespace.
type Client struct {
	NS string // namespace name
	Iface
}

// Server is a real-server namespace.
type Server struct {
	NS        string // namespace name
	LAN       Iface  // ServerIf on the server LAN
	ClientLeg Iface  // ServerLegIf on the client LAN, or zero
}

// Director is the director namespace, where gvsd runs.
type Director struct {
	NS      string // namespace name
	VIPSide Iface  // DirectorVIPIf, 198.18.1.1/24
	DIPSide Iface  // DirectorDIPIf, 198.18.2.1/24
}

// Lab is a running lab. Its topology accessors may be used concurrently;
// Close may be called any number of times, from any goroutine.
type Lab struct {
	opts Options
	plan *plan

	// created lists the namespaces New made, in order; written only by
	// New, so a failed New never removes a namespace it did not create.
	created []string

	mu     sync.Mutex
	procs  []*Proc // started by Start, stopped by Close
	closed bool
}

// New builds a lab. On error everything created so far is removed again.
func New(opts Options) (*Lab, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := Check(); err != nil {
		return nil, err
	}
	var sfx [suffixLen / 2]byte
	rand.Read(sfx[:])
	p, err := newPlan(opts, hex.EncodeToString(sfx[:]))
	if err != nil {
		return nil, err
	}
	l := &Lab{opts: opts, plan: p}
	if err := writeMarker(p.suffix); err != nil {
		return nil, err
	}
	if err := l.build(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
		}
		return nil, fmt.Errorf("lab: %w", err)
	}
	return l, nil
}

// build creates namespaces, bridges, veths, addresses, routes and sysctls.
func (l *Lab) build() error {
	p := l.plan
	for _, ns := range p.namespaces() {
		if err := runIP("netns", "add", ns); err != nil {
			return err
		}
		l.created = append(l.created, ns)
		if err := runIP("-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
		// Before any link exists: no IPv6 noise on the lab LANs.
		if err := Sysctls(ns, map[string]string{
			"net.ipv6.conf.all.disable_ipv6":     "1",
			"net.ipv6.conf.default.disable_ipv6": "1",
		}); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	for _, br := range []string{p.clientBr, p.serverBr} {
		if err := runIP("-n", p.bridgeNS, "link", "add", br, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"); err != nil {
			return err
		}
	}
	// The LANs are switches: with br_netfilter loaded (Docker loads it),
	// every bridged frame would also run the bridge namespace's iptables
	// hooks, a cost of the lab, not of anything under test. Without the
	// module the keys do not exist.
	if err := Sysctls(p.bridgeNS, map[string]string{
		"net.bridge.bridge-nf-call-iptables":  "0",
		"net.bridge.bridge-nf-call-ip6tables": "0",
		"net.bridge.bridge-nf-call-arptables": "0",
	}); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := runIP("-n", p.bridgeNS, "link", "set", p.serverBr, "mtu", fmt.Sprint(l.opts.ServerMTU)); err != nil {
		return err
	}
	for _, br := range []string{p.clientBr, p.serverBr} {
		if err := runIP("-n", p.bridgeNS, "link", "set", br, "up"); err != nil {
			return err
		}
	}
	for _, k := range p.links {
		mtu := fmt.Sprint(k.MTU)
		steps := [][]string{
			{"-n", p.bridgeNS, "link", "add", k.Port, "mtu", mtu, "type", "veth", "peer", "name", k.Name, "netns", k.NS},
			{"-n", p.bridgeNS, "link", "set", k.Port, "master", k.Bridge, "up"},
			{"-n", k.NS, "link", "set", k.Name, "address", k.MAC.String(), "mtu", mtu, "up"},
			{"-n", k.NS, "addr", "add", k.Prefix.String(), "dev", k.Name},
		}
		for _, s := range steps {
			if err := runIP(s...); err != nil {
				return err
			}
		}
	}

	vip := netip.PrefixFrom(l.opts.VIP, 32).String()
	d := p.director
	fwd := "0"
	if l.opts.DirectorForwarding {
		fwd = "1"
	}
	if err := Sysctls(d.NS, map[string]string{
		"net.ipv4.ip_forward":                  fwd,
		"net.ipv4.conf.all.send_redirects":     "0",
		"net.ipv4.conf.default.send_redirects": "0",
		"net.ipv4.conf.vip0.send_redirects":    "0",
		"net.ipv4.conf.dip0.send_redirects":    "0",
	}); err != nil {
		return err
	}
	if l.opts.VIPOnDirector {
		if err := runIP("-n", d.NS, "addr", "add", vip, "dev", "lo"); err != nil {
			return err
		}
	}
	for _, c := range p.clients {
		if err := runIP("-n", c.NS, "route", "add", "default", "via", d.VIPSide.Addr().String(), "dev", c.Name); err != nil {
			return err
		}
	}
	for _, s := range p.servers {
		if err := runIP("-n", s.NS, "route", "add", "default", "via", d.DIPSide.Addr().String(), "dev", s.LAN.Name); err != nil {
			return err
		}
		if !l.opts.VIPOnServers {
			continue
		}
		kv := map[string]string{
			"net.ipv4.conf.all.arp_ignore":             "1",
			"net.ipv4.conf.all.arp_announce":           "2",
			"net.ipv4.conf.all.rp_filter":              "0",
			"net.ipv4.conf.default.rp_filter":          "0",
			"net.ipv4.conf.lo.rp_filter":               "0",
			"net.ipv4.conf." + ServerIf + ".rp_filter": "0",
		}
		if s.ClientLeg.IsValid() {
			kv["net.ipv4.conf."+ServerLegIf+".rp_filter"] = "0"
		}
		if err := Sysctls(s.NS, kv); err != nil {
			return err
		}
		if err := runIP("-n", s.NS, "addr", "add", vip, "dev", "lo"); err != nil {
			return err
		}
	}

	if !l.opts.KeepOffloads {
		for _, k := range p.links {
			if err := DisableOffloads(k.NS, k.Name); err != nil {
				return err
			}
		}
	}
	return l.waitRunning(5 * time.Second)
}

// waitRunning waits until every host interface has carrier.
func (l *Lab) waitRunning(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, k := range l.plan.links {
		if err := WaitCarrier(k.NS, k.Name, deadline); err != nil {
			return err
		}
	}
	return nil
}

// WaitCarrier waits until interface ifname in namespace ns has carrier
// (IFF_RUNNING), polling every 10 ms until deadline.
func WaitCarrier(ns, ifname string, deadline time.Time) error {
	for {
		var up bool
		err := Do(ns, func() error {
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return err
			}
			up = ifi.Flags&net.FlagRunning != 0
			return nil
		})
		if err != nil {
			return err
		}
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s in %s: no carrier", ifname, ns)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close stops every process started with Start (SIGTERM, then SIGKILL after
// a grace period) and any other process still inside the lab's namespaces,
// deletes every link and then every namespace of the lab. It keeps going
// after errors and returns them all. Calling it again is a no-op.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.Stop() })
	}
	wg.Wait()
	return removeRun(l.plan.suffix, l.created)
}

// CloseOnSignal makes SIGINT, SIGTERM and SIGHUP close the lab and then
// terminate the process as the signal would have. Call the returned stop
// function once the lab is closed normally. Use it in demo and benchmark
// drivers; tests use t.Cleanup(l.Close).
func (l *Lab) CloseOnSignal() (stop func()) {
	sigs := []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
	ch := make(chan os.Signal, 1)
	quit := make(chan struct{})
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case sig := <-ch:
			l.Close()
			signal.Reset(sigs...)
			syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		case <-quit:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(ch)
			close(quit)
		})
	}
}

// Options returns the options the lab was built with, defaults filled in.
func (l *Lab) Options() Options { return l.opts }

// Suffix is the random per-run suffix of every namespace and bridge-side
// link name.
func (l *Lab) Suffix() string { return l.plan.suffix }

// Namespaces lists every namespace of the lab.
func (l *Lab) Namespaces() []string { return l.plan.namespaces() }

// BridgeNS is the namespace holding the two LAN bridges (for captures on
// the bridge ports).
func (l *Lab) BridgeNS() string { return l.plan.bridgeNS }

// VIP is the virtual IP.
func (l *Lab) VIP() netip.Addr { return l.opts.VIP }

// Director describes the director namespace.
func (l *Lab) Director() Director {
	d := l.plan.director
	d.VIPSide, d.DIPSide = d.VIPSide.clone(), d.DIPSide.clone()
	return d
}

// Clients describes the client namespaces, client 1 first.
func (l *Lab) Clients() []Client {
	cs := slices.Clone(l.plan.clients)
	for i := range cs {
		cs[i].Iface = cs[i].Iface.clone()
	}
	return cs
}

// Servers describes the real-server namespaces, server 1 first.
func (l *Lab) Servers() []Server {
	ss := slices.Clone(l.plan.servers)
	for i := range ss {
		ss[i].LAN, ss[i].ClientLeg = ss[i].LAN.clone(), ss[i].ClientLeg.clone()
	}
	return ss
}

// String describes the lab, one host per line, for logs and the demo.
func (l *Lab) String() string {
	var b strings.Builder
	p := l.plan
	fmt.Fprintf(&b, "lab %s: VIP %v, bridges %s/%s in %s\n", p.suffix, l.opts.VIP, p.clientBr, p.serverBr, p.bridgeNS)
	d := p.director
	fmt.Fprintf(&b, "  director %s: %s %v %v, %s %v %v\n", d.NS, d.VIPSide.Name, d.VIPSide.Prefix, d.VIPSide.MAC, d.DIPSide.Name, d.DIPSide.Prefix, d.DIPSide.MAC)
	for _, c := range p.clients {
		fmt.Fprintf(&b, "  client %s: %s %v %v\n", c.NS, c.Name, c.Prefix, c.MAC)
	}
	for _, s := range p.servers {
		fmt.Fprintf(&b, "  server %s: %s %v %v", s.NS, s.LAN.Name, s.LAN.Prefix, s.LAN.MAC)
		if s.ClientLeg.IsValid() {
			fmt.Fprintf(&b, ", %s %v %v", s.ClientLeg.Name, s.ClientLeg.Prefix, s.ClientLeg.MAC)
		}
		b.WriteString("\n")
	}
	return b.String()
}
