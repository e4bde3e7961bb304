package ipvsadm

import (
	"net/netip"
	"strings"

	"gvs/ipvs"
)

// CommandKind is an ipvsadm command, in ipvsadm's own order (CMD_ADD ...).
type CommandKind uint8

// The ipvsadm commands. CmdHelp and CmdVersion are -h and -v, which ipvsadm
// handles while parsing (usage or version on stdout, exit 0).
const (
	CmdNone          CommandKind = iota
	CmdAddService                // -A, --add-service
	CmdEditService               // -E, --edit-service
	CmdDeleteService             // -D, --delete-service
	CmdClear                     // -C, --clear
	CmdList                      // -L, -l, --list (also no arguments at all)
	CmdAddServer                 // -a, --add-server
	CmdDeleteServer              // -d, --delete-server
	CmdEditServer                // -e, --edit-server
	CmdSet                       // --set tcp tcpfin udp
	CmdStartDaemon               // --start-daemon master|backup
	CmdStopDaemon                // --stop-daemon master|backup
	CmdRestore                   // -R, --restore
	CmdSave                      // -S, --save
	CmdZero                      // -Z, --zero
	CmdHelp                      // -h, --help
	CmdVersion                   // -v, --version
)

var cmdNames = [...]string{
	CmdNone: "none", CmdAddService: "add-service", CmdEditService: "edit-service",
	CmdDeleteService: "delete-service", CmdClear: "flush", CmdList: "list",
	CmdAddServer: "add-server", CmdDeleteServer: "delete-server", CmdEditServer: "edit-server",
	CmdSet: "set", CmdStartDaemon: "start-daemon", CmdStopDaemon: "stop-daemon",
	CmdRestore: "restore", CmdSave: "save", CmdZero: "zero", CmdHelp: "help", CmdVersion: "version",
}

// String is the name ipvsadm uses in its messages ("add-service", "flush").
func (k CommandKind) String() string {
	if int(k) < len(cmdNames) {
		return cmdNames[k]
	}
	return "unknown"
}

// Option is a set of ipvsadm options (OPT_* bits, in ipvsadm's order).
type Option uint64

// The options of ipvsadm's commands_v_options table.
const (
	OptNumeric Option = 1 << iota
	OptConnection
	OptService
	OptScheduler
	OptPersistent
	OptNetmask
	OptServer
	OptForward
	OptWeight
	OptUThreshold
	OptLThreshold
	OptMcast
	OptTimeout
	OptDaemon
	OptStats
	OptRate
	OptThresholds
	OptPersistentConn
	OptNoSort
	OptSyncID
	OptExact
	OptOnePacket
	OptPE
	OptSchedFlags
	OptMcastGroup
	OptMcastPort
	OptMcastTTL
	OptSyncMaxlen
	OptTunInfo
	OptTunType
	OptTunPort
	OptTunNoCsum
	OptTunCsum
	OptTunRemCsum
	numOptions = iota
)

// optNames are ipvsadm's names of the options, for its messages.
var optNames = [numOptions]string{
	"numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
	"real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
	"mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
	"persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
	"mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
	"tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
}

// commandsVOptions is ipvsadm's table of legal command/option pairs, one
// string per command (CmdAddService..CmdZero), one byte per option:
// '+' compulsory, 'x' illegal, '1' at most one of the '1's, ' ' optional.
var commandsVOptions = [CmdZero]string{
	//  ncsspMrfwxymtdsrtpnsEoPbgptstpncr
	"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // add-service
	"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // edit-service
	"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-service
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // flush
	" 11xxxxxxxxx11       xxxxxxx xxxxx", // list
	"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // add-server
	"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-server
	"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // edit-server
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // set
	"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx", // start-daemon
	"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx", // stop-daemon
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // restore
	" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // save
	"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // zero
}

// Tunnel options checked per tunnel type (ipvsadm tunnel_types_v_options).
var (
	tunOpts      = [4]Option{OptTunPort, OptTunNoCsum, OptTunCsum, OptTunRemCsum}
	tunTypeNames = [3]string{"ipip", "gue", "gre"}
	tunVOptions  = [3]string{
		"xxxx", // ipip
		"+111", // gue
		"x11x", // gre
	}
)

// optIndex is the table column of a single option bit.
func optIndex(o Option) int {
	for i := 0; i < numOptions; i++ {
		if o == 1<<i {
			return i
		}
	}
	return -1
}

