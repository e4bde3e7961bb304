//go:build linux

package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// rxFrame is a copied test frame.
type rxFrame struct {
	seq  uint32
	data []byte
	meta Meta
}

// collect reads marked frames until want arrived or the time is up,
// using the batch API.
func collect(tb testing.TB, rx *RX, want int, timeout time.Duration) []rxFrame {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	b := NewBatch(64)
	var out []rxFrame
	for len(out) < want {
		if rx.Recv(b) == 0 {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			if err := rx.Wait(min(left, 50*time.Millisecond)); err != nil && !errors.Is(err, ErrTimeout) {
				tb.Fatalf("Wait: %v", err)
			}
			continue
		}
		for i := range b.N {
			if seq, ok := parseMark(b.Frames[i]); ok {
				out = append(out, rxFrame{seq: seq, data: bytes.Clone(b.Frames[i]), meta: b.Metas[i]})
			}
		}
		rx.ReleaseAll()
	}
	return out
}

// seqs returns the sorted sequence numbers of frames.
func seqs(fs []rxFrame) []uint32 {
	s := make([]uint32, len(fs))
	for i, f := range fs {
		s[i] = f.seq
	}
	slices.Sort(s)
	return s
}

// send commits frames (waiting for space when the ring is full) and flushes
// until the kernel took all of them.
func send(tb testing.TB, tx *TX, frames ...[]byte) {
	tb.Helper()
	for _, f := range frames {
		s, ok := tx.Slot()
		if !ok {
			if err := tx.Wait(time.Second); err != nil {
				tb.Fatalf("TX Wait: %v", err)
			}
			if s, ok = tx.Slot(); !ok {
				tb.Fatal("no TX slot after Wait")
			}
		}
		if !tx.Commit(copy(s, f)) {
			tb.Fatalf("Commit(%d) refused", len(f))
		}
	}
	flushAll(tb, tx)
}

func flushAll(tb testing.TB, tx *TX) {
	tb.Helper()
	for deadline := time.Now().Add(2 * time.Second); tx.Pending() > 0; {
		if err := tx.Flush(); err != nil {
			tb.Fatalf("Flush: %v", err)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d frames still pending", tx.Pending())
		}
	}
}

// TestRoundTrip sends frames of every size through both kinds of TX ring:
// the default (whole frame copied into the skb, announced by a
// virtio_net_hdr) and ZeroCopy (the kernel references the ring's pages).
func TestRoundTrip(t *testing.T) {
	for _, zc := range []bool{false, true} {
		t.Run(fmt.Sprintf("zerocopy=%v", zc), func(t *testing.T) {
			cfg := DefaultTXConfig()
			cfg.ZeroCopy = zc
			testRoundTrip(t, &cfg)
		})
	}
}

func testRoundTrip(t *testing.T, cfg *TXConfig) {
	n := newTestNet(t, [2]string{"a0", "a1"})
	a0, a1 := n.link(t, "a0"), n.link(t, "a1")
	rx := n.openRX(t, "a1", nil)
	tx := n.openTX(t, "a0", cfg)
	if got := tx.MaxFrame(); got != 1514 {
		t.Errorf("MaxFrame() = %d, want 1514 (MTU 1500)", got)
	}
	if got := rx.SnapLen(); got != 2048-RXDataOffset {
		t.Errorf("SnapLen() = %d", got)
	}

	const count = 600
	sent := make([][]byte, count)
	for i := range sent {
		size := 60 + (i*37)%(1514-60)
		switch i {
		case 0:
			size = 60
		case count - 1:
			size = 1514
		}
		sent[i] = buildFrame(frameSpec{
			dstMAC: [6]byte(a1.mac), srcMAC: [6]byte(a0.mac), src: client, dst: vip1,
			sport: uint16(i), dport: 80, size: size, seq: uint32(i),
		})
	}
	send(t, tx, sent...)
	got := collect(t, rx, count, 5*time.Second)
	if len(got) != count {
		t.Fatalf("received %d of %d frames", len(got), count)
	}
	seen := make([]bool, count)
	for _, f := range got {
		if int(f.seq) >= count || seen[f.seq] {
			t.Fatalf("unexpected or duplicate seq %d", f.seq)
		}
		seen[f.seq] = true
		want := sent[f.seq]
		if !bytes.Equal(f.data, want) {
			t.Fatalf("frame %d differs:\n got % x\nwant % x", f.seq, f.data, want)
		}
		if f.meta.Len != uint32(len(want)) || f.meta.Snap != uint32(len(want)) || f.meta.Truncated() {
			t.Errorf("frame %d: Meta %+v for %d bytes", f.seq, f.meta, len(want))
		}
		if _, _, ok := f.meta.VLAN(); ok || f.meta.Status&StatusUser == 0 || f.meta.Sec == 0 {
			t.Errorf("frame %d: unexpected Meta %+v", f.seq, f.meta)
		}
	}
	st, err := rx.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets < count || st.Drops != 0 {
		t.Errorf("RX stats %+v, want >= %d packets and no drops", st, count)
	}
	// Statistics accumulate across reads.
	if st2, _ := rx.Stats(); st2.Packets < st.Packets {
		t.Errorf("RX stats went back from %d to %d packets", st.Packets, st2.Packets)
	}
	ts := tx.Stats()
	if ts.Frames != count || ts.WrongFormat != 0 || ts.Malformed != 0 || ts.Errors != 0 || ts.Kicks == 0 {
		t.Errorf("TX stats %+v", ts)
	}
	t.Logf("TX stats %+v", ts)
}

