package ipvs

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
)

// Sysctl names one of IPVS's tunables, the files of /proc/sys/net/ipv4/vs
// (Documentation/networking/ipvs-sysctl.rst). gvs keeps them in Settings
// under the kernel's names, with the kernel's defaults, the kernel's
// validation (the handlers of vs_vars[] in ip_vs_ctl.c, and ip_vs_lblc.c /
// ip_vs_lblcr.c for the cache expirations) and the kernel's output format.
//
// Not offered: debug_level (only in kernels built with CONFIG_IP_VS_DEBUG),
// est_cpulist and est_nice (the kernel's estimator kthreads; gvs's
// estimator is a goroutine of the control plane).
type Sysctl uint8

// The sysctls, in the alphabetical order of their names (the order in
// which sysctl(8) lists /proc/sys/net/ipv4/vs).
const (
	SysAmDroprate Sysctl = iota
	SysAmemthresh
	SysBackupOnly
	SysCacheBypass
	SysConnReuseMode
	SysConntrack
	SysDropEntry
	SysDropPacket
	SysExpireNodestConn
	SysExpireQuiescentTemplate
	SysIgnoreTunneled
	SysLblcExpiration
	SysLblcrExpiration
	SysNatIcmpSend
	SysPmtuDisc
	SysRunEstimation
	SysScheduleIcmp
	SysSecureTCP
	SysSloppySCTP
	SysSloppyTCP
	SysSnatReroute
	SysSyncPersistMode
	SysSyncPorts
	SysSyncQlenMax
	SysSyncRefreshPeriod
	SysSyncRetries
	SysSyncSockSize
	SysSyncThreshold
	SysSyncVersion
	NumSysctls
)

// SysctlPrefix is the sysctl(8) name of the directory of IPVS's sysctls.
const SysctlPrefix = "net.ipv4.vs."

// HZ is the kernel tick rate gvs assumes for the sysctls the kernel keeps
// in jiffies (proc_dointvec_jiffies: lblc_expiration, lblcr_expiration,
// sync_refresh_period). It only bounds their range: a value in seconds is
// accepted when its magnitude is at most INT_MAX/HZ. 1000 is the most common
// CONFIG_HZ of distribution kernels and the strictest bound.
const HZ = 1000

// DefaultSyncQlenMax is sync_qlen_max's default. The kernel's is 1/32 of
// the free buffer pages at namespace creation (nr_free_buffer_pages()/32),
// which depends on the machine; gvs uses the kernel's value for 8 GiB of
// 4 KiB pages (2097152/32).
const DefaultSyncQlenMax = 65536

// handler is the kernel's proc handler of a sysctl, which decides how a
// written value is read and checked.
type handler uint8

const (
	// hInt is proc_dointvec: any int.
	hInt handler = iota
	// hDefense is proc_do_defense_mode: 0..3, else EINVAL; then
	// update_defense_level resolves the automatic modes (1, 2).
	hDefense
	// hMinMax is proc_dointvec_minmax with extra1/extra2: out of
	// [min, max] is EINVAL.
	hMinMax
	// hSyncPorts is proc_do_sync_ports: a power of two >= 1, else EINVAL.
	hSyncPorts
	// hSyncThreshold is proc_do_sync_threshold: two ints (threshold,
	// period); negative, or threshold >= period with period != 0, is
	// EINVAL.
	hSyncThreshold
	// hJiffies is proc_dointvec_jiffies: seconds, any sign, magnitude at
	// most INT_MAX/HZ.
	hJiffies
	// hULong is proc_doulongvec_minmax without bounds: 0..ULONG_MAX,
	// negative is EINVAL.
	hULong
)

// SysctlInfo describes one sysctl.
type SysctlInfo struct {
	Name string
	// Default is the kernel's default; Values is 2 for sync_threshold
	// (threshold, period), else 1. lblc(r)_expiration and
	// sync_refresh_period are in seconds, as their /proc files show them.
	Default [2]int64
	Values  int
	// Acted is false for a setting gvs stores but does not act on yet;
	// NotActed then says why, for the operator who sets it.
	Acted    bool
	NotActed string
	// Meaning is a short description (from ipvs-sysctl.rst).
	Meaning string

	handler  handler
	min, max int64 // hMinMax
}

// ErrInvalidValue is what the kernel's handlers answer (EINVAL) for a
// value they reject; the old value stays.
var ErrInvalidValue = errors.New("invalid argument")

// Reasons for settings gvs does not act on.
const (
	notYet = "not implemented in gvs yet"
)

