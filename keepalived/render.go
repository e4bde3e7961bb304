package keepalived

import (
	"bytes"
	"io"
	"sort"

	"gvs/ipvs"
	"gvs/ipvsadm"
)

// Service is one IPVS service a virtual_server creates: the block itself,
// or one address (or fwmark) of its virtual_server_group.
type Service struct {
	Config ipvs.ServiceConfig
	VS     *VirtualServer
	// Entry is the group entry the service comes from (nil outside groups).
	Entry *GroupEntry
}

// Services lists the IPVS services of every virtual server in the order
// keepalived adds them: virtual servers in file order; within a group, every
// address of every address entry (ranges expanded), then the fwmark
// entries (ipvs_group_cmd walks addr_range, then vfwmark).
func (c *Config) Services() []Service {
	var out []Service
	for _, vs := range c.VirtualServers {
		out = append(out, c.ServicesOf(vs)...)
	}
	return out
}

// ServicesOf lists the IPVS services of one virtual server.
func (c *Config) ServicesOf(vs *VirtualServer) []Service {
	if vs.Group == "" {
		return []Service{{Config: vs.Service, VS: vs}}
	}
	g := c.Groups[vs.Group]
	if g == nil {
		return nil
	}
	var out []Service
	for i := range g.Entries {
		e := &g.Entries[i]
		if e.IsMark {
			continue
		}
		for a := e.First; a.IsValid(); a = a.Next() {
			cfg := vs.Service
			cfg.ServiceKey = ipvs.ServiceKey{Proto: vs.Service.Proto, Addr: a, Port: e.Port}
			out = append(out, Service{Config: cfg, VS: vs, Entry: e})
			if a == e.Last {
				break
			}
		}
	}
	for i := range g.Entries {
		e := &g.Entries[i]
		if !e.IsMark {
			continue
		}
		v6 := e.Family == "inet6" || e.Family == "" && vs.af == 6
		cfg := vs.Service
		cfg.ServiceKey = ipvs.ServiceKey{FWMark: e.FWMark, V6: v6}
		if v6 && cfg.Netmask == 32 {
			cfg.Netmask = 128
		} else if !v6 && cfg.Netmask == 128 {
			cfg.Netmask = 32
		}
		out = append(out, Service{Config: cfg, VS: vs, Entry: e})
	}
	return out
}

// Dest is the destination rs (a real server or the sorry server of the
// service's virtual server) becomes in this service: in a group, a real
// server that is not NAT takes the entry's port (0 for a fwmark entry).
func (s Service) Dest(rs *RealServer) ipvs.DestConfig {
	d := rs.Dest
	if s.Entry != nil && d.Method != ipvs.Masq {
		d.Port = s.Entry.Port
		if s.Entry.IsMark {
			d.Port = 0
		}
	}
	return d
}

// State selects which IPVS state WriteSave renders.
type State uint8

const (
	// AllUp is the state once every checker has succeeded.
	AllUp State = iota
	// Startup is what keepalived programs before any check has run: real
	// servers with an alpha checker are left out (or added with weight 0
	// when inhibit_on_failure), and a virtual server whose quorum is not
	// met gets its sorry server.
	Startup
)

// PoolDest is a destination in a service's pool.
type PoolDest struct {
	RS     *RealServer // the real or sorry server
	Sorry  bool
	Weight int
}

// Pool is the list of destinations keepalived has in IPVS for vs in the
// given state, in the order it adds them, and whether its quorum is up.
func (vs *VirtualServer) Pool(st State) ([]PoolDest, bool) {
	alive := make([]bool, len(vs.RealServers))
	var w uint64
	for i, rs := range vs.RealServers {
		alive[i] = true
		for _, c := range rs.Checkers {
			if c.Alpha {
				alive[i] = false
			}
		}
		if alive[i] {
			w += uint64(rs.Dest.Weight)
		}
	}
	// set_quorum_states runs before any real server is alive, so the
	// quorum starts down; init_service_vs then gains it when the live
	// weight reaches quorum + hysteresis.
	up := w >= uint64(vs.Quorum)+uint64(vs.Hysteresis)
	if st == AllUp {
		w = 0
		for i, rs := range vs.RealServers {
			alive[i] = true
			w += uint64(rs.Dest.Weight)
		}
		up = up || w >= uint64(vs.Quorum)+uint64(vs.Hysteresis)
	}
	var out []PoolDest
	sorryDup := false
	for i, rs := range vs.RealServers {
		if vs.Sorry != nil && rs.Dest.Addr == vs.Sorry.Dest.Addr && rs.Dest.Port == vs.Sorry.Dest.Port {
			sorryDup = true
		}
		useSorry := !up && vs.Sorry != nil
		switch {
		case alive[i] && !useSorry:
			out = append(out, PoolDest{RS: rs, Weight: rs.Dest.Weight})
		case rs.Inhibit:
			out = append(out, PoolDest{RS: rs, Weight: 0})
		}
	}
	if s := vs.Sorry; s != nil {
		switch {
		case !up:
			out = append(out, PoolDest{RS: s, Sorry: true, Weight: s.Dest.Weight})
		case s.Inhibit && !sorryDup:
			out = append(out, PoolDest{RS: s, Sorry: true, Weight: 0})
		}
	}
	return out, up
}