// ListOptions are the listing options of -L (and -n of -S).
type ListOptions struct {
	Numeric        bool // -n
	Connections    bool // -c
	Timeout        bool // --timeout
	Daemon         bool // --daemon
	Stats          bool // --stats
	Rate           bool // --rate
	Thresholds     bool // --thresholds
	PersistentConn bool // --persistent-conn
	NoSort         bool // --nosort
	Exact          bool // --exact
	TunInfo        bool // --tun-info
}

// DaemonState selects the sync daemon of --start-daemon/--stop-daemon.
type DaemonState uint8

// Sync daemon states (IP_VS_STATE_MASTER/BACKUP).
const (
	DaemonMaster DaemonState = 1
	DaemonBackup DaemonState = 2
)

// DaemonConfig is what --start-daemon/--stop-daemon carry (gvsd runs the
// sync daemons: control/syncd.go).
type DaemonConfig struct {
	State      DaemonState
	McastIfn   string // --mcast-interface, default "eth0" for start
	SyncID     int    // --syncid
	SyncMaxlen int    // --sync-maxlen
	McastGroup netip.Addr
	McastPort  int
	McastTTL   int
}

// Command is one parsed ipvsadm command line.
type Command struct {
	Kind CommandKind
	// Given is the set of options that appeared on the line. For -E and -e
	// ipvsadm sends the whole configuration (an option not given takes its
	// default); Given lets a caller tell the two apart.
	Given Option
	// Service is the virtual service (-t/-u/--sctp-service/-f and the
	// service options), with ipvsadm's defaults for -A/-E (scheduler wlc,
	// netmask /32 or /128).
	Service ipvs.ServiceConfig
	// Dest is the real server (-r and its options), with ipvsadm's
	// defaults (weight 1, -g) and the port rules applied (port of the
	// service when omitted; forced to the service port for -g/-i on
	// non-fwmark services).
	Dest     ipvs.DestConfig
	List     ListOptions
	Timeouts ipvs.Timeouts // --set
	Daemon   DaemonConfig  // --start-daemon/--stop-daemon
	// Line is the rules-file line the command came from (0 otherwise).
	Line int
}

// HasService reports whether a virtual service was given (-L and -Z take
// an optional one).
func (c *Command) HasService() bool { return c.Given&OptService != 0 }

// Option argument kinds.
const (
	argNone = iota
	argRequired
	argOptional
)

// Tags for options without a short name (ipvsadm's TAG_* values).
const (
	tagSet = 128 + iota
	tagStartDaemon
	tagStopDaemon
	tagMcastInterface
	tagTimeout
	tagDaemon
	tagStats
	tagRate
	tagThresholds
	tagPersistentConn
	tagSort
	tagNoSort
	tagPE
	tagSCTPService
	tagMcastGroup
	tagMcastPort
	tagMcastTTL
	tagSyncMaxlen
	tagTunInfo
	tagTunType
	tagTunPort
	tagTunNoCsum
	tagTunCsum
	tagTunRemCsum
	tagSyncID = 'I'
	tagExact  = 'X'
)

type optDef struct {
	long  string
	short byte
	arg   int
	tag   int
}

