package keepalived

import (
	"bytes"
	"fmt"
	"io"

	"gvs/ipvs"
)

// WriteConf writes the IPVS-facing part of what c programs in state st as
// a keepalived.conf with every value explicit: one virtual_server per IPVS
// service (groups expanded), one real_server per destination with its
// final port, method and weight. Reading it back gives the same
// ipvsadm -S output. Checkers, quorum and scripts are not written.
func WriteConf(w io.Writer, c *Config, st State) error {
	var b bytes.Buffer
	if g := c.Global; g.HasTimeouts {
		b.WriteString("global_defs {\n    lvs_timeouts")
		for _, t := range []struct {
			name string
			v    int
		}{{"tcp", g.Timeouts.TCP}, {"tcpfin", g.Timeouts.TCPFin}, {"udp", g.Timeouts.UDP}} {
			if t.v != 0 {
				fmt.Fprintf(&b, " %s %d", t.name, t.v)
			}
		}
		b.WriteString("\n}\n")
	}
	for _, p := range c.Programmed(st) {
		s := &p.Config
		if len(p.Dests) == 0 {
			continue
		}
		if s.FWMark != 0 {
			fmt.Fprintf(&b, "virtual_server fwmark %d {\n", s.FWMark)
			if s.V6 {
				b.WriteString("    ip_family inet6\n")
			} else {
				b.WriteString("    ip_family inet\n")
			}
		} else {
			fmt.Fprintf(&b, "virtual_server %s %d {\n", s.Addr, s.Port)
			fmt.Fprintf(&b, "    protocol %s\n", protoName(s.Proto))
		}
		fmt.Fprintf(&b, "    lvs_sched %s\n", s.Scheduler)
		for i, f := range []string{"flag-1", "flag-2", "flag-3"} {
			if s.Flags&(ipvs.SvcSched1<<i) != 0 {
				fmt.Fprintf(&b, "    %s\n", f)
			}
		}
		if s.Flags&ipvs.SvcOnePacket != 0 {
			b.WriteString("    ops\n")
		}
		if s.Flags&ipvs.SvcPersistent != 0 {
			fmt.Fprintf(&b, "    persistence_timeout %d\n", s.Timeout)
			v6 := s.FWMark != 0 && s.V6 || s.FWMark == 0 && s.Addr.Is6()
			if v6 {
				fmt.Fprintf(&b, "    persistence_granularity %d\n", s.Netmask)
			} else {
				m := uint32(0)
				if s.Netmask > 0 {
					m = ^uint32(0) << (32 - s.Netmask)
				}
				fmt.Fprintf(&b, "    persistence_granularity %d.%d.%d.%d\n", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
			}
			if s.PE != "" {
				fmt.Fprintf(&b, "    persistence_engine %s\n", s.PE)
			}
		}
		for _, d := range p.Dests {
			fmt.Fprintf(&b, "    real_server %s %d {\n", d.Addr, d.Port)
			fmt.Fprintf(&b, "        lvs_method %s\n", methodWords(&d))
			fmt.Fprintf(&b, "        weight %d\n", d.Weight)
			if d.UThreshold != 0 {
				fmt.Fprintf(&b, "        uthreshold %d\n", d.UThreshold)
			}
			if d.LThreshold != 0 {
				fmt.Fprintf(&b, "        lthreshold %d\n", d.LThreshold)
			}
			b.WriteString("    }\n")
		}
		b.WriteString("}\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

func protoName(p ipvs.Protocol) string {
	switch p {
	case ipvs.ProtoUDP:
		return "UDP"
	case ipvs.ProtoSCTP:
		return "SCTP"
	}
	return "TCP"
}

func methodWords(d *ipvs.DestConfig) string {
	switch d.Method {
	case ipvs.Masq:
		return "NAT"
	case ipvs.Tunnel:
		s := "TUN"
		switch d.TunType {
		case ipvs.TunGUE:
			s += fmt.Sprintf(" type gue port %d", d.TunPort)
		case ipvs.TunGRE:
			s += " type gre"
		}
		switch d.TunFlags {
		case ipvs.TunCsum:
			s += " csum"
		case ipvs.TunRemCsum:
			s += " remcsum"
		}
		return s
	}
	return "DR"
}