// sysctls is the table of every sysctl. Defaults are the kernel's
// (ip_vs_control_net_init_sysctl, the DEFAULT_* of ip_vs.h, and
// DEFAULT_EXPIRATION of ip_vs_lblc.c and ip_vs_lblcr.c).
var sysctls = [NumSysctls]SysctlInfo{
	SysAmDroprate: {Name: "am_droprate", Default: [2]int64{10},
		Meaning: "drop rate of drop_packet's always mode (3)"},
	SysAmemthresh: {Name: "amemthresh", Default: [2]int64{1024},
		Meaning: "free-room threshold of the automatic defense modes, in pages of 32 table slots"},
	SysBackupOnly: {Name: "backup_only",
		Meaning: "disable the director while the sync backup runs"},
	SysCacheBypass: {Name: "cache_bypass", NotActed: "gvs has no route to bypass to",
		Meaning: "forward to the original destination when no cache server is available"},
	SysConnReuseMode: {Name: "conn_reuse_mode", Default: [2]int64{1},
		Meaning: "reschedule a new connection that reuses a closing one's ports (bitmap)"},
	SysConntrack: {Name: "conntrack", NotActed: "gvs does not use netfilter conntrack",
		Meaning: "keep netfilter conntrack entries for IPVS connections"},
	SysDropEntry: {Name: "drop_entry", handler: hDefense,
		Meaning: "randomly drop connection entries (0 off, 1-2 automatic, 3 always)"},
	SysDropPacket: {Name: "drop_packet", handler: hDefense,
		Meaning: "drop 1/rate packets (0 off, 1-2 automatic, 3 always)"},
	SysExpireNodestConn: {Name: "expire_nodest_conn",
		Meaning: "expire a connection whose real server is gone when a packet arrives"},
	SysExpireQuiescentTemplate: {Name: "expire_quiescent_template",
		Meaning: "expire persistence templates of a quiescent (weight 0) real server"},
	SysIgnoreTunneled: {Name: "ignore_tunneled", NotActed: "gvs never sees a decapsulated packet: tunnelled packets are the host's, whose inner packets IPVS would then ignore (as with 1)",
		Meaning: "leave packets of unrecognised protocols (tunnels) alone"},
	SysLblcExpiration: {Name: "lblc_expiration", Default: [2]int64{24 * 60 * 60}, handler: hJiffies,
		Meaning: "idle time (s) after which an lblc cache entry expires"},
	SysLblcrExpiration: {Name: "lblcr_expiration", Default: [2]int64{24 * 60 * 60}, handler: hJiffies,
		Meaning: "idle time (s) after which an lblcr cache entry expires"},
	SysNatIcmpSend: {Name: "nat_icmp_send",
		Meaning: "send ICMP unreachable for NAT replies without a connection"},
	SysPmtuDisc: {Name: "pmtu_disc", Default: [2]int64{1},
		Meaning: "reject DF packets exceeding the PMTU (0: fragment them for TUN)"},
	SysRunEstimation: {Name: "run_estimation", Default: [2]int64{1},
		Meaning: "run the rate estimator"},
	SysScheduleIcmp: {Name: "schedule_icmp",
		Meaning: "schedule ICMP errors that match no connection"},
	SysSecureTCP: {Name: "secure_tcp", handler: hDefense,
		Meaning: "use the secure TCP state table (0 off, 1-2 automatic, 3 always)"},
	SysSloppySCTP: {Name: "sloppy_sctp", NotActed: "gvs does not balance SCTP",
		Meaning: "create SCTP connections from any chunk, not only INIT"},
	SysSloppyTCP: {Name: "sloppy_tcp",
		Meaning: "create TCP connections from any non-RST segment, not only SYN"},
	SysSnatReroute: {Name: "snat_reroute", Default: [2]int64{1}, NotActed: "gvs routes replies by its own table, not the host's",
		Meaning: "route SNATed replies as if they came from the director"},
	SysSyncPersistMode: {Name: "sync_persist_mode",
		Meaning: "sync only templates for persistent services"},
	SysSyncPorts: {Name: "sync_ports", Default: [2]int64{1}, handler: hSyncPorts, NotActed: "gvs runs one sync daemon per role (port 8848 only)",
		Meaning: "number of sync threads (a power of two)"},
	SysSyncQlenMax: {Name: "sync_qlen_max", Default: [2]int64{DefaultSyncQlenMax}, handler: hULong,
		Meaning: "hard limit of queued sync messages"},
	SysSyncRefreshPeriod: {Name: "sync_refresh_period", handler: hJiffies,
		Meaning: "timer difference (s) that triggers a new sync message"},
	SysSyncRetries: {Name: "sync_retries", handler: hMinMax, min: 0, max: 3,
		Meaning: "sync retries (0-3)"},
	SysSyncSockSize: {Name: "sync_sock_size", NotActed: "the sync sockets keep the system default buffer sizes",
		Meaning: "SNDBUF/RCVBUF of the sync sockets (0: system default)"},
	SysSyncThreshold: {Name: "sync_threshold", Default: [2]int64{3, 50}, Values: 2, handler: hSyncThreshold,
		Meaning: "sync a connection at this many packets modulo the period"},
	SysSyncVersion: {Name: "sync_version", Default: [2]int64{1}, handler: hMinMax, min: 0, max: 1,
		Meaning: "sync protocol version (0 or 1)"},
}

