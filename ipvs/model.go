// Package ipvs holds the virtual-service model that every other part of gvs
// shares: protocols, forwarding methods, service and real-server (destination)
// configuration, and the live per-destination state that schedulers read and
// the connection table updates (ActiveConn, InActConn, PersistConn, OVERLOAD).
//
// It holds the service table (Table) the data path looks services up in,
// and the control plane's change API: typed changes run as all-or-nothing
// transactions (Table.Update with a Tx, or Table.Apply of Change values),
// refused with plain Go errors (ErrServiceExists, ErrNoService, ...) that
// tell apart what the kernel's errnos do. It knows nothing of ipvsadm's
// command language, messages or exit codes: package ipvsadm turns
// commands into these changes and these errors into ipvsadm's texts, and
// imports point that way only (the data path never links ipvsadm).
//
// Concurrency: configuration values (ServiceConfig, DestConfig) are plain
// values. A Dest's counters and flags are atomics, safe to read and update
// from every worker; its weight and thresholds may be changed by the control
// plane at any time (also atomics). A Service's destination list is published
// as an immutable snapshot (Service.Dests) and replaced whole on change.
package ipvs

import (
	"fmt"
	"net/netip"
	"sync/atomic"
)

// Protocol is an IP protocol number as IPVS uses it in a service key.
type Protocol uint8

// Protocols gvs balances. ProtoIP (0) is used by fwmark persistence templates.
const (
	ProtoIP   Protocol = 0
	ProtoICMP Protocol = 1
	ProtoTCP  Protocol = 6
	ProtoUDP  Protocol = 17
)

// ProtoSCTP is SCTP. gvs stores and lists SCTP services; the data path
// does not balance SCTP.
const ProtoSCTP Protocol = 132

// String gives the name ipvsadm prints ("TCP", "UDP", "IP").
func (p Protocol) String() string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoIP:
		return "IP"
	case ProtoICMP:
		return "ICMP"
	}
	return fmt.Sprintf("proto%d", uint8(p))
}

// Method is a destination's forwarding method, with IPVS's flag values
// (IP_VS_CONN_F_MASQ/LOCALNODE/TUNNEL/DROUTE).
type Method uint8

const (
	Masq   Method = 0 // NAT, ipvsadm -m
	Local  Method = 1 // local node (display only)
	Tunnel Method = 2 // IPIP, ipvsadm -i
	Route  Method = 3 // direct routing, ipvsadm -g (the default)
)

// String gives the Forward column of ipvsadm -L.
func (m Method) String() string {
	switch m {
	case Masq:
		return "Masq"
	case Local:
		return "Local"
	case Tunnel:
		return "Tunnel"
	case Route:
		return "Route"
	}
	return "Unknown"
}

// SvcFlags are IPVS service flags (IP_VS_SVC_F_*).
type SvcFlags uint32

const (
	SvcPersistent SvcFlags = 0x0001
	SvcHashed     SvcFlags = 0x0002
	SvcOnePacket  SvcFlags = 0x0004
	SvcSched1     SvcFlags = 0x0008 // sh-fallback / mh-fallback / flag-1
	SvcSched2     SvcFlags = 0x0010 // sh-port / mh-port / flag-2
	SvcSched3     SvcFlags = 0x0020 // flag-3
	SvcSchedMask           = SvcSched1 | SvcSched2 | SvcSched3
)

// DefaultPersistTimeout is ipvsadm's default for -p without a value
// (IPVS_SVC_PERSISTENT_TIMEOUT in libipvs: 6*60; the man page's 300 is wrong).
const DefaultPersistTimeout = 360

// DefaultScheduler is used when -s is not given.
const DefaultScheduler = "wlc"

// TunType is the tunnel encapsulation of a -i destination.
type TunType uint8

const (
	TunIPIP TunType = 0
	TunGUE  TunType = 1
	TunGRE  TunType = 2
)

// TunFlags are the --tun-*csum options.
type TunFlags uint8