func TestTruncationAndVLAN(t *testing.T) {
	n := newTestNet(t, [2]string{"t0", "t1"})
	n.ip(t, "link", "set", "t0", "mtu", "4000")
	n.ip(t, "link", "set", "t1", "mtu", "4000")
	rx := n.openRX(t, "t1", nil) // 2048-byte slots
	tx := n.openTX(t, "t0", &TXConfig{FrameSize: 4096, QdiscBypass: true})
	if got := tx.MaxFrame(); got != 4014 {
		t.Fatalf("MaxFrame() = %d, want 4014 (MTU 4000)", got)
	}

	big := buildFrame(frameSpec{src: client, dst: vip1, size: 3000, seq: 1})
	dot1q := buildFrame(frameSpec{src: client, dst: vip1, size: 100, seq: 2, vlanTCI: 0x2064})
	dot1ad := buildFrame(frameSpec{src: client, dst: vip1, size: 100, seq: 3, vlanTCI: 0x0007, vlanTPID: etherTypeQinQ})
	send(t, tx, big, dot1q, dot1ad)
	got := collect(t, rx, 3, 5*time.Second)
	if len(got) != 3 {
		t.Fatalf("received %d of 3 frames", len(got))
	}
	for _, f := range got {
		switch f.seq {
		case 1:
			if !f.meta.Truncated() || f.meta.Len != 3000 || int(f.meta.Snap) != rx.SnapLen() || len(f.data) != rx.SnapLen() {
				t.Errorf("big frame: Meta %+v, %d bytes; want truncated to %d of 3000", f.meta, len(f.data), rx.SnapLen())
			}
			if !bytes.Equal(f.data, big[:len(f.data)]) {
				t.Error("big frame: stored prefix differs")
			}
		case 2, 3:
			wantTCI, wantTPID := uint16(0x2064), uint16(etherTypeVLAN)
			if f.seq == 3 {
				wantTCI, wantTPID = 7, etherTypeQinQ
			}
			tci, tpid, ok := f.meta.VLAN()
			if !ok || tci != wantTCI || tpid != wantTPID {
				t.Errorf("frame %d: VLAN() = %#x, %#x, %v; want %#x, %#x", f.seq, tci, tpid, ok, wantTCI, wantTPID)
			}
			// The tag is gone from the data: the frame equals the untagged one.
			untagged := buildFrame(frameSpec{src: client, dst: vip1, size: 96, seq: f.seq})
			if !bytes.Equal(f.data, untagged) || f.meta.Len != 96 {
				t.Errorf("frame %d: Len %d, data\n got % x\nwant % x", f.seq, f.meta.Len, f.data, untagged)
			}
		}
	}
}