func init() {
	for i := range sysctls {
		s := &sysctls[i]
		if s.Values == 0 {
			s.Values = 1
		}
		s.Acted = s.NotActed == ""
	}
}

// Info describes sysctl k.
func (k Sysctl) Info() *SysctlInfo { return &sysctls[k] }

// String is the sysctl's kernel name.
func (k Sysctl) String() string { return sysctls[k].Name }

// LookupSysctl finds a sysctl by its kernel name ("secure_tcp"); the
// sysctl(8) forms "net.ipv4.vs.secure_tcp" and "net/ipv4/vs/secure_tcp"
// are accepted too.
func LookupSysctl(name string) (Sysctl, bool) {
	name = strings.TrimPrefix(name, SysctlPrefix)
	name = strings.TrimPrefix(name, "net/ipv4/vs/")
	for i := range sysctls {
		if sysctls[i].Name == name {
			return Sysctl(i), true
		}
	}
	return 0, false
}

// Settings holds the current value of every sysctl. The zero value is not
// ready: use NewSettings. Reads are single atomic loads, cheap enough for
// the data path's rare branches; writes come from the control plane, one
// at a time (the caller serializes Set).
//
// Each sysctl is one atomic word. A two-valued one (sync_threshold, two
// ints) keeps both values packed in its word (pack2), so that a reader
// never sees half of a write: the new threshold with the old period.
type Settings struct {
	v [NumSysctls]atomic.Int64
	// hooks run after a value changed (under no lock: set them before
	// the Settings are shared).
	hooks []func(Sysctl)
}

// pack2 packs the two int32 values of a two-valued sysctl into one word
// (check has bounded them to int32).
func pack2(v [2]int64) int64 {
	return int64(uint64(uint32(int32(v[0])))<<32 | uint64(uint32(int32(v[1]))))
}

// unpack2 is the inverse of pack2.
func unpack2(w int64) [2]int64 { return [2]int64{int64(int32(w >> 32)), int64(int32(w))} }

// word is what sysctl k's atomic word holds for the value v.
func word(k Sysctl, v [2]int64) int64 {
	if sysctls[k].Values == 2 {
		return pack2(v)
	}
	return v[0]
}

// NewSettings returns settings at the kernel's defaults.
func NewSettings() *Settings {
	s := &Settings{}
	for i := range sysctls {
		s.v[i].Store(word(Sysctl(i), sysctls[i].Default))
	}
	return s
}

// Get returns sysctl k's (first) value. sync_qlen_max is an unsigned long:
// read it with GetUint.
func (s *Settings) Get(k Sysctl) int64 {
	w := s.v[k].Load()
	if sysctls[k].Values == 2 {
		return unpack2(w)[0]
	}
	return w
}

// GetUint returns sync_qlen_max (an unsigned long in the kernel).
func (s *Settings) GetUint(k Sysctl) uint64 { return uint64(s.v[k].Load()) }

// Get2 returns both values of a two-valued sysctl (sync_threshold), from
// one load: always a pair some Set stored. A one-valued sysctl's second
// value is 0.
func (s *Settings) Get2(k Sysctl) [2]int64 {
	w := s.v[k].Load()
	if sysctls[k].Values == 2 {
		return unpack2(w)
	}
	return [2]int64{w, 0}
}

// Set changes sysctl k after checking the value as the kernel's handler
// does; an invalid value is ErrInvalidValue and changes nothing.
// sync_threshold takes both values; the other sysctls use v[0]. The change
// hooks run after the store; for the defense modes (drop_entry,
// drop_packet, secure_tcp) only when the value changed, as
// proc_do_defense_mode runs update_defense_level only then (that hook,
// conntrack.Defense, may then rewrite 1 as 2 or 2 as 1 by the table's
// free room).
func (s *Settings) Set(k Sysctl, v [2]int64) error {
	v, err := check(k, v)
	if err != nil {
		return err
	}
	w := word(k, v)
	old := s.v[k].Swap(w)
	if sysctls[k].handler == hDefense && old == w {
		return nil
	}
	for _, h := range s.hooks {
		h(k)
	}
	return nil
}

// SetText parses text as written to k's /proc file and sets it.
func (s *Settings) SetText(k Sysctl, text string) error {
	v, err := ParseValue(k, text, s.Get2(k))
	if err != nil {
		return err
	}
	return s.Set(k, v)
}