// optTable is ipvsadm's popt option table.
var optTable = []optDef{
	{"add-service", 'A', argNone, 'A'},
	{"edit-service", 'E', argNone, 'E'},
	{"delete-service", 'D', argNone, 'D'},
	{"clear", 'C', argNone, 'C'},
	{"list", 'L', argNone, 'L'},
	{"list", 'l', argNone, 'l'},
	{"zero", 'Z', argNone, 'Z'},
	{"add-server", 'a', argNone, 'a'},
	{"edit-server", 'e', argNone, 'e'},
	{"delete-server", 'd', argNone, 'd'},
	{"set", 0, argNone, tagSet},
	{"help", 'h', argNone, 'h'},
	{"version", 'v', argNone, 'v'},
	{"restore", 'R', argNone, 'R'},
	{"save", 'S', argNone, 'S'},
	{"start-daemon", 0, argRequired, tagStartDaemon},
	{"stop-daemon", 0, argRequired, tagStopDaemon},
	{"tcp-service", 't', argRequired, 't'},
	{"udp-service", 'u', argRequired, 'u'},
	{"sctp-service", 0, argRequired, tagSCTPService},
	{"fwmark-service", 'f', argRequired, 'f'},
	{"scheduler", 's', argRequired, 's'},
	{"persistent", 'p', argOptional, 'p'},
	{"netmask", 'M', argRequired, 'M'},
	{"real-server", 'r', argRequired, 'r'},
	{"masquerading", 'm', argNone, 'm'},
	{"ipip", 'i', argNone, 'i'},
	{"gatewaying", 'g', argNone, 'g'},
	{"weight", 'w', argRequired, 'w'},
	{"u-threshold", 'x', argRequired, 'x'},
	{"l-threshold", 'y', argRequired, 'y'},
	{"numeric", 'n', argNone, 'n'},
	{"connection", 'c', argNone, 'c'},
	{"mcast-interface", 0, argRequired, tagMcastInterface},
	{"syncid", 0, argRequired, tagSyncID},
	{"timeout", 0, argNone, tagTimeout},
	{"daemon", 0, argNone, tagDaemon},
	{"stats", 0, argNone, tagStats},
	{"rate", 0, argNone, tagRate},
	{"thresholds", 0, argNone, tagThresholds},
	{"persistent-conn", 0, argNone, tagPersistentConn},
	{"nosort", 0, argNone, tagNoSort},
	{"sort", 0, argNone, tagSort},
	{"exact", 'X', argNone, tagExact},
	{"ipv6", '6', argNone, '6'},
	{"ops", 'o', argNone, 'o'},
	{"pe", 0, argRequired, tagPE},
	{"sched-flags", 'b', argRequired, 'b'},
	{"mcast-group", 0, argRequired, tagMcastGroup},
	{"mcast-port", 0, argRequired, tagMcastPort},
	{"mcast-ttl", 0, argRequired, tagMcastTTL},
	{"sync-maxlen", 0, argRequired, tagSyncMaxlen},
	{"tun-info", 0, argNone, tagTunInfo},
	{"tun-type", 0, argRequired, tagTunType},
	{"tun-port", 0, argRequired, tagTunPort},
	{"tun-nocsum", 0, argNone, tagTunNoCsum},
	{"tun-csum", 0, argNone, tagTunCsum},
	{"tun-remcsum", 0, argNone, tagTunRemCsum},
}

// popt status codes.
const (
	poptOK = iota
	poptEnd
	poptBadOpt
	poptNoArg
	poptUnwanted
)

// popt walks an argument list the way libpopt's poptGetNextOpt does for
// ipvsadm's table: long options (--name, --name=value, exact names only),
// clusters of short options (-Lnc), a short option's argument attached
// (-w5, -w=5) or in the next word, an optional argument (-p) taken only
// from a next word that does not start with '-', words that are not
// options kept as leftovers, and "--" ending the options.
type popt struct {
	args      []string
	next      int
	charArg   string // rest of a short-option cluster
	rest      bool   // after "--"
	leftovers []string
}

// badOption is poptBadOption: the last word consumed.
func (p *popt) badOption() string {
	if p.next > 0 {
		return p.args[p.next-1]
	}
	return ""
}

// nextOpt returns the next option and its argument.
func (p *popt) nextOpt() (def *optDef, arg string, hasArg bool, status int) {
	for {
		longArg, hasLong := "", false
		if p.charArg == "" {
			if p.next == len(p.args) {
				return nil, "", false, poptEnd
			}
			s := p.args[p.next]
			p.next++
			if p.rest || len(s) == 0 || s[0] != '-' || s == "-" {
				p.leftovers = append(p.leftovers, s)
				continue
			}
			if s == "--" {
				p.rest = true
				continue
			}
			if s[1] == '-' {
				name := s[2:]
				if i := strings.IndexByte(name, '='); i >= 0 {
					name, longArg, hasLong = name[:i], name[i+1:], true
				}
				for i := range optTable {
					if optTable[i].long == name {
						def = &optTable[i]
						break
					}
				}
				if def == nil {
					return nil, "", false, poptBadOpt
				}
			} else {
				// No ipvsadm option is a one-dash long option: the word is a
				// cluster of short options.
				p.charArg = s[1:]
			}
		}
		if def == nil {
			c := p.charArg[0]
			for i := range optTable {
				if optTable[i].short == c {
					def = &optTable[i]
					break
				}
			}
			if def == nil {
				p.charArg = ""
				return nil, "", false, poptBadOpt
			}
			p.charArg = p.charArg[1:]
		}
		if def.arg == argNone {
			if hasLong || (p.charArg != "" && p.charArg[0] == '=') {
				p.charArg = ""
				return nil, "", false, poptUnwanted
			}
			return def, "", false, poptOK
		}
		switch {
		case hasLong:
			return def, longArg, true, poptOK
		case p.charArg != "":
			a := strings.TrimPrefix(p.charArg, "=")
			p.charArg = ""
			return def, a, true, poptOK
		case p.next == len(p.args):
			if def.arg != argOptional {
				return nil, "", false, poptNoArg
			}
			return def, "", false, poptOK
		case def.arg == argOptional && strings.HasPrefix(p.args[p.next], "-"):
			return def, "", false, poptOK
		}
		a := p.args[p.next]
		p.next++
		return def, a, true, poptOK
	}
}

