package control

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gvs/conntrack"
	"gvs/health"
	"gvs/ipvs"
	"gvs/ipvsadm"
)

// Cred is the identity of a caller, as SO_PEERCRED reports it for a
// control-socket peer.
type Cred struct {
	UID uint32
	GID uint32
	PID int32
}

// MaxStdin bounds the rules an -R (or ipvsadm-restore) request may carry.
const MaxStdin = 16 << 20

// Exit statuses Engine.Run uses besides ipvs's.
const (
	// ExitInit is ipvsadm's status when it cannot initialise IPVS
	// (fail(2, "Can't initialize ipvs: ...")), which is also what a caller
	// without privileges gets.
	ExitInit = 2
	// ExitSaveHelp is ipvsadm-save's status after printing its help.
	ExitSaveHelp = 1
)

// Program names with their own behaviour (the ipvsadm shell wrappers).
const (
	progSave    = "ipvsadm-save"
	progRestore = "ipvsadm-restore"
)

// msgPerm is what ipvsadm prints when run without CAP_NET_ADMIN: libipvs's
// first request (IPVS_CMD_GET_INFO) fails with EPERM, and main reports the
// initialisation failure.
const msgPerm = "Can't initialize ipvs: Permission denied (you must be root)\n" +
	"Are you sure that IP Virtual Server is built in the kernel or as module?"

// Engine executes ipvsadm command lines against gvsd's live state.
//
// Run calls are serialized by the Engine's mutex; the Table and the
// connection table are safe to use concurrently with the data path, so
// Run may be called while workers forward packets. The exported fields
// must be set before the first Run and not changed afterwards.
type Engine struct {
	// Table is the virtual-service table.
	Table *ipvs.Table
	// Conns is the connection table (nil: no connections are listed and
	// the timeouts are the Table's).
	Conns *conntrack.Table
	// Now is the clock, in nanoseconds, the workers use for Conns (nil:
	// the monotonic time since the Engine was made by NewEngine).
	Now func() int64
	// OnChange, when set, is called after every successful change of the
	// state (-A -E -D -C -a -e -d -Z --set -R), with the Engine's mutex
	// held; the daemon updates its kernel filters, ARP and neighbour wants
	// there. An error is reported to the caller (exit status 255), but the
	// change stays applied.
	OnChange func() error
	// AdminGID is a group whose members may use the engine like root
	// (the caller's primary GID as SO_PEERCRED reports it); -1 for none.
	AdminGID int
	// Settings are the sysctls --sysctl lists and sets (nil: --sysctl
	// answers that there are none); see sysctl.go.
	Settings *ipvs.Settings
	// Status, when set, is the health checks' state --status prints (the
	// health engine's Status); see status.go.
	Status func() []health.ServiceStatus
	// Syncd runs the connection sync daemons (nil: --start-daemon and
	// --stop-daemon are refused as unsupported); see syncd.go.
	Syncd SyncDaemons
	// OnReload, when set, re-reads the daemon's configuration (gvsadm
	// --reload and Reload; see reload.go). It is called with the Engine's
	// mutex held and returns the reason a reload failed.
	OnReload func() error

	mu  sync.Mutex // serializes Run
	est estimator
}

// NewEngine makes an Engine over the given tables. now is the conntrack
// clock (nil: a monotonic clock starting at zero). AdminGID is -1.
func NewEngine(t *ipvs.Table, conns *conntrack.Table, now func() int64) *Engine {
	if now == nil {
		start := time.Now()
		now = func() int64 { return int64(time.Since(start)) }
	}
	return &Engine{Table: t, Conns: conns, Now: now, AdminGID: -1}
}

// Allowed reports whether c may use the engine: root, or a member (by
// primary group) of AdminGID.
func (e *Engine) Allowed(c Cred) bool {
	return c.UID == 0 || (e.AdminGID >= 0 && int64(c.GID) == int64(e.AdminGID))
}

