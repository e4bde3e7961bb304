//go:build hostile

package daemon_test

// Floods from another generator than gvs-soak's and flood()'s TX rings:
// one sendto(2) per frame on a plain AF_PACKET socket, with the frames
// built per kind below. Longer than make test allows: make hostile runs
// it.

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvs/forwarder/ring"
	"gvs/internal/frames"
	"gvs/internal/lab"
)

// rssKB is the resident set size of process pid in KiB.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Bounds of TestHostileFloods.
const (
	hostileFloodFor = 3 * time.Second
	hostileRSSMB    = 400 // gvsd's RSS at most, MiB, whatever the flood
)

// TestHostileFloods: floods of several kinds, each for hostileFloodFor,
// from a second client while the first keeps an established connection
// doing a round every 20 ms: SYNs from random sources and MACs, SYNs from
// one source, ACKs and RSTs matching no connection, UDP to a UDP service
// from random sources, ICMP echo, first fragments that are never
// completed. After each: gvsd is up, its RSS bounded, the connection
// recovers, every frame taken is accounted for; the delivery of the
// established connection's rounds during each flood is logged.
func TestHostileFloods(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	d := startDirector(t, ctx, lab.Options{Clients: 2}, natRules)
	legit, flooder := d.l.Clients()[0], d.l.Clients()[1]
	vip := d.l.VIP()
	dirMAC := frames.MAC(d.l.Director().VIPSide.MAC)
	k := startKeeper(t, d, legit, 80, 20*time.Millisecond)
	s := newRawSender(t, flooder)
	rnd := rand.New(rand.NewPCG(1, 2))
	randMAC := func() frames.MAC {
		var m frames.MAC
		binary.BigEndian.PutUint32(m[2:], rnd.Uint32())
		m[0] = 0x02
		return m
	}
	randSrc := func() netip.Addr {
		if rnd.IntN(2) == 0 { // on the client LAN, from 198.18.1.128
			return netip.AddrFrom4([4]byte{198, 18, 1, byte(128 + rnd.IntN(127))})
		}
		return netip.AddrFrom4([4]byte{198, 19, byte(rnd.IntN(256)), byte(1 + rnd.IntN(254))})
	}
	own := frames.L2{Src: frames.MAC(flooder.MAC), Dst: dirMAC}
	kinds := []struct {
		name  string
		frame func(i int) []byte
	}{
		{"SYN, random sources and MACs", func(i int) []byte {
			return frames.TCP(frames.L2{Src: randMAC(), Dst: dirMAC}, frames.IP{Src: randSrc(), Dst: vip},
				frames.TCPSeg{SrcPort: uint16(1024 + rnd.IntN(60000)), DstPort: 80, Seq: rnd.Uint32(), SYN: true})
		}},
		{"SYN, one source", func(i int) []byte {
			return frames.TCP(own, frames.IP{Src: flooder.Addr(), Dst: vip},
				frames.TCPSeg{SrcPort: uint16(1024 + i%60000), DstPort: 80, Seq: uint32(i), SYN: true})
		}},
		{"ACK, no connection", func(i int) []byte {
			return frames.TCP(own, frames.IP{Src: randSrc(), Dst: vip},
				frames.TCPSeg{SrcPort: uint16(1024 + rnd.IntN(60000)), DstPort: 80, Seq: rnd.Uint32(), Ack: rnd.Uint32(), ACK: true})
		}},
		{"RST, no connection", func(i int) []byte {
			return frames.TCP(own, frames.IP{Src: randSrc(), Dst: vip},
				frames.TCPSeg{SrcPort: uint16(1024 + rnd.IntN(60000)), DstPort: 80, Seq: rnd.Uint32(), RST: true})
		}},
		{"UDP to the UDP service, random sources", func(i int) []byte {
			return frames.UDP(own, frames.IP{Src: randSrc(), Dst: vip},
				frames.UDPDgram{SrcPort: uint16(1024 + rnd.IntN(60000)), DstPort: 53, Payload: []byte("flood")})
		}},
		{"ICMP echo", func(i int) []byte {
			return frames.ICMPEcho(own, frames.IP{Src: flooder.Addr(), Dst: vip}, uint16(i), uint16(i>>16))
		}},
		{"first fragments never completed", func(i int) []byte {
			f := frames.UDP(own, frames.IP{Src: randSrc(), Dst: vip, ID: uint16(rnd.Uint32())},
				frames.UDPDgram{SrcPort: uint16(1024 + rnd.IntN(60000)), DstPort: 53, Payload: make([]byte, 512)})
			binary.BigEndian.PutUint16(f[20:], 0x2000) // MF
			fixIPSum(f, 14, 20)
			return f
		}},
	}
	rss0 := rssKB(t, d.gvsd.Pid())
	for _, kind := range kinds {
		before := freshStats(t, ctx, d)
		k.mu.Lock()
		r0 := len(k.done)
		k.mu.Unlock()
		start := time.Now()
		sent := 0
		for time.Since(start) < hostileFloodFor {
			for range 256 {
				_ = s.send(kind.frame(sent))
				sent++
			}
		}
		end := time.Now()
		k.mu.Lock()
		rounds := len(k.done) - r0
		var worst time.Duration
		for i := r0 + 1; i < len(k.done); i++ {
			worst = max(worst, k.done[i].Sub(k.done[i-1]))
		}
		k.mu.Unlock()
		alive(t, d, kind.name)
		took := k.recovered(t, kind.name, end, recoverWithin)
		after := freshStats(t, ctx, d)
		after.accounted(t)
		rss := rssKB(t, d.gvsd.Pid())
		reasons := map[string]uint64{}
		for r, n := range after.Reasons {
			if n -= before.Reasons[r]; n != 0 {
				reasons[r] = n
			}
		}
		// One round every 20 ms plus its own time: about 45 a second on
		// a quiet lab.
		t.Logf("%s: %d frames in %v (%.0f/s); established: %d rounds, longest gap %v, next round %v after; gvsd rx %d, oversize %d, syn_budget %d, reasons %v; RSS %d MiB",
			kind.name, sent, end.Sub(start).Round(time.Millisecond), float64(sent)/end.Sub(start).Seconds(), rounds, worst.Round(time.Millisecond),
			took.Round(time.Millisecond), after.RX-before.RX, after.Oversize-before.Oversize, after.SYNBudget-before.SYNBudget, reasons, rss>>10)
		if rss>>10 > hostileRSSMB {
			t.Errorf("%s: gvsd's RSS %d MiB (from %d MiB), want at most %d", kind.name, rss>>10, rss0>>10, hostileRSSMB)
		}
		if worst > time.Second {
			t.Errorf("%s: the established connection stalled for %v", kind.name, worst)
		}
	}
	k.stop.Store(true)
	idle(t, d, "after the floods")
	servedWithin(t, ctx, d, serveWithin)
	stopAndCheck(t, d)
}

