package conntrack

import (
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"gvs/ipvs"
)

// Benchmarks run against a table of 1M live NAT connections (all indexes
// populated). Set GVS_CONNTRACK_10M=1 to also run the 10M-entry variants.

func benchKey(i int) InKey {
	return InKeyV4(ipvs.ProtoTCP, [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}, uint16(1024+i&7), [4]byte{203, 0, 113, 1}, 80)
}

func sizes(b *testing.B) []int {
	s := []int{1 << 20}
	if os.Getenv("GVS_CONNTRACK_10M") != "" {
		s = append(s, 10<<20)
	} else {
		b.Log("set GVS_CONNTRACK_10M=1 for the 10M-entry variant")
	}
	return s
}

func sizeName(n int) string {
	if n >= 10<<20 {
		return "10M"
	}
	return "1M"
}

// filled builds a table with n ESTABLISHED NAT connections created at t0.
func filled(tb testing.TB, n int) (*Table, *ipvs.Dest) { return filledCap(tb, n, n) }

func filledCap(tb testing.TB, n, capacity int) (*Table, *ipvs.Dest) {
	t := New(Config{Capacity: capacity, Seed: 11})
	d := newDest(tb, ipvs.Masq, "198.19.9.1", 8080)
	var c Conn
	for i := 0; i < n; i++ {
		if err := t.Create(benchKey(i), d, 8080, TemplateRef{}, TCPAck, t0, &c); err != nil {
			tb.Fatal(err)
		}
	}
	return t, d
}

func BenchmarkInsert(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(sizeName(n), func(b *testing.B) {
			t, d := filledCap(b, n, n+b.N)
			var c Conn
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := t.Create(benchKey(n+i), d, 8080, TemplateRef{}, TCPSyn, t0, &c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkIn(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(sizeName(n), func(b *testing.B) {
			t, _ := filled(b, n)
			var c Conn
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if !t.In(benchKey((i*7919)%n), TCPAck, t0+1, &c) {
					b.Fatal("miss")
				}
			}
		})
	}
}

func BenchmarkOut(b *testing.B) {
	t, _ := filled(b, 1<<20)
	var c Conn
	n := 1 << 20
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := benchKey((i * 7919) % n)
		if !t.Out(ReplyKey{Proto: k.Proto, DAddr: Mapped4([4]byte{198, 19, 9, 1}), DPort: 8080, CAddr: k.CAddr, CPort: k.CPort}, TCPAck, t0+1, &c) {
			b.Fatal("miss")
		}
	}
}

// BenchmarkInParallel: lookups from 2 goroutines (one per core here);
// reports total lookups/s.
func BenchmarkInParallel(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(sizeName(n), func(b *testing.B) {
			t, _ := filled(b, n)
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(1) // GOMAXPROCS goroutines
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var c Conn
				i := int(seq.Add(1)) * 1_000_003
				for pb.Next() {
					i += 7919
					if !t.In(benchKey(i%n), TCPAck, t0+1, &c) {
						panic("miss")
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
		})
	}
}

// BenchmarkExpire reclaims 1M UDP entries whose deadlines are spread over
// 1000 s, calling Expire every millisecond of fake time (like the replay
// tool between frames). Reports the cost per reclaimed entry and per call.
func BenchmarkExpire(b *testing.B) {
	const n = 1 << 20
	b.ReportAllocs()
	var calls, expired int
	var elapsed time.Duration
	for it := 0; it < b.N; it++ {
		t := New(Config{Capacity: n, Seed: 5})
		d := newDest(b, ipvs.Masq, "198.19.9.2", 53)
		var c Conn
		for i := 0; i < n; i++ {
			k := benchKey(i)
			k.Proto = ipvs.ProtoUDP
			if err := t.Create(k, d, 53, TemplateRef{}, 0, t0+int64(i)*int64(time.Millisecond), &c); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		for now := int64(t0); t.Len() > 0; now += int64(time.Millisecond) {
			expired += t.Expire(now)
			calls++
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(expired), "ns/expired")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(calls), "ns/call")
}

// BenchmarkExpireIdle: Expire on a 1M table when nothing is due.
func BenchmarkExpireIdle(b *testing.B) {
	t, _ := filled(b, 1<<20)
	t.Expire(t0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t.Expire(t0 + int64(i%100000))
	}
}

// memPerEntry measures heap bytes per live NAT connection in a table of n.
func memPerEntry(tb testing.TB, n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t, _ := filled(tb, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if t.Len() != n {
		tb.Fatalf("len %d", t.Len())
	}
	runtime.KeepAlive(t)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

func BenchmarkMemory(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(sizeName(n), func(b *testing.B) {
			var per float64
			for i := 0; i < b.N; i++ {
				per = memPerEntry(b, n)
			}
			b.ReportMetric(per, "B/entry")
		})
	}
}

// TestMemoryPerEntry checks the memory target: <= 160 bytes per live entry,
// all indexes included.
func TestMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("inserts 1M entries")
	}
	per := memPerEntry(t, 1<<20)
	t.Logf("%.1f B/entry (1M NAT connections)", per)
	if per > 160 {
		t.Fatalf("%.1f B/entry, target 160", per)
	}
}
