package main

import (
	"fmt"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"gvs/conntrack"
	"gvs/ipvs"
)

// ctKey is the i-th benchmark connection: distinct client address and port
// per i, one VIP.
func ctKey(i int) conntrack.InKey {
	return conntrack.InKeyV4(ipvs.ProtoTCP, [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}, uint16(1024+(i>>24)), [4]byte{198, 51, 100, 10}, 80)
}

// ctResult is one conntrack-at-size measurement.
type ctResult struct {
	N             int
	BytesPerConn  float64
	InsertPerSec  float64
	LookupPerSec  float64 // one goroutine
	LookupPerSecP float64 // GOMAXPROCS goroutines
}

// measureConntrack fills a gvs connection table with n established NAT
// connections in-process (the table gvsd uses, without packets) and
// measures heap bytes per connection, insert rate and lookup rates for
// about dur each. The lookups walk the keys in a scattered order so most
// miss the CPU caches, as a big table's lookups do.
func measureConntrack(n int, dur time.Duration) (ctResult, error) {
	r := ctResult{N: n}
	svc := ipvs.NewService(ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80}})
	d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: netip.MustParseAddr("198.18.2.11"), Port: 80, Method: ipvs.Masq, Weight: 1})
	svc.SetDests([]*ipvs.Dest{d})

	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	t := conntrack.New(conntrack.Config{Capacity: n, Seed: 7})
	var c conntrack.Conn
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := t.Create(ctKey(i), d, 80, conntrack.TemplateRef{}, conntrack.TCPAck, 1, &c); err != nil {
			return r, fmt.Errorf("conntrack fill at %d: %w", i, err)
		}
	}
	r.InsertPerSec = float64(n) / time.Since(start).Seconds()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	r.BytesPerConn = float64(m1.HeapAlloc-m0.HeapAlloc) / float64(n)

	lookups := func(seed int, stop *atomic.Bool) (int, error) {
		var c conntrack.Conn
		done := 0
		for j := seed; !stop.Load() || done == 0; j++ {
			for k := 0; k < 4096; k++ {
				i := int((uint64(j)*4096 + uint64(k)) * 2654435761 % uint64(n))
				if !t.In(ctKey(i), conntrack.TCPAck, 2, &c) {
					return done, fmt.Errorf("conntrack: lookup %d missed", i)
				}
			}
			done += 4096
		}
		return done, nil
	}
	run := func(workers int) (float64, error) {
		var stop atomic.Bool
		var mu sync.Mutex
		var wg sync.WaitGroup
		total := 0
		var firstErr error
		start := time.Now()
		for w := 0; w < workers; w++ {
			wg.Go(func() {
				k, err := lookups(w*1_000_003, &stop)
				mu.Lock()
				total += k
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			})
		}
		time.Sleep(dur)
		stop.Store(true)
		wg.Wait()
		return float64(total) / time.Since(start).Seconds(), firstErr
	}
	var err error
	if r.LookupPerSec, err = run(1); err != nil {
		return r, err
	}
	if r.LookupPerSecP, err = run(runtime.GOMAXPROCS(0)); err != nil {
		return r, err
	}
	runtime.KeepAlive(t)
	t = nil
	runtime.GC()
	debug.FreeOSMemory()
	return r, nil
}