// TestRefusedFrameReclaimed lowers the MTU after the TX ring sampled it, so
// the kernel refuses frames with TP_STATUS_WRONG_FORMAT; the ring must count
// and drop them and still send the frames queued behind them, in order.
// Only a ZeroCopy ring gets that check from the kernel: with a
// virtio_net_hdr it trusts the sender, and the MTU sampled at open (and the
// pipeline's egress MTU) are the only limits.
func TestRefusedFrameReclaimed(t *testing.T) {
	n := newTestNet(t, [2]string{"w0", "w1"})
	rx := n.openRX(t, "w1", nil)
	tx := n.openTX(t, "w0", &TXConfig{FlushEvery: -1, QdiscBypass: true, ZeroCopy: true})
	n.ip(t, "link", "set", "w0", "mtu", "1000")

	sizes := []int{100, 1400, 100, 100, 1400, 100, 1400}
	for i, size := range sizes {
		s, ok := tx.Slot()
		if !ok || !tx.Commit(copy(s, buildFrame(frameSpec{src: client, dst: vip1, size: size, seq: uint32(i)}))) {
			t.Fatalf("frame %d not queued", i)
		}
	}
	if got := tx.Pending(); got != len(sizes) {
		t.Fatalf("Pending() = %d before Flush, want %d", got, len(sizes))
	}
	if err := tx.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := tx.Pending(); got != 0 {
		t.Fatalf("Pending() = %d after Flush", got)
	}
	st := tx.Stats()
	if st.WrongFormat != 3 || st.Frames != 4 {
		t.Errorf("stats %+v, want 3 refused and 4 sent", st)
	}
	got := collect(t, rx, 4, 5*time.Second)
	if want := []uint32{0, 2, 3, 5}; !slices.Equal(seqs(got), want) {
		t.Fatalf("received %v, want %v", seqs(got), want)
	}
	for _, f := range got {
		if len(f.data) != 100 {
			t.Errorf("frame %d has %d bytes, want 100", f.seq, len(f.data))
		}
	}
	// The ring keeps working: more than a full lap of small frames goes
	// through, in chunks the RX ring can hold.
	lap := tx.FrameCount() + 10
	for base := 0; base < lap; base += lap / 2 {
		var chunk [][]byte
		for i := base; i < min(base+lap/2, lap); i++ {
			chunk = append(chunk, buildFrame(frameSpec{src: client, dst: vip1, size: 60, seq: uint32(100 + i)}))
		}
		send(t, tx, chunk...)
		if got := collect(t, rx, len(chunk), 5*time.Second); len(got) != len(chunk) {
			t.Fatalf("after reclaiming: received %d of %d frames", len(got), len(chunk))
		}
	}
	if st := tx.Stats(); st.WrongFormat != 3 || st.Frames != uint64(4+lap) {
		t.Errorf("final stats %+v", st)
	}
}

func TestFanout(t *testing.T) {
	n := newTestNet(t, [2]string{"f0", "f1"})
	cfg := &RXConfig{Fanout: &Fanout{Group: 4242}}
	rxs := []*RX{n.openRX(t, "f1", cfg), n.openRX(t, "f1", cfg)}
	tx := n.openTX(t, "f0", nil)

	const flows, perFlow = 256, 8
	var frames [][]byte
	for k := range perFlow {
		for fl := range flows {
			frames = append(frames, buildFrame(frameSpec{
				src: netip.AddrFrom4([4]byte{198, 18, 1, byte(fl)}), dst: vip1,
				sport: uint16(10000 + fl), dport: 80, seq: uint32(fl*perFlow + k),
			}))
		}
	}
	send(t, tx, frames...)
	owner := make(map[uint32]int) // seq -> socket
	for i, rx := range rxs {
		for _, f := range collect(t, rx, len(frames), 500*time.Millisecond) {
			if prev, dup := owner[f.seq]; dup {
				t.Fatalf("seq %d received by sockets %d and %d", f.seq, prev, i)
			}
			owner[f.seq] = i
		}
	}
	if len(owner) != len(frames) {
		t.Fatalf("received %d distinct frames, want %d", len(owner), len(frames))
	}
	var per [2]int
	for fl := range flows {
		first := owner[uint32(fl*perFlow)]
		for k := range perFlow {
			if o := owner[uint32(fl*perFlow+k)]; o != first {
				t.Fatalf("flow %d split across sockets", fl)
			}
		}
		per[first]++
	}
	if per[0] == 0 || per[1] == 0 {
		t.Errorf("flows per socket %v: hash fanout did not spread", per)
	}
	t.Logf("flows per socket: %v", per)
}