func poptText(status int) string {
	switch status {
	case poptNoArg:
		return msgPoptNoArg
	case poptUnwanted:
		return msgPoptUnwantedArg
	}
	return msgPoptBadOpt
}

// Program is the program name ParseArgs uses in "Try `ipvsadm -h' ..."
// (ipvsadm prints argv[0]).
const Program = "ipvsadm"

// Limits from ipvsadm.
const (
	maxTimeout     = 86400 * 31 // MAX_TIMEOUT: 31 days
	schedNameMax   = 15         // IP_VS_SCHEDNAME_MAXLEN - 1
	peNameMax      = 16         // IP_VS_PENAME_MAXLEN
	ifNameMax      = 15         // IP_VS_IFNAME_MAXLEN - 1
	defaultMcastIf = "eth0"
	maxInt32       = 1<<31 - 1
)

// ParseArgs parses an ipvsadm 1.31 command line (without the program name)
// with ipvsadm's rules, defaults and messages. An empty line is -L. Errors
// are *Error with ipvsadm's text and exit status.
func ParseArgs(args []string) (*Command, error) { return ParseArgsAs(Program, args) }

// parseState is what parse_options keeps beside the Command.
type parseState struct {
	cmd        *Command
	svcAF      int // 0, 4 or 6
	destAF     int // 0, 4 or 6
	svcProto   ipvs.Protocol
	rawMask    uint32 // -M as ipvsadm stores it: a mask (IPv4) or prefix length (IPv6)
	maskArg    string
	schedFlags string
}

