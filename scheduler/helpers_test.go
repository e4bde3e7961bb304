package scheduler

import (
	"fmt"
	"net/netip"
	"testing"

	"gvs/ipvs"
)

// spec describes one test destination. Services are built from specs in
// list order (the first spec is the head of the list, i.e. the newest).
type spec struct {
	name  string // "A", "B", ...: becomes 10.1.0.<index+1>
	w     int
	act   int32
	inact int32
	over  bool
	addr  string // optional explicit address
	port  uint16
}

func testService(flags ipvs.SvcFlags) *ipvs.Service {
	return ipvs.NewService(ipvs.ServiceConfig{
		ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80},
		Flags:      flags,
	})
}

// build makes a service and its destinations from specs (list order).
func build(t testing.TB, specs ...spec) (*ipvs.Service, map[string]*ipvs.Dest) {
	t.Helper()
	svc := testService(0)
	byName := map[string]*ipvs.Dest{}
	list := make([]*ipvs.Dest, 0, len(specs))
	for i, s := range specs {
		a := netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})
		if s.addr != "" {
			a = netip.MustParseAddr(s.addr)
		}
		port := s.port
		if port == 0 {
			port = 8080
		}
		d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: a, Port: port, Method: ipvs.Route, Weight: s.w})
		d.ActiveConns.Store(s.act)
		d.InactConns.Store(s.inact)
		if s.over {
			setOverload(d, true)
		}
		d.Index = i
		name := s.name
		if name == "" {
			name = fmt.Sprint(i)
		}
		byName[name] = d
		list = append(list, d)
	}
	svc.SetDests(list)
	return svc, byName
}

// setOverload sets or clears IP_VS_DEST_F_OVERLOAD through the model's own
// threshold logic, leaving the connection counters as they were.
func setOverload(d *ipvs.Dest, on bool) {
	c := d.Config()
	if !on {
		c.UThreshold = 0
		d.Update(c)
		return
	}
	c.UThreshold = 1
	d.Update(c)
	d.Bind(false) // total >= 1 >= u: OVERLOAD
	d.InactConns.Add(-1)
	if !d.Overloaded() {
		panic("setOverload failed")
	}
}

func setWeight(d *ipvs.Dest, w int) {
	c := d.Config()
	c.Weight = w
	d.Update(c)
}

func mustNew(t testing.TB, name string, flags ipvs.SvcFlags) ipvs.Scheduler {
	t.Helper()
	s, err := New(name, flags)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nameOf is the spec name of d in m ("-" for nil).
func nameOf(m map[string]*ipvs.Dest, d *ipvs.Dest) string {
	if d == nil {
		return "-"
	}
	for k, v := range m {
		if v == d {
			return k
		}
	}
	return "?"
}

// picks runs n schedules of the same flow and returns the names picked.
func picks(s ipvs.Scheduler, svc *ipvs.Service, m map[string]*ipvs.Dest, f *ipvs.Flow, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = nameOf(m, s.Schedule(svc, f))
	}
	return out
}

func flow(src, dst string, sport uint16) *ipvs.Flow {
	return &ipvs.Flow{
		Proto: ipvs.ProtoTCP, SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst),
		SrcPort: sport, DstPort: 80,
	}
}

// clientFlow is the i-th of many distinct client flows.
func clientFlow(i int) *ipvs.Flow {
	return &ipvs.Flow{
		Proto:   ipvs.ProtoTCP,
		SrcAddr: netip.AddrFrom4([4]byte{172, byte(16 + i>>16&0x0f), byte(i >> 8), byte(i)}),
		DstAddr: netip.AddrFrom4([4]byte{192, 0, 2, 1}),
		SrcPort: uint16(1024 + i%50000), DstPort: 80,
	}
}