// SaveOptions selects what WriteSave prints.
type SaveOptions struct {
	State State
	// Sorted prints services and destinations in ipvsadm -S order (sorted
	// as the kernel lists them through ipvsadm) instead of the order
	// keepalived programs them.
	Sorted bool
}

// WriteSave writes, as "ipvsadm -S -n" lines, what keepalived would have
// in IPVS for c. By default the lines come in the order keepalived adds
// them (every service of a virtual server, then each destination to each
// of its services), which ipvsadm -R replays; with Sorted they are in
// ipvsadm -S's own order. Like ipvsadm -S, thresholds (-x/-y) are not
// printed.
// The lines are those of package ipvsadm's printer.
func WriteSave(w io.Writer, c *Config, o SaveOptions) error {
	var b bytes.Buffer
	svcs, order := c.programmed(o.State)
	if !o.Sorted {
		for _, op := range order {
			s := svcs[op.svc]
			if op.dest < 0 {
				ipvsadm.WriteServiceRule(&b, &s.cfg)
			} else {
				ipvsadm.WriteDestRule(&b, &s.cfg, &s.dests[op.dest])
			}
		}
	} else {
		sort.SliceStable(svcs, func(i, j int) bool { return svcLess(&svcs[i].cfg, &svcs[j].cfg) })
		for _, s := range svcs {
			ipvsadm.WriteServiceRule(&b, &s.cfg)
			ds := append([]ipvs.DestConfig(nil), s.dests...)
			sort.SliceStable(ds, func(i, j int) bool {
				if c := ds[i].Addr.Compare(ds[j].Addr); c != 0 {
					return c < 0
				}
				return ds[i].Port < ds[j].Port
			})
			for k := range ds {
				ipvsadm.WriteDestRule(&b, &s.cfg, &ds[k])
			}
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Programmed is one IPVS service with its destinations as keepalived
// leaves them in a given state.
type Programmed struct {
	Config ipvs.ServiceConfig
	Dests  []ipvs.DestConfig
}

// Programmed lists the IPVS services and destinations keepalived would
// have in the given state, in the order it adds the services. As in the
// kernel, a service added twice (two virtual_server blocks with the same
// key) exists once and keeps its first configuration, and a destination
// added twice to a service ("Destination already exists") once.
func (c *Config) Programmed(st State) []Programmed {
	svcs, _ := c.programmed(st)
	out := make([]Programmed, len(svcs))
	for i, s := range svcs {
		out[i] = Programmed{Config: s.cfg, Dests: s.dests}
	}
	return out
}

type progSvc struct {
	cfg   ipvs.ServiceConfig
	dests []ipvs.DestConfig
}

type progOp struct{ svc, dest int }

func (c *Config) programmed(st State) ([]progSvc, []progOp) {
	var svcs []progSvc
	var order []progOp
	index := map[ipvs.ServiceKey]int{}
	for _, vs := range c.VirtualServers {
		group := c.ServicesOf(vs)
		pool, _ := vs.Pool(st)
		idx := make([]int, len(group))
		for i, s := range group {
			k := s.Config.ServiceKey.Norm()
			j, ok := index[k]
			if !ok {
				j = len(svcs)
				index[k] = j
				svcs = append(svcs, progSvc{cfg: s.Config})
				order = append(order, progOp{j, -1})
			}
			idx[i] = j
		}
		for _, pd := range pool {
			for i, s := range group {
				d := s.Dest(pd.RS)
				d.Weight = pd.Weight
				ps := &svcs[idx[i]]
				dup := false
				for _, e := range ps.dests {
					if e.Addr == d.Addr && e.Port == d.Port {
						dup = true
						break
					}
				}
				if dup {
					continue
				}
				ps.dests = append(ps.dests, d)
				order = append(order, progOp{idx[i], len(ps.dests) - 1})
			}
		}
	}
	return svcs, order
}

// svcLess is ipvsadm's service order: fwmark, family, protocol, address,
// port.
func svcLess(a, b *ipvs.ServiceConfig) bool {
	if a.FWMark != b.FWMark {
		return a.FWMark < b.FWMark
	}
	af := func(c *ipvs.ServiceConfig) int {
		if c.FWMark != 0 && c.V6 || c.FWMark == 0 && c.Addr.Is6() {
			return 10
		}
		return 2
	}
	if af(a) != af(b) {
		return af(a) < af(b)
	}
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c < 0
	}
	return a.Port < b.Port
}