// ParseArgsAs is ParseArgs with the program name to print in the "Try
// `prog -h'" hint.
func ParseArgsAs(prog string, args []string) (*Command, error) {
	c := &Command{Kind: CmdNone, Dest: ipvs.DestConfig{Weight: 1, Method: ipvs.Route}}
	if len(args) == 0 {
		c.Kind = CmdList
		return c, nil
	}
	st := &parseState{cmd: c, rawMask: 0xffffffff}
	p := &popt{args: args}

	def, arg, _, status := p.nextOpt()
	if status != poptOK {
		return nil, tryHelpErr(prog)
	}
	switch def.tag {
	case 'A':
		c.Kind = CmdAddService
	case 'E':
		c.Kind = CmdEditService
	case 'D':
		c.Kind = CmdDeleteService
	case 'a':
		c.Kind = CmdAddServer
	case 'e':
		c.Kind = CmdEditServer
	case 'd':
		c.Kind = CmdDeleteServer
	case 'C':
		c.Kind = CmdClear
	case 'L', 'l':
		c.Kind = CmdList
	case 'Z':
		c.Kind = CmdZero
	case tagSet:
		c.Kind = CmdSet
	case 'R':
		c.Kind = CmdRestore
	case 'S':
		c.Kind = CmdSave
	case tagStartDaemon, tagStopDaemon:
		c.Kind = CmdStartDaemon
		msg := msgBadStartDaemon
		if def.tag == tagStopDaemon {
			c.Kind = CmdStopDaemon
			msg = msgBadStopDaemon
		}
		switch arg {
		case "master":
			c.Daemon.State = DaemonMaster
		case "backup":
			c.Daemon.State = DaemonBackup
		default:
			return nil, parseErr("%s", msg)
		}
	case 'h':
		c.Kind = CmdHelp
		return c, nil
	case 'v':
		c.Kind = CmdVersion
		return c, nil
	default:
		return nil, tryHelpErr(prog)
	}

	for {
		def, arg, hasArg, status := p.nextOpt()
		if status == poptEnd {
			break
		}
		if status != poptOK {
			return nil, poptErr(p.badOption(), poptText(status))
		}
		if err := st.option(def, arg, hasArg, p); err != nil {
			return nil, err
		}
	}

	left := p.leftovers
	if c.Kind == CmdSet {
		if len(left) < 3 {
			return nil, parseErr(msgSetNeeds3)
		}
		vals := [3]*int{&c.Timeouts.TCP, &c.Timeouts.TCPFin, &c.Timeouts.UDP}
		for i, v := range vals {
			n := stringToNumber(left[i], 0, maxTimeout)
			if n < 0 {
				return nil, parseErr(msgBadTimeout, left[i])
			}
			*v = int(n)
		}
		left = left[3:]
	}
	if len(left) > 0 {
		return nil, parseErr(msgUnexpectedArg, left[0])
	}
	if st.schedFlags != "" {
		f, err := parseSchedFlags(c.Service.Scheduler, st.schedFlags)
		if err != nil {
			return nil, err
		}
		c.Service.Flags = c.Service.Flags&^ipvs.SvcSchedMask | f
	}
	if err := st.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// setOption is ipvsadm's set_option: each option at most once.
func (st *parseState) setOption(o Option) error {
	if st.cmd.Given&o != 0 {
		return parseErr(msgMultipleOptions, optNames[optIndex(o)])
	}
	st.cmd.Given |= o
	return nil
}

// option handles one option after the command (the loop of parse_options).
func (st *parseState) option(def *optDef, arg string, hasArg bool, p *popt) error {
	c := st.cmd
	set := func(o Option) error { return st.setOption(o) }
	var err error
	switch def.tag {
	case 't', 'u', tagSCTPService:
		if err = set(OptService); err != nil {
			return err
		}
		st.svcProto = map[int]ipvs.Protocol{'t': ipvs.ProtoTCP, 'u': ipvs.ProtoUDP, tagSCTPService: ipvs.ProtoSCTP}[def.tag]
		c.Service.Proto = st.svcProto
		a, port, af, res := parseService(arg, st.svcProto)
		if res&serviceAddr == 0 {
			return parseErr(msgBadVirtual)
		}
		c.Service.Addr = a
		st.svcAF = af
		if af == 6 {
			st.rawMask = 128
		}
		if res&servicePort != 0 {
			c.Service.Port = port
		}
	case 'f':
		if err = set(OptService); err != nil {
			return err
		}
		st.svcAF = 4
		st.svcProto = ipvs.ProtoTCP
		v, n, rangeErr := strtol(arg)
		if n == 0 || n != len(arg) || rangeErr || v <= 0 || v > 0xffffffff {
			return parseErr(msgBadFwmark, arg)
		}
		c.Service.FWMark = uint32(v)
	case 's':
		if err = set(OptScheduler); err != nil {
			return err
		}
		c.Service.Scheduler = truncate(arg, schedNameMax)
	case 'p':
		if err = set(OptPersistent); err != nil {
			return err
		}
		c.Service.Flags |= ipvs.SvcPersistent
		c.Service.Timeout = ipvs.DefaultPersistTimeout
		if hasArg {
			n := stringToNumber(arg, 1, maxTimeout)
			if n < 0 {
				return parseErr(msgBadTimeout, arg)
			}
			c.Service.Timeout = uint32(n)
		}
	case 'M':
		if err = set(OptNetmask); err != nil {
			return err
		}
		if st.svcAF != 6 {
			m, ok := inetAton(arg)
			if !ok {
				return parseErr(msgBadMask)
			}
			b := m.As4()
			st.rawMask = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			st.maskArg = arg
		} else {
			st.rawMask = uint32(atoi(arg))
			if st.rawMask < 1 || st.rawMask > 128 {
				return parseErr(msgBadMask6)
			}
		}
	case 'r':
		if err = set(OptServer); err != nil {
			return err
		}
		a, port, af, res := parseService(arg, st.svcProto)
		c.Dest.Addr = a
		st.destAF = af
		c.Dest.Port = c.Service.Port
		if res&servicePort != 0 {
			c.Dest.Port = port
		}
		if res&serviceAddr == 0 {
			return parseErr(msgBadReal)
		}
	case 'i', 'g', 'm':
		if err = set(OptForward); err != nil {
			return err
		}
		c.Dest.Method = map[int]ipvs.Method{'i': ipvs.Tunnel, 'g': ipvs.Route, 'm': ipvs.Masq}[def.tag]
	case 'w':
		if err = set(OptWeight); err != nil {
			return err
		}
		n := stringToNumber(arg, 0, 65535)
		if n < 0 {
			return parseErr(msgBadWeight)
		}
		c.Dest.Weight = int(n)
	case 'x', 'y':
		o, msg, dst := OptUThreshold, msgBadUThreshold, &c.Dest.UThreshold
		if def.tag == 'y' {
			o, msg, dst = OptLThreshold, msgBadLThreshold, &c.Dest.LThreshold
		}
		if err = set(o); err != nil {
			return err
		}
		n := stringToNumber(arg, 0, maxInt32)
		if n < 0 {
			return parseErr("%s", msg)
		}
		*dst = uint32(n)
	case 'c':
		err = set(OptConnection)
		c.List.Connections = true
	case 'n':
		err = set(OptNumeric)
		c.List.Numeric = true
	case tagMcastInterface:
		err = set(OptMcast)
		c.Daemon.McastIfn = truncate(arg, ifNameMax)
	case tagSyncID:
		if err = set(OptSyncID); err != nil {
			return err
		}
		n := stringToNumber(arg, 0, 255)
		if n < 0 {
			return parseErr(msgBadSyncID)
		}
		c.Daemon.SyncID = int(n)
	case tagTimeout:
		err = set(OptTimeout)
		c.List.Timeout = true
	case tagDaemon:
		err = set(OptDaemon)
		c.List.Daemon = true
	case tagStats:
		err = set(OptStats)
		c.List.Stats = true
	case tagRate:
		err = set(OptRate)
		c.List.Rate = true
	case tagThresholds:
		err = set(OptThresholds)
		c.List.Thresholds = true
	case tagPersistentConn:
		err = set(OptPersistentConn)
		c.List.PersistentConn = true
	case tagNoSort:
		err = set(OptNoSort)
		c.List.NoSort = true
	case tagSort:
		// a no-op kept for compatibility
	case tagExact:
		err = set(OptExact)
		c.List.Exact = true
	case '6':
		if c.Service.FWMark == 0 {
			return parseErr(msgSixBeforeF)
		}
		st.svcAF = 6
		st.rawMask = 128
	case 'o':
		err = set(OptOnePacket)
		c.Service.Flags |= ipvs.SvcOnePacket
	case tagPE:
		err = set(OptPE)
		c.Service.PE = truncate(arg, peNameMax)
	case 'b':
		err = set(OptSchedFlags)
		st.schedFlags = truncate(arg, 127)
	case tagMcastGroup:
		if err = set(OptMcastGroup); err != nil {
			return err
		}
		a, perr := netip.ParseAddr(arg)
		if strings.Contains(arg, ":") {
			if perr != nil || !a.Is6() || a.Zone() != "" || !a.IsMulticast() {
				return parseErr(msgBadMcastGroup6, arg)
			}
		} else if perr != nil || !a.Is4() || !a.IsMulticast() {
			return parseErr(msgBadMcastGroup4, arg)
		}
		c.Daemon.McastGroup = a
	case tagMcastPort, tagMcastTTL, tagSyncMaxlen:
		o, msg, hi, dst := OptMcastPort, msgBadMcastPort, int64(65535), &c.Daemon.McastPort
		switch def.tag {
		case tagMcastTTL:
			o, msg, hi, dst = OptMcastTTL, msgBadMcastTTL, 255, &c.Daemon.McastTTL
		case tagSyncMaxlen:
			o, msg, hi, dst = OptSyncMaxlen, msgBadSyncMaxlen, 65535-20-8, &c.Daemon.SyncMaxlen
		}
		if err = set(o); err != nil {
			return err
		}
		n := stringToNumber(arg, 1, hi)
		if n < 0 {
			return parseErr("%s", msg)
		}
		*dst = int(n)
	case tagTunInfo:
		err = set(OptTunInfo)
		c.List.TunInfo = true
	case tagTunType:
		if err = set(OptTunType); err != nil {
			return err
		}
		switch arg {
		case "ipip":
			c.Dest.TunType = ipvs.TunIPIP
		case "gue":
			c.Dest.TunType = ipvs.TunGUE
		case "gre":
			c.Dest.TunType = ipvs.TunGRE
		default:
			return parseErr(msgBadTunType)
		}
	case tagTunPort:
		if err = set(OptTunPort); err != nil {
			return err
		}
		n := stringToNumber(arg, 1, 65535)
		if n < 0 {
			return parseErr(msgBadTunPort)
		}
		c.Dest.TunPort = uint16(n)
	case tagTunNoCsum:
		err = set(OptTunNoCsum)
	case tagTunCsum:
		err = set(OptTunCsum)
		c.Dest.TunFlags |= ipvs.TunCsum
	case tagTunRemCsum:
		err = set(OptTunRemCsum)
		c.Dest.TunFlags |= ipvs.TunRemCsum
	default:
		// A second command, -h or -v after the command.
		return parseErr(msgInvalidOption, p.badOption())
	}
	return err
}

func truncate(s string, n int) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		return s[:n]
	}
	return s
}

