package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// The manual gvsd --help prints, in man page sections; OPTIONS is made
// from the flags, so it always lists what gvsd accepts.

const manHead = `NAME
    gvsd - the gvs director: Linux Virtual Server (IPVS) in userspace

SYNOPSIS
    gvsd --vip-if IF --dip-if IF [--rules FILE] [OPTION]...
    gvsd --help

DESCRIPTION
    gvsd is an IPVS director that forwards in userspace. It captures the
    virtual services' traffic on the VIP interface (and the NAT replies on
    the DIP interface; the same interface for a one-arm director) with
    AF_PACKET rings, tracks connections with IPVS's state machine and
    timeouts, schedules them over the real servers with the IPVS
    schedulers and forwards them by direct routing, NAT or IPIP tunnel.

    It starts with the services of the rules file (what "ipvsadm -S -n"
    prints) and serves the control socket @NAME (an abstract unix socket of
    its network namespace), through which gvsadm - ipvsadm's command line
    and output, byte for byte - lists and changes them. One gvsd runs per
    socket name and network namespace.

    It installs an nftables netdev table gvs_NAME that keeps the host's IP
    stack away from the traffic it forwards, switches GRO/LRO off on its
    interfaces and answers ARP for VIPs (--arp); it removes the table and
    the ARP answers when it stops.

    Under systemd (Type=notify) it reports READY=1 once it serves,
    RELOADING=1/READY=1 around reloads, STOPPING=1, a STATUS= line
    (services, real servers, packets per second) and, with WatchdogSec=,
    pings the watchdog only while every data-path worker makes progress.

    It needs CAP_NET_RAW (packet rings) and CAP_NET_ADMIN (nftables,
    offloads, netlink): root, or a user given both as ambient capabilities
    (systemd: User=gvs, AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN).

OPTIONS
`

const manTail = `
SIGNALS
    SIGHUP    Re-read the rules file and the --keepalived-conf file and
              apply the difference: services and real servers kept keep
              their counters and connections, health checks that did not
              change keep their state. On error nothing changes and the error is
              logged. "gvsadm --reload" does the same and waits for the
              outcome (systemd's ExecReload=).
    SIGTERM, SIGINT
              Stop: the workers stop, the nftables table and the ARP
              answers are removed; exit status 0.

FILES
    /etc/gvs/rules
              The rules file of the packaged unit (--rules): ipvsadm-save
              format, "-A"/"-a"/"--set" lines, "#" comments.
    /etc/default/gvsd
              The packaged unit's options (GVSD_OPTS).
    /lib/systemd/system/gvsd.service
              The systemd unit.

ENVIRONMENT
    NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID
              Set by systemd: where to send READY=1 and friends, and the
              watchdog timeout.

EXIT STATUS
    0    stopped by SIGTERM or SIGINT, or --help.
    1    could not start (interface, rules file, permissions, control
         socket in use, ...) or stopped on an error; the reason is one
         line on stderr.
    2    bad command line (unknown option, bad value, bad --sysctl).

SEE ALSO
    gvsadm(8) (ipvsadm -h), ipvsadm(8), keepalived(8), systemd.service(5),
    sd_notify(3), capabilities(7)
`

// argNames name the flags' values in the manual (the flag package would
// say STRING or INT).
var argNames = map[string]string{
	"vip-if": "IF", "dip-if": "IF", "rules": "FILE", "socket": "NAME", "workers": "N",
	"batch": "N", "conn-capacity": "N", "ring-frames": "N", "busy-poll": "DURATION",
	"pprof": "ADDR", "stats-interval": "DURATION", "admin-gid": "GID", "arp": "auto|on|off",
	"log-level": "LEVEL", "log-format": "json|console", "sysctl": "NAME=VALUE", "sysctl-file": "FILE",
}

// writeManual prints the manual of gvsd with the options of fs.
func writeManual(w io.Writer, fs *flag.FlagSet) {
	var b strings.Builder
	b.WriteString(manHead)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		if n, ok := argNames[f.Name]; ok {
			name = n
		} else {
			name = strings.ToUpper(name)
		}
		fmt.Fprintf(&b, "    --%s", f.Name)
		if name != "" {
			fmt.Fprintf(&b, " %s", name)
		}
		b.WriteString("\n")
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" && f.DefValue != "[]" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		wrap(&b, usage, "              ", 76)
	})
	b.WriteString("    --help, -h\n              print this manual and exit\n")
	b.WriteString(manTail)
	_, _ = io.WriteString(w, b.String())
}

// wrap writes text in lines of at most width characters, each indented.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
}
