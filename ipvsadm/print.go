package ipvsadm

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"gvs/ipvs"
)

// Version is what ipvsadm -v prints (without the newline).
const Version = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)"

// ConnTableSize is the connection hash table size ipvsadm -L shows in its
// first line (IPVS's default, CONFIG_IP_VS_TAB_BITS=12).
const ConnTableSize = 4096

// Stats are the traffic counters ipvsadm --stats prints for a service or
// destination.
type Stats = ipvs.Totals

// Rates are the per-second rates ipvsadm --rate prints.
type Rates = ipvs.Rates

// StatsFunc supplies the counters and rates of a service (d == nil) or of
// one of its destinations. When a printer is given nil it uses the objects'
// own Stats counters and zero rates.
type StatsFunc func(svc *ipvs.Service, d *ipvs.Dest) (Stats, Rates)

func defaultStats(svc *ipvs.Service, d *ipvs.Dest) (Stats, Rates) {
	if d != nil {
		return d.Counts(), Rates{}
	}
	return svc.Counts(), Rates{}
}

// ConnInfo is one connection entry for ipvsadm -Lc.
type ConnInfo struct {
	Proto   ipvs.Protocol
	Expire  uint32 // seconds left
	State   string // "ESTABLISHED", "UDP", "NONE" (templates), ...
	Client  netip.AddrPort
	Virtual netip.AddrPort
	Dest    netip.AddrPort
	// PEName and PEData are shown with --persistent-conn when PEName is set.
	PEName, PEData string
}

// output format flags (ipvsadm FMT_*).
type format struct {
	ListOptions
	rule bool
}

