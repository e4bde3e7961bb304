// Package keepalived reads the LVS part of a keepalived.conf the way
// keepalived's checker process reads it, and gives the typed configuration
// gvsd runs: virtual services (as ipvs.ServiceConfig), their real servers
// (ipvs.DestConfig) with health-check settings, checkers, quorum,
// hysteresis, sorry servers, notify scripts and the global IPVS timeouts.
//
// Every default and normalisation keepalived applies (check_data.c
// validate_check_config, check_parser.c, check_api.c and the checkers'
// parsers) is applied here and reported with keepalived's wording, each
// with the severity that decides the exit code of keepalived --config-test
// (see ExitCode). Blocks that are not LVS (vrrp_*, static_*, bfd_instance
// ...) are skipped with one notice each.
//
// WriteSave renders what keepalived would program into IPVS as
// "ipvsadm -S -n" lines.
//
// gvs extensions, which keepalived itself rejects as unknown keywords:
//
//   - rise N (virtual_server, real_server or checker): consecutive
//     successes a failed checker needs before it counts as up again
//     (keepalived: always 1, the default here).
//   - slowstart TIMER (virtual_server or real_server): when a real server
//     comes back, ramp its weight up over this time (default 0: none).
package keepalived

import (
	"net/netip"
	"time"

	"gvs/ipvs"
)

// Defaults keepalived applies.
const (
	DefaultDelayLoop      = 60 * time.Second // KEEPALIVED_DEFAULT_DELAY
	DefaultConnectTimeout = 5 * time.Second  // alloc_vs connection_to
	DefaultRetry          = 1                // queue_checker default_retry
	DefaultDNSRetry       = 3                // DNS_DEFAULT_RETRY
	DefaultMiscRetry      = 0                // MISC_CHECK default_retry
	DefaultRetryDelay     = 1 * time.Second  // queue_checker default_delay_before_retry
	DefaultHTTPRetryDelay = 3 * time.Second  // HTTP_GET / SSL_GET
	BootstrapDelay        = 1 * time.Second  // first check: BOOTSTRAP_DELAY + rand(warmup)
	DefaultPersistTimeout = ipvs.DefaultPersistTimeout
)

// Config is an imported keepalived.conf.
type Config struct {
	Global Global
	// Groups are the virtual_server_group blocks, by name.
	Groups map[string]*Group
	// VirtualServers are the virtual_server blocks that survived validation,
	// in file order (the order keepalived programs them).
	VirtualServers []*VirtualServer
	// SSL is the top-level SSL block used by SSL_GET (nil when absent).
	SSL *SSL
	// Diags are keepalived's messages about the configuration, in the order
	// keepalived gives them (parsing, then validation).
	Diags []Diagnostic
}

// ExitCode is the exit status of keepalived --config-test for this
// configuration.
func (c *Config) ExitCode() int { return ExitCode(c.Diags) }

// Global holds the global_defs keys that concern LVS.
type Global struct {
	RouterID string
	// Timeouts is lvs_timeouts; a zero field was not given (IPVS keeps its
	// current value, as with ipvsadm --set 0).
	Timeouts    ipvs.Timeouts
	HasTimeouts bool
	Flush       bool   // lvs_flush: clear IPVS at start
	FlushOnStop string // lvs_flush_on_stop: "" (delete our entries), "full" or "VS"
	NotifyFIFO  string // lvs_notify_fifo (or notify_fifo)
	// ScriptSecurity is enable_script_security; ScriptUser is script_user.
	ScriptSecurity bool
	ScriptUser     string
	// SyncDaemon is the lvs_sync_daemon line's arguments as written.
	SyncDaemon []string
}

// Group is a virtual_server_group.
type Group struct {
	Pos     Pos
	Name    string
	Entries []GroupEntry
}

// GroupEntry is one line of a virtual_server_group: an address range with
// a port, or a firewall mark.
type GroupEntry struct {
	Pos    Pos
	First  netip.Addr // first address of the range (both ends included)
	Last   netip.Addr // == First for a single address
	Port   uint16
	FWMark uint32 // non-zero for a "fwmark N" entry
	// Family is "inet", "inet6" or "" for a fwmark entry.
	Family string
	IsMark bool
}

// Script is a notify or check script: the command line as written (quotes
// removed) and the user and group to run it as ("" = script_user).
type Script struct {
	Cmd   string
	User  string
	Group string
}

// Timing is a checker's schedule (§2.1 of OPS.md).
type Timing struct {
	DelayLoop        time.Duration
	ConnectTimeout   time.Duration
	Retry            int // failures tolerated before DOWN: fall = Retry+1
	DelayBeforeRetry time.Duration
	Warmup           time.Duration
	Rise             int // gvs extension; keepalived behaves as 1
}

