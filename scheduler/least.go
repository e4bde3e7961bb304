package scheduler

import "gvs/ipvs"

// The stateless schedulers: each Schedule is one scan of the destination
// snapshot in list order, so the first destination wins ties.

// lc is least-connection: the minimum overhead.
type lc struct{}

func (*lc) Name() string         { return "lc" }
func (*lc) Update(*ipvs.Service) {}

func (*lc) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	var least *ipvs.Dest
	var loh int64
	for _, d := range svc.Dests() {
		if !d.Usable() {
			continue
		}
		if doh := d.Overhead(); least == nil || doh < loh {
			least, loh = d, doh
		}
	}
	return least
}

// wlc is weighted least-connection: the minimum overhead/weight.
type wlc struct{}

func (*wlc) Name() string         { return "wlc" }
func (*wlc) Update(*ipvs.Service) {}

func (*wlc) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	return leastWeighted(svc.Dests())
}

// leastWeighted is the wlc choice over ds, also used by lblc and lblcr:
// the usable destination with the minimum overhead/weight, first wins ties.
func leastWeighted(ds []*ipvs.Dest) *ipvs.Dest {
	var least *ipvs.Dest
	var loh, lw int64
	for _, d := range ds {
		if !d.Usable() {
			continue
		}
		doh, dw := d.Overhead(), int64(d.Weight())
		// loh/lw > doh/dw, cross-multiplied.
		if least == nil || loh*dw > doh*lw {
			least, loh, lw = d, doh, dw
		}
	}
	return least
}

// sed is shortest expected delay: the minimum (activeconns+1)/weight.
type sed struct{}

func (*sed) Name() string         { return "sed" }
func (*sed) Update(*ipvs.Service) {}

func (*sed) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	var least *ipvs.Dest
	var loh, lw int64
	for _, d := range svc.Dests() {
		if !d.Usable() {
			continue
		}
		doh, dw := int64(d.ActiveConns.Load())+1, int64(d.Weight())
		if least == nil || loh*dw > doh*lw {
			least, loh, lw = d, doh, dw
		}
	}
	return least
}

// nq is never-queue: the first usable destination with no active
// connection, otherwise sed.
type nq struct{}

func (*nq) Name() string         { return "nq" }
func (*nq) Update(*ipvs.Service) {}

func (*nq) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	var least *ipvs.Dest
	var loh, lw int64
	for _, d := range svc.Dests() {
		if !d.Usable() {
			continue
		}
		active := int64(d.ActiveConns.Load())
		if active == 0 {
			return d
		}
		doh, dw := active+1, int64(d.Weight())
		if least == nil || loh*dw > doh*lw {
			least, loh, lw = d, doh, dw
		}
	}
	return least
}

// fo is weighted failover: the usable destination with the highest weight.
type fo struct{}

func (*fo) Name() string         { return "fo" }
func (*fo) Update(*ipvs.Service) {}

func (*fo) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	var high *ipvs.Dest
	hw := 0
	for _, d := range svc.Dests() {
		if d.Overloaded() {
			continue
		}
		if w := d.Weight(); w > hw {
			high, hw = d, w
		}
	}
	return high
}

// ovf is overflow-connection: the highest-weight usable destination whose
// active connections do not exceed its weight.
type ovf struct{}

func (*ovf) Name() string         { return "ovf" }
func (*ovf) Update(*ipvs.Service) {}

func (*ovf) Schedule(svc *ipvs.Service, _ *ipvs.Flow) *ipvs.Dest {
	var high *ipvs.Dest
	hw := 0
	for _, d := range svc.Dests() {
		w := d.Weight()
		if w <= 0 || d.Overloaded() || int(d.ActiveConns.Load()) > w {
			continue
		}
		if high == nil || w > hw {
			high, hw = d, w
		}
	}
	return high
}