// finishService completes the ServiceConfig: fwmark keys lose their
// protocol/address, the persistence mask becomes a prefix length.
func (st *parseState) finishService() error {
	c := st.cmd
	if c.Service.FWMark != 0 {
		c.Service.Proto, c.Service.Addr, c.Service.Port = 0, netip.Addr{}, 0
		c.Service.V6 = st.svcAF == 6
	}
	if c.Given&OptService == 0 {
		return nil
	}
	if st.svcAF == 6 {
		c.Service.Netmask = int(st.rawMask)
	} else {
		plen, ok := maskToPrefix(st.rawMask)
		if !ok {
			return parseErr(msgNonContigMask, st.maskArg)
		}
		c.Service.Netmask = plen
	}
	return nil
}

// check is the validation process_options does after parsing.
func (st *parseState) check() error {
	c := st.cmd
	if err := genericOptCheck(c.Kind, c.Given); err != nil {
		return err
	}
	if err := st.finishService(); err != nil {
		return err
	}
	switch c.Kind {
	case CmdAddService, CmdEditService:
		if c.Service.FWMark == 0 && c.Service.Port == 0 && !c.Service.Persistent() {
			return parseErr(msgZeroPort)
		}
		if c.Service.OnePacket() && c.Service.FWMark == 0 && c.Service.Proto != ipvs.ProtoUDP {
			return parseErr(msgOPSNotUDP)
		}
		if c.Service.Scheduler == "" {
			c.Service.Scheduler = ipvs.DefaultScheduler
		}
	case CmdStartDaemon:
		if c.Daemon.McastIfn == "" {
			c.Daemon.McastIfn = defaultMcastIf
		}
	case CmdAddServer, CmdEditServer:
		if c.Service.FWMark == 0 && (c.Dest.Method == ipvs.Tunnel || c.Dest.Method == ipvs.Route) {
			c.Dest.Port = c.Service.Port
		}
		if st.destAF != st.svcAF && c.Dest.Method != ipvs.Tunnel {
			return parseErr(msgDiffAF)
		}
		if c.Given&(OptTunType|OptTunPort|OptTunNoCsum|OptTunCsum|OptTunRemCsum) != 0 && c.Dest.Method != ipvs.Tunnel {
			return parseErr(msgTunConflictFwd)
		}
		if err := tunnelOptCheck(c.Dest.TunType, c.Given); err != nil {
			return err
		}
	case CmdList:
		g := c.Given
		if (g&(OptConnection|OptTimeout|OptDaemon) != 0 && g&(OptStats|OptRate|OptThresholds) != 0) ||
			(g&(OptTimeout|OptDaemon) != 0 && g&OptPersistentConn != 0) {
			return parseErr(msgListConflict)
		}
	}
	return nil
}