func TestFilterLive(t *testing.T) {
	n := newTestNet(t, [2]string{"p0", "p1"})
	prog, err := Filter{DstAddrs: []netip.Addr{vip1}, SrcAddrs: []netip.Addr{rs1}, ARP: true}.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	rx := n.openRX(t, "p1", &RXConfig{Filter: prog})
	tx := n.openTX(t, "p0", nil)
	p1 := [6]byte(n.link(t, "p1").mac)
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcast := [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	batch := func(base uint32) [][]byte {
		specs := []frameSpec{
			{src: client, dst: vip1},                          // +0 accepted
			{src: rs1, dst: client},                           // +1 accepted
			{src: client, dst: other},                         // +2 dropped
			{etherType: etherTypeARP, src: client, dst: vip1}, // +3 accepted
			{src: client, dst: vip1, vlanTCI: 100},            // +4 accepted (tag stripped)
			{etherType: 0x86dd},                               // +5 dropped
			{src: client, dst: other, vlanTCI: 100},           // +6 dropped
			// Not addressed to p1's MAC: dropped, except ARP.
			{dstMAC: macB, src: client, dst: vip1},                           // +7 another host's
			{dstMAC: bcast, src: client, dst: vip1},                          // +8 broadcast
			{dstMAC: mcast, src: rs1, dst: client},                           // +9 multicast
			{dstMAC: macB, src: client, dst: vip1, vlanTCI: 100},             // +10 another host's, tagged
			{dstMAC: bcast, etherType: etherTypeARP, src: client, dst: vip1}, // +11 ARP broadcast: accepted
		}
		out := make([][]byte, len(specs))
		for i, s := range specs {
			s.seq = base + uint32(i)
			if s.dstMAC == ([6]byte{}) {
				s.dstMAC = p1
			}
			out[i] = buildFrame(s)
		}
		return out
	}
	check := func(name string, base uint32, want []uint32) {
		t.Helper()
		send(t, tx, batch(base)...)
		got := collect(t, rx, len(want), 2*time.Second)
		// A short grace period catches frames that should have been dropped.
		got = append(got, collect(t, rx, 1, 150*time.Millisecond)...)
		if !slices.Equal(seqs(got), want) {
			t.Errorf("%s: received %v, want %v", name, seqs(got), want)
		}
	}
	check("vip filter", 0, []uint32{0, 1, 3, 4, 11})
	dropAll, err := Filter{}.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	if err := rx.SetFilter(dropAll); err != nil {
		t.Fatal(err)
	}
	check("drop-all filter", 10, []uint32{})
	if err := rx.SetFilter(nil); err != nil {
		t.Fatal(err)
	}
	check("no filter", 20, []uint32{20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31})
}

func TestIgnoreOutgoing(t *testing.T) {
	n := newTestNet(t, [2]string{"o0", "o1"})
	ignoring := n.openRX(t, "o0", nil)
	keeping := n.openRX(t, "o0", &RXConfig{KeepOutgoing: true})
	// In a fanout group the group's flags decide, not the socket option.
	fanIgnoring := n.openRX(t, "o0", &RXConfig{Fanout: &Fanout{Group: 1}})
	fanKeeping := n.openRX(t, "o0", &RXConfig{Fanout: &Fanout{Group: 2}, KeepOutgoing: true})
	plain := n.openTX(t, "o0", &TXConfig{})
	bypass := n.openTX(t, "o0", &TXConfig{QdiscBypass: true})
	frames := func(base int) [][]byte {
		var fs [][]byte
		for i := range 50 {
			fs = append(fs, buildFrame(frameSpec{src: client, dst: vip1, seq: uint32(base + i)}))
		}
		return fs
	}
	send(t, plain, frames(0)...)
	if got := collect(t, keeping, 50, 5*time.Second); len(got) != 50 {
		t.Errorf("KeepOutgoing ring saw %d of 50 outgoing frames", len(got))
	}
	if got := collect(t, fanKeeping, 50, 5*time.Second); len(got) != 50 {
		t.Errorf("KeepOutgoing fanout ring saw %d of 50 outgoing frames", len(got))
	}
	if got := collect(t, ignoring, 1, 200*time.Millisecond); len(got) != 0 {
		t.Errorf("PACKET_IGNORE_OUTGOING ring saw %d outgoing frames", len(got))
	}
	if got := collect(t, fanIgnoring, 1, 50*time.Millisecond); len(got) != 0 {
		t.Errorf("fanout ring without KeepOutgoing saw %d outgoing frames", len(got))
	}
	// PACKET_QDISC_BYPASS frames are invisible to taps on the device.
	send(t, bypass, frames(100)...)
	if got := collect(t, keeping, 1, 200*time.Millisecond); len(got) != 0 {
		t.Errorf("KeepOutgoing ring saw %d frames sent with qdisc bypass", len(got))
	}
}

func TestWaitFullAndLosing(t *testing.T) {
	n := newTestNet(t, [2]string{"q0", "q1"})
	dropAll, _ := Filter{}.Assemble()
	idle := n.openRX(t, "q1", &RXConfig{Filter: dropAll})
	start := time.Now()
	if err := idle.Wait(30 * time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("idle Wait = %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el < 25*time.Millisecond {
		t.Errorf("idle Wait returned after %v", el)
	}

	small := &RXConfig{FrameCount: 32} // one 64 KiB block
	rx := n.openRX(t, "q1", small)
	tx := n.openTX(t, "q0", &TXConfig{FrameCount: 32, FlushEvery: -1, QdiscBypass: true})
	if rx.FrameCount() != 32 || tx.FrameCount() != 32 {
		t.Fatalf("frame counts %d/%d, want 32", rx.FrameCount(), tx.FrameCount())
	}
	frame := func(seq int) []byte { return buildFrame(frameSpec{src: client, dst: vip1, seq: uint32(seq)}) }

	// Fill the TX ring without kicking: the 33rd slot is refused.
	for i := range 32 {
		s, ok := tx.Slot()
		if !ok || !tx.Commit(copy(s, frame(i))) {
			t.Fatalf("slot %d refused", i)
		}
	}
	if _, ok := tx.Slot(); ok {
		t.Fatal("Slot() succeeded on a full ring")
	}
	if st := tx.Stats(); st.Full != 1 || tx.Pending() != 32 {
		t.Fatalf("Full = %d, Pending = %d; want 1, 32", st.Full, tx.Pending())
	}
	if tx.Commit(60) {
		t.Fatal("Commit succeeded without a free slot")
	}
	if err := tx.Wait(time.Second); err != nil { // flushes, then there is room
		t.Fatalf("TX Wait: %v", err)
	}
	s, ok := tx.Slot()
	if !ok {
		t.Fatal("no slot after Wait")
	}
	if tx.Commit(13) || tx.Commit(tx.MaxFrame()+1) || tx.CommitAt(-1, 60) || tx.CommitAt(len(s)-50, 60) {
		t.Fatal("a malformed commit was accepted")
	}
	if st := tx.Stats(); st.Malformed != 5 {
		t.Errorf("Malformed = %d, want 5", st.Malformed)
	}
	// Frame 32 finds the RX ring full and is dropped by the kernel.
	if !tx.Commit(copy(s, frame(32))) {
		t.Fatal("Commit refused")
	}
	flushAll(t, tx)

	var held [][]byte
	for {
		f, _, ok := rx.Next()
		if !ok {
			break
		}
		held = append(held, f)
	}
	if len(held) != 32 || rx.Held() != 32 {
		t.Fatalf("held %d frames (Held %d), want 32", len(held), rx.Held())
	}
	if seq, _ := parseMark(held[31]); seq != 31 {
		t.Errorf("last held frame is %d, want 31", seq)
	}
	rx.ReleaseAll()
	if rx.Held() != 0 {
		t.Fatalf("Held() = %d after ReleaseAll", rx.Held())
	}
	// CommitAt sends from an offset: the frame is what was written there.
	if s, ok = tx.Slot(); !ok {
		t.Fatal("no slot")
	}
	want := frame(33)
	copy(s[20:], want)
	if !tx.CommitAt(20, len(want)) {
		t.Fatal("CommitAt refused")
	}
	flushAll(t, tx)
	got := collect(t, rx, 1, 2*time.Second)
	if len(got) != 1 || got[0].seq != 33 || !got[0].meta.Losing() || !bytes.Equal(got[0].data, want) {
		t.Fatalf("after drops got %+v, want frame 33 with StatusLosing", got)
	}
	st, err := rx.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops != 1 || st.Packets != 34 {
		t.Errorf("RX stats %+v, want 34 packets with 1 drop", st)
	}
	send(t, tx, frame(34))
	if got := collect(t, rx, 1, 2*time.Second); len(got) != 1 || got[0].meta.Losing() {
		t.Errorf("after reading statistics got %+v, want frame 34 without StatusLosing", got)
	}
}

func TestClosedAndOpenErrors(t *testing.T) {
	n := newTestNet(t, [2]string{"c0", "c1"})
	rx := n.openRX(t, "c1", nil)
	tx := n.openTX(t, "c0", nil)
	if rx.Fd() < 0 || tx.Fd() < 0 || rx.Ifindex() != n.link(t, "c1").ifindex || tx.Ifindex() != n.link(t, "c0").ifindex {
		t.Fatal("Fd/Ifindex wrong")
	}
	if err := rx.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rx.Close(); err != nil {
		t.Errorf("second RX Close: %v", err)
	}
	if _, _, ok := rx.Next(); ok {
		t.Error("Next on a closed ring")
	}
	rx.Release()
	if err := rx.Wait(time.Millisecond); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait on closed RX = %v", err)
	}
	if _, err := rx.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats on closed RX = %v", err)
	}
	if _, ok := tx.Slot(); ok || tx.Commit(60) || tx.Flush() != nil || tx.Pending() != 0 {
		t.Error("TX usable after Close")
	}
	if err := tx.Wait(time.Millisecond); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait on closed TX = %v", err)
	}

	badJump := []bpf.RawInstruction{{Op: 0x15, Jt: 200}} // jeq past the end
	tests := []struct {
		name string
		open func() error
	}{
		{"rx missing interface", func() error { _, err := OpenRX(99999, nil); return err }},
		{"rx negative index", func() error { _, err := OpenRX(-1, nil); return err }},
		{"rx bad geometry", func() error { _, err := OpenRX(1, &RXConfig{FrameSize: 100}); return err }},
		{"rx rejected filter", func() error { _, err := OpenRX(1, &RXConfig{Filter: badJump}); return err }},
		{"rx empty filter", func() error { _, err := OpenRX(1, &RXConfig{Filter: []bpf.RawInstruction{}}); return err }},
		{"tx index 0", func() error { _, err := OpenTX(0, nil); return err }},
		{"tx missing interface", func() error { _, err := OpenTX(99999, nil); return err }},
		{"tx bad geometry", func() error { _, err := OpenTX(1, &TXConfig{BlockSize: 1000}); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := n.do(tt.open); err == nil {
				t.Error("open succeeded")
			}
		})
	}
}