const (
	TunNoCsum  TunFlags = 0
	TunCsum    TunFlags = 1 << 0
	TunRemCsum TunFlags = 1 << 1
)

// ServiceKey identifies a virtual service: (protocol, VIP, port), or a
// firewall mark when FWMark != 0 (then Proto/Addr/Port are unused).
type ServiceKey struct {
	Proto  Protocol
	Addr   netip.Addr
	Port   uint16
	FWMark uint32
	// V6 marks an IPv6 fwmark service (-f mark -6).
	V6 bool
}

// String formats the key the way ipvsadm -S prints the selector:
// "-t 1.2.3.4:80", "-u [2001:db8::1]:53", "--sctp-service 1.2.3.4:9", "-f 1".
func (k ServiceKey) String() string {
	if k.FWMark != 0 {
		if k.V6 {
			return fmt.Sprintf("-f %d -6", k.FWMark)
		}
		return fmt.Sprintf("-f %d", k.FWMark)
	}
	opt := "--xxx-service"
	switch k.Proto {
	case ProtoTCP:
		opt = "-t"
	case ProtoUDP:
		opt = "-u"
	case ProtoSCTP:
		opt = "--sctp-service"
	}
	return opt + " " + netip.AddrPortFrom(k.Addr, k.Port).String()
}

// Norm is the key in the form the Table keeps its services' keys in: the
// fields that do not identify the service zeroed (Proto, Addr and Port of a
// fwmark key, V6 of an address key).
func (k ServiceKey) Norm() ServiceKey {
	if k.FWMark != 0 {
		return ServiceKey{FWMark: k.FWMark, V6: k.V6}
	}
	k.V6 = false
	return k
}

// ServiceConfig is the configuration of a virtual service (ipvsadm -A/-E).
type ServiceConfig struct {
	ServiceKey
	Scheduler string   // "wlc" by default
	Flags     SvcFlags // persistent, one-packet, scheduler flags
	Timeout   uint32   // persistence timeout in seconds (when SvcPersistent)
	// Netmask is the persistence granularity as a prefix length
	// (-M 255.255.255.0 is 24). 32 (IPv4) / 128 (IPv6) means per client.
	Netmask int
	PE      string // persistence engine (--pe), "" for none
}

// Persistent reports whether the service has -p.
func (c *ServiceConfig) Persistent() bool { return c.Flags&SvcPersistent != 0 }

// OnePacket reports whether the service has -o.
func (c *ServiceConfig) OnePacket() bool { return c.Flags&SvcOnePacket != 0 }

// DestConfig is the configuration of a real server (ipvsadm -a/-e).
type DestConfig struct {
	Addr       netip.Addr
	Port       uint16
	Method     Method
	Weight     int    // 0..65535; 0 = quiesced
	UThreshold uint32 // -x, 0 = unset
	LThreshold uint32 // -y, 0 = unset
	TunType    TunType
	TunPort    uint16
	TunFlags   TunFlags
}

// AddrPort is the destination as one value.
func (c *DestConfig) AddrPort() netip.AddrPort { return netip.AddrPortFrom(c.Addr, c.Port) }

// Dest is a live real server of one service. Fields other than the atomics
// are fixed when the Dest is created; an edit (-e) changes Weight and the
// thresholds and method in place through Update.
type Dest struct {
	Addr netip.Addr
	Port uint16

	// Svc is the service the destination belongs to.
	Svc *Service

	method     atomic.Uint32 // Method
	weight     atomic.Int32
	lastWeight atomic.Int32 // last non-zero weight (mh keeps its slots on quiesce)
	uThresh    atomic.Uint32
	lThresh    atomic.Uint32
	tun        atomic.Uint32 // TunType | TunFlags<<8 | TunPort<<16

	// Connection counters as IPVS keeps them (ip_vs_dest activeconns,
	// inactconns, persistconns), updated by the connection table.
	ActiveConns  atomic.Int32
	InactConns   atomic.Int32
	PersistConns atomic.Int32

	overload  atomic.Bool // IP_VS_DEST_F_OVERLOAD
	available atomic.Bool // IP_VS_DEST_F_AVAILABLE: false once deleted

	// Index is a small number, unique per service while the Dest lives,
	// that callers may use to index per-worker statistics arrays.
	Index int

	// Stats are the destination's traffic counters, one slot per worker.
	// Nothing but the workers writes them; -Z moves a baseline (Counts).
	Stats  Counters
	zeroed zeroState
}