// genericOptCheck applies commands_v_options.
func genericOptCheck(kind CommandKind, given Option) error {
	if kind < CmdAddService || kind > CmdZero {
		return nil
	}
	row := commandsVOptions[kind-1]
	name := kind.String()
	last, count := 0, 0
	for j := 0; j < numOptions; j++ {
		if given&(1<<j) == 0 {
			if row[j] == '+' {
				return parseErr(msgNeedOption, optNames[j], name)
			}
			continue
		}
		switch row[j] {
		case 'x':
			return parseErr(msgIllegalOption, optNames[j], name)
		case '1':
			count++
			if count == 1 {
				last = j
				continue
			}
			return parseErr(msgOptionConflict, optNames[j], optNames[last], name)
		}
	}
	return nil
}

// tunnelOptCheck applies tunnel_types_v_options.
func tunnelOptCheck(t ipvs.TunType, given Option) error {
	if int(t) >= len(tunVOptions) {
		return parseErr(msgBadTunType)
	}
	row := tunVOptions[t]
	last, count := Option(0), 0
	for j, o := range tunOpts {
		name := optNames[optIndex(o)]
		if given&o == 0 {
			if row[j] == '+' {
				return parseErr(msgTunNeedOption, name, tunTypeNames[t])
			}
			continue
		}
		switch row[j] {
		case 'x':
			return parseErr(msgTunIllegalOption, name, tunTypeNames[t])
		case '1':
			count++
			if count == 1 {
				last = o
				continue
			}
			return parseErr(msgTunConflict, name, optNames[optIndex(last)], tunTypeNames[t])
		}
	}
	return nil
}

