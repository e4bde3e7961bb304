package ipvs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
)

// Sysctl names one of IPVS's tunables, the files of /proc/sys/net/ipv4/vs
// (Documentation/networking/ipvs-sysctl.rst). gvs keeps them in Settings
// under the kernel's names, with the kernel's defaults and ranges.
type Sysctl uint8

// The sysctls, in the kernel's alphabetical order of names.
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

// SysctlInfo describes one sysctl.
type SysctlInfo struct {
	Name string
	// Default is the kernel's default; Values is 2 for sync_threshold
	// (threshold, period), else 1.
	Default [2]int64
	Values  int
	// Acted is false for a setting gvs stores but does not act on yet;
	// NotActed then says why, for the operator who sets it.
	Acted    bool
	NotActed string
	// check validates a new value as the kernel's handler does (nil:
	// any int).
	check func(v [2]int64) error
}

var errInval = errors.New("invalid argument")

func rangeCheck(lo, hi int64) func(v [2]int64) error {
	return func(v [2]int64) error {
		if v[0] < lo || v[0] > hi {
			return errInval
		}
		return nil
	}
}

// sysctls is the table of every sysctl. Defaults are the kernel's
// (ip_vs_control_net_init_sysctl and the non-SYSCTL stubs of ip_vs.h).
var sysctls = [NumSysctls]SysctlInfo{
	SysAmDroprate:              {Name: "am_droprate", Default: [2]int64{10}},
	SysAmemthresh:              {Name: "amemthresh", Default: [2]int64{1024}},
	SysBackupOnly:              {Name: "backup_only"},
	SysCacheBypass:             {Name: "cache_bypass", NotActed: "gvs has no local route to bypass to"},
	SysConnReuseMode:           {Name: "conn_reuse_mode", Default: [2]int64{1}},
	SysConntrack:               {Name: "conntrack", NotActed: "gvs does not use netfilter conntrack"},
	SysDropEntry:               {Name: "drop_entry", check: rangeCheck(0, 3)},
	SysDropPacket:              {Name: "drop_packet", check: rangeCheck(0, 3)},
	SysExpireNodestConn:        {Name: "expire_nodest_conn"},
	SysExpireQuiescentTemplate: {Name: "expire_quiescent_template"},
	SysIgnoreTunneled:          {Name: "ignore_tunneled"},
	SysLblcExpiration:          {Name: "lblc_expiration", Default: [2]int64{24 * 60 * 60}},
	SysLblcrExpiration:         {Name: "lblcr_expiration", Default: [2]int64{24 * 60 * 60}},
	SysNatIcmpSend:             {Name: "nat_icmp_send"},
	SysPmtuDisc:                {Name: "pmtu_disc", Default: [2]int64{1}},
	SysRunEstimation:           {Name: "run_estimation", Default: [2]int64{1}},
	SysScheduleIcmp:            {Name: "schedule_icmp"},
	SysSecureTCP:               {Name: "secure_tcp", check: rangeCheck(0, 3)},
	SysSloppySCTP:              {Name: "sloppy_sctp", NotActed: "gvs does not balance SCTP"},
	SysSloppyTCP:               {Name: "sloppy_tcp"},
	SysSnatReroute:             {Name: "snat_reroute", Default: [2]int64{1}},
	SysSyncPersistMode:         {Name: "sync_persist_mode"},
	SysSyncPorts:               {Name: "sync_ports", Default: [2]int64{1}},
	SysSyncQlenMax:             {Name: "sync_qlen_max", Default: [2]int64{65536}},
	SysSyncRefreshPeriod:       {Name: "sync_refresh_period"},
	SysSyncRetries:             {Name: "sync_retries", check: rangeCheck(0, 3)},
	SysSyncSockSize:            {Name: "sync_sock_size"},
	SysSyncThreshold:           {Name: "sync_threshold", Default: [2]int64{3, 50}, Values: 2},
	SysSyncVersion:             {Name: "sync_version", Default: [2]int64{1}, check: rangeCheck(0, 1)},
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

// LookupSysctl finds a sysctl by its kernel name.
func LookupSysctl(name string) (Sysctl, bool) {
	for i := range sysctls {
		if sysctls[i].Name == name {
			return Sysctl(i), true
		}
	}
	return 0, false
}

// Settings holds the current value of every sysctl. The zero value is not
// ready: use NewSettings. Reads are single atomic loads, cheap enough for
// the data path's rare branches; writes come from the control plane.
type Settings struct {
	v [NumSysctls][2]atomic.Int64
	// hooks run after a value changed (under no lock: set them before
	// the Settings are shared).
	hooks []func(Sysctl)
}

// NewSettings returns settings at the kernel's defaults.
func NewSettings() *Settings {
	s := &Settings{}
	for i := range sysctls {
		s.v[i][0].Store(sysctls[i].Default[0])
		s.v[i][1].Store(sysctls[i].Default[1])
	}
	return s
}

// Get returns sysctl k's (first) value.
func (s *Settings) Get(k Sysctl) int64 { return s.v[k][0].Load() }

// Get2 returns both values of a two-valued sysctl (sync_threshold).
func (s *Settings) Get2(k Sysctl) [2]int64 {
	return [2]int64{s.v[k][0].Load(), s.v[k][1].Load()}
}

// Set changes sysctl k after checking the value as the kernel does; an
// invalid value changes nothing.
func (s *Settings) Set(k Sysctl, v [2]int64) error {
	if c := sysctls[k].check; c != nil {
		if err := c(v); err != nil {
			return err
		}
	}
	s.v[k][0].Store(v[0])
	s.v[k][1].Store(v[1])
	for _, h := range s.hooks {
		h(k)
	}
	return nil
}

// OnChange registers fn to run after every Set. Not safe to call once the
// Settings are in use.
func (s *Settings) OnChange(fn func(Sysctl)) { s.hooks = append(s.hooks, fn) }

// Format prints k's value as the kernel's /proc file does (tab-separated
// for two values).
func (s *Settings) Format(k Sysctl) string {
	if sysctls[k].Values == 2 {
		v := s.Get2(k)
		return fmt.Sprintf("%d\t%d", v[0], v[1])
	}
	return strconv.FormatInt(s.Get(k), 10)
}

// ParseValue reads a value for k as written to its /proc file (space or
// tab separated integers).
func ParseValue(k Sysctl, text string) ([2]int64, error) {
	var v [2]int64
	f := strings.Fields(text)
	if len(f) != sysctls[k].Values {
		return v, errInval
	}
	for i, w := range f {
		n, err := strconv.ParseInt(w, 10, 32)
		if err != nil {
			return v, errInval
		}
		v[i] = n
	}
	return v, nil
}
