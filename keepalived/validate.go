package keepalived

import (
	"gvs/ipvs"
)

// validate is keepalived's validate_check_config (check_data.c): defaults,
// inheritance and the normalisations, reported as keepalived reports them
// (these messages carry no line number: keepalived runs this pass after
// reading the files).
func (p *parser) validate() {
	p.pos = Pos{}
	kept := p.cfg.VirtualServers[:0]
	for _, vs := range p.cfg.VirtualServers {
		var grp *Group
		if vs.Group != "" {
			grp = p.cfg.Groups[vs.Group]
			if grp == nil {
				// keepalived keeps such a service and programs nothing
				// for it (ipvs_group_cmd: "return if jointure fails").
				p.errorf("gvs: virtual server group %s is not defined - ignoring %s", vs.Group, vs.Name())
				continue
			}
		}
		p.validateVS(vs, grp)
		kept = append(kept, vs)
	}
	p.cfg.VirtualServers = kept
	p.scriptSecurity()
}

func groupHas(g *Group, marks bool) bool {
	for _, e := range g.Entries {
		if e.IsMark == marks {
			return true
		}
	}
	return false
}

func (p *parser) validateVS(vs *VirtualServer, grp *Group) {
	name := vs.Name()
	hasMarks := vs.FWMark != 0 || grp != nil && groupHas(grp, true)
	hasAddrs := grp == nil && vs.FWMark == 0 || grp != nil && groupHas(grp, false)
	svc := &vs.Service

	if vs.HASuspend && hasMarks {
		p.errorf("Virtual server %s: cannot use ha_suspend with fwmarks - clearing ha_suspend", name)
		vs.HASuspend = false
	}
	if hasAddrs {
		if svc.Proto == 0 {
			p.errorf("Virtual server %s: no protocol set - defaulting to UDP", name)
			svc.Proto = ipvs.ProtoUDP
			name = vs.Name()
		}
		if svc.Flags&ipvs.SvcOnePacket != 0 && svc.Proto != ipvs.ProtoUDP {
			p.errorf("Virtual server %s: one packet scheduling requires UDP - resetting", name)
			svc.Flags &^= ipvs.SvcOnePacket
		}
		if svc.Timeout == 0 && grp == nil && vs.FWMark == 0 && vs.Port == 0 {
			p.errorf("Virtual server %s: zero port only valid for persistent services - setting", name)
			svc.Timeout = ipvs.DefaultPersistTimeout
		}
	}
	if svc.Timeout == 0 && grp != nil {
		for _, e := range grp.Entries {
			if !e.IsMark && e.Port == 0 {
				p.errorf("Virtual server %s: zero port only valid for persistent services - setting", name)
				svc.Timeout = ipvs.DefaultPersistTimeout
				break
			}
		}
	}
	if svc.Proto != 0 && (grp != nil && !hasAddrs && hasMarks || grp == nil && vs.FWMark != 0) {
		p.errorf("Warning: Virtual server %s: protocol specified for fwmark - protocol will be ignored", name)
		svc.Proto = 0
	}
	if svc.Scheduler == "" {
		p.errorf("Virtual server %s: no scheduler set, setting default '%s'", name, ipvs.DefaultScheduler)
		svc.Scheduler = ipvs.DefaultScheduler
	}
	if svc.Timeout != 0 {
		svc.Flags |= ipvs.SvcPersistent
	} else {
		svc.PE = ""
	}
	v6 := vs.af == 6
	if grp != nil && vs.af == 0 {
		v6 = !groupHas4(grp)
	}
	if svc.Netmask < 0 || !svc.Persistent() {
		svc.Netmask = 32
		if v6 {
			svc.Netmask = 128
		}
	}
	if grp == nil {
		svc.ServiceKey = ipvs.ServiceKey{Proto: svc.Proto, Addr: vs.Addr, Port: vs.Port, FWMark: vs.FWMark, V6: vs.FWMark != 0 && v6}
	}

	// Real servers: duplicates, forwarding method, inherited values.
	var weightSum uint64
	rss := vs.RealServers[:0]
	for _, rs := range vs.RealServers {
		dup := false
		for _, prev := range rss {
			if prev.Dest.Addr == rs.Dest.Addr && prev.Dest.Port == rs.Dest.Port {
				dup = true
				break
			}
		}
		if dup {
			p.errorf("VS %s: real server %s is duplicated - removing second rs", name, trio(rs.Dest.Addr, svc.Proto, rs.Dest.Port))
			continue
		}
		rss = append(rss, rs)
		if !rs.methodSet {
			if !vs.methodSet {
				p.errorf("Virtual server %s: no forwarding method set, setting default NAT", name)
				vs.Method, vs.methodSet = ipvs.Masq, true
			}
			rs.Dest.Method, rs.Dest.TunType, rs.Dest.TunPort, rs.Dest.TunFlags = vs.Method, vs.TunType, vs.TunPort, vs.TunFlags
			rs.methodSet = true
		}
		rs.Alpha = pick(rs.alpha, b2i(vs.Alpha)) == 1
		rs.Inhibit = pick(rs.inhibit, b2i(vs.Inhibit)) == 1
		rs.retry = pick(rs.retry, vs.retry)
		rs.connectTimeout = pick(rs.connectTimeout, vs.connectTimeout)
		rs.delayLoop = pick(rs.delayLoop, vs.DelayLoop)
		rs.warmup = pick(rs.warmup, vs.warmup)
		rs.delayBeforeRetry = pick(rs.delayBeforeRetry, vs.delayBeforeRetry)
		rs.weight = pick(rs.weight, vs.weight)
		rs.rise = pick(rs.rise, vs.rise)
		rs.Slowstart = pick(rs.slowstart, vs.Slowstart)
		if rs.VirtualHost == "" {
			rs.VirtualHost = vs.VirtualHost
		}
		rs.Dest.Weight = rs.weight
		weightSum += uint64(rs.weight)
		if vs.Sorry != nil && vs.Sorry.Dest.Addr == rs.Dest.Addr && vs.Sorry.Dest.Port == rs.Dest.Port {
			if vs.Sorry.Inhibit != rs.Inhibit {
				verb := "clear"
				if rs.Inhibit {
					verb = "sett"
				}
				p.errorf("Virtual server %s: real server %s matches sorry server, but inhibit setting differs, %sing on sorry server", name, trio(rs.Dest.Addr, svc.Proto, rs.Dest.Port), verb)
				vs.Sorry.Inhibit = rs.Inhibit
			}
		}
	}
	vs.RealServers = rss
	if s := vs.Sorry; s != nil && !s.methodSet {
		if !vs.methodSet {
			p.errorf("Virtual server %s: no forwarding method set, setting default NAT", name)
			vs.Method, vs.methodSet = ipvs.Masq, true
		}
		s.Dest.Method, s.Dest.TunType, s.Dest.TunPort, s.Dest.TunFlags = vs.Method, vs.TunType, vs.TunPort, vs.TunFlags
		s.methodSet = true
	}
	if uint64(vs.Quorum) > weightSum {
		p.errorf("Warning - quorum %d for %s exceeds total weight of real servers %d, reducing quorum to %d", vs.Quorum, name, weightSum, weightSum)
		vs.Quorum = uint32(weightSum)
	}
	if vs.Hysteresis >= vs.Quorum {
		// Unsigned, as in keepalived: a quorum reduced to 0 gives
		// 4294967295.
		p.errorf("Virtual server %s: hysteresis %d >= quorum %d; setting hysteresis to %d", name, vs.Hysteresis, vs.Quorum, vs.Quorum-1)
		vs.Hysteresis = vs.Quorum - 1
	}

	// Ports: unless NAT, real servers use the virtual server's port (0 for
	// fwmark services).
	if grp != nil {
		if groupHas(grp, true) {
			for _, rs := range vs.RealServers {
				if rs.Dest.Method != ipvs.Masq && rs.Dest.Port != 0 {
					p.errorf("WARNING - fwmark virtual server %s, real server %s has port specified - port will be ignored", name, trio(rs.Dest.Addr, svc.Proto, rs.Dest.Port))
				}
			}
			if s := vs.Sorry; s != nil && s.Dest.Method != ipvs.Masq && s.Dest.Port != 0 {
				p.errorf("WARNING - fwmark virtual server %s, sorry server has port specified - port will be ignored", name)
			}
		}
		for _, e := range grp.Entries {
			if e.IsMark {
				continue
			}
			for _, rs := range vs.RealServers {
				if rs.Dest.Method != ipvs.Masq && rs.Dest.Port != 0 && rs.Dest.Port != e.Port {
					p.errorf("virtual server %s:[%s] and real server %s ports don't match", name, e.format(), trio(rs.Dest.Addr, svc.Proto, rs.Dest.Port))
				}
			}
			if s := vs.Sorry; s != nil && s.Dest.Method != ipvs.Masq && s.Dest.Port != 0 && s.Dest.Port != e.Port {
				p.errorf("WARNING - virtual server %s, sorry server has port specified - port will be ignored", name)
			}
		}
	} else {
		for _, rs := range vs.RealServers {
			p.fixPort(vs, rs, name, false)
		}
		if vs.Sorry != nil && vs.Sorry.Dest.Method != ipvs.Masq {
			p.fixPort(vs, vs.Sorry, name, true)
		}
	}

	// Checkers take their defaults from the real server.
	for _, rs := range vs.RealServers {
		for _, c := range rs.Checkers {
			c.Alpha = pick(c.alpha, b2i(rs.Alpha)) == 1
			c.Retry = pick(c.retry, pick(rs.retry, c.defaultRetry))
			c.ConnectTimeout = pick(c.connectTimeout, rs.connectTimeout)
			c.DelayLoop = pick(c.delayLoop, rs.delayLoop)
			c.Warmup = pick(c.warmup, pick(rs.warmup, c.DelayLoop))
			c.DelayBeforeRetry = c.delayBeforeRetry
			if c.DelayBeforeRetry < 0 {
				switch {
				case rs.delayBeforeRetry >= 0:
					c.DelayBeforeRetry = rs.delayBeforeRetry
				case c.defaultDBR != 0:
					c.DelayBeforeRetry = c.defaultDBR
				default:
					c.DelayBeforeRetry = c.DelayLoop
				}
			}
			c.Rise = pick(c.rise, pick(rs.rise, 1))
			if c.hasConn {
				if !c.ConnectIP.IsValid() {
					c.ConnectIP = rs.Dest.Addr
				}
				if c.ConnectPort == 0 {
					c.ConnectPort = rs.Dest.Port
				}
			} else {
				c.ConnectTimeout = 0
			}
			if c.HTTP != nil && c.HTTP.VirtualHost == "" {
				c.HTTP.VirtualHost = rs.VirtualHost
			}
			if c.Misc != nil && c.Misc.Timeout == 0 {
				c.Misc.Timeout = c.DelayLoop
			}
		}
	}
}

