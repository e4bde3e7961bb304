package keepalived

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gvs/ipvs"
)

// Options adjusts how a configuration is read.
type Options struct {
	// ConfigID is keepalived's -i config id for "@id" lines (keepalived's
	// default is the first part of the host name).
	ConfigID string
}

// Load reads the keepalived configuration file path and what it includes.
// The returned Config is never nil; Config.ExitCode tells whether
// keepalived would run it. err is set only when the file itself cannot be
// read (exit code ExitFatal).
func Load(path string, o Options) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return &Config{Diags: []Diagnostic{{Severity: Fatal, Msg: "Unable to find configuration file " + path}}}, err
	}
	name := strings.TrimPrefix(filepath.ToSlash(abs), "/")
	return LoadFS(os.DirFS("/"), name, func(n string) string { return "/" + n }, o)
}

// LoadFS reads the configuration file name inside fsys; absolute include
// paths are taken relative to the root of fsys. display turns a path in
// fsys into the file name diagnostics show (nil: as is).
func LoadFS(fsys fs.FS, name string, display func(string) string, o Options) (*Config, error) {
	if display == nil {
		display = func(s string) string { return s }
	}
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		c := &Config{Groups: map[string]*Group{}}
		c.Diags = append(c.Diags, Diagnostic{Severity: Fatal, Msg: "Unable to find configuration file " + display(name)})
		return c, err
	}
	r := &reader{fsys: fsys, display: display, configID: o.ConfigID}
	r.readFile(name, data)
	return interpret(r), nil
}

// Parse reads a configuration held in memory; include lines resolve in
// fsys (nil: includes match nothing).
func Parse(name string, data []byte, fsys fs.FS, o Options) *Config {
	if fsys == nil {
		fsys = emptyFS{}
	}
	r := &reader{fsys: fsys, display: func(s string) string { return s }, configID: o.ConfigID}
	r.readFile(name, data)
	return interpret(r)
}

type emptyFS struct{}

func (emptyFS) Open(string) (fs.File, error) { return nil, fs.ErrNotExist }

// errAbort stops parsing after a missing parameter.
var errAbort = errors.New("keepalived: missing parameter")

type parser struct {
	cfg *Config
	r   *reader
	pos Pos
}

func interpret(r *reader) *Config {
	nodes := r.tree()
	p := &parser{cfg: &Config{Groups: map[string]*Group{}}, r: r}
	p.cfg.Diags = r.diags
	r.diags = nil
	func() {
		defer func() {
			if e := recover(); e != nil {
				if e != errAbort {
					panic(e)
				}
			}
		}()
		p.top(nodes)
	}()
	if ExitCode(p.cfg.Diags) != ExitAbort {
		p.validate()
	}
	return p.cfg
}

func (p *parser) report(pos Pos, sev Severity, format string, a ...any) {
	if len(a) == 0 {
		p.cfg.Diags = append(p.cfg.Diags, Diagnostic{Pos: pos, Severity: sev, Msg: format})
		return
	}
	p.cfg.Diags = append(p.cfg.Diags, Diagnostic{Pos: pos, Severity: sev, Msg: fmt.Sprintf(format, a...)})
}

// errorf reports a CONFIG_GENERAL_ERROR at the current statement.
func (p *parser) errorf(format string, a ...any) { p.report(p.pos, FixedUp, format, a...) }

// notice logs at the current statement without making it an error.
func (p *parser) notice(format string, a ...any) { p.report(p.pos, Notice, format, a...) }

// arg returns word i of n, or stops as keepalived's null_strvec does.
func (p *parser) arg(n *node, i int) string {
	if i < len(n.words) {
		return n.words[i]
	}
	if i > 0 && i-1 < len(n.words) {
		p.report(n.pos, Abort, "*** Configuration line starting `%s` is missing a parameter after keyword `%s` at word position %d", n.words[0], n.words[i-1], i+1)
	} else {
		p.report(n.pos, Abort, "*** Configuration line starting `%s` is missing a parameter at word position %d", n.words[0], i+1)
	}
	panic(errAbort)
}

// unsigned is read_unsigned_strvec as --config-test runs it: any problem
// is reported (CONFIG_INVALID_NUMBER) and the value refused.
func (p *parser) unsigned(n *node, i int, min, max uint64) (uint64, bool) {
	return p.unsignedStr(p.arg(n, i), min, max)
}

func (p *parser) unsignedStr(s string, min, max uint64) (uint64, bool) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	switch {
	case strings.HasPrefix(t, "-"):
		p.errorf("negative number '%s'", s)
		return 0, false
	}
	v, err := strconv.ParseUint(t, 10, 64)
	switch {
	case err != nil && errors.Is(err, strconv.ErrRange):
		p.errorf("number '%s' outside unsigned integer range", s)
		return 0, false
	case err != nil || t == "":
		p.errorf("invalid number '%s'", s)
		return 0, false
	case v > math.MaxUint32:
		p.errorf("number '%s' outside unsigned integer range", s)
		return 0, false
	case v < min || v > max:
		p.errorf("number '%s' outside range [%d, %d]", s, min, max)
		return 0, false
	}
	return v, true
}

// timer is read_timer: seconds with up to six decimals (µs resolution);
// min and max are in µs (max 0: no limit).
func (p *parser) timer(n *node, i int, minUS, maxUS uint64) (time.Duration, bool) {
	s := p.arg(n, i)
	if maxUS == 0 {
		maxUS = math.MaxUint64 - 1
	}
	if strings.HasPrefix(s, "-") {
		p.errorf("negative number '%s'", s)
		return 0, false
	}
	ip, fp, _ := strings.Cut(s, ".")
	round := false
	if len(fp) > 6 {
		p.errorf("number '%s' has too many decimal places", s)
		round = fp[6] >= '5'
		fp = fp[:6]
	}
	digits := ip + fp + strings.Repeat("0", 6-len(fp))
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || ip == "" && fp == "" {
		if err != nil && errors.Is(err, strconv.ErrRange) {
			p.errorf("number '%s' outside unsigned decimal range", s)
		} else {
			p.errorf("invalid number '%s'", s)
		}
		return 0, false
	}
	if round {
		v++
	}
	if v < minUS || v > maxUS {
		p.errorf("number '%s' outside range [%d.%06d, %d.%06d]", s, minUS/1e6, minUS%1e6, maxUS/1e6, maxUS%1e6)
		return 0, false
	}
	if v > math.MaxInt64/1000 {
		v = math.MaxInt64 / 1000
	}
	return time.Duration(v) * time.Microsecond, true
}

