package health

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// IP protocol numbers used in a ServiceRef.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// ServiceRef names a virtual service: by address (Proto, Addr, Port) or by firewall mark.
// Group, when set, is the keepalived virtual_server_group name (used for log wording only).
type ServiceRef struct {
	Proto  uint8
	Addr   netip.Addr
	Port   uint16
	FWMark uint32
	Group  string
}

// String formats the service as keepalived's FMT_VS: "[198.51.100.10]:tcp:80", "FWM 5" or
// "[group]:80".
func (s ServiceRef) String() string {
	switch {
	case s.Group != "":
		return fmt.Sprintf("[%s]:%d", s.Group, s.Port)
	case s.FWMark != 0:
		return fmt.Sprintf("FWM %d", s.FWMark)
	}
	return trio(s.Addr, s.Proto, s.Port)
}

// DestRef names a real (or sorry) server of a service.
type DestRef struct {
	Addr netip.Addr
	Port uint16
}

// format gives keepalived's FMT_RS: the address with the service's protocol.
func (d DestRef) format(svc ServiceRef) string { return trio(d.Addr, svc.Proto, d.Port) }

func trio(a netip.Addr, proto uint8, port uint16) string {
	p := "?"
	switch proto {
	case ProtoTCP:
		p = "tcp"
	case ProtoUDP:
		p = "udp"
	case ProtoSCTP:
		p = "sctp"
	case 0:
		p = "none"
	}
	return fmt.Sprintf("[%s]:%s:%d", a.WithZone(""), p, port)
}

// Applier changes the IPVS model. The engine calls it only with changes (a destination's
// presence or weight differing from what it last applied successfully); an error leaves the
// engine's idea of the applied state unchanged, so the change is retried at the next
// reconciliation of that service. The engine assumes the destinations it manages are absent
// when Start is called.
type Applier interface {
	// SetDest adds (present, with weight), re-weights, or deletes (!present) a real server.
	SetDest(svc ServiceRef, dest DestRef, present bool, weight int) error
	// SetSorry does the same for the service's sorry server.
	SetSorry(svc ServiceRef, dest DestRef, present bool, weight int) error
}

// Script is a notify or quorum script: an argv run without gvsd's capabilities.
type Script struct {
	Argv []string
	// UID/GID to run as when User is set (keepalived's script_user); otherwise the script runs
	// with gvsd's uid but with every capability dropped.
	User     bool
	UID, GID uint32
}

// ScriptRunner runs notify and quorum scripts. Run must not block the caller for long:
// keepalived runs them asynchronously.
type ScriptRunner interface {
	Run(s Script)
}

// Kind is a checker type, with keepalived's keyword as its name.
type Kind string

// Checker kinds.
const (
	KindTCP  Kind = "TCP_CHECK"
	KindHTTP Kind = "HTTP_GET"
	KindSSL  Kind = "SSL_GET"
	KindUDP  Kind = "UDP_CHECK"
	KindDNS  Kind = "DNS_CHECK"
	KindPing Kind = "PING_CHECK"
	KindMisc Kind = "MISC_CHECK"
)

// Probe performs one check. Steps is the number of steps a check walks (HTTP_GET/SSL_GET: one
// per url; every other kind: 1); Check performs step i and must honour ctx (cancelled on Stop)
// and its own connect timeout.
type Probe interface {
	Kind() Kind
	Steps() int
	Check(ctx context.Context, step int) Result
}

// Result is a probe's outcome. Err nil means success.
type Result struct {
	Err error
	// HasWeight marks a MISC_CHECK with misc_dynamic that exited 2..255: Weight = exit - 2.
	HasWeight bool
	Weight    int
	// Exit describes how a MISC_CHECK script ended, for keepalived's log line.
	Exit *ScriptExit
}

// ScriptExit is how a MISC_CHECK script ended.
type ScriptExit struct {
	Code     int  // exit status, when it exited
	Signal   int  // terminating signal, when killed by one
	TimedOut bool // killed because misc_timeout passed
	Path     string
}

// CheckerConfig is one checker of a real server. Zero durations are taken as keepalived's
// defaults by the caller, not here (delay_loop 0 would poll continuously): the keepalived
// importer fills them in (see docs/OPS.md §1.3).
type CheckerConfig struct {
	Probe            Probe
	DelayLoop        time.Duration
	DelayBeforeRetry time.Duration
	Retry            int           // fall = Retry+1 consecutive failures
	Warmup           time.Duration // first check after 1 s + uniform random [0, Warmup]
	Alpha            bool          // start down
	Rise             int           // successes needed to come up when down (gvs; default 1)
	FastRecovery     bool          // HTTP_GET/SSL_GET fast_recovery
	LogAllFailures   bool          // log_all_failures
}

// RealConfig is a real server of a virtual service.
type RealConfig struct {
	Dest       DestRef
	Weight     int
	Inhibit    bool // inhibit_on_failure: weight 0 instead of deletion
	NotifyUp   *Script
	NotifyDown *Script
	// Slowstart ramps the weight linearly from 1 back to Weight over this long after the real
	// server recovers (or is undrained); 0 disables it (gvs extension, as HAProxy's slowstart).
	Slowstart time.Duration
	Checkers  []CheckerConfig
}

// SorryConfig is a virtual service's sorry_server.
type SorryConfig struct {
	Dest    DestRef
	Weight  int  // keepalived: 1
	Inhibit bool // sorry_server_inhibit
}

// ServiceConfig is a virtual service and its health-checked real servers.
type ServiceConfig struct {
	Ref        ServiceRef
	Quorum     int // weight units; keepalived default 1
	Hysteresis int
	QuorumUp   *Script
	QuorumDown *Script
	Omega      bool // run notify_down/quorum_down at shutdown too
	Sorry      *SorryConfig
	Reals      []RealConfig
}

// BootstrapDelay is keepalived's BOOTSTRAP_DELAY: the first check runs this long after start
// plus a random part of warmup.
const BootstrapDelay = time.Second