// txFlood sends the frames of tmpl in turn from client c through a TX ring
// as fast as the ring drains, for dur; it returns the number sent.
func txFlood(t *testing.T, c lab.Client, tmpl [][]byte, dur time.Duration) int {
	t.Helper()
	sent := 0
	err := lab.Do(c.NS, func() error {
		ifi, err := net.InterfaceByName(c.Name)
		if err != nil {
			return err
		}
		cfg := ring.DefaultTXConfig()
		cfg.FlushEvery = -1
		tx, err := ring.OpenTX(ifi.Index, &cfg)
		if err != nil {
			return err
		}
		defer tx.Close()
		end := time.Now().Add(dur)
		for {
			if sent%4096 == 0 && time.Now().After(end) {
				return tx.Flush()
			}
			slot, ok := tx.Slot()
			if !ok {
				_ = tx.Flush()
				_ = tx.Wait(10 * time.Millisecond)
				continue
			}
			tx.Commit(copy(slot, tmpl[sent%len(tmpl)]))
			sent++
			if sent%64 == 0 {
				_ = tx.Flush()
			}
		}
	})
	if err != nil {
		t.Fatalf("flood from %s: %v", c.NS, err)
	}
	return sent
}

// TestEstablishedUnderFloods measures what TestEstablishedUnderSYNFlood
// asserts for SYNs (at least 99 % of established rounds in time) under
// floods that share the established traffic's ring: ACKs and RSTs of no
// connection, UDP to a UDP service and ICMP echo to the VIP, each from a
// TX ring as fast as this lab sends, for 4 s, while 8 connections do a
// round every 20 ms. It logs the share delivered and the ring drops by
// ring. ACK, RST and ICMP floods fail it only when a connection breaks (a
// measurement: the cBPF filter cannot tell an established ACK from a
// forged one); the UDP flood, which has a ring of its own, must leave at
// least 95 % of the rounds in time and overflow its own ring, not the
// established rings.
func TestEstablishedUnderFloods(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	d := newDirectorLab(t, ctx, lab.Options{Clients: 2}, natRules)
	startGVSDArgs(t, ctx, d, "--syn-rate", "0")
	if _, err := d.gvsd.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	legit, flooder := d.l.Clients()[0], d.l.Clients()[1]
	vip := d.l.VIP()
	own := frames.L2{Src: frames.MAC(flooder.MAC), Dst: frames.MAC(d.l.Director().VIPSide.MAC)}
	ks := make([]*keeper, 8)
	for i := range ks {
		ks[i] = startKeeper(t, d, legit, 80, 20*time.Millisecond)
	}
	const variants = 4096
	kinds := []struct {
		name  string
		udp   bool // to the UDP ring: asserted, not only logged
		frame func(i int) []byte
	}{
		{"ACK, no connection", false, func(i int) []byte {
			return frames.TCP(own, frames.IP{Src: flooder.Addr(), Dst: vip}, frames.TCPSeg{SrcPort: uint16(20000 + i), DstPort: 80, Seq: uint32(i), Ack: 1, ACK: true})
		}},
		{"RST, no connection", false, func(i int) []byte {
			return frames.TCP(own, frames.IP{Src: flooder.Addr(), Dst: vip}, frames.TCPSeg{SrcPort: uint16(20000 + i), DstPort: 80, Seq: uint32(i), RST: true})
		}},
		{"UDP to the UDP service", true, func(i int) []byte {
			return frames.UDP(own, frames.IP{Src: flooder.Addr(), Dst: vip}, frames.UDPDgram{SrcPort: uint16(20000 + i), DstPort: 53, Payload: []byte("flood")})
		}},
		{"ICMP echo to the VIP", false, func(i int) []byte {
			return frames.ICMPEcho(own, frames.IP{Src: flooder.Addr(), Dst: vip}, uint16(i), 1)
		}},
	}
	for _, kind := range kinds {
		tmpl := make([][]byte, variants)
		for i := range tmpl {
			tmpl[i] = kind.frame(i)
		}
		before := freshStats(t, ctx, d)
		st0 := lastStats(d.gvsd.Output())
		r0 := make([]int, len(ks))
		for i, k := range ks {
			k.mu.Lock()
			r0[i] = len(k.done)
			k.mu.Unlock()
		}
		start := time.Now()
		sent := txFlood(t, flooder, tmpl, 4*time.Second)
		took := time.Since(start)
		rounds, late := 0, 0
		for i, k := range ks {
			k.mu.Lock()
			for j := r0[i] + 1; j < len(k.done); j++ {
				rounds++
				// A round takes the 20 ms pause plus its own time: over
				// 170 ms, a packet was lost (TCP's RTO is 200 ms).
				if k.done[j].Sub(k.done[j-1]) > 170*time.Millisecond {
					late++
				}
			}
			k.mu.Unlock()
			k.recovered(t, kind.name, time.Now(), recoverWithin)
		}
		after := freshStats(t, ctx, d)
		st := lastStats(d.gvsd.Output())
		delta := func(k string) uint64 { return st[k] - st0[k] }
		udpDrops := delta("udp_ring_drops")
		estDrops := delta("ring_drops") - delta("syn_ring_drops") - udpDrops
		t.Logf("%s: %d frames in %v (%.0f/s); established: %d rounds, %d late: %.2f %% in time; gvsd rx %d, ring drops: established rings %d, UDP ring %d, SYN ring %d; tx_full %d",
			kind.name, sent, took.Round(time.Millisecond), float64(sent)/took.Seconds(), rounds, late,
			100*float64(rounds-late)/float64(max(rounds, 1)), after.RX-before.RX, estDrops, udpDrops, delta("syn_ring_drops"), delta("tx_full"))
		if !kind.udp {
			continue
		}
		// UDP to the VIPs has a ring of its own (ring.UDPOnly): the flood
		// overflows it, and the established TCP rings keep up. (With UDP
		// in the established ring, 72-85 % of the rounds were in time and
		// every ring drop was the established ring's.) The bound is below
		// finding 5's 99 % to leave room for a loaded lab's scheduling.
		if inTime := float64(rounds-late) / float64(max(rounds, 1)); inTime < 0.95 {
			t.Errorf("%s: %.2f %% of the established rounds in time, want at least 95 %%", kind.name, 100*inTime)
		}
		if udpDrops+estDrops > 0 && estDrops*100 > udpDrops+estDrops {
			t.Errorf("%s: the established rings dropped %d frames, the UDP ring %d: the flood is not kept to its ring", kind.name, estDrops, udpDrops)
		}
	}
	stopAndCheck(t, d)
}