// boolArg is an optional BOOL argument (check_true_false); a bare keyword
// is true.
func (p *parser) boolArg(n *node, what string) (bool, bool) {
	if len(n.words) < 2 {
		return true, true
	}
	switch n.words[1] {
	case "true", "on", "yes":
		return true, true
	case "false", "off", "no":
		return false, true
	}
	p.errorf("Invalid %s parameter %s", what, n.words[1])
	return false, false
}

// setUnsigned stores word 1 of s in *dst when it is a number in [min, max];
// otherwise it reports format (word 1 first, then a) and leaves *dst as it
// was.
func setUnsigned[T ~int | ~uint16 | ~uint32](p *parser, s *node, min, max uint64, dst *T, format string, a ...any) {
	if v, ok := p.unsigned(s, 1, min, max); ok {
		*dst = T(v)
		return
	}
	p.errorf(format, append([]any{s.words[1]}, a...)...)
}

// setTimer is setUnsigned for a timer (min and max in µs as timer takes
// them).
func (p *parser) setTimer(s *node, minUS, maxUS uint64, dst *time.Duration, format string) {
	if d, ok := p.timer(s, 1, minUS, maxUS); ok {
		*dst = d
		return
	}
	p.errorf(format, s.words[1])
}

// Top-level keywords keepalived knows that are not LVS: their blocks are
// skipped with one notice each.
var otherRoots = map[string]bool{
	"vrrp_instance": true, "vrrp_sync_group": true, "vrrp_script": true,
	"vrrp_track_file": true, "vrrp_track_process": true, "track_file": true,
	"track_group": true, "static_ipaddress": true, "static_routes": true,
	"static_rules": true, "bfd_instance": true, "garp_group": true,
	"linkbeat_interfaces": true, "interface_up_down_delays": true,
	"net_namespace": true, "net_namespace_ipvs": true, "namespace_with_ipsets": true,
	"use_pid_dir": true, "instance": true, "child_wait_time": true,
	"linkbeat_use_polling": true,
}

func (p *parser) top(nodes []*node) {
	for _, n := range nodes {
		p.pos = n.pos
		kw := n.words[0]
		switch {
		case kw == "global_defs":
			p.globalDefs(n)
		case kw == "virtual_server_group":
			p.vsGroup(n)
		case kw == "virtual_server":
			p.virtualServer(n)
		case kw == "SSL":
			p.ssl(n)
		case otherRoots[kw]:
			if n.hasBlock {
				p.notice("gvs: skipping %s block (not LVS)", kw)
			} else {
				p.notice("gvs: skipping %s (not LVS)", kw)
			}
		default:
			p.unknown(n)
		}
	}
}

// unknown reports an unknown keyword. keepalived would then read a block
// following it as if its contents were at this level; gvs skips it.
func (p *parser) unknown(n *node) {
	p.report(n.pos, FixedUp, "Unknown keyword '%s'", n.words[0])
}

// needBlock reports a block keyword without its '{'.
func (p *parser) needBlock(n *node) {
	if !n.hasBlock {
		p.report(n.pos, FixedUp, "Missing '{' at beginning of configuration block")
	}
}

func (p *parser) globalDefs(n *node) {
	p.needBlock(n)
	g := &p.cfg.Global
	for _, s := range n.block {
		p.pos = s.pos
		switch s.words[0] {
		case "router_id":
			g.RouterID = p.arg(s, 1)
		case "lvs_timeouts":
			p.lvsTimeouts(s)
		case "lvs_flush":
			g.Flush = true
		case "lvs_flush_on_stop", "lvs_flush_onstop":
			switch {
			case len(s.words) == 1:
				g.FlushOnStop = "full"
			case s.words[1] == "VS":
				g.FlushOnStop = "VS"
			default:
				p.errorf("Unknown lvs_flush_on_stop type %s", s.words[1])
			}
		case "lvs_notify_fifo":
			g.NotifyFIFO = p.arg(s, 1)
		case "enable_script_security":
			g.ScriptSecurity = true
		case "script_user":
			g.ScriptUser = p.arg(s, 1)
		case "lvs_sync_daemon":
			g.SyncDaemon = append([]string(nil), s.words[1:]...)
			p.notice("gvs: lvs_sync_daemon recorded, not run")
		default:
			// Every other global_defs key belongs to VRRP, SMTP, SNMP,
			// D-Bus or process control: recorded nowhere.
			if s.hasBlock {
				p.notice("gvs: skipping global_defs %s block", s.words[0])
			}
		}
	}
}

func (p *parser) lvsTimeouts(s *node) {
	g := &p.cfg.Global
	if len(s.words) < 3 {
		p.errorf("lvs_timeouts requires at least one option")
		return
	}
	for i := 1; i < len(s.words); i++ {
		w := s.words[i]
		var dst *int
		switch w {
		case "tcp":
			dst = &g.Timeouts.TCP
		case "tcpfin":
			dst = &g.Timeouts.TCPFin
		case "udp":
			dst = &g.Timeouts.UDP
		default:
			p.errorf("Unknown option %s specified for lvs_timeouts", w)
			continue
		}
		if i == len(s.words)-1 {
			p.errorf("No value specified for lvs_timeout %s - ignoring", w)
			continue
		}
		if v, ok := p.unsigned(s, i+1, 0, 86400*31); ok {
			*dst = int(v)
			g.HasTimeouts = true
		} else {
			p.errorf("Invalid lvs_timeout %s (%s) - ignoring", w, s.words[i+1])
		}
		i++
	}
}

func (p *parser) ssl(n *node) {
	if p.cfg.SSL != nil {
		p.errorf("SSL context already specified - replacing")
	}
	p.needBlock(n)
	ssl := &SSL{}
	p.cfg.SSL = ssl
	for _, s := range n.block {
		p.pos = s.pos
		var dst *string
		var what string
		switch s.words[0] {
		case "password":
			dst, what = &ssl.Password, "password"
		case "ca":
			dst, what = &ssl.CA, "cafile"
		case "certificate":
			dst, what = &ssl.Certificate, "certfile"
		case "key":
			dst, what = &ssl.Key, "keyfile"
		default:
			p.unknown(s)
			continue
		}
		if len(s.words) < 2 {
			p.errorf("SSL %s missing", what)
			continue
		}
		*dst = s.words[1]
	}
}

