// First packets: conn_reuse_mode, the FTP and port rules of ip_vs_schedule
// and ip_vs_leave, persistence templates and the scheduler, new entries.

package forwarder

import (
	"net/netip"
	"time"

	"gvs/conntrack"
	"gvs/ipvs"
)

// resched is the conn_reuse_mode decision of ip_vs_in for a SYN (any
// segment with SYN) that found connection c: start afresh when the
// connection's real server has weight 0 and expire_nodest_conn is set, or
// when a new connection is expected on it (is_new_conn_expected): it has
// no controlling template and is in TIME_WAIT or CLOSE, or (mode bit 2)
// in FIN_WAIT without output seen.
func (w *Worker) resched(c *conntrack.Conn) bool {
	mode := w.p.set.Get(ipvs.SysConnReuseMode)
	if mode == 0 {
		return false
	}
	if c.Dest != nil && c.Dest.Weight() == 0 && w.p.set.Get(ipvs.SysExpireNodestConn) != 0 {
		return true
	}
	if c.Flags&conntrack.FlagControlled != 0 {
		return false
	}
	switch c.State {
	case conntrack.StateTimeWait, conntrack.StateClose:
		return true
	case conntrack.StateFinWait:
		return mode&2 != 0 && c.Flags&conntrack.FlagNoOutput != 0
	}
	return false
}

// leave is ip_vs_leave, for a first packet to virtual port vport the
// service did not schedule (no real server, or a port a non-persistent
// service does not serve): another port of an FTP service's VIP goes to
// the host's stack, any other packet gets ICMP port unreachable — except
// an ICMP error (icmp: schedule_icmp), about which no error is sent: it is
// dropped (NoDest, NoReply counted).
func (w *Worker) leave(pk *packet, cfg *ipvs.ServiceConfig, vport uint16, icmp bool) *Result {
	if cfg.Port == 21 && vport != 21 {
		if icmp {
			return w.result(Result{Action: Pass})
		}
		return w.localStack(pk, FTPPort)
	}
	return w.icmpReply(pk, NoDest)
}

// schedule is ip_vs_schedule for the first packet of connection k of
// service svc: a client's TCP or UDP packet, or (icmp) an ICMP error
// whose quoted packet VIP -> client matched no connection, scheduled
// under schedule_icmp as ip_vs_in_icmp does (from the reversed quote: k's
// client and virtual address and port; the connection is created without
// a state transition and the error is forwarded as for a connection).
func (w *Worker) schedule(pk *packet, svc *ipvs.Service, k conntrack.InKey, icmp bool) *Result {
	p := &w.parsed
	now := pk.now
	st := svc.State()
	cfg := &st.Config
	// drop_packet (ip_vs_todrop): tcp_conn_schedule and udp_conn_schedule
	// ask it once the service is found, before ip_vs_schedule: the packet
	// reaches neither the scheduler nor a persistence template.
	if w.p.conns.ToDrop(k) {
		return w.drop(DropPacket)
	}
	cport, vport := k.CPort, k.VPort
	// ip_vs_schedule: never a packet from port 20 (active FTP data from
	// a real server), of any protocol; it goes to the host's stack.
	if cport == 20 {
		if icmp {
			return w.result(Result{Action: Pass})
		}
		return w.localStack(pk, FTPData)
	}
	// A non-persistent service schedules only its own port (the lookup
	// also finds it for other ports: the FTP and port-0 fallbacks).
	if !cfg.Persistent() && vport != cfg.Port {
		return w.leave(pk, cfg, vport, icmp)
	}
	// The flow lives in the worker: handed to a scheduler through an
	// interface, a stack value would escape to the heap. It is set field
	// by field: a composite literal would be built on the stack and
	// copied, with stalls on the copy's wide loads of its narrow stores.
	flow := &w.flow
	if icmp {
		flow.SrcAddr, flow.DstAddr = netip.AddrFrom4(p.Inner.Dst), netip.AddrFrom4(p.Inner.Src)
	} else {
		flow.SrcAddr, flow.DstAddr = p.SrcAddr(), p.DstAddr()
	}
	flow.Proto, flow.SrcPort, flow.DstPort = k.Proto, cport, vport

	var dest *ipvs.Dest
	var tmpl conntrack.TemplateRef
	if cfg.Persistent() {
		vport := cfg.Port
		if vport == 21 || vport == 0 {
			// FTP and port-0 services: one template for every port.
			vport = 0
		}
		tk := conntrack.NewTemplateKey(flow.Proto, flow.SrcAddr, cfg.Netmask, flow.DstAddr, vport)
		if d, ref, ok := w.p.conns.Template(tk, now); ok {
			dest, tmpl = d, ref
		} else if d := pick(st, svc, flow); d != nil {
			ref, err := w.p.conns.CreateTemplate(tk, d, time.Duration(cfg.Timeout)*time.Second, now)
			if err != nil {
				return w.drop(TableFull)
			}
			dest, tmpl = ref.Dest(), ref
		}
	} else {
		dest = pick(st, svc, flow)
	}
	if dest == nil {
		return w.leave(pk, cfg, vport, icmp)
	}
	// The real server's port for the service's own port; any other port
	// (FTP and port-0 persistent services) and a port-0 real server keep
	// the packet's.
	dport := vport
	if dport == cfg.Port && dest.Port != 0 {
		dport = dest.Port
	}
	c := &w.conn
	var err error
	switch {
	case cfg.OnePacket() && flow.Proto == ipvs.ProtoUDP:
		err = w.p.conns.CreateOnePacket(k, dest, dport, tmpl, now, c)
	case icmp:
		err = w.p.conns.CreateNoState(k, dest, dport, tmpl, now, c)
	default:
		err = w.p.conns.Create(k, dest, dport, tmpl, p.TCPFlags, now, c)
	}
	if err != nil {
		return w.drop(TableFull)
	}
	if w.p.learner != nil {
		w.p.learner.Learn(flow.SrcAddr, [6]byte(pk.frame()[6:12]), pk.link)
	}
	w.countConn(c.Dest)
	w.countIn(c.Dest, p.End-p.L3)
	pk.isNew = true
	if icmp {
		return w.xmitICMPIn(pk, c)
	}
	return w.xmitIn(pk, c, nil)
}

// pick asks the service's scheduler for a destination (nil: none).
func pick(st *ipvs.ServiceState, svc *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	if st.Sched == nil {
		return nil
	}
	return st.Sched.Schedule(svc, f)
}