func groupHas4(g *Group) bool {
	for _, e := range g.Entries {
		if !e.IsMark && e.First.Is4() || e.IsMark && e.Family == "inet" {
			return true
		}
	}
	return false
}

// pick is v as given, or def when v is unset (negative).
func pick[T ~int | ~int64](v, def T) T {
	if v < 0 {
		return def
	}
	return v
}

// fixPort applies validate_check_config's port rules to a real or sorry
// server of a service that is not a group.
func (p *parser) fixPort(vs *VirtualServer, rs *RealServer, name string, sorry bool) {
	d := &rs.Dest
	proto := vs.Service.Proto
	if d.Method == ipvs.Masq {
		if vs.FWMark == 0 && d.Port == 0 {
			d.Port = vs.Port
		}
		return
	}
	if vs.FWMark != 0 {
		if d.Port != 0 {
			if sorry {
				p.errorf("WARNING - virtual server %s, sorry server has port specified - clearing", name)
			} else {
				p.errorf("WARNING - fwmark virtual server %s, real server %s has port specified - clearing", name, trio(d.Addr, proto, d.Port))
			}
			d.Port = 0
		}
		return
	}
	switch {
	case d.Port == 0:
		d.Port = vs.Port
	case d.Port != vs.Port:
		if sorry {
			p.errorf("WARNING - virtual server %s and sorry server ports don't match - resetting", name)
		} else {
			p.errorf("WARNING - virtual server %s and real server %s ports don't match - resetting", name, trio(d.Addr, proto, d.Port))
		}
		d.Port = vs.Port
	}
}

// format is format_vsge: "FWM n", "a-b,port" or "a,port".
func (e GroupEntry) format() string {
	switch {
	case e.IsMark:
		return "FWM " + uitoa(uint64(e.FWMark))
	case e.First != e.Last:
		return e.First.String() + "-" + e.Last.String() + "," + uitoa(uint64(e.Port))
	}
	return e.First.String() + "," + uitoa(uint64(e.Port))
}

// scriptSecurity is check_check_script_security's verdict when scripts are
// configured and enable_script_security is not set.
func (p *parser) scriptSecurity() {
	if p.cfg.Global.ScriptSecurity {
		return
	}
	for _, vs := range p.cfg.VirtualServers {
		has := vs.QuorumUp != nil || vs.QuorumDown != nil
		for _, rs := range vs.RealServers {
			has = has || rs.NotifyUp != nil || rs.NotifyDown != nil
			for _, c := range rs.Checkers {
				has = has || c.Misc != nil
			}
		}
		if has {
			p.report(Pos{}, Security, "SECURITY VIOLATION - check scripts are being executed but script_security not enabled.")
			return
		}
	}
}