var sinkInt int

func TestNoAllocs(t *testing.T) {
	n := newTestNet(t, [2]string{"z0", "z1"})
	rx := n.openRX(t, "z1", nil)
	tx := n.openTX(t, "z0", nil)
	frame := buildFrame(frameSpec{src: client, dst: vip1, size: 64})
	sendOne := func() {
		s, ok := tx.Slot()
		if !ok {
			_ = tx.Flush()
			return
		}
		tx.Commit(copy(s, frame))
	}
	if a := testing.AllocsPerRun(1500, sendOne); a != 0 {
		t.Errorf("TX Slot+Commit (with auto flush): %v allocs per frame", a)
	}
	if a := testing.AllocsPerRun(100, func() { sendOne(); _ = tx.Flush() }); a != 0 {
		t.Errorf("TX Flush: %v allocs", a)
	}
	flushAll(t, tx)
	time.Sleep(20 * time.Millisecond)
	got := 0
	recvOne := func() {
		_ = rx.Wait(0)
		f, m, ok := rx.Next()
		if ok {
			got++
			sinkInt += len(f) + int(m.Len)
			rx.Release()
		}
	}
	if a := testing.AllocsPerRun(1000, recvOne); a != 0 {
		t.Errorf("RX Wait+Next+Release: %v allocs per frame", a)
	}
	if got < 1000 {
		t.Errorf("only %d frames received during the measurement", got)
	}
	b := NewBatch(32)
	if a := testing.AllocsPerRun(10, func() { sinkInt += rx.Recv(b); rx.ReleaseAll() }); a != 0 {
		t.Errorf("RX Recv+ReleaseAll: %v allocs", a)
	}
	if a := testing.AllocsPerRun(10, func() { _ = rx.Wait(time.Microsecond) }); a != 0 {
		t.Errorf("RX Wait with timeout: %v allocs", a)
	}
}

