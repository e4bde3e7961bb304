package conntrack

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvs/ipvs"
)

// TestConcurrent runs two workers creating and looking up connections (some
// under templates) while a third goroutine expires; run it with -race.
func TestConcurrent(t *testing.T) {
	tb := New(Config{Shards: 4, Capacity: 3000})
	dests := []*ipvs.Dest{
		newDest(t, ipvs.Masq, "198.19.1.1", 80),
		newDest(t, ipvs.Route, "198.19.1.2", 80),
		newDest(t, ipvs.Tunnel, "198.19.1.3", 80),
	}
	var clock atomic.Int64
	clock.Store(t0)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	worker := func(id uint64) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(id, 99))
		var c Conn
		for i := 0; i < 30000; i++ {
			now := clock.Add(int64(r.IntN(50)) * int64(time.Millisecond))
			proto := ipvs.ProtoTCP
			if r.IntN(4) == 0 {
				proto = ipvs.ProtoUDP
			}
			k := InKeyV4(proto, [4]byte{198, 18, byte(r.IntN(4)), byte(r.IntN(200))}, uint16(r.IntN(8)), [4]byte{203, 0, 113, 10}, 80)
			flags := []uint8{TCPSyn, TCPAck, TCPFin | TCPAck, TCPRst}[r.IntN(4)]
			if tb.In(k, flags, now, &c) {
				if c.Method == ipvs.Masq && r.IntN(2) == 0 {
					tb.Out(ReplyKey{Proto: proto, DAddr: c.Dest.Addr.As16(), DPort: c.DPort, CAddr: k.CAddr, CPort: k.CPort}, TCPAck, now, &c)
				}
				continue
			}
			var ref TemplateRef
			d := dests[r.IntN(len(dests))]
			if r.IntN(3) == 0 {
				tk := TemplateKey{Proto: proto, CNet: k.CAddr, VAddr: k.VAddr, VPort: 80}
				tk.CNet[15] = 0
				var ok bool
				if d, ref, ok = tb.Template(tk, now); !ok {
					d = dests[r.IntN(len(dests))]
					var err error
					if ref, err = tb.CreateTemplate(tk, d, 2*time.Second, now); err != nil {
						continue
					}
					d = ref.Dest()
				}
			}
			_ = tb.Create(k, d, 80, ref, flags, now, &c)
			if r.IntN(50) == 0 {
				tb.Remove(k)
			}
		}
	}
	wg.Add(2)
	go worker(1)
	go worker(2)
	var expirer sync.WaitGroup
	expirer.Add(1)
	go func() {
		defer expirer.Done()
		for {
			select {
			case <-stop:
				return
			default:
				tb.Expire(clock.Load())
				tb.Walk(clock.Load(), func(*Conn) {})
			}
		}
	}()
	wg.Wait()
	close(stop)
	expirer.Wait()

	st := tb.Stats()
	if st.Inserts == 0 || st.Expired == 0 {
		t.Fatalf("test did not exercise the table: %+v", st)
	}
	live := 0
	var a, i, p int32
	tb.Walk(clock.Load(), func(c *Conn) { live++ })
	for _, d := range dests {
		a += d.ActiveConns.Load()
		i += d.InactConns.Load()
		p += d.PersistConns.Load()
	}
	if int(a+i+p) != tb.Len() || live > tb.Len() {
		t.Fatalf("counters %d+%d+%d != len %d (walk %d)", a, i, p, tb.Len(), live)
	}
	tb.Expire(clock.Load() + 10000*sec)
	if tb.Len() != 0 {
		t.Fatalf("len %d after everything expired", tb.Len())
	}
	for _, d := range dests {
		checkCounts(t, d.Addr.String(), d, 0, 0, 0)
	}
}

func TestNoAllocs(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 7})
	nat := newDest(t, ipvs.Masq, "198.19.2.1", 8080)
	var c Conn
	// Warm up: grow slabs and indexes, then empty the table.
	for i := 0; i < 4000; i++ {
		_ = tb.Create(InKeyV4(ipvs.ProtoTCP, [4]byte{198, 18, byte(i >> 8), byte(i)}, 1, [4]byte{203, 0, 113, 1}, 80), nat, 8080, TemplateRef{}, TCPSyn, t0, &c)
	}
	tb.Flush()
	k := InKeyV4(ipvs.ProtoTCP, [4]byte{198, 18, 0, 1}, 1000, [4]byte{203, 0, 113, 1}, 80)
	rk := ReplyKeyV4(ipvs.ProtoTCP, [4]byte{198, 19, 2, 1}, 8080, [4]byte{198, 18, 0, 1}, 1000)
	tk := NewTemplateKey(ipvs.ProtoTCP, client, 24, vip, 80)
	if err := tb.Create(k, nat, 8080, TemplateRef{}, TCPSyn, t0, &c); err != nil {
		t.Fatal(err)
	}
	ref, err := tb.CreateTemplate(tk, nat, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	now := int64(t0)
	i := 0
	cases := []struct {
		name string
		fn   func()
	}{
		{"In", func() { now += 1000; tb.In(k, TCPAck, now, &c) }},
		{"Out", func() { now += 1000; tb.Out(rk, TCPAck, now, &c) }},
		{"PeekIn", func() { tb.PeekIn(k, now, &c) }},
		{"PeekOut", func() { tb.PeekOut(rk, now, &c) }},
		{"Template", func() { tb.Template(tk, now) }},
		{"Create", func() {
			i++
			_ = tb.Create(InKeyV4(ipvs.ProtoTCP, [4]byte{198, 18, byte(i >> 8), byte(i)}, 2, [4]byte{203, 0, 113, 1}, 80), nat, 8080, ref, TCPSyn, now, &c)
		}},
		{"Expire idle", func() { now += 1000; tb.Expire(now) }},
		{"Expire busy", func() { now += 2 * sec; tb.Expire(now) }}, // NONE/SYN_RECV entries fall due
		{"Key", func() { k = InKeyV4(ipvs.ProtoUDP, [4]byte{1, 2, 3, 4}, 5, [4]byte{6, 7, 8, 9}, 10) }},
	}
	for _, tc := range cases {
		if n := testing.AllocsPerRun(1000, tc.fn); n != 0 {
			t.Errorf("%s: %v allocs per call", tc.name, n)
		}
	}
	if tb.Stats().Expired == 0 {
		t.Error("Expire busy expired nothing")
	}
}