// progArgs splits a command line into the program name (the base name of
// argv[0], "ipvsadm" when absent) and its arguments.
func progArgs(argv []string) (string, []string) {
	if len(argv) == 0 || argv[0] == "" {
		return ipvsadm.Program, nil
	}
	return filepath.Base(argv[0]), argv[1:]
}

// Local executes what needs no daemon and no privileges: -h and -v (and
// -h/-v anywhere ipvsadm accepts them as the command), and ipvsadm-save's
// help. argv[0] is the program name. It reports whether the command line
// was handled; if not, nothing was written.
func Local(argv []string, stdout, stderr io.Writer) (code int, handled bool) {
	prog, args := progArgs(argv)
	switch prog {
	case progSave:
		if _, ok := saveArgs(args); !ok {
			fmt.Fprintf(stderr, "%s: Script to save the IPVS table to stdout.\n"+
				"   With the -n option, prints out the table in numeric format.\n", prog)
			return ExitSaveHelp, true
		}
		return 0, false
	case progRestore:
		return 0, false
	}
	c, err := ipvsadm.ParseArgsAs(prog, args)
	if err != nil {
		return 0, false
	}
	switch c.Kind {
	case ipvsadm.CmdHelp:
		_ = ipvsadm.WriteUsage(stdout, prog)
		return ipvsadm.ExitOK, true
	case ipvsadm.CmdVersion:
		_ = ipvsadm.WriteVersion(stdout)
		return ipvsadm.ExitOK, true
	}
	return 0, false
}

// NeedsStdin reports whether the command line reads rules from stdin
// (-R, or the program invoked as ipvsadm-restore). argv[0] is the
// program name.
func NeedsStdin(argv []string) bool {
	kind, ok := commandKind(argv)
	return ok && kind == ipvsadm.CmdRestore
}

// commandKind is the command a command line asks for: CmdRestore for
// ipvsadm-restore and CmdSave for ipvsadm-save whatever their arguments;
// ok is false when the ipvsadm command line does not parse.
func commandKind(argv []string) (kind ipvsadm.CommandKind, ok bool) {
	prog, args := progArgs(argv)
	switch prog {
	case progRestore:
		return ipvsadm.CmdRestore, true
	case progSave:
		return ipvsadm.CmdSave, true
	}
	c, err := ipvsadm.ParseArgsAs(prog, args)
	if err != nil {
		return ipvsadm.CmdNone, false
	}
	return c.Kind, true
}

// changes reports whether a command line asks to change the state (for
// logging; whether it did is in the exit status).
func changes(argv []string) bool {
	kind, ok := commandKind(argv)
	if !ok {
		return false
	}
	switch kind {
	case ipvsadm.CmdList, ipvsadm.CmdSave, ipvsadm.CmdHelp, ipvsadm.CmdVersion:
		return false
	}
	return true
}

// saveArgs is ipvsadm-save's argument loop: -n selects numeric output, any
// other word starting with '-' asks for the help, other words are ignored.
func saveArgs(args []string) (numeric, ok bool) {
	for _, a := range args {
		switch {
		case a == "-n":
			numeric = true
		case strings.HasPrefix(a, "-"):
			return false, false
		}
	}
	return numeric, true
}