// fwdEnv is a generator -> forwarder -> sink chain over two veth pairs:
// gen TX on g0 -> f0 RX (forwarder) -> f1 TX (forwarder) -> s0 RX (sink).
type fwdEnv struct {
	gen      *TX
	fin      *RX
	fout     *TX
	sink     *RX
	template []byte
	outDst   [6]byte
	outSrc   [6]byte
}

func newFwdEnv(tb testing.TB) *fwdEnv {
	n := newTestNet(tb, [2]string{"g0", "f0"}, [2]string{"f1", "s0"})
	g0, f0, f1, s0 := n.link(tb, "g0"), n.link(tb, "f0"), n.link(tb, "f1"), n.link(tb, "s0")
	return &fwdEnv{
		gen:      n.openTX(tb, "g0", nil),
		fin:      n.openRX(tb, "f0", nil),
		fout:     n.openTX(tb, "f1", nil),
		sink:     n.openRX(tb, "s0", nil),
		template: buildFrame(frameSpec{dstMAC: [6]byte(f0.mac), srcMAC: [6]byte(g0.mac), src: client, dst: vip1, sport: 1000, dport: 80, size: 64}),
		outDst:   [6]byte(s0.mac),
		outSrc:   [6]byte(f1.mac),
	}
}

// fwdResult is the outcome of runForward.
type fwdResult struct {
	sent, delivered, duplicates, corrupt, fwdDrops, stalls int
	elapsed                                                time.Duration
}

func (r fwdResult) pps() float64 { return float64(r.delivered) / r.elapsed.Seconds() }

