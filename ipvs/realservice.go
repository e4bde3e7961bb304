package ipvs

import "net/netip"

// HasRealService reports whether addr:port is a NAT (masquerading) real
// server of a proto service or of an fwmark service, as IPVS's
// ip_vs_has_real_service answers for ip_vs_out's nat_icmp_send. It is
// lock-free and does not allocate, but walks every service's
// destinations: for packets that already found no connection, not for
// every packet.
func (t *Table) HasRealService(proto Protocol, addr netip.Addr, port uint16) bool {
	s := t.snap.Load()
	for _, svc := range s.byAddr {
		if st := svc.State(); st != nil && st.Config.Proto == proto && hasMasqDest(svc, addr, port) {
			return true
		}
	}
	for _, svc := range s.byMark {
		if hasMasqDest(svc, addr, port) {
			return true
		}
	}
	return false
}

func hasMasqDest(svc *Service, addr netip.Addr, port uint16) bool {
	for _, d := range svc.Dests() {
		if d.Port == port && d.Addr == addr && d.Method() == Masq {
			return true
		}
	}
	return false
}