// Run executes one command line as ipvsadm 1.31 would against the kernel
// and returns its exit status. argv[0] is the program name: its base name
// appears where ipvsadm prints its own name ("Try `ipvsadm -h' ..."), and
// the names ipvsadm-save and ipvsadm-restore select the behaviour of those
// wrappers (save: "-S [-n]"; restore: "-C" then "-R" from stdin, as one
// atomic batch). stdin is read only by -R. cred is the caller: only root
// (or AdminGID) may do anything but -h and -v.
func (e *Engine) Run(argv []string, stdin io.Reader, cred Cred, stdout, stderr io.Writer) int {
	if code, ok := e.runSysctl(argv, cred, stdout, stderr); ok {
		return code
	}
	if code, ok := e.runReload(argv, cred, stderr); ok {
		return code
	}
	if code, ok := e.runStatus(argv, cred, stdout, stderr); ok {
		return code
	}
	if code, ok := Local(argv, stdout, stderr); ok {
		return code
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.Allowed(cred) {
		fmt.Fprintln(stderr, msgPerm)
		return ExitInit
	}
	prog, args := progArgs(argv)
	switch prog {
	case progSave:
		numeric, _ := saveArgs(args)
		e.save(stdout, numeric)
		return ipvsadm.ExitOK
	case progRestore:
		clear, err := ipvsadm.ParseArgs([]string{"-C"})
		if err != nil {
			return writeErr(stderr, err)
		}
		return e.restore(prog, stdin, []*ipvsadm.Command{clear}, stderr)
	}
	c, err := ipvsadm.ParseArgsAs(prog, args)
	if err != nil {
		return writeErr(stderr, err)
	}
	switch c.Kind {
	case ipvsadm.CmdList:
		return e.list(c, stdout, stderr)
	case ipvsadm.CmdSave:
		e.save(stdout, c.List.Numeric)
		return ipvsadm.ExitOK
	case ipvsadm.CmdRestore:
		return e.restore(prog, stdin, nil, stderr)
	}
	if code, ok := e.runDaemon(c, stderr); ok {
		return code
	}
	return e.apply(prog, []*ipvsadm.Command{c}, stderr)
}

// writeErr prints an error as ipvsadm does (its text, a newline) and
// returns the exit status it carries.
func writeErr(w io.Writer, err error) int {
	var ie *ipvsadm.Error
	if errors.As(err, &ie) {
		fmt.Fprintln(w, ie.Msg)
		return ie.Code
	}
	fmt.Fprintln(w, err)
	return ipvsadm.ExitFailure
}

// apply runs table-changing commands as one batch, then the side effects
// outside the Table (conntrack timeouts) and OnChange. The rate estimators
// learn of -Z and of re-created services from the objects (Zeroed).
func (e *Engine) apply(prog string, cmds []*ipvsadm.Command, stderr io.Writer) int {
	if err := ipvsadm.ApplyAll(e.Table, cmds); err != nil {
		return writeErr(stderr, err)
	}
	for _, c := range cmds {
		switch c.Kind {
		case ipvsadm.CmdSet:
			if e.Conns != nil {
				t := c.Timeouts
				e.Conns.SetTimeouts(time.Duration(t.TCP)*time.Second,
					time.Duration(t.TCPFin)*time.Second, time.Duration(t.UDP)*time.Second)
			}
		}
	}
	if e.OnChange != nil {
		if err := e.OnChange(); err != nil {
			fmt.Fprintf(stderr, "%s: the table was changed, but applying it to the host failed: %v\n", prog, err)
			return ipvsadm.ExitFailure
		}
	}
	return ipvsadm.ExitOK
}

// restore reads rules from stdin and applies prefix plus all of them as one
// atomic batch.
func (e *Engine) restore(prog string, stdin io.Reader, prefix []*ipvsadm.Command, stderr io.Writer) int {
	var data []byte
	if stdin != nil {
		var err error
		data, err = io.ReadAll(io.LimitReader(stdin, MaxStdin+1))
		if err != nil {
			fmt.Fprintf(stderr, "%s: reading rules: %v\n", prog, err)
			return ipvsadm.ExitParse
		}
		if len(data) > MaxStdin {
			fmt.Fprintf(stderr, "%s: rules larger than %d bytes\n", prog, MaxStdin)
			return ipvsadm.ExitParse
		}
	}
	cmds, err := ipvsadm.ParseRules(bytes.NewReader(data))
	if err != nil {
		return writeErr(stderr, err)
	}
	cmds = append(prefix, cmds...)
	if len(cmds) == 0 {
		return ipvsadm.ExitOK
	}
	return e.apply(prog, cmds, stderr)
}

// save prints -S (ipvsadm-save).
func (e *Engine) save(w io.Writer, numeric bool) {
	e.Table.Read(func(svcs []*ipvs.Service) { _ = ipvsadm.WriteSave(w, svcs, numeric) })
}

// list is ipvsadm's CMD_LIST branch: connections, one service, timeouts,
// daemons, or everything.
func (e *Engine) list(c *ipvsadm.Command, stdout, stderr io.Writer) int {
	o := c.List
	switch {
	case o.Connections:
		e.listConns(stdout, o)
	case c.HasService():
		want := c.Service.ServiceKey.Norm()
		found := false
		e.Table.Read(func(svcs []*ipvs.Service) {
			for _, svc := range svcs {
				if svc.Config.ServiceKey.Norm() == want {
					found = true
					_ = ipvsadm.WriteService(stdout, svc, o, e.stats)
					return
				}
			}
		})
		if !found {
			fmt.Fprintln(stderr, "No such service")
			return ipvsadm.ExitList
		}
	case o.Timeout:
		_ = ipvsadm.WriteTimeouts(stdout, e.timeouts())
	case o.Daemon:
		e.listDaemons(stdout)
	default:
		e.Table.Read(func(svcs []*ipvs.Service) { _ = ipvsadm.WriteList(stdout, svcs, o, e.stats) })
	}
	return ipvsadm.ExitOK
}

// timeouts is what -L --timeout prints: the connection table's, which the
// workers use.
func (e *Engine) timeouts() ipvs.Timeouts {
	if e.Conns == nil {
		return e.Table.Timeouts()
	}
	tcp, fin, udp := e.Conns.GetTimeouts()
	return ipvs.Timeouts{TCP: int(tcp / time.Second), TCPFin: int(fin / time.Second), UDP: int(udp / time.Second)}
}

// stats is the ipvsadm.StatsFunc of the listings: the live counters minus
// their baseline (the kernel prints its last estimation's snapshot minus
// the baseline, ip_vs_copy_stats; gvs sums the workers' counters at once),
// and the estimator's rates.
func (e *Engine) stats(svc *ipvs.Service, d *ipvs.Dest) (ipvsadm.Stats, ipvs.Rates) {
	if d != nil {
		return d.Counts(), e.est.destRates(d)
	}
	return svc.Counts(), e.est.svcRates(svc)
}

// listConns prints -Lc from the connection table.
func (e *Engine) listConns(w io.Writer, o ipvsadm.ListOptions) {
	var conns []ipvsadm.ConnInfo
	if e.Conns != nil {
		now := e.Now()
		e.Conns.Walk(now, func(c *conntrack.Conn) { conns = append(conns, connInfo(c, now)) })
	}
	if !o.NoSort {
		slices.SortStableFunc(conns, cmpConnInfo)
	}
	_ = ipvsadm.WriteConns(w, conns, o)
}

// connInfo is one /proc/net/ip_vs_conn line as ipvsadm reads it: the
// remaining time truncated to seconds, and the state name, for templates
// NONE or ASSURED (their client port is already 0, a fwmark template's
// virtual address 0.0.0.<mark> and protocol IP).
func connInfo(c *conntrack.Conn, now int64) ipvsadm.ConnInfo {
	return ipvsadm.ConnInfo{
		Proto:   c.Proto,
		Expire:  uint32(c.Remaining(now) / time.Second),
		State:   c.StateName(),
		Client:  netip.AddrPortFrom(c.CAddr, c.CPort),
		Virtual: netip.AddrPortFrom(c.VAddr, c.VPort),
		Dest:    netip.AddrPortFrom(c.DAddr, c.DPort),
	}
}

func cmpConnInfo(a, b ipvsadm.ConnInfo) int {
	if r := cmp.Compare(a.Proto, b.Proto); r != 0 {
		return r
	}
	if r := a.Client.Compare(b.Client); r != 0 {
		return r
	}
	if r := a.Virtual.Compare(b.Virtual); r != 0 {
		return r
	}
	return a.Dest.Compare(b.Dest)
}