// runForward pushes count frames through the chain, keeping at most window
// frames in flight (so the rings and the veth backlog never overflow), and
// gives up after limit. When the window is full the generator sleeps until
// the sink has caught up by half a window; if that takes more than a
// second the frames in flight are written off as lost.
func runForward(tb testing.TB, e *fwdEnv, count int, limit time.Duration) fwdResult {
	const window = 512
	var (
		delivered atomic.Int64
		stop      atomic.Bool
		wg        sync.WaitGroup
		res       fwdResult
		target    atomic.Int64 // the sink signals progress once delivered reaches it
		progress  = make(chan struct{}, 1)
	)
	// Forwarder: RX f0 -> MAC rewrite -> TX f1.
	wg.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for !stop.Load() {
			f, _, ok := e.fin.Next()
			if !ok {
				_ = e.fout.Flush()
				_ = e.fin.Wait(5 * time.Millisecond)
				continue
			}
			s, ok := e.fout.Slot()
			if !ok {
				_ = e.fout.Wait(5 * time.Millisecond)
				s, ok = e.fout.Slot()
			}
			if ok {
				n := copy(s, f)
				copy(s[0:6], e.outDst[:])
				copy(s[6:12], e.outSrc[:])
				e.fout.Commit(n)
			} else {
				res.fwdDrops++
			}
			e.fin.Release()
		}
	})
	// Sink: count each sequence number once and check the payload.
	wg.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		seen := make([]bool, count)
		want := e.template[markOff+len(marker)+4:]
		for {
			f, _, ok := e.sink.Next()
			if !ok {
				if stop.Load() {
					return
				}
				_ = e.sink.Wait(5 * time.Millisecond)
				continue
			}
			if seq, ok := parseMark(f); ok && int(seq) < count {
				switch {
				case seen[seq]:
					res.duplicates++
				case len(f) != len(e.template) || !bytes.Equal(f[markOff+len(marker)+4:], want) || [6]byte(f[0:6]) != e.outDst:
					res.corrupt++
				default:
					seen[seq] = true
					if d := delivered.Add(1); d >= target.Load() {
						select {
						case progress <- struct{}{}:
						default:
						}
					}
				}
			}
			e.sink.Release()
		}
	})

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	deadline := start.Add(limit)
	timer := time.NewTimer(time.Hour)
	lost := 0
	// waitFor blocks until n frames were delivered; false after a stall.
	waitFor := func(n int) bool {
		target.Store(int64(n))
		timer.Reset(time.Second)
		defer timer.Stop()
		for int(delivered.Load()) < n {
			select {
			case <-progress:
			case <-timer.C:
				res.stalls++
				return false
			}
		}
		return true
	}
	for res.sent < count {
		if res.sent%256 == 0 && time.Now().After(deadline) {
			break
		}
		if res.sent-int(delivered.Load())-lost >= window {
			_ = e.gen.Flush()
			if !waitFor(res.sent - lost - window/2) {
				lost = res.sent - int(delivered.Load())
			}
			continue
		}
		s, ok := e.gen.Slot()
		if !ok {
			_ = e.gen.Wait(5 * time.Millisecond)
			continue
		}
		n := copy(s, e.template)
		binary.BigEndian.PutUint32(s[markOff+len(marker):], uint32(res.sent))
		e.gen.Commit(n)
		res.sent++
	}
	for e.gen.Pending() > 0 && time.Now().Before(deadline) {
		_ = e.gen.Flush()
	}
	waitFor(res.sent - lost)
	res.elapsed = time.Since(start)
	stop.Store(true)
	wg.Wait()
	res.delivered = int(delivered.Load())
	return res
}

func TestForwardLoop(t *testing.T) {
	e := newFwdEnv(t)
	const count = 100_000
	res := runForward(t, e, count, 10*time.Second)
	rxs, _ := e.fin.Stats()
	t.Logf("forwarded %d of %d 64-byte frames in %v: %.0f pps (stalls %d, forwarder RX %+v, TX %+v)",
		res.delivered, res.sent, res.elapsed.Round(time.Millisecond), res.pps(), res.stalls, rxs, e.fout.Stats())
	if res.duplicates != 0 || res.corrupt != 0 {
		t.Errorf("%d duplicate and %d corrupt frames", res.duplicates, res.corrupt)
	}
	// The rate depends on the machine; only a crawl means something broke.
	if res.sent != count {
		if res.delivered < count/10 {
			t.Errorf("only %d of %d frames forwarded within the time limit", res.delivered, count)
		} else {
			t.Logf("time limit reached after %d of %d frames (overloaded machine?)", res.sent, count)
		}
	}
	// With flow control (a bounded window in flight) nothing should be
	// lost on an idle machine; on a loaded one (CI runs test packages side
	// by side) the veth backlog can overflow while a thread is descheduled,
	// which no ring counter sees. 2% still catches a ring that drops or
	// loses frames systematically.
	if lost := res.sent - res.delivered; lost > res.sent/50 {
		t.Errorf("%d frames lost (forwarder drops %d)", lost, res.fwdDrops)
	} else if lost > 0 {
		t.Logf("%d frames lost in the kernel under load (forwarder drops %d)", lost, res.fwdDrops)
	}
}