// parseSchedFlags is ipvsadm's parse_sched_flags: a comma-separated list of
// flag-1..3, sh-fallback, sh-port (only with -s sh), mh-fallback, mh-port
// (only with -s mh).
func parseSchedFlags(sched, arg string) (ipvs.SvcFlags, error) {
	if sched == "" {
		sched = ipvs.DefaultScheduler
	}
	var f ipvs.SvcFlags
	n := 0
	for _, flag := range strings.Split(arg, ",") {
		if flag == "" {
			continue // strtok skips empty fields
		}
		n++
		need := ""
		switch flag {
		case "flag-1":
			f |= ipvs.SvcSched1
		case "flag-2":
			f |= ipvs.SvcSched2
		case "flag-3":
			f |= ipvs.SvcSched3
		case "sh-fallback":
			f |= ipvs.SvcSched1
			need = "sh"
		case "sh-port":
			f |= ipvs.SvcSched2
			need = "sh"
		case "mh-fallback":
			f |= ipvs.SvcSched1
			need = "mh"
		case "mh-port":
			f |= ipvs.SvcSched2
			need = "mh"
		default:
			return 0, parseErr(msgBadSchedFlag, flag)
		}
		if need != "" && sched != need {
			return 0, parseErr(msgIncompatFlag, flag)
		}
	}
	if n == 0 {
		// ipvsadm crashes on a list of commas; report it as invalid.
		return 0, parseErr(msgBadSchedFlag, arg)
	}
	return f, nil
}

// schedFlagsString is print_sched_flags: the flag names for the scheduler,
// comma-separated ("" when none applies).
func schedFlagsString(sched string, f ipvs.SvcFlags) string {
	var names []string
	switch sched {
	case "sh", "mh":
		if f&ipvs.SvcSched1 != 0 {
			names = append(names, sched+"-fallback")
		}
		if f&ipvs.SvcSched2 != 0 {
			names = append(names, sched+"-port")
		}
	default:
		for i, n := range [3]string{"flag-1", "flag-2", "flag-3"} {
			if f&(ipvs.SvcSched1<<i) != 0 {
				names = append(names, n)
			}
		}
	}
	return strings.Join(names, ",")
}

// parse_service result bits.
const (
	serviceAddr = 1 << iota
	servicePort
)

// parseService is ipvsadm's parse_service for host[:port] and
// [v6addr]:port. Host names are not resolved (gvs does no DNS).
func parseService(buf string, proto ipvs.Protocol) (addr netip.Addr, port uint16, af int, res int) {
	if strIsDigit(buf) {
		return netip.Addr{}, 0, 0, 0
	}
	portStr, hasPort := "", false
	if buf[0] == '[' {
		buf = buf[1:]
		i := strings.IndexByte(buf, ']')
		if i < 0 || i+1 >= len(buf) || buf[i+1] != ':' {
			return netip.Addr{}, 0, 0, 0
		}
		buf, portStr, hasPort = buf[:i], buf[i+2:], true
	}
	if a, ok := inetPton6(buf); ok {
		addr, af = a, 6
	} else {
		// ipvsadm searches the last ':' again; for a bracketed IPv4
		// address there is none and the port is ignored (sic).
		hasPort = false
		if i := strings.LastIndexByte(buf, ':'); i >= 0 {
			buf, portStr, hasPort = buf[:i], buf[i+1:], true
		}
		a, ok := inetAton(buf)
		if !ok {
			return netip.Addr{}, 0, 0, 0
		}
		addr, af = a, 4
	}
	res = serviceAddr
	if hasPort {
		res |= servicePort
		if n := stringToNumber(portStr, 0, 65535); n >= 0 {
			port = uint16(n)
		} else if n := serviceToPort(portStr, proto); n >= 0 {
			port = uint16(n)
		} else {
			return netip.Addr{}, 0, 0, 0
		}
	}
	return addr, port, af, res
}