// check validates v for k and returns what the kernel stores.
func check(k Sysctl, v [2]int64) ([2]int64, error) {
	info := &sysctls[k]
	if info.Values == 1 {
		v[1] = 0
	}
	inInt := func(x int64) bool { return x >= math.MinInt32 && x <= math.MaxInt32 }
	switch info.handler {
	case hULong:
		// Any uint64, held in the int64's bits.
		return v, nil
	case hJiffies:
		if v[0] < -math.MaxInt32/HZ || v[0] > math.MaxInt32/HZ {
			return v, ErrInvalidValue
		}
		return v, nil
	}
	if !inInt(v[0]) || !inInt(v[1]) {
		return v, ErrInvalidValue
	}
	switch info.handler {
	case hDefense:
		if v[0] < 0 || v[0] > 3 {
			return v, ErrInvalidValue
		}
	case hMinMax:
		if v[0] < info.min || v[0] > info.max {
			return v, ErrInvalidValue
		}
	case hSyncPorts:
		if v[0] < 1 || v[0]&(v[0]-1) != 0 {
			return v, ErrInvalidValue
		}
	case hSyncThreshold:
		if v[0] < 0 || v[1] < 0 || (v[0] >= v[1] && v[1] != 0) {
			return v, ErrInvalidValue
		}
	}
	return v, nil
}

// Rewrite sets k to new if it still holds old, without checks or change
// hooks: update_defense_level's rewrites of the automatic modes (1 <-> 2),
// which lose to a write that came in meanwhile. k must be one-valued.
func (s *Settings) Rewrite(k Sysctl, old, new int64) {
	if old != new && sysctls[k].Values == 1 {
		s.v[k].CompareAndSwap(old, new)
	}
}

// OnChange registers fn to run after every Set. Not safe to call once the
// Settings are in use.
func (s *Settings) OnChange(fn func(Sysctl)) { s.hooks = append(s.hooks, fn) }

// Format prints k's value as the kernel's /proc file does (without the
// newline; tab-separated for two values).
func (s *Settings) Format(k Sysctl) string {
	switch {
	case sysctls[k].Values == 2:
		v := s.Get2(k)
		return strconv.FormatInt(v[0], 10) + "\t" + strconv.FormatInt(v[1], 10)
	case sysctls[k].handler == hULong:
		return strconv.FormatUint(s.GetUint(k), 10)
	}
	return strconv.FormatInt(s.Get(k), 10)
}

// ParseValue reads a value for k as the kernel reads a write to its /proc
// file (proc_get_long): integers separated by blanks, each an optional '-'
// then digits in C notation (0x hex, leading 0 octal, else decimal); an int
// sysctl takes -2^31..2^31-1, sync_qlen_max 0..2^64-1. A vector sysctl
// (sync_threshold) may be given fewer values than it has: the others keep
// their value from cur, as the kernel's write does. More values than the
// sysctl has, no value at all, or anything else is ErrInvalidValue (the
// kernel would ignore the surplus; gvs refuses it).
func ParseValue(k Sysctl, text string, cur [2]int64) ([2]int64, error) {
	v := cur
	f := strings.FieldsFunc(text, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' })
	if len(f) == 0 || len(f) > sysctls[k].Values {
		return v, ErrInvalidValue
	}
	for i, w := range f {
		neg := strings.HasPrefix(w, "-")
		if neg {
			w = w[1:]
		}
		if w == "" || w[0] < '0' || w[0] > '9' {
			return v, ErrInvalidValue
		}
		base := 10
		switch {
		case len(w) > 1 && (w[1] == 'x' || w[1] == 'X') && w[0] == '0':
			base, w = 16, w[2:]
		case len(w) > 1 && w[0] == '0':
			base, w = 8, w[1:]
		}
		n, err := strconv.ParseUint(w, base, 64)
		if err != nil {
			return v, ErrInvalidValue
		}
		if sysctls[k].handler == hULong {
			if neg && n != 0 {
				return v, ErrInvalidValue
			}
			v[i] = int64(n)
			continue
		}
		switch {
		case !neg && n <= math.MaxInt32:
			v[i] = int64(n)
		case neg && n <= math.MaxInt32+1:
			v[i] = -int64(n)
		default:
			return v, ErrInvalidValue
		}
	}
	return v, nil
}

// Notice is what an operator who sets k to its current value should be
// told, or "" when gvs acts on it as the kernel does: a setting gvs only
// stores, or a mode of it gvs does not implement.
func (s *Settings) Notice(k Sysctl) string {
	info := &sysctls[k]
	name := SysctlPrefix + info.Name
	if !info.Acted {
		return "gvs: " + name + " is stored but not acted on yet: " + info.NotActed
	}
	return ""
}