// NewDest makes a live destination from its configuration.
func NewDest(svc *Service, c DestConfig) *Dest {
	d := &Dest{Addr: c.Addr, Port: c.Port, Svc: svc}
	d.available.Store(true)
	d.Update(c)
	return d
}

// Update applies an edit (-e): method, weight, thresholds, tunnel options.
// As in IPVS, raising or clearing the upper threshold clears OVERLOAD.
func (d *Dest) Update(c DestConfig) {
	d.method.Store(uint32(c.Method))
	d.weight.Store(int32(c.Weight))
	if c.Weight > 0 {
		d.lastWeight.Store(int32(c.Weight))
	}
	oldU := d.uThresh.Load()
	d.uThresh.Store(c.UThreshold)
	d.lThresh.Store(c.LThreshold)
	d.tun.Store(uint32(c.TunType) | uint32(c.TunFlags)<<8 | uint32(c.TunPort)<<16)
	if c.UThreshold == 0 || c.UThreshold > oldU {
		d.overload.Store(false)
	}
}

// Config returns the destination's current configuration.
func (d *Dest) Config() DestConfig {
	t := d.tun.Load()
	return DestConfig{
		Addr: d.Addr, Port: d.Port, Method: d.Method(), Weight: d.Weight(),
		UThreshold: d.uThresh.Load(), LThreshold: d.lThresh.Load(),
		TunType: TunType(t & 0xff), TunFlags: TunFlags(t >> 8 & 0xff), TunPort: uint16(t >> 16),
	}
}

// AddrPort is the destination address and port.
func (d *Dest) AddrPort() netip.AddrPort { return netip.AddrPortFrom(d.Addr, d.Port) }

// Method is the forwarding method.
func (d *Dest) Method() Method { return Method(d.method.Load()) }

// Weight is the current weight (0 = quiesced).
func (d *Dest) Weight() int { return int(d.weight.Load()) }

// LastWeight is the last non-zero weight the destination had (0 if never).
func (d *Dest) LastWeight() int { return int(d.lastWeight.Load()) }

// UThreshold and LThreshold are -x and -y (0 = unset).
func (d *Dest) UThreshold() uint32 { return d.uThresh.Load() }
func (d *Dest) LThreshold() uint32 { return d.lThresh.Load() }

// TunType is the tunnel encapsulation of a Tunnel destination.
func (d *Dest) TunType() TunType { return TunType(d.tun.Load() & 0xff) }

// Overloaded reports IP_VS_DEST_F_OVERLOAD.
func (d *Dest) Overloaded() bool { return d.overload.Load() }

// Available reports IP_VS_DEST_F_AVAILABLE (false once deleted from its service).
func (d *Dest) Available() bool { return d.available.Load() }

// SetUnavailable marks the destination deleted; existing connections see it.
func (d *Dest) SetUnavailable() { d.available.Store(false) }

// Usable is the test every scheduler applies: weight > 0 and not OVERLOAD.
func (d *Dest) Usable() bool { return d.weight.Load() > 0 && !d.overload.Load() }

// Overhead is ip_vs_dest_conn_overhead: (activeconns << 8) + inactconns.
func (d *Dest) Overhead() int64 {
	return int64(d.ActiveConns.Load())<<8 + int64(d.InactConns.Load())
}

// Bind accounts a new connection to the destination, as ip_vs_bind_dest does:
// the connection starts inactive (persistence templates count in
// PersistConns), and the upper threshold sets OVERLOAD.
func (d *Dest) Bind(template bool) {
	if template {
		d.PersistConns.Add(1)
	} else {
		d.InactConns.Add(1)
	}
	if u := d.uThresh.Load(); u != 0 && d.total() >= int64(u) {
		d.overload.Store(true)
	}
}