// VirtualServer is one virtual_server block.
type VirtualServer struct {
	Pos Pos
	// Exactly one of Group, FWMark or Addr selects the service.
	Group  string
	FWMark uint32
	Addr   netip.Addr
	Port   uint16

	// Service is the service configuration shared by every IPVS service
	// this block creates: Proto, Scheduler, Flags, Timeout, Netmask, PE.
	// Its ServiceKey is the block's own (zero for a group).
	Service ipvs.ServiceConfig
	// Method is the default forwarding method of its real servers.
	Method   ipvs.Method
	TunType  ipvs.TunType
	TunPort  uint16
	TunFlags ipvs.TunFlags

	Alpha, Omega, HASuspend, Inhibit bool
	Quorum, Hysteresis               uint32
	QuorumUp, QuorumDown             *Script
	Sorry                            *RealServer // sorry_server, nil when none
	VirtualHost                      string
	Slowstart                        time.Duration // gvs extension
	DelayLoop                        time.Duration
	RealServers                      []*RealServer

	// Values as given, before inheritance (-1 / 0 when absent).
	weight           int
	retry            int
	connectTimeout   time.Duration
	delayBeforeRetry time.Duration
	warmup           time.Duration
	rise             int
	methodSet        bool
	af               int // 0 unknown, 4, 6
}

// Name is keepalived's FMT_VS for the service: "[1.2.3.4]:tcp:80",
// "FWM 1" or "[GROUP]:0".
func (vs *VirtualServer) Name() string {
	switch {
	case vs.Group != "":
		return "[" + vs.Group + "]:0"
	case vs.FWMark != 0:
		return "FWM " + uitoa(uint64(vs.FWMark))
	}
	return trio(vs.Addr, vs.Service.Proto, vs.Port)
}

// RealServer is a real_server block (or a sorry_server).
type RealServer struct {
	Pos Pos
	// Dest is what is programmed: address, port (normalised as keepalived
	// does), method, weight, thresholds and tunnel options.
	Dest ipvs.DestConfig
	// PortGiven is false when the real server line had no port.
	PortGiven bool

	Alpha, Inhibit       bool
	NotifyUp, NotifyDown *Script
	VirtualHost          string
	Slowstart            time.Duration // gvs extension
	Checkers             []*Checker

	// Values as given, before inheritance.
	weight         int
	alpha, inhibit int // -1 unset
	timingGiven
	slowstart time.Duration
	methodSet bool
}

// timingGiven is the checker timing a real_server or a checker block
// gives, before inheritance (-1 when absent).
type timingGiven struct {
	retry            int
	delayLoop        time.Duration
	connectTimeout   time.Duration
	delayBeforeRetry time.Duration
	warmup           time.Duration
	rise             int
}

// noTiming is a timingGiven with nothing given.
var noTiming = timingGiven{retry: -1, delayLoop: -1, connectTimeout: -1, delayBeforeRetry: -1, warmup: -1, rise: -1}

// CheckerKind names a checker block.
type CheckerKind string

// Checker kinds keepalived has.
const (
	TCPCheck  CheckerKind = "TCP_CHECK"
	HTTPGet   CheckerKind = "HTTP_GET"
	SSLGet    CheckerKind = "SSL_GET"
	UDPCheck  CheckerKind = "UDP_CHECK"
	DNSCheck  CheckerKind = "DNS_CHECK"
	PingCheck CheckerKind = "PING_CHECK"
	MiscCheck CheckerKind = "MISC_CHECK"
	SMTPCheck CheckerKind = "SMTP_CHECK"
	FileCheck CheckerKind = "FILE_CHECK"
	BFDCheck  CheckerKind = "BFD_CHECK"
)

// Checker is one checker of a real server, with every default resolved.
type Checker struct {
	Pos  Pos
	Kind CheckerKind
	Timing
	Alpha          bool
	LogAllFailures bool

	// Connection options (not MISC_CHECK). ConnectIP defaults to the real
	// server's address and ConnectPort to its port.
	ConnectIP   netip.Addr
	ConnectPort uint16
	BindTo      netip.Addr
	BindPort    uint16
	BindIf      string
	FWMark      uint32 // SO_MARK of the probe

	HTTP *HTTPCheckConfig
	DNS  *DNSCheckConfig
	UDP  *UDPCheckConfig
	Misc *MiscCheckConfig

	// Values as given (-1 / negative when absent).
	alpha int
	timingGiven
	defaultRetry int
	defaultDBR   time.Duration // 0: delay_loop
	hasConn      bool
}

// HTTPCheckConfig is the HTTP_GET / SSL_GET part of a checker.
type HTTPCheckConfig struct {
	URLs         []URL
	VirtualHost  string // checker virtualhost, else the RS's, else the VS's
	Protocol     string // "1.0" (default), "1.0C" or "1.1"
	FastRecovery bool
	EnableSNI    bool
	SNIName      string
	TLSCompliant bool
}

// URL is one url block.
type URL struct {
	Pos          Pos
	Path         string
	Digest       string // lower-case hex MD5 of the body, "" when not checked
	StatusCodes  []StatusRange
	VirtualHost  string
	Regex        string
	RegexNoMatch bool
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Min, Max int }

// DNSCheckConfig is the DNS_CHECK part of a checker.
type DNSCheckConfig struct {
	Type string // A NS CNAME SOA MX TXT AAAA; SOA by default
	Name string // "" = the root
}

// UDPCheckConfig is the UDP_CHECK part of a checker.
type UDPCheckConfig struct {
	Payload        []byte // nil: random
	RequireReply   bool
	Reply          []byte
	MinReplyLength int
	MaxReplyLength int
}

// MiscCheckConfig is the MISC_CHECK part of a checker.
type MiscCheckConfig struct {
	Script  Script
	Timeout time.Duration // 0: the checker's delay_loop
	Dynamic bool
}

// SSL is the top-level SSL block.
type SSL struct {
	Password, CA, Certificate, Key string
}