// parseAddr is inet_stosockaddr's address part: anything after '-' or '/'
// is dropped.
func parseAddr(s string) (netip.Addr, bool) {
	if i := strings.IndexAny(s, "-/"); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// addrPort is inet_stosockaddr with alloc_vs/alloc_rs's treatment of the
// port: a port of all zeros is the same as none.
func (p *parser) addrPort(ip, port string) (netip.Addr, uint16, bool, bool) {
	a, ok := parseAddr(ip)
	given := port != "" && strings.Trim(port, "0") != ""
	var pn uint64
	if given {
		v, okp := p.unsignedStr(port, 1, 65535)
		if !okp {
			return a, 0, false, false
		}
		pn = v
	}
	return a, uint16(pn), given, ok
}

func (p *parser) vsGroup(n *node) {
	name := p.arg(n, 1)
	p.needBlock(n)
	g := &Group{Pos: n.pos, Name: name}
	var have4, have6, fwmNoFamily bool
	for _, s := range n.block {
		p.pos = s.pos
		e, ok := p.vsgEntry(g, s)
		if !ok {
			continue
		}
		if e.IsMark {
			switch e.Family {
			case "inet":
				have4 = true
			case "inet6":
				have6 = true
			default:
				fwmNoFamily = true
			}
		} else if e.First.Is4() {
			have4 = true
		} else {
			have6 = true
		}
		g.Entries = append(g.Entries, e)
	}
	p.pos = n.end
	switch {
	case len(g.Entries) == 0:
		p.errorf("virtual server group %s has no entries - removing", name)
		return
	case have4 && have6 && fwmNoFamily:
		p.errorf("virtual server group %s cannot have IPv4, IPv6 and fwmark without family - removing", name)
		return
	}
	p.cfg.Groups[name] = g
}

func (p *parser) vsgEntry(g *Group, s *node) (GroupEntry, bool) {
	e := GroupEntry{Pos: s.pos}
	first := s.words[0]
	if first == "fwmark" {
		v, ok := p.unsigned(s, 1, 0, math.MaxUint32)
		if !ok {
			p.errorf("(%s): fwmark '%s' must be in [0, %d] - ignoring", g.Name, s.arg(1), uint32(math.MaxUint32))
			return e, false
		}
		if len(s.words) > 2 {
			switch s.words[2] {
			case "inet", "inet6":
				e.Family = s.words[2]
			default:
				p.errorf("(%s): fwmark '%d' family %s unknown - ignoring", g.Name, v, s.words[2])
				return e, false
			}
		}
		if v == 0 {
			// keepalived accepts it; IPVS has no service for mark 0.
			p.errorf("gvs: (%s): fwmark 0 cannot be programmed - ignoring", g.Name)
			return e, false
		}
		e.FWMark, e.IsMark = uint32(v), true
		return e, true
	}
	port := ""
	if len(s.words) >= 2 {
		port = s.words[1]
	}
	a, pn, given, ok := p.addrPort(first, port)
	if !ok {
		if given {
			p.errorf("Invalid virtual server group IP address %s /port/%s - skipping", first, port)
		} else {
			p.errorf("Invalid virtual server group IP address %s  - skipping", first)
		}
		return e, false
	}
	e.First, e.Last, e.Port = a, a, pn
	bitsLen := a.BitLen()
	switch {
	case strings.Contains(first, "/"):
		ms := first[strings.IndexByte(first, '/')+1:]
		m, err := strconv.ParseUint(ms, 10, 32)
		if err != nil || m == 0 || int(m) > bitsLen {
			p.errorf("Invalid netmask - %s - skipping", first)
			return e, false
		}
		pfx := netip.PrefixFrom(a, int(m))
		if pfx.Masked().Addr() != a {
			p.errorf("Address mask bits not empty - %s - skipping", first)
			return e, false
		}
		e.Last = lastAddr(pfx)
	case strings.Contains(first, "-"):
		endStr := first[strings.IndexByte(first, '-')+1:]
		if a.Is4() && strings.Contains(endStr, ".") || a.Is6() && strings.Contains(endStr, ":") {
			end, ok := parseAddr(endStr)
			if !ok {
				p.errorf("Invalid range end %s - skipping", first)
				return e, false
			}
			if end.Is4() != a.Is4() {
				p.errorf("Range address families do not match %s - skipping", first)
				return e, false
			}
			if end.Less(a) {
				p.errorf("Address range end is less than address range start - %s - skipping", first)
				return e, false
			}
			e.Last = end
			break
		}
		// "a.b.c.d-e": e replaces the last byte (IPv4) or the last 16
		// bits, in hex (IPv6).
		base := 10
		limit := uint64(255)
		if a.Is6() {
			base, limit = 16, 0xffff
		}
		v, err := strconv.ParseUint(endStr, base, 32)
		if err != nil || v > limit {
			p.errorf("Invalid range end %s - skipping", first)
			return e, false
		}
		b := a.AsSlice()
		var start uint64
		if a.Is4() {
			start = uint64(b[3])
			b[3] = byte(v)
		} else {
			start = uint64(b[14])<<8 | uint64(b[15])
			b[14], b[15] = byte(v>>8), byte(v)
		}
		if start >= v {
			p.errorf("Address range end is not greater than address range start - %s - skipping", first)
			return e, false
		}
		e.Last, _ = netip.AddrFromSlice(b)
	}
	if rangeSize(e.First, e.Last) > maxRange {
		p.report(s.pos, Fatal, "gvs: address range %s has more than %d addresses", first, maxRange)
		return e, false
	}
	return e, true
}

// maxRange bounds the services one group entry may create.
const maxRange = 65536

// rangeSize is the number of addresses from a to b (saturating).
func rangeSize(a, b netip.Addr) uint64 {
	x, y := a.As16(), b.As16()
	var n uint64
	for i := 0; i < 16; i++ {
		d := int(y[i]) - int(x[i])
		if n > 1<<40 {
			return math.MaxUint64
		}
		n = n*256 + uint64(d)
	}
	return n + 1
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

var schedulers = map[string]bool{
	"rr": true, "wrr": true, "lc": true, "wlc": true, "lblc": true, "sh": true,
	"mh": true, "dh": true, "fo": true, "ovf": true, "lblcr": true, "sed": true,
	"nq": true, "twos": true,
}

func newVS() *VirtualServer {
	return &VirtualServer{
		Quorum: 1, DelayLoop: DefaultDelayLoop, weight: 1, retry: -1,
		connectTimeout: DefaultConnectTimeout, delayBeforeRetry: -1, warmup: -1,
		rise: -1, Service: ipvs.ServiceConfig{Netmask: -1},
	}
}

func (p *parser) virtualServer(n *node) {
	vs := newVS()
	vs.Pos = n.pos
	sel := p.arg(n, 1)
	switch sel {
	case "group":
		vs.Group = p.arg(n, 2)
	case "fwmark":
		v, ok := p.unsigned(n, 2, 0, math.MaxUint32)
		if !ok {
			p.errorf("virtual server fwmark '%s' must be in [0, %d] - ignoring", n.words[2], uint32(math.MaxUint32))
			return
		}
		if v == 0 {
			p.errorf("gvs: virtual server fwmark 0 cannot be programmed - ignoring")
			return
		}
		vs.FWMark = uint32(v)
	default:
		port := ""
		if len(n.words) >= 3 {
			port = n.words[2]
		}
		a, pn, given, ok := p.addrPort(sel, port)
		if !ok {
			if given {
				p.errorf("Invalid virtual server IP address/port %s/%s - skipping", sel, port)
			} else {
				p.errorf("Invalid virtual server IP address %s - skipping", sel)
			}
			return
		}
		vs.Addr, vs.Port = a, pn
		vs.af = afOf(a)
	}
	p.needBlock(n)
	for _, s := range n.block {
		p.pos = s.pos
		p.vsStatement(vs, s)
	}
	p.pos = n.end
	p.vsEnd(vs)
}

func afOf(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func (p *parser) vsStatement(vs *VirtualServer, s *node) {
	switch kw := s.words[0]; kw {
	case "ip_family":
		af := 0
		switch p.arg(s, 1) {
		case "inet":
			af = 4
		case "inet6":
			af = 6
		default:
			p.errorf("unknown address family %s", s.words[1])
			return
		}
		if vs.af != 0 && vs.af != af {
			p.errorf("Virtual server specified family %s conflicts with server family", s.words[1])
			return
		}
		vs.af = af
	case "retry":
		setUnsigned(p, s, 1, math.MaxUint32, &vs.retry, "retry value invalid - %s")
	case "delay_before_retry":
		p.setTimer(s, 0, 0, &vs.delayBeforeRetry, "virtual server delay before retry '%s' invalid - ignoring")
	case "warmup":
		p.setTimer(s, 0, 0, &vs.warmup, "virtual server warmup '%s' invalid - ignoring")
	case "connect_timeout":
		p.setTimer(s, 1, math.MaxUint32, &vs.connectTimeout, "virtual server connect_timeout %s invalid - ignoring")
	case "delay_loop":
		p.setTimer(s, 1, 0, &vs.DelayLoop, "virtual server delay loop '%s' invalid - ignoring")
	case "inhibit_on_failure":
		vs.Inhibit = true
	case "lb_algo", "lvs_sched":
		name := p.arg(s, 1)
		if !schedulers[name] {
			p.errorf("Invalid lvs_scheduler '%s' - ignoring", name)
			return
		}
		vs.Service.Scheduler = name
	case "hashed":
		// A legacy no-op.
	case "ops":
		vs.Service.Flags |= ipvs.SvcOnePacket
	case "flag-1":
		vs.Service.Flags |= ipvs.SvcSched1
	case "flag-2":
		vs.Service.Flags |= ipvs.SvcSched2
	case "flag-3":
		vs.Service.Flags |= ipvs.SvcSched3
	case "sh-port", "sh-fallback", "mh-port", "mh-fallback":
		// lbflags_handler compares with the scheduler set so far; with
		// the other scheduler of the pair the flag is silently dropped.
		switch vs.Service.Scheduler {
		case "sh", "mh":
			if kw == vs.Service.Scheduler+"-port" {
				vs.Service.Flags |= ipvs.SvcSched2
			} else if kw == vs.Service.Scheduler+"-fallback" {
				vs.Service.Flags |= ipvs.SvcSched1
			}
		default:
			p.errorf("%s only applies to sh scheduler - ignoring", kw)
		}
	case "lb_kind", "lvs_method":
		m := methodOf{vs.Method, vs.TunType, vs.TunPort, vs.TunFlags, vs.methodSet}
		p.forwarding(&m, s, "virtual")
		vs.Method, vs.TunType, vs.TunPort, vs.TunFlags, vs.methodSet = m.m, m.tt, m.tp, m.tf, m.set
	case "persistence_engine":
		name := p.arg(s, 1)
		if len(name) > 15 {
			p.errorf("persistence_name too long, truncating - %s", name)
			name = name[:15]
		}
		vs.Service.PE = name
	case "persistence_timeout":
		if len(s.words) < 2 {
			vs.Service.Timeout = ipvs.DefaultPersistTimeout
			return
		}
		if v, ok := p.unsigned(s, 1, 1, 86400*31); ok {
			vs.Service.Timeout = uint32(v)
		} else {
			p.errorf("persistence_timeout invalid")
		}
	case "persistence_granularity":
		p.granularity(vs, s)
	case "protocol":
		switch strings.ToUpper(p.arg(s, 1)) {
		case "TCP":
			vs.Service.Proto = ipvs.ProtoTCP
		case "UDP":
			vs.Service.Proto = ipvs.ProtoUDP
		case "SCTP":
			vs.Service.Proto = ipvs.ProtoSCTP
		default:
			p.errorf("Unknown protocol %s - ignoring", s.words[1])
		}
	case "ha_suspend":
		vs.HASuspend = true
	case "smtp_alert":
		if _, ok := p.boolArg(s, "virtual_server smtp_alert"); ok {
			p.notice("gvs: smtp_alert is not supported - ignored")
		}
	case "virtualhost":
		if len(s.words) < 2 {
			p.errorf("virtual server virtualhost missing")
			return
		}
		vs.VirtualHost = s.words[1]
	case "snmp_name":
		// SNMP is not supported; the name is accepted and unused.
	case "alpha":
		vs.Alpha = true
	case "omega":
		vs.Omega = true
	case "quorum_up", "quorum_down":
		dst := &vs.QuorumUp
		if kw == "quorum_down" {
			dst = &vs.QuorumDown
		}
		if *dst != nil {
			p.errorf("(%s) %s script already specified - ignoring %s", vs.Group, kw, s.arg(1))
			return
		}
		*dst = p.script(s)
	case "quorum":
		v, ok := p.unsigned(s, 1, 1, math.MaxUint32)
		if !ok {
			p.errorf("Quorum %s must be in [1, %d]. Setting to 1.", s.words[1], uint32(math.MaxUint32))
			v = 1
		}
		vs.Quorum = uint32(v)
	case "hysteresis":
		setUnsigned(p, s, 0, math.MaxUint32, &vs.Hysteresis, "Hysteresis %s must be in [0, %d] - ignoring", uint32(math.MaxUint32))
	case "weight":
		setUnsigned(p, s, 1, math.MaxInt32, &vs.weight, "Virtual server weight %s is outside range 1-%d", math.MaxInt32)
	case "sorry_server":
		ip := p.arg(s, 1)
		port := ""
		if len(s.words) >= 3 {
			port = s.words[2]
		}
		a, pn, given, ok := p.addrPort(ip, port)
		if !ok {
			p.errorf("Invalid sorry server IP address %s - skipping", ip)
			return
		}
		vs.Sorry = &RealServer{Pos: s.pos, PortGiven: given, weight: 1, methodSet: vs.methodSet,
			Dest: ipvs.DestConfig{Addr: a, Port: pn, Weight: 1, Method: vs.Method,
				TunType: vs.TunType, TunPort: vs.TunPort, TunFlags: vs.TunFlags}}
	case "sorry_server_inhibit":
		if vs.Sorry == nil {
			p.errorf("Ignoring sorry_server inhibit used before or without sorry_server")
			return
		}
		vs.Sorry.Inhibit = true
	case "sorry_server_lvs_method":
		if vs.Sorry == nil {
			p.errorf("sorry_server forwarding used without sorry_server")
			return
		}
		d := &vs.Sorry.Dest
		m := methodOf{d.Method, d.TunType, d.TunPort, d.TunFlags, vs.Sorry.methodSet}
		p.forwarding(&m, s, "sorry")
		d.Method, d.TunType, d.TunPort, d.TunFlags, vs.Sorry.methodSet = m.m, m.tt, m.tp, m.tf, m.set
	case "real_server":
		p.realServer(vs, s)
	case "rise":
		setUnsigned(p, s, 1, math.MaxInt32, &vs.rise, "gvs: rise %s invalid - ignoring")
	case "slowstart":
		p.setTimer(s, 0, 0, &vs.Slowstart, "gvs: slowstart '%s' invalid - ignoring")
	default:
		p.unknown(s)
	}
}

type methodOf struct {
	m   ipvs.Method
	tt  ipvs.TunType
	tp  uint16
	tf  ipvs.TunFlags
	set bool
}

// forwarding is svr_forwarding_handler.
func (p *parser) forwarding(m *methodOf, s *node, who string) {
	switch str := p.arg(s, 1); str {
	case "NAT":
		m.m = ipvs.Masq
	case "DR":
		m.m = ipvs.Route
	case "TUN":
		m.m = ipvs.Tunnel
	default:
		p.errorf("PARSER : unknown [%s] routing method for %s server.", str, who)
		return
	}
	m.set = true
	tt, port, csum := ipvs.TunIPIP, uint64(0), ipvs.TunNoCsum
	for i := 2; i < len(s.words); i++ {
		switch w := s.words[i]; w {
		case "type":
			if i+1 == len(s.words) {
				p.errorf("Missing tunnel type for %s server.", who)
				return
			}
			switch s.words[i+1] {
			case "ipip":
				tt = ipvs.TunIPIP
			case "gue":
				tt = ipvs.TunGUE
			case "gre":
				tt = ipvs.TunGRE
			default:
				p.errorf("Unknown tunnel type %s for %s server.", s.words[i+1], who)
				return
			}
			i++
		case "port":
			if i+1 == len(s.words) {
				p.errorf("Missing port for %s server gue tunnel.", who)
				return
			}
			v, ok := p.unsigned(s, i+1, 1, 65535)
			if !ok {
				p.errorf("Invalid gue tunnel port %s for %s server.", s.words[i+1], who)
				return
			}
			port = v
			i++
		case "nocsum":
			csum = ipvs.TunNoCsum
		case "csum":
			csum = ipvs.TunCsum
		case "remcsum":
			csum = ipvs.TunRemCsum
		default:
			p.errorf("Invalid tunnel option %s for %s server.", w, who)
			return
		}
	}
	if (tt == ipvs.TunGUE) != (port != 0) {
		p.errorf("gue tunnels require port, otherwise cannot have port.")
		return
	}
	if tt == ipvs.TunIPIP && csum != ipvs.TunNoCsum {
		p.errorf("ipip tunnels do not support checksum option.")
		return
	}
	if tt == ipvs.TunGRE && csum == ipvs.TunRemCsum {
		p.errorf("gre tunnels do not support remote checksum option.")
		return
	}
	m.tt, m.tp, m.tf = tt, uint16(port), csum
}

func (p *parser) granularity(vs *VirtualServer, s *node) {
	str := p.arg(s, 1)
	af := vs.af
	if af == 0 {
		af = 6
		if strings.Contains(str, ".") {
			af = 4
		}
	}
	if af == 6 {
		v, ok := p.unsigned(s, 1, 1, 128)
		if !ok {
			p.errorf("Invalid IPv6 persistence_granularity specified - %s", str)
			return
		}
		vs.Service.Netmask = int(v)
	} else {
		a, err := netip.ParseAddr(str)
		if err != nil || !a.Is4() {
			p.errorf("Invalid IPv4 persistence_granularity specified - %s", str)
			return
		}
		b := a.As4()
		m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		ones := bits.LeadingZeros32(^m)
		if m<<ones != 0 {
			// keepalived and the kernel take any mask; gvs keeps a prefix
			// length.
			p.report(s.pos, Fatal, "gvs: persistence_granularity %s is not a contiguous netmask", str)
			return
		}
		vs.Service.Netmask = ones
	}
	if vs.af == 0 {
		vs.af = af
	}
	if vs.Service.Timeout == 0 {
		vs.Service.Timeout = ipvs.DefaultPersistTimeout
	}
}

// script is a notify/quorum script: the command and an optional user and
// group.
func (p *parser) script(s *node) *Script {
	sc := &Script{Cmd: p.arg(s, 1)}
	if len(s.words) > 2 {
		sc.User = s.words[2]
	}
	if len(s.words) > 3 {
		sc.Group = s.words[3]
	}
	return sc
}

// vsEnd is vs_end_handler.
func (p *parser) vsEnd(vs *VirtualServer) {
	if len(vs.RealServers) == 0 {
		p.errorf("Virtual server %s has no real servers - ignoring", vs.Name())
		return
	}
	if vs.Sorry != nil && vs.Sorry.Dest.Method != ipvs.Tunnel {
		af := afOf(vs.Sorry.Dest.Addr)
		if vs.af == 0 {
			vs.af = af
		} else if vs.af != af {
			p.errorf("Address family of virtual server and sorry server %s don't match - skipping sorry server.", vs.Sorry.Dest.Addr)
			vs.Sorry = nil
		}
	}
	if vs.af == 0 && vs.Group == "" {
		mixed := false
		if vs.Sorry != nil {
			vs.af = afOf(vs.Sorry.Dest.Addr)
		}
		for _, rs := range vs.RealServers {
			if vs.af == 0 {
				vs.af = afOf(rs.Dest.Addr)
			} else if vs.af != afOf(rs.Dest.Addr) {
				mixed = true
				break
			}
		}
		if mixed || vs.af == 0 {
			vs.af = 4
		}
	}
	p.cfg.VirtualServers = append(p.cfg.VirtualServers, vs)
}

func (p *parser) realServer(vs *VirtualServer, n *node) {
	ip := p.arg(n, 1)
	port := ""
	if len(n.words) >= 3 {
		port = n.words[2]
	}
	a, pn, given, ok := p.addrPort(ip, port)
	if !ok {
		p.errorf("Invalid real server ip address/port %s/%s - skipping", ip, port)
		return
	}
	rs := &RealServer{
		Pos: n.pos, PortGiven: given,
		Dest:   ipvs.DestConfig{Addr: a, Port: pn, Method: vs.Method, TunType: vs.TunType, TunPort: vs.TunPort, TunFlags: vs.TunFlags},
		weight: -1, alpha: -1, inhibit: -1, timingGiven: noTiming, slowstart: -1, methodSet: vs.methodSet,
	}
	p.needBlock(n)
	for _, s := range n.block {
		p.pos = s.pos
		p.rsStatement(vs, rs, s)
	}
	p.pos = n.end
	if rs.Dest.Method != ipvs.Tunnel {
		af := afOf(rs.Dest.Addr)
		if vs.af == 0 {
			vs.af = af
		} else if vs.af != af {
			p.errorf("Address family of virtual server and real server %s don't match - skipping real server.", rs.Dest.Addr)
			return
		}
	}
	vs.RealServers = append(vs.RealServers, rs)
}

func (p *parser) rsStatement(vs *VirtualServer, rs *RealServer, s *node) {
	switch kw := s.words[0]; kw {
	case "weight":
		setUnsigned(p, s, 0, math.MaxInt32, &rs.weight, "Real server weight %s is outside range 0-%d", math.MaxInt32)
	case "lvs_method":
		d := &rs.Dest
		m := methodOf{d.Method, d.TunType, d.TunPort, d.TunFlags, rs.methodSet}
		p.forwarding(&m, s, "real")
		d.Method, d.TunType, d.TunPort, d.TunFlags, rs.methodSet = m.m, m.tt, m.tp, m.tf, m.set
	case "uthreshold", "lthreshold":
		v, ok := p.unsigned(s, 1, 0, math.MaxUint32)
		if !ok {
			p.errorf("Invalid real_server %s '%s' - ignoring", kw, s.words[1])
			return
		}
		if kw == "uthreshold" {
			rs.Dest.UThreshold = uint32(v)
		} else {
			rs.Dest.LThreshold = uint32(v)
		}
	case "inhibit_on_failure":
		if v, ok := p.boolArg(s, "inhibit_on_failure"); ok {
			rs.inhibit = b2i(v)
		}
	case "alpha":
		if v, ok := p.boolArg(s, "alpha"); ok {
			rs.alpha = b2i(v)
		}
	case "notify_up", "notify_down":
		dst := &rs.NotifyUp
		if kw == "notify_down" {
			dst = &rs.NotifyDown
		}
		if *dst != nil {
			p.errorf("(%s) %s script already specified - ignoring %s", vs.Group, kw, s.arg(1))
			return
		}
		*dst = p.script(s)
	case "retry":
		setUnsigned(p, s, 1, math.MaxUint32, &rs.retry, "retry value invalid - %s")
	case "delay_before_retry":
		p.setTimer(s, 0, 0, &rs.delayBeforeRetry, "real server delay_before_retry '%s' invalid - ignoring")
	case "warmup":
		p.setTimer(s, 0, 0, &rs.warmup, "real server warmup '%s' invalid - ignoring")
	case "connect_timeout":
		p.setTimer(s, 1, math.MaxUint32, &rs.connectTimeout, "real server connect_timeout %s invalid - ignoring")
	case "delay_loop":
		p.setTimer(s, 1, 0, &rs.delayLoop, "real server delay_loop '%s' invalid - ignoring")
	case "smtp_alert":
		if _, ok := p.boolArg(s, "real_server smtp_alert"); ok {
			p.notice("gvs: smtp_alert is not supported - ignored")
		}
	case "virtualhost":
		if len(s.words) < 2 {
			p.errorf("real server virtualhost missing")
			return
		}
		rs.VirtualHost = s.words[1]
	case "snmp_name":
	case "rise":
		setUnsigned(p, s, 1, math.MaxInt32, &rs.rise, "gvs: rise %s invalid - ignoring")
	case "slowstart":
		p.setTimer(s, 0, 0, &rs.slowstart, "gvs: slowstart '%s' invalid - ignoring")
	case "TCP_CHECK", "HTTP_GET", "SSL_GET", "UDP_CHECK", "DNS_CHECK", "PING_CHECK", "MISC_CHECK", "SMTP_CHECK":
		p.checker(rs, s)
	case "FILE_CHECK", "BFD_CHECK":
		p.report(s.pos, Fatal, "gvs: %s is not supported", kw)
	default:
		p.unknown(s)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (p *parser) checker(rs *RealServer, n *node) {
	kind := CheckerKind(n.words[0])
	c := &Checker{
		Pos: n.pos, Kind: kind, alpha: -1, timingGiven: noTiming,
		defaultRetry: DefaultRetry, defaultDBR: DefaultRetryDelay, hasConn: kind != MiscCheck,
	}
	switch kind {
	case HTTPGet, SSLGet:
		c.defaultDBR = DefaultHTTPRetryDelay
		c.HTTP = &HTTPCheckConfig{Protocol: "1.0"}
	case DNSCheck:
		c.defaultRetry, c.defaultDBR = DefaultDNSRetry, 0
		c.DNS = &DNSCheckConfig{Type: "SOA"}
	case MiscCheck:
		c.defaultRetry = DefaultMiscRetry
		c.Misc = &MiscCheckConfig{}
	case UDPCheck:
		c.UDP = &UDPCheckConfig{MaxReplyLength: 255}
	case SMTPCheck:
		p.report(n.pos, Fatal, "gvs: SMTP_CHECK is not supported")
	}
	p.needBlock(n)
	dnsName := false
	miscPath := false
	for _, s := range n.block {
		p.pos = s.pos
		if p.checkerCommon(c, s) {
			continue
		}
		switch kind {
		case HTTPGet, SSLGet:
			p.httpStatement(c, s)
		case DNSCheck:
			switch s.words[0] {
			case "type":
				t := p.arg(s, 1)
				switch t {
				case "A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA":
					c.DNS.Type = t
				default:
					p.errorf("Unknown DNS check type %s - ignoring", t)
				}
			case "name":
				name := p.arg(s, 1)
				if dnsName {
					p.errorf("DNS_CHECK name already specified - ignoring")
					continue
				}
				if name[0] == '.' && len(name) > 1 || strings.Contains(name, "..") {
					p.errorf("DNS_CHECK name '%s' has empty label - ignoring", name)
					continue
				}
				c.DNS.Name, dnsName = name, true
			default:
				p.unknown(s)
			}
		case MiscCheck:
			switch s.words[0] {
			case "misc_path":
				p.arg(s, 1)
				c.Misc.Script.Cmd = strings.Join(s.words[1:], " ")
				miscPath = true
			case "misc_timeout":
				v, ok := p.unsigned(s, 1, 0, math.MaxUint32/1000000)
				if !ok {
					p.errorf("Invalid misc_timeout value '%s'", s.words[1])
					continue
				}
				c.Misc.Timeout = time.Duration(v) * time.Second
			case "misc_dynamic":
				c.Misc.Dynamic = true
			case "user":
				if len(s.words) < 2 {
					p.errorf("No user specified for misc checker script %s", c.Misc.Script.Cmd)
					continue
				}
				c.Misc.Script.User = s.words[1]
				if len(s.words) > 2 {
					c.Misc.Script.Group = s.words[2]
				}
			default:
				p.unknown(s)
			}
		case UDPCheck:
			p.udpStatement(c, s)
		default:
			p.unknown(s)
		}
	}
	p.pos = n.end
	switch kind {
	case HTTPGet, SSLGet:
		if len(c.HTTP.URLs) == 0 {
			p.errorf("HTTP/SSL_GET checker has no urls specified - ignoring")
			return
		}
	case MiscCheck:
		if !miscPath {
			p.errorf("No script path has been specified for MISC_CHECKER - skipping")
			return
		}
	}
	if c.hasConn && c.ConnectIP.Is6() && c.ConnectIP.IsLinkLocalUnicast() && c.BindIf == "" {
		p.errorf("Checker link local address %s requires a bind_if", c.ConnectIP)
		return
	}
	rs.Checkers = append(rs.Checkers, c)
}

// checkerCommon handles the keywords every checker has
// (install_checker_common_keywords); it reports whether s was one.
func (p *parser) checkerCommon(c *Checker, s *node) bool {
	kw := s.words[0]
	if c.hasConn {
		switch kw {
		case "connect_ip":
			p.checkerAddr(s, &c.ConnectIP, c.BindTo, "bindto")
			return true
		case "connect_port":
			setUnsigned(p, s, 1, 65535, &c.ConnectPort, "Invalid checker connect_port '%s'")
			return true
		case "bindto":
			p.checkerAddr(s, &c.BindTo, c.ConnectIP, "connect_ip")
			return true
		case "bind_port":
			setUnsigned(p, s, 1, 65535, &c.BindPort, "Invalid checker bind_port '%s'")
			return true
		case "bind_if":
			name := p.arg(s, 1)
			if len(name) > 15 {
				p.errorf("Interface name %s is too long - ignoring", name)
			} else {
				c.BindIf = name
			}
			return true
		case "connect_timeout":
			p.setTimer(s, 1, math.MaxUint32, &c.connectTimeout, "connect_timeout %s invalid - ignoring")
			return true
		case "fwmark":
			setUnsigned(p, s, 0, math.MaxUint32, &c.FWMark, "Invalid fwmark connection value '%s'")
			return true
		}
	}
	switch kw {
	case "retry":
		setUnsigned(p, s, 0, math.MaxUint32, &c.retry, "Invalid retry connection value '%s'")
	case "delay_before_retry":
		p.setTimer(s, 0, 0, &c.delayBeforeRetry, "Invalid delay_before_retry connection value '%s'")
	case "warmup":
		p.setTimer(s, 0, 0, &c.warmup, "Invalid warmup connection value '%s'")
	case "delay_loop":
		p.setTimer(s, 1, 0, &c.delayLoop, "delay_loop '%s' is invalid - ignoring")
	case "alpha":
		if v, ok := p.boolArg(s, "alpha"); ok {
			c.alpha = b2i(v)
		}
	case "log_all_failures":
		if v, ok := p.boolArg(s, "log_all_failures"); ok {
			c.LogAllFailures = v
		}
	case "rise":
		setUnsigned(p, s, 1, math.MaxInt32, &c.rise, "gvs: rise %s invalid - ignoring")
	default:
		return false
	}
	return true
}

// checkerAddr sets *dst from connect_ip or bindto (s), which must be of
// the family of other (named otherKw) when that is set.
func (p *parser) checkerAddr(s *node, dst *netip.Addr, other netip.Addr, otherKw string) {
	kw := s.words[0]
	a, ok := parseAddr(p.arg(s, 1))
	switch {
	case !ok:
		p.errorf("Invalid %s address %s - ignoring", kw, s.words[1])
	case other.IsValid() && other.Is4() != a.Is4():
		p.errorf("%s address %s does not match address family of %s - skipping", kw, s.words[1], otherKw)
	default:
		*dst = a
	}
}

func (p *parser) httpStatement(c *Checker, s *node) {
	h := c.HTTP
	switch kw := s.words[0]; kw {
	case "nb_get_retry":
		p.errorf("nb_get_retry is deprecated - please use 'retry'")
		setUnsigned(p, s, 0, math.MaxUint32, &c.retry, "Invalid nb_get_retry value '%s'")
	case "virtualhost":
		if len(s.words) < 2 {
			p.errorf("HTTP_GET virtualhost name missing")
			return
		}
		h.VirtualHost = s.words[1]
	case "http_protocol":
		if len(s.words) < 2 {
			p.errorf("Missing http_protocol version")
			return
		}
		switch v := s.words[1]; v {
		case "1.0", "1.1":
			h.Protocol = v
		case "1.0C", "1.0c":
			h.Protocol = "1.0C"
		default:
			p.errorf("Invalid http_protocol version %s", v)
		}
	case "enable_sni":
		if v, ok := p.boolArg(s, "enable_sni"); ok {
			h.EnableSNI = v
		}
	case "sni_name":
		h.SNIName = p.arg(s, 1)
	case "fast_recovery":
		if v, ok := p.boolArg(s, "fast_recovery"); ok {
			h.FastRecovery = v
		}
	case "tls_compliant":
		if v, ok := p.boolArg(s, "tls_compliant"); ok {
			h.TLSCompliant = v
		}
	case "url":
		p.url(c, s)
	default:
		p.unknown(s)
	}
}

func (p *parser) url(c *Checker, n *node) {
	u := URL{Pos: n.pos}
	p.needBlock(n)
	hasRegexOpts := false
	for _, s := range n.block {
		p.pos = s.pos
		switch s.words[0] {
		case "path":
			u.Path = p.arg(s, 1)
		case "digest":
			d := p.arg(s, 1)
			switch {
			case u.Digest != "":
				p.errorf("Digest '%s' is a duplicate", d)
			case len(d) != 32:
				p.errorf("digest '%s' character length should be %d rather than %d", d, 32, len(d))
			default:
				if _, err := hex.DecodeString(d); err != nil {
					p.errorf("Unable to interpret hex digit in '%s'", d)
					continue
				}
				u.Digest = strings.ToLower(d)
			}
		case "status_code":
			for _, w := range s.words[1:] {
				r, ok := statusRange(w)
				if !ok {
					p.errorf("Invalid HTTP_GET status code '%s'", w)
					continue
				}
				u.StatusCodes = append(u.StatusCodes, r)
			}
		case "virtualhost":
			if len(s.words) < 2 {
				p.errorf("Missing HTTP_GET virtualhost name")
				continue
			}
			u.VirtualHost = s.words[1]
		case "regex":
			if len(s.words) != 2 {
				p.errorf("regex missing or too many fields")
				continue
			}
			if u.Regex != "" {
				p.errorf("Duplicate regex specified - replacing %s with %s", u.Regex, s.words[1])
			}
			u.Regex = s.words[1]
		case "regex_no_match":
			u.RegexNoMatch = true
		case "regex_options", "regex_stack", "regex_min_offset", "regex_max_offset":
			hasRegexOpts = true
		case "tls_compliant":
		default:
			p.unknown(s)
		}
	}
	p.pos = n.end
	if u.Path == "" {
		p.errorf("HTTP/SSL_GET checker url has no path - ignoring")
		return
	}
	if len(u.StatusCodes) == 0 {
		u.StatusCodes = []StatusRange{{200, 299}}
	}
	if u.Regex != "" && hasRegexOpts {
		p.notice("gvs: PCRE2 regex options are not supported (Go regexp is RE2); options ignored")
	}
	c.HTTP.URLs = append(c.HTTP.URLs, u)
}

func statusRange(w string) (StatusRange, bool) {
	lo, hi, isRange := strings.Cut(w, "-")
	min, err := strconv.Atoi(lo)
	if err != nil {
		return StatusRange{}, false
	}
	max := min
	if isRange {
		if max, err = strconv.Atoi(hi); err != nil {
			return StatusRange{}, false
		}
	}
	if min < 100 || min > 599 || max < 100 || max > 599 || min > max {
		return StatusRange{}, false
	}
	return StatusRange{min, max}, true
}

func (p *parser) udpStatement(c *Checker, s *node) {
	u := c.UDP
	switch s.words[0] {
	case "payload":
		b, err := hex.DecodeString(p.arg(s, 1))
		if err != nil {
			p.errorf("Invalid hex string for UDP payload '%s'", s.words[1])
			return
		}
		u.Payload = b
	case "require_reply":
		u.RequireReply = true
		if len(s.words) > 1 {
			b, err := hex.DecodeString(s.words[1])
			if err != nil {
				p.errorf("Invalid hex string for UDP reply '%s'", s.words[1])
				return
			}
			u.Reply = b
		}
	case "min_reply_length", "max_reply_length":
		v, ok := p.unsigned(s, 1, 0, 65535)
		if !ok {
			p.errorf("Invalid %s '%s'", s.words[0], s.words[1])
			return
		}
		if s.words[0] == "min_reply_length" {
			u.MinReplyLength = int(v)
		} else {
			u.MaxReplyLength = int(v)
		}
	default:
		p.unknown(s)
	}
}

func uitoa(v uint64) string { return strconv.FormatUint(v, 10) }

// trio is inet_sockaddrtotrio: "[addr]:proto:port".
func trio(a netip.Addr, proto ipvs.Protocol, port uint16) string {
	var ps string
	switch proto {
	case ipvs.ProtoTCP:
		ps = "tcp"
	case ipvs.ProtoUDP:
		ps = "udp"
	case ipvs.ProtoSCTP:
		ps = "sctp"
	case 0:
		ps = "none"
	default:
		ps = "?"
	}
	return "[" + a.String() + "]:" + ps + ":" + uitoa(uint64(port))
}
