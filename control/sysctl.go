package control

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"gvs/conntrack"
	"gvs/ipvs"
	"gvs/scheduler"
)

// The --sysctl extension (ipvsadm has no such option): IPVS's
// /proc/sys/net/ipv4/vs tunables, which gvs keeps in an ipvs.Settings,
// read and written with sysctl(8)'s output and error texts.
//
//	--sysctl               every sysctl, "net.ipv4.vs.NAME = VALUE" per line
//	--sysctl NAME          one of them (NAME or net.ipv4.vs.NAME)
//	--sysctl NAME=VALUE    set one (root or AdminGID), echoed as sysctl -w does
//
// Reading needs no privileges (the /proc files are world-readable).

// OptSysctl is the option that selects the sysctl extension.
const OptSysctl = "--sysctl"

// Exit statuses of --sysctl: sysctl(8)'s.
const (
	exitSysctlFail  = 1 // EXIT_FAILURE: unknown key, invalid value, no permission
	exitSysctlUsage = 2 // a command line --sysctl does not take
)

// sysctlMu serializes writes to any Settings (their change hooks, and
// sync_threshold's two values).
var sysctlMu sync.Mutex

// sysctlArgs reports whether argv is a --sysctl command and returns its
// operands.
func sysctlArgs(argv []string) ([]string, bool) {
	prog, args := progArgs(argv)
	if prog == progSave || prog == progRestore || len(args) == 0 {
		return nil, false
	}
	switch {
	case args[0] == OptSysctl:
		return args[1:], true
	case strings.HasPrefix(args[0], OptSysctl+"="):
		return append([]string{strings.TrimPrefix(args[0], OptSysctl+"=")}, args[1:]...), true
	}
	return nil, false
}

// runSysctl executes a --sysctl command line; handled is false for any
// other command line.
func (e *Engine) runSysctl(argv []string, cred Cred, stdout, stderr io.Writer) (code int, handled bool) {
	ops, ok := sysctlArgs(argv)
	if !ok {
		return 0, false
	}
	prog, _ := progArgs(argv)
	s := e.Settings
	switch {
	case len(ops) > 1:
		fmt.Fprintf(stderr, "%s: %s takes at most one NAME or NAME=VALUE\n", prog, OptSysctl)
		return exitSysctlUsage, true
	case s == nil:
		fmt.Fprintf(stderr, "%s: %s: this daemon has no sysctl settings\n", prog, OptSysctl)
		return exitSysctlFail, true
	case len(ops) == 0:
		for k := ipvs.Sysctl(0); k < ipvs.NumSysctls; k++ {
			fmt.Fprintf(stdout, "%s%s = %s\n", ipvs.SysctlPrefix, k, s.Format(k))
		}
		return 0, true
	}
	op := ops[0]
	name, value, set := strings.Cut(op, "=")
	name = strings.TrimSpace(name)
	if set && name == "" {
		fmt.Fprintf(stderr, "sysctl: malformed setting \"%s\"\n", op)
		return exitSysctlFail, true
	}
	k, ok := ipvs.LookupSysctl(name)
	if !ok {
		fmt.Fprintf(stderr, "sysctl: cannot stat %s: No such file or directory\n", procPath(name))
		return exitSysctlFail, true
	}
	key := ipvs.SysctlPrefix + k.String()
	if !set {
		fmt.Fprintf(stdout, "%s = %s\n", key, s.Format(k))
		return 0, true
	}
	if !e.Allowed(cred) {
		fmt.Fprintf(stderr, "sysctl: permission denied on key \"%s\"\n", key)
		return exitSysctlFail, true
	}
	value = strings.TrimSpace(value)
	sysctlMu.Lock()
	err := s.SetText(k, value)
	notice := s.Notice(k)
	sysctlMu.Unlock()
	if err != nil {
		fmt.Fprintf(stderr, "sysctl: setting key \"%s\": Invalid argument\n", key)
		return exitSysctlFail, true
	}
	fmt.Fprintf(stdout, "%s = %s\n", key, value)
	if notice != "" {
		fmt.Fprintln(stderr, notice)
	}
	return 0, true
}