func BenchmarkForward(b *testing.B) {
	e := newFwdEnv(b)
	b.ReportAllocs()
	b.ResetTimer()
	res := runForward(b, e, b.N, time.Minute)
	b.StopTimer()
	b.ReportMetric(res.pps(), "pps")
	if res.delivered < res.sent*99/100 {
		b.Errorf("delivered %d of %d", res.delivered, res.sent)
	}
}

// BenchmarkTX measures Slot+copy+Commit with auto flush into a veth whose
// peer discards the frames.
func BenchmarkTX(b *testing.B) {
	n := newTestNet(b, [2]string{"b0", "b1"})
	tx := n.openTX(b, "b0", nil)
	frame := buildFrame(frameSpec{src: client, dst: vip1, size: 64})
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		s, ok := tx.Slot()
		for !ok {
			_ = tx.Wait(time.Millisecond)
			s, ok = tx.Slot()
		}
		tx.Commit(copy(s, frame))
	}
	_ = tx.Flush()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pps")
}

// TestChecksumPartial sends a datagram through the kernel's UDP stack out of
// a veth (checksum offload on): the copy in the peer's RX ring is
// CHECKSUM_PARTIAL and must say so.
func TestChecksumPartial(t *testing.T) {
	n := newTestNet(t, [2]string{"k0", "k1"})
	rx := n.openRX(t, "k1", nil)
	n.ip(t, "neigh", "add", "198.18.1.99", "lladdr", "02:00:00:00:00:0b", "dev", "k0")
	payload := append(marker[:], 0, 0, 0, 7)
	// The datagram is sent again if it does not arrive: the first one can be
	// lost while the new veth pair's carrier comes up.
	var got []rxFrame
	for try := 0; try < 4 && len(got) == 0; try++ {
		err := n.do(func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Sendto(fd, payload, 0, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{198, 18, 1, 99}})
		})
		if err != nil {
			t.Fatalf("sending through the UDP stack: %v", err)
		}
		got = collect(t, rx, 1, time.Second)
	}
	if len(got) != 1 || got[0].seq != 7 {
		t.Fatalf("received %+v, want the datagram", got)
	}
	if m := got[0].meta; !m.CsumNotReady() || m.CsumValid() {
		t.Errorf("Meta %+v: want StatusCsumNotReady", m)
	}
}

// BenchmarkRXNextRelease measures the userspace cost of taking and
// returning one frame: the slots are re-armed by hand, no kernel involved.
func BenchmarkRXNextRelease(b *testing.B) {
	n := newTestNet(b, [2]string{"r0", "r1"})
	rx := n.openRX(b, "r1", &RXConfig{FrameCount: 256})
	tx := n.openTX(b, "r0", nil)
	frames := make([][]byte, 256)
	for i := range frames {
		frames[i] = buildFrame(frameSpec{src: client, dst: vip1, size: 64, seq: uint32(i)})
	}
	send(b, tx, frames...)
	if got := collect(b, rx, 0, 0); len(got) != 0 || !rx.Ready() {
		b.Fatal("ring not filled")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		slot := rx.head
		f, m, ok := rx.Next()
		if !ok {
			b.Fatal("ring drained")
		}
		sinkInt += len(f) + int(m.Len)
		rx.Release()
		atomic.StoreUint32(&rx.hdr(slot).Status, StatusUser) // re-arm
	}
}

// BenchmarkTXSlotCommit measures the userspace cost of filling one slot
// (64-byte copy): no kick, the slots are recycled by hand.
func BenchmarkTXSlotCommit(b *testing.B) {
	n := newTestNet(b, [2]string{"u0", "u1"})
	tx := n.openTX(b, "u0", &TXConfig{FlushEvery: -1})
	frame := buildFrame(frameSpec{src: client, dst: vip1, size: 64})
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		slot := tx.prod
		s, ok := tx.Slot()
		if !ok || !tx.Commit(copy(s, frame)) {
			b.Fatal("no slot")
		}
		atomic.StoreUint32(&tx.hdr(slot).Status, txAvailable) // as if sent
	}
}
