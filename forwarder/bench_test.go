package forwarder_test

import (
	"net/netip"
	"testing"
	"time"

	"gvs/forwarder"
	"gvs/internal/frames"
)

// Established-flow benchmarks: the connection exists; each iteration copies
// the frame into the worker buffer (as the daemon copies from the RX ring)
// and runs the whole pipeline: parse, lookup, state machine, rewrite.
func benchEstablished(b *testing.B, rules string, port uint16) {
	h := newHarness(b, rules)
	f := frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: client, Dst: vip, DF: true}, frames.TCPSeg{SrcPort: 40000, DstPort: port, SYN: true})
	if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Transmit {
		b.Fatalf("setup: %v %v", r.Action, r.Reason)
	}
	f = frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: client, Dst: vip, DF: true}, frames.TCPSeg{SrcPort: 40000, DstPort: port, ACK: true, Payload: make([]byte, 10)})
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Transmit {
			b.Fatal(r.Action, r.Reason)
		}
	}
}

func BenchmarkEstablishedNAT(b *testing.B) {
	benchEstablished(b, "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n", 80)
}

func BenchmarkEstablishedDR(b *testing.B) {
	benchEstablished(b, "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g\n", 80)
}

func BenchmarkEstablishedTUN(b *testing.B) {
	benchEstablished(b, "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -i\n", 80)
}

// BenchmarkEstablishedNATReply is the NAT reply direction (real server -> client).
func BenchmarkEstablishedNATReply(b *testing.B) {
	h := newHarness(b, "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n")
	h.send(syn(client, 40000), forwarder.VIPSide)
	f := frames.TCP(frames.L2{Src: frames.DerivedMAC(rs1), Dst: frames.DerivedMAC(dip)},
		frames.IP{Src: rs1, Dst: client, DF: true}, frames.TCPSeg{SrcPort: 8080, DstPort: 40000, ACK: true, Payload: make([]byte, 10)})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := h.send(f, forwarder.DIPSide); r.Action != forwarder.Transmit {
			b.Fatal(r.Action, r.Reason)
		}
	}
}

// BenchmarkNewConnection: every packet is the SYN of a new connection
// (scheduling with wlc over 3 real servers, entry creation, NAT rewrite).
// The clock advances so that the table stays at a steady size: entries
// (SYN_RECV, 60 s) expire as new ones come, and Expire's cost is included.
func BenchmarkNewConnection(b *testing.B) {
	h := newHarness(b, "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n"+
		"-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m\n-a -t 198.51.100.10:80 -r 198.18.2.13:8080 -m\n")
	const flows = 1 << 16
	fs := make([][]byte, flows)
	for i := range fs {
		c := netip.AddrFrom4([4]byte{198, 18, byte(100 + i>>14), byte(i >> 6)})
		fs[i] = syn(c, uint16(1024+i&63))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%flows == 0 {
			// A lap later every entry is past its 60 s SYN_RECV timeout.
			h.now += int64(61 * time.Second)
			h.conns.Expire(h.now)
		}
		if r := h.send(fs[i%flows], forwarder.VIPSide); !r.New {
			b.Fatal("not a new connection", r.Action, r.Reason)
		}
	}
}

// BenchmarkNoConnectionACK: every packet is an ACK to the service that
// matches no connection (an ACK flood's forged segments, which the RX
// filter cannot tell from established traffic): the lookup misses and the
// pipeline answers with an RST (reason no_conn), as the kernel's stack
// does behind IPVS, or drops it when its answers are over their rate.
// Compare with BenchmarkEstablishedNAT: the flood's
// per-frame cost in the worker.
func BenchmarkNoConnectionACK(b *testing.B) {
	h := newHarness(b, "-A -t 198.51.100.10:80 -s wlc\n-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m\n")
	const flows = 1 << 12
	fs := make([][]byte, flows)
	for i := range fs {
		c := netip.AddrFrom4([4]byte{198, 18, byte(100 + i>>10), byte(i >> 2)})
		fs[i] = frames.TCP(frames.L2{Src: frames.DerivedMAC(c), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
			frames.IP{Src: c, Dst: vip, DF: true}, frames.TCPSeg{SrcPort: uint16(1024 + i), DstPort: 80, Seq: uint32(i), Ack: 1, ACK: true})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := h.send(fs[i%flows], forwarder.VIPSide); r.Action == forwarder.Transmit || r.New {
			b.Fatal("forwarded", r.Action, r.Reason)
		}
	}
}
