package scheduler

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"gvs/ipvs"
)

// allFlags gives each scheduler the flags that exercise its slowest path.
func allFlags(name string) ipvs.SvcFlags {
	if name == "sh" || name == "mh" {
		return ipvs.SvcSched1 | ipvs.SvcSched2
	}
	return 0
}

func benchService(tb testing.TB, n int) *ipvs.Service {
	var specs []spec
	for i := range n {
		specs = append(specs, spec{w: 1 + i%5, act: int32(i % 3), inact: int32(i * 7 % 11)})
	}
	svc, _ := build(tb, specs...)
	return svc
}

func TestNoAllocs(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			svc := benchService(t, 8)
			s := mustNew(t, name, allFlags(name))
			s.Update(svc)
			// Quiesce one destination so that sh/mh fallbacks probe.
			setWeight(svc.Dests()[3], 0)
			i, picked := 0, 0
			f := clientFlow(0)
			allocs := testing.AllocsPerRun(2000, func() {
				i++
				// New client and destination addresses: cache misses too.
				f.SrcAddr = netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
				f.DstAddr = netip.AddrFrom4([4]byte{10, 30, byte(i >> 8), byte(i)})
				f.SrcPort = uint16(i)
				if s.Schedule(svc, f) != nil {
					picked++
				}
			})
			if allocs != 0 {
				t.Errorf("%s: %v allocs per Schedule", name, allocs)
			}
			if picked == 0 {
				t.Errorf("%s: no destination picked", name)
			}
		})
	}
}

// TestConcurrentScheduleUpdate runs every scheduler's Schedule on several
// goroutines while the control plane edits weights and flags and calls
// Update (meaningful under -race). Every pick must be a destination of the
// service.
func TestConcurrentScheduleUpdate(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			svc := benchService(t, 6)
			all := map[*ipvs.Dest]bool{}
			for _, d := range svc.Dests() {
				all[d] = true
			}
			s := mustNew(t, name, allFlags(name))
			s.Update(svc)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if d := s.Schedule(svc, clientFlow(g*100000+i)); d != nil && !all[d] {
							t.Error("picked a foreign destination")
							return
						}
					}
				}()
			}
			ds := svc.Dests()
			for i := range 200 {
				d := ds[i%len(ds)]
				setWeight(d, i%4)
				setOverload(d, i%3 == 0)
				if i%7 == 0 {
					svc.SetDests(ds[:len(ds)-1])
				} else {
					svc.SetDests(ds)
				}
				s.Update(svc)
			}
			close(stop)
			wg.Wait()
		})
	}
}

// FuzzSchedule builds a service from arbitrary weights, counters and flags
// and checks the invariants every scheduler keeps: no panic, and a pick is
// a usable destination of the service.
func FuzzSchedule(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint8(0), uint32(0x0a000001), uint16(80), uint8(0))
	f.Add([]byte{0, 0, 0, 0}, uint8(3), uint32(1), uint16(0), uint8(7)) // all quiesced, fallback+port
	f.Add([]byte{255, 1, 0, 128, 7}, uint8(1), uint32(0xffffffff), uint16(65535), uint8(3))
	f.Add([]byte{}, uint8(0), uint32(0), uint16(0), uint8(0)) // no destinations
	f.Fuzz(func(t *testing.T, ws []byte, flagBits uint8, src uint32, port uint16, over uint8) {
		if len(ws) > 32 {
			ws = ws[:32]
		}
		var specs []spec
		for i, w := range ws {
			specs = append(specs, spec{
				w:     int(w) * int(w), // up to 65025
				act:   int32(w % 7),
				inact: int32(w % 13),
				over:  over>>uint(i%8)&1 == 1 && w%2 == 0,
				addr:  fmt.Sprintf("10.%d.%d.%d", i, w, i*7%256),
			})
		}
		svc, _ := build(t, specs...)
		var a [4]byte
		a[0], a[1], a[2], a[3] = byte(src>>24), byte(src>>16), byte(src>>8), byte(src)
		fl := &ipvs.Flow{Proto: ipvs.Protocol(flagBits >> 2 * 11 % 20), SrcAddr: netip.AddrFrom4(a),
			DstAddr: netip.AddrFrom4([4]byte{a[3], a[2], a[1], a[0]}), SrcPort: port}
		for _, name := range Names() {
			s := mustNew(t, name, ipvs.SvcFlags(flagBits&3)<<3)
			s.Update(svc)
			for range 3 {
				d := s.Schedule(svc, fl)
				if d == nil {
					continue
				}
				if !d.Usable() || indexOf(svc.Dests(), d) < 0 {
					t.Fatalf("%s picked %v (weight %d, overloaded %v)", name, d.AddrPort(), d.Weight(), d.Overloaded())
				}
			}
		}
	})
}

func BenchmarkSchedule(b *testing.B) {
	for _, n := range []int{8, 64} {
		for _, name := range Names() {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				svc := benchService(b, n)
				s := mustNew(b, name, allFlags(name)&ipvs.SvcSched2)
				s.Update(svc)
				flows := make([]*ipvs.Flow, 1024)
				for i := range flows {
					flows[i] = clientFlow(i)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					s.Schedule(svc, flows[i&1023])
				}
			})
		}
	}
}

func BenchmarkScheduleParallel(b *testing.B) {
	for _, name := range Names() {
		b.Run(name, func(b *testing.B) {
			svc := benchService(b, 8)
			s := mustNew(b, name, 0)
			s.Update(svc)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				f := clientFlow(0)
				for pb.Next() {
					i++
					f.SrcAddr = netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
					f.DstAddr = f.SrcAddr
					s.Schedule(svc, f)
				}
			})
		})
	}
}