// procPath is the /proc/sys file sysctl(8) would look for: a dotted or
// slashed name is a full key, a bare one is taken under net.ipv4.vs.
func procPath(name string) string {
	if !strings.ContainsAny(name, "./") {
		return "/proc/sys/net/ipv4/vs/" + name
	}
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

// SetSysctl sets one sysctl from a "NAME=VALUE" text (NAME or
// net.ipv4.vs.NAME) outside the engine, as gvsd does for its --sysctl
// flags and --sysctl-file. It returns the notice for a setting gvs does not
// act on ("" if none) or an error in one line.
func SetSysctl(s *ipvs.Settings, assignment string) (notice string, err error) {
	name, value, ok := strings.Cut(assignment, "=")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || name == "" {
		return "", fmt.Errorf("%q must be of the form name=value", assignment)
	}
	k, found := ipvs.LookupSysctl(name)
	if !found {
		return "", fmt.Errorf("unknown sysctl %q (no %s)", name, procPath(name))
	}
	sysctlMu.Lock()
	defer sysctlMu.Unlock()
	if err := s.SetText(k, value); err != nil {
		return "", fmt.Errorf("%s%s = %q: invalid argument", ipvs.SysctlPrefix, k, value)
	}
	return s.Notice(k), nil
}

// BindSettings makes the sysctls gvs acts on outside the forwarder take
// effect: the defenses (drop_entry, drop_packet, secure_tcp, amemthresh,
// am_droprate; see conntrack.Defense) and expire_quiescent_template on
// conns, lblc_expiration and lblcr_expiration on the caches of table's lblc
// and lblcr schedulers (new ones get them from SchedulerFactory). The
// current values are applied at once. Call it before s is shared: it
// registers change hooks. conns or table may be nil.
//
// It returns conns' defense, whose Tick the caller runs every second
// (IPVS's defense_work_handler), or nil when conns is nil.
func BindSettings(s *ipvs.Settings, conns *conntrack.Table, table *ipvs.Table) *conntrack.Defense {
	var def *conntrack.Defense
	if conns != nil {
		def = conntrack.NewDefense(conns, s)
	}
	apply := func(k ipvs.Sysctl) {
		switch k {
		case ipvs.SysSecureTCP, ipvs.SysDropEntry, ipvs.SysDropPacket:
			// proc_do_defense_mode: update_defense_level after a
			// change (amemthresh and am_droprate wait for the tick).
			if def != nil {
				def.Update()
			}
		case ipvs.SysExpireQuiescentTemplate:
			if conns != nil {
				conns.SetExpireQuiescentTemplate(s.Get(k) != 0)
			}
		case ipvs.SysLblcExpiration, ipvs.SysLblcrExpiration:
			if table != nil {
				name := strings.TrimSuffix(k.String(), "_expiration")
				d := cacheExpiration(s.Get(k))
				table.Read(func(svcs []*ipvs.Service) {
					for _, svc := range svcs {
						if es, ok := svc.Sched.(scheduler.ExpirationSetter); ok && svc.Sched.Name() == name {
							es.SetExpiration(d)
						}
					}
				})
			}
		}
	}
	for _, k := range []ipvs.Sysctl{ipvs.SysSecureTCP, ipvs.SysExpireQuiescentTemplate,
		ipvs.SysLblcExpiration, ipvs.SysLblcrExpiration} {
		apply(k)
	}
	s.OnChange(apply)
	return def
}

// SchedulerFactory wraps a scheduler constructor (scheduler.New) so that
// the lblc and lblcr schedulers it makes start with s's lblc_expiration /
// lblcr_expiration.
func SchedulerFactory(s *ipvs.Settings, base func(name string, flags ipvs.SvcFlags) (ipvs.Scheduler, error)) func(name string, flags ipvs.SvcFlags) (ipvs.Scheduler, error) {
	return func(name string, flags ipvs.SvcFlags) (ipvs.Scheduler, error) {
		sc, err := base(name, flags)
		if err != nil {
			return sc, err
		}
		if es, ok := sc.(scheduler.ExpirationSetter); ok {
			switch sc.Name() {
			case "lblc":
				es.SetExpiration(cacheExpiration(s.Get(ipvs.SysLblcExpiration)))
			case "lblcr":
				es.SetExpiration(cacheExpiration(s.Get(ipvs.SysLblcrExpiration)))
			}
		}
		return sc, nil
	}
}

// cacheExpiration is an lblc(r)_expiration value (seconds) as a cache
// expiration. The kernel drops entries idle for longer at its periodic
// sweep; 0 or a negative value makes every entry expire there. gvs
// expires lazily, so such a value means an entry is never reused once idle.
func cacheExpiration(sec int64) time.Duration {
	if sec <= 0 {
		return time.Nanosecond
	}
	return time.Duration(sec) * time.Second
}