// WriteList prints ipvsadm -L / -Ln (list_all) with its options: the
// "IP Virtual Server version" line, the title and every service with its
// destinations. Services and destinations are sorted as ipvsadm sorts them
// unless o.NoSort (then services print in the given order and destinations
// in IPVS list order, newest first).
func WriteList(w io.Writer, svcs []*ipvs.Service, o ListOptions, stats StatsFunc) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "IP Virtual Server version 1.2.1 (size=%d)\n", ConnTableSize)
	f := format{ListOptions: o}
	writeTitle(&b, f)
	for _, svc := range sortedServices(svcs, o.NoSort) {
		writeServiceEntry(&b, svc, f, stats)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteService prints ipvsadm -L -t|-u|-f service (list_service): the
// title and that one service, without the version line.
func WriteService(w io.Writer, svc *ipvs.Service, o ListOptions, stats StatsFunc) error {
	var b bytes.Buffer
	f := format{ListOptions: o}
	writeTitle(&b, f)
	writeServiceEntry(&b, svc, f, stats)
	_, err := w.Write(b.Bytes())
	return err
}

// WriteSave prints ipvsadm -S (-n when numeric): the rules in -R format,
// sorted as ipvsadm sorts them. Without numeric, ports are printed by name
// where the built-in service table knows them; addresses always stay
// numeric.
func WriteSave(w io.Writer, svcs []*ipvs.Service, numeric bool) error {
	var b bytes.Buffer
	f := format{ListOptions: ListOptions{Numeric: numeric}, rule: true}
	for _, svc := range sortedServices(svcs, false) {
		writeServiceEntry(&b, svc, f, nil)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteTimeouts prints ipvsadm -L --timeout.
func WriteTimeouts(w io.Writer, t ipvs.Timeouts) error {
	_, err := fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n", t.TCP, t.TCPFin, t.UDP)
	return err
}

// WriteConns prints ipvsadm -Lc / -Lnc (list_conn) for the given entries;
// o.Numeric and o.PersistentConn apply.
func WriteConns(w io.Writer, conns []ConnInfo, o ListOptions) error {
	var b bytes.Buffer
	b.WriteString("IPVS connection entries\n")
	if o.PersistentConn {
		fmt.Fprintf(&b, "pro expire %-11s %-18s %-18s %-18s %-16s %s\n",
			"state", "source", "virtual", "destination", "pe name", "pe_data")
	} else {
		fmt.Fprintf(&b, "pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination")
	}
	for i := range conns {
		c := &conns[i]
		name := connProtoName(c.Proto)
		var proto ipvs.Protocol // getservbyport protocol: only TCP, UDP, SCTP have names
		switch c.Proto {
		case ipvs.ProtoTCP, ipvs.ProtoUDP, ipvs.ProtoSCTP:
			proto = c.Proto
		}
		ap := func(a netip.AddrPort) string {
			return addrPortString(a.Addr(), a.Port(), proto, o.Numeric)
		}
		expire := fmt.Sprintf("%02d:%02d", c.Expire/60, c.Expire%60)
		if o.PersistentConn && c.PEName != "" {
			fmt.Fprintf(&b, "%-3s %-6s %-11s %-18s %-18s %-16s %-18s %s\n", name, expire, c.State,
				ap(c.Client), ap(c.Virtual), ap(c.Dest), c.PEName, c.PEData)
		} else {
			fmt.Fprintf(&b, "%-3s %-6s %-11s %-18s %-18s %s\n", name, expire, c.State,
				ap(c.Client), ap(c.Virtual), ap(c.Dest))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// connProtoName is the kernel's ip_vs_proto_name, which /proc/net/ip_vs_conn
// (the source of ipvsadm -c) prints.
func connProtoName(p ipvs.Protocol) string {
	switch p {
	case ipvs.ProtoIP:
		return "IP"
	case ipvs.ProtoTCP:
		return "TCP"
	case ipvs.ProtoUDP:
		return "UDP"
	case ipvs.ProtoSCTP:
		return "SCTP"
	case ipvs.ProtoICMP:
		return "ICMP"
	case 58:
		return "ICMPv6"
	}
	return "IP_" + strconv.Itoa(int(p))
}

// WriteVersion prints ipvsadm -v.
func WriteVersion(w io.Writer) error {
	_, err := io.WriteString(w, Version+"\n")
	return err
}

// WriteUsage prints ipvsadm -h (the version line, then the usage), with
// prog as the program name.
func WriteUsage(w io.Writer, prog string) error {
	var b bytes.Buffer
	b.WriteString(Version + "\n")
	fmt.Fprintf(&b, usageText, prog, prog, prog, prog, prog, prog, prog, prog, prog, prog, prog, prog, prog,
		ipvs.DefaultScheduler, "ipip")
	_, err := w.Write(b.Bytes())
	return err
}

func sortedServices(svcs []*ipvs.Service, nosort bool) []*ipvs.Service {
	out := append([]*ipvs.Service(nil), svcs...)
	if !nosort {
		ipvs.SortServices(out)
	}
	return out
}

// writeTitle is print_title.
func writeTitle(b *bytes.Buffer, f format) {
	switch {
	case f.rule:
	case f.Stats:
		fmt.Fprintf(b, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	case f.Rate:
		fmt.Fprintf(b, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
	case f.Thresholds:
		fmt.Fprintf(b, "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
	case f.PersistentConn:
		fmt.Fprintf(b, "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
	case f.TunInfo:
		b.WriteString("Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
	default:
		b.WriteString("Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
}

// largenum is print_largenum.
func largenum(b *bytes.Buffer, i uint64, exact bool) {
	switch {
	case exact:
		s := strconv.FormatUint(i, 10)
		width := 9
		if len(s) > 8 {
			width = len(s) + 1
		}
		fmt.Fprintf(b, "%*d", width, i)
	case i < 100000000:
		fmt.Fprintf(b, "%9d", i)
	case i < 1000000000:
		fmt.Fprintf(b, "%8dK", i/1000)
	case i < 100000000000:
		fmt.Fprintf(b, "%8dM", i/1000000)
	case i < 100000000000000:
		fmt.Fprintf(b, "%8dG", i/1000000000)
	default:
		fmt.Fprintf(b, "%8dT", i/1000000000000)
	}
}

// protoOption and svcProtoName are option_from_protocol and protocol_name.
func protoOption(p ipvs.Protocol) string {
	switch p {
	case ipvs.ProtoTCP:
		return "-t"
	case ipvs.ProtoUDP:
		return "-u"
	case ipvs.ProtoSCTP:
		return "--sctp-service"
	}
	return "--xxx-service"
}

func svcProtoName(p ipvs.Protocol) string {
	switch p {
	case ipvs.ProtoTCP:
		return "TCP"
	case ipvs.ProtoUDP:
		return "UDP"
	case ipvs.ProtoSCTP:
		return "SCTP"
	}
	return "?"
}

// fwdSwitch is fwd_switch: the -S option of a forwarding method.
func fwdSwitch(m ipvs.Method) string {
	switch m {
	case ipvs.Masq:
		return "-m"
	case ipvs.Tunnel:
		return "-i"
	}
	return "-g"
}

var (
	tunFlagNames = [3]string{"-c", "+c", "r+c"}
	tunFlagOpts  = [3]string{"--tun-nocsum", "--tun-csum", "--tun-remcsum"}
)

func tunFlagIndex(f ipvs.TunFlags) int {
	switch f {
	case ipvs.TunCsum:
		return 1
	case ipvs.TunRemCsum:
		return 2
	}
	return 0
}

// tunInfo is fwd_tun_info ("" for n/a).
func tunInfo(c ipvs.DestConfig) string {
	if c.Method != ipvs.Tunnel {
		return ""
	}
	switch c.TunType {
	case ipvs.TunIPIP:
		return "ipip"
	case ipvs.TunGUE:
		return fmt.Sprintf("gue:%d:%s", c.TunPort, tunFlagNames[tunFlagIndex(c.TunFlags)])
	case ipvs.TunGRE:
		return "gre:" + tunFlagNames[tunFlagIndex(c.TunFlags)]
	}
	return ""
}

// svcProto is the protocol ipvsadm resolves port names with (fwmark
// services carry TCP).
func svcProto(k ipvs.ServiceKey) ipvs.Protocol {
	if k.FWMark != 0 {
		return ipvs.ProtoTCP
	}
	return k.Proto
}

// writePersistence writes a persistent service's timeout after the word
// timeout and, unless it covers the whole address, its netmask after the
// word mask: dotted for IPv4, a prefix length for IPv6.
func writePersistence(b *bytes.Buffer, cfg *ipvs.ServiceConfig, v6 bool, timeout, mask string) {
	fmt.Fprintf(b, " %s %d", timeout, cfg.Timeout)
	switch {
	case !v6 && cfg.Netmask != 32:
		fmt.Fprintf(b, " %s %s", mask, prefixToMask(cfg.Netmask))
	case v6 && cfg.Netmask != 128:
		fmt.Fprintf(b, " %s %d", mask, cfg.Netmask)
	}
}

// WriteServiceRule writes the line ipvsadm -S -n prints for a service
// (-A ...), newline included.
func WriteServiceRule(b *bytes.Buffer, cfg *ipvs.ServiceConfig) {
	v6 := keyV6(cfg.ServiceKey)
	serviceRule(b, cfg, ruleName(cfg.ServiceKey, v6, true), v6)
	b.WriteByte('\n')
}

// WriteDestRule writes the line ipvsadm -S -n prints for destination d of
// the service cfg (-a ...), newline included.
func WriteDestRule(b *bytes.Buffer, cfg *ipvs.ServiceConfig, d *ipvs.DestConfig) {
	k := cfg.ServiceKey
	destRule(b, ruleName(k, keyV6(k), true), addrPortString(d.Addr, d.Port, svcProto(k), true), d)
	b.WriteByte('\n')
}

// keyV6 reports whether a service is IPv6 (an fwmark service by its -6).
func keyV6(k ipvs.ServiceKey) bool {
	if k.FWMark != 0 {
		return k.V6
	}
	return k.Addr.Is6()
}

// ruleName is the service selector of a -S line: "-f 1 [-6]" or
// "-t addr:port".
func ruleName(k ipvs.ServiceKey, v6, numeric bool) string {
	if k.FWMark != 0 {
		name := fmt.Sprintf("-f %d", k.FWMark)
		if v6 {
			name += " -6"
		}
		return name
	}
	return protoOption(k.Proto) + " " + addrPortString(k.Addr, k.Port, k.Proto, numeric)
}

// serviceRule writes a service's -S line but its newline.
func serviceRule(b *bytes.Buffer, cfg *ipvs.ServiceConfig, name string, v6 bool) {
	fmt.Fprintf(b, "-A %s -s %s", name, cfg.Scheduler)
	if cfg.Persistent() {
		writePersistence(b, cfg, v6, "-p", "-M")
	}
	if cfg.PE != "" {
		fmt.Fprintf(b, " --pe %s", cfg.PE)
	}
	if cfg.OnePacket() {
		b.WriteString(" -o")
	}
	if schedFlags := cfg.Flags & ipvs.SvcSchedMask; schedFlags != 0 {
		b.WriteString(" -b " + schedFlagsString(cfg.Scheduler, schedFlags))
	}
}

// destRule writes a destination's -S line but its newline.
func destRule(b *bytes.Buffer, name, dname string, dc *ipvs.DestConfig) {
	fmt.Fprintf(b, "-a %s -r %s %s -w %d", name, dname, fwdSwitch(dc.Method), dc.Weight)
	if dc.Method == ipvs.Tunnel {
		fl := tunFlagOpts[tunFlagIndex(dc.TunFlags)]
		switch dc.TunType {
		case ipvs.TunIPIP:
			b.WriteString(" --tun-type ipip")
		case ipvs.TunGUE:
			fmt.Fprintf(b, " --tun-type gue --tun-port %d %s", dc.TunPort, fl)
		case ipvs.TunGRE:
			b.WriteString(" --tun-type gre " + fl)
		}
	}
}

// writeServiceEntry is print_service_entry.
func writeServiceEntry(b *bytes.Buffer, svc *ipvs.Service, f format, stats StatsFunc) {
	if stats == nil {
		stats = defaultStats
	}
	cfg := svc.Config
	k := cfg.ServiceKey
	v6 := keyV6(k)
	var name string
	switch {
	case f.rule:
		name = ruleName(k, v6, f.Numeric)
	case k.FWMark != 0:
		name = fmt.Sprintf("FWM  %d", k.FWMark)
		if v6 {
			name += " IPv6"
		}
	default:
		name = fmt.Sprintf("%-4s %s", svcProtoName(k.Proto), addrPortString(k.Addr, k.Port, k.Proto, f.Numeric))
		if !v6 && len(name) > 33 {
			name = name[:33]
		}
	}
	schedFlags := cfg.Flags & ipvs.SvcSchedMask
	switch {
	case f.rule:
		serviceRule(b, &cfg, name, v6)
	case f.Stats, f.Rate:
		fmt.Fprintf(b, "%-33s", name)
		s, r := stats(svc, nil)
		vals := [5]uint64{s.Conns, s.InPkts, s.OutPkts, s.InBytes, s.OutBytes}
		if !f.Stats {
			vals = [5]uint64{r.CPS, r.InPPS, r.OutPPS, r.InBPS, r.OutBPS}
		}
		for _, v := range vals {
			largenum(b, v, f.Exact)
		}
	default:
		fmt.Fprintf(b, "%s %s", name, cfg.Scheduler)
		if schedFlags != 0 {
			b.WriteString(" (" + schedFlagsString(cfg.Scheduler, schedFlags) + ")")
		}
		if cfg.Persistent() {
			writePersistence(b, &cfg, v6, "persistent", "mask")
			if cfg.PE != "" {
				fmt.Fprintf(b, " pe %s", cfg.PE)
			}
		}
		if cfg.OnePacket() {
			b.WriteString(" ops")
		}
	}
	b.WriteByte('\n')

	dests := append([]*ipvs.Dest(nil), svc.Dests()...)
	if !f.NoSort {
		ipvs.SortDests(dests)
	}
	proto := svcProto(k)
	for _, d := range dests {
		dc := d.Config()
		dname := addrPortString(dc.Addr, dc.Port, proto, f.Numeric)
		if !f.rule && !dc.Addr.Is6() && len(dname) > 28 {
			dname = dname[:28]
		}
		active, inact := uint32(d.ActiveConns.Load()), uint32(d.InactConns.Load())
		switch {
		case f.rule:
			destRule(b, name, dname, &dc)
			b.WriteByte('\n')
		case f.Stats:
			fmt.Fprintf(b, "  -> %-28s", dname)
			s, _ := stats(svc, d)
			for _, v := range [5]uint64{s.Conns, s.InPkts, s.OutPkts, s.InBytes, s.OutBytes} {
				largenum(b, v, f.Exact)
			}
			b.WriteByte('\n')
		case f.Rate:
			_, r := stats(svc, d)
			fmt.Fprintf(b, "  -> %-28s %8d %8d %8d", dname, r.CPS, r.InPPS, r.OutPPS)
			largenum(b, r.InBPS, f.Exact)
			largenum(b, r.OutBPS, f.Exact)
			b.WriteByte('\n')
		case f.Thresholds:
			fmt.Fprintf(b, "  -> %-28s %-10d %-10d %-10d %-10d\n", dname,
				dc.UThreshold, dc.LThreshold, active, inact)
		case f.PersistentConn:
			fmt.Fprintf(b, "  -> %-28s %-9d %-11d %-10d %-10d\n", dname,
				uint32(dc.Weight), uint32(d.PersistConns.Load()), active, inact)
		case f.TunInfo:
			ti := tunInfo(dc)
			if ti == "" {
				ti = "n/a"
			}
			fmt.Fprintf(b, "  -> %-28s %-7s %-13s %-6d %-10d %-10d\n", dname, dc.Method, ti,
				dc.Weight, active, inact)
		default:
			fmt.Fprintf(b, "  -> %-28s %-7s %-6d %-10d %-10d\n", dname, dc.Method, dc.Weight, active, inact)
		}
	}
}

// usageText is ipvsadm 1.31's usage (after the version line); the verbs
// take the program name 13 times, then the default scheduler and the
// default tunnel type.
const usageText = `Usage:
  %s -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]
  %s -D virtual-service
  %s -C
  %s -R
  %s -S [-n]
  %s -a|e virtual-service -r server-address [options]
  %s -d virtual-service -r server-address
  %s -L|l [virtual-service] [options]
  %s -Z [virtual-service]
  %s --set tcp tcpfin udp
  %s --start-daemon {master|backup} [daemon-options]
  %s --stop-daemon {master|backup}
  %s -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --help            -h        display this help message

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
  --sctp-service    service-address   service-address is host[:port]
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero

Options:
  --ipv6         -6                   fwmark entry uses IPv6
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh,
                                      the default scheduler is %s.
  --pe            engine              alternate persistence engine may be sip,
                                      not set by default.
  --persistent   -p [timeout]         persistent service
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --tun-type      type                one of ipip|gue|gre,
                                      the default tunnel type is %s.
  --tun-port      port                tunnel destination port
  --tun-nocsum                        tunnel encapsulation without checksum
  --tun-csum                          tunnel encapsulation with checksum
  --tun-remcsum                       tunnel encapsulation with remote checksum
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --ops          -o                   one-packet scheduling
  --numeric      -n                   numeric output of addresses and ports
  --sched-flags  -b flags             scheduler flags (comma-separated)
Daemon Options:
  --syncid sid                        syncid for connection sync (default=255)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)
`