// Unbind reverses Bind when a connection goes away (ip_vs_unbind_dest);
// active tells which counter the connection was in. OVERLOAD clears below
// the lower threshold, or below 3/4 of the upper one when no lower is set.
func (d *Dest) Unbind(template, active bool) {
	switch {
	case template:
		d.PersistConns.Add(-1)
	case active:
		d.ActiveConns.Add(-1)
	default:
		d.InactConns.Add(-1)
	}
	l, u := d.lThresh.Load(), d.uThresh.Load()
	switch {
	case l != 0:
		if d.total() < int64(l) {
			d.overload.Store(false)
		}
	case u != 0:
		if d.total()*4 < int64(u)*3 {
			d.overload.Store(false)
		}
	default:
		d.overload.Store(false)
	}
}

// SetActive moves one connection between InActConn and ActiveConn when its
// TCP state changes activity (tcp_state_active_table).
func (d *Dest) SetActive(active bool) {
	if active {
		d.InactConns.Add(-1)
		d.ActiveConns.Add(1)
	} else {
		d.ActiveConns.Add(-1)
		d.InactConns.Add(1)
	}
}

func (d *Dest) total() int64 {
	return int64(d.ActiveConns.Load()) + int64(d.InactConns.Load())
}

// Service is a live virtual service.
//
// Config and Sched belong to the control plane, which changes them under
// the Table's lock and then calls Publish; the data path reads the published
// copy through State, never the fields themselves.
type Service struct {
	Config ServiceConfig
	// Sched is the service's scheduler, set when the service is created or
	// its scheduler changes (control plane only).
	Sched Scheduler
	state atomic.Pointer[ServiceState]
	// Stats are the service's traffic counters, one slot per worker.
	// Nothing but the workers writes them; -Z moves a baseline (Counts).
	Stats Counters
	// dests is the immutable snapshot of the destination list in IPVS list
	// order: the most recently added first (list_add_rcu at the head).
	dests  atomic.Pointer[[]*Dest]
	zeroed zeroState
}

// ServiceState is the published, immutable view of a service's
// configuration and scheduler that workers read.
type ServiceState struct {
	Config ServiceConfig
	Sched  Scheduler
}

// NewService makes a live service with no destinations.
func NewService(c ServiceConfig) *Service {
	s := &Service{Config: c}
	empty := []*Dest{}
	s.dests.Store(&empty)
	s.Publish()
	return s
}

// State is the published configuration and scheduler (data path).
func (s *Service) State() *ServiceState { return s.state.Load() }

// Publish makes the current Config and Sched visible to the data path.
func (s *Service) Publish() { s.state.Store(&ServiceState{Config: s.Config, Sched: s.Sched}) }

// Dests is the current destination snapshot, newest first. Callers must not
// modify it.
func (s *Service) Dests() []*Dest { return *s.dests.Load() }

// SetDests publishes a new destination snapshot (control plane only).
func (s *Service) SetDests(d []*Dest) { s.dests.Store(&d) }

// Flow is what a scheduler may look at in the first packet of a new
// connection. Addresses are the packet's own (client source, VIP destination).
type Flow struct {
	Proto   Protocol
	SrcAddr netip.Addr
	DstAddr netip.Addr
	SrcPort uint16
	DstPort uint16
}

// Scheduler picks a destination for a new connection. Implementations live
// in package scheduler.
//
// Schedule is called concurrently by every worker and must not allocate; it
// returns nil when no destination is available. Update is called by the
// control plane (never concurrently with itself) after the service's
// destinations, their weights or the service flags change, so the scheduler
// can rebuild derived state (wrr sequence, sh/dh/mh tables).
type Scheduler interface {
	Name() string
	Schedule(svc *Service, f *Flow) *Dest
	Update(svc *Service)
}
