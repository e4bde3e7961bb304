package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gvs/checksum"
	"gvs/internal/txgen"
)

// The paced generator.
//
// trafgen's rate option (-b Npps) is not a constant rate: its shaper sends
// N frames as fast as it can and then sleeps out the rest of a one-second
// window. In this lab "40 kpps" arrived as 40k frames in about 190 ms
// (~200 kpps) followed by 810 ms of silence. A forwarder that keeps up with
// 200 kpps cannot tell the difference; one whose core also carries the
// receive softirq (-rps 2) overflows its RX ring in every burst while its
// core looks 80 % idle over the second. So runs at a fixed rate use
// `gvs-bench gen` instead: the same frames as trafgen's configuration,
// sent from a TPACKET TX ring in small batches on a fine schedule
// (genTick). Flat-out runs keep trafgen, the faster sender.

const (
	// genTick is how long the paced generator sleeps between batches: at
	// 100 kpps a batch is about 25 frames.
	genTick = 250 * time.Microsecond
	// genMaxBatch bounds one batch (the schedule catches up after a long
	// sleep in batches of at most this many frames).
	genMaxBatch = 256
)

// pacer spreads frames evenly over time: Take says how many frames are due
// now. The schedule is absolute (rate × elapsed time), so late wake-ups do
// not lower the rate.
type pacer struct {
	rate  float64 // frames per second
	start time.Time
	sent  uint64
	limit uint64 // total frames to send; 0: unbounded
}

// Take returns how many frames to send at now (at most max), and counts
// them as sent.
func (p *pacer) Take(now time.Time, max int) int {
	el := now.Sub(p.start).Seconds()
	if el <= 0 || max <= 0 || p.rate <= 0 {
		return 0
	}
	due := uint64(math.Min(p.rate*el, math.MaxUint64/2))
	if p.limit > 0 && due > p.limit {
		due = p.limit
	}
	if due <= p.sent {
		return 0
	}
	n := min(due-p.sent, uint64(max))
	p.sent += n
	return int(n)
}

// Done reports whether the frame limit is reached.
func (p *pacer) Done() bool { return p.limit > 0 && p.sent >= p.limit }

// frame writes the stream's frame with source port sport into b and returns
// its length (FrameLen), or 0 when b is too short. The IPv4 header and UDP
// checksums are computed; the rest of the payload is 'a' (0x61), as in the
// trafgen configuration.
func (s udpStream) frame(b []byte, sport uint16) int {
	n := s.FrameLen
	if n < headerLen || len(b) < n || len(s.DstMAC) != 6 || len(s.SrcMAC) != 6 {
		return 0
	}
	b = b[:n]
	src, dst := s.Src.As4(), s.Dst.As4()
	txgen.PutEthIPv4(b, s.DstMAC, s.SrcMAC, src, dst, 17, 0, n-14)
	udp := b[34:n]
	binary.BigEndian.PutUint16(udp[0:2], sport)
	binary.BigEndian.PutUint16(udp[2:4], s.DstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	udp[6], udp[7] = 0, 0
	for i := 8; i < len(udp); i++ {
		udp[i] = 0x61
	}
	ph := checksum.Fold(checksum.PseudoHeaderV4(src, dst, 17, uint16(len(udp))))
	binary.BigEndian.PutUint16(udp[6:8], checksum.ForUDP(checksum.Checksum(udp, ph)))
	return n
}

// genArgs is the `gvs-bench gen` command line (after "gen") for the stream
// on dev at rate frames/s, count frames in all.
func genArgs(s udpStream, dev string, rate float64, count uint64) []string {
	return []string{
		"-dev", dev, "-rate", strconv.FormatFloat(rate, 'f', -1, 64), "-count", strconv.FormatUint(count, 10),
		"-src-mac", s.SrcMAC.String(), "-dst-mac", s.DstMAC.String(), "-src", s.Src.String(), "-dst", s.Dst.String(),
		"-sport-lo", strconv.Itoa(int(s.PortLo)), "-sport-hi", strconv.Itoa(int(s.PortHi)),
		"-dport", strconv.Itoa(int(s.DstPort)), "-len", strconv.Itoa(s.FrameLen),
	}
}

// genFlags are the parsed flags of `gvs-bench gen`.
type genFlags struct {
	dev   string
	rate  float64
	count uint64
	tick  time.Duration
	s     udpStream
}

func parseGenFlags(args []string, stderr io.Writer) (genFlags, error) {
	var f genFlags
	fs := flag.NewFlagSet("gvs-bench gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.dev, "dev", "", "interface to send on (required)")
	fs.Float64Var(&f.rate, "rate", 0, "frames per second (required)")
	fs.Uint64Var(&f.count, "count", 0, "frames to send; 0: until stopped")
	fs.DurationVar(&f.tick, "tick", genTick, "sleep between batches")
	srcMAC := fs.String("src-mac", "", "source MAC (required)")
	dstMAC := fs.String("dst-mac", "", "destination MAC (required)")
	src := fs.String("src", "", "source IPv4 address (required)")
	dst := fs.String("dst", "", "destination IPv4 address (required)")
	lo := fs.Uint("sport-lo", 1024, "first source port")
	hi := fs.Uint("sport-hi", 1024, "last source port (one flow per port, in turn)")
	dport := fs.Uint("dport", 9, "destination port")
	fs.IntVar(&f.s.FrameLen, "len", 60, "frame length without FCS")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	var err error
	switch {
	case f.dev == "":
		return f, errors.New("-dev is required")
	case !(f.rate >= 1) || math.IsInf(f.rate, 0):
		return f, fmt.Errorf("-rate %v: want at least 1 frame/s", f.rate)
	case f.tick <= 0 || f.tick > time.Second:
		return f, fmt.Errorf("-tick %v out of range", f.tick)
	case *lo == 0 || *hi < *lo || *hi > math.MaxUint16 || *dport > math.MaxUint16:
		return f, fmt.Errorf("bad ports %d-%d -> %d", *lo, *hi, *dport)
	case f.s.FrameLen < headerLen || f.s.FrameLen > 1514:
		return f, fmt.Errorf("-len %d out of range %d..1514", f.s.FrameLen, headerLen)
	}
	if f.s.SrcMAC, err = txgen.ParseMAC("src-mac", *srcMAC); err != nil {
		return f, err
	}
	if f.s.DstMAC, err = txgen.ParseMAC("dst-mac", *dstMAC); err != nil {
		return f, err
	}
	if f.s.Src, err = netip.ParseAddr(*src); err != nil || !f.s.Src.Is4() {
		return f, fmt.Errorf("-src %q: want an IPv4 address", *src)
	}
	if f.s.Dst, err = netip.ParseAddr(*dst); err != nil || !f.s.Dst.Is4() {
		return f, fmt.Errorf("-dst %q: want an IPv4 address", *dst)
	}
	f.s.PortLo, f.s.PortHi, f.s.DstPort = uint16(*lo), uint16(*hi), uint16(*dport)
	return f, nil
}

// runGen is `gvs-bench gen`: the paced generator (see above). It stops
// after -count frames or on SIGINT/SIGTERM, and then prints its sending
// time in trafgen's format ("S sec, U usec on CPU0 (N packets)"), which
// parseTrafgenTime reads.
func runGen(args []string, stdout, stderr io.Writer) error {
	f, err := parseGenFlags(args, stderr)
	if err != nil {
		return err
	}
	tx, err := txgen.Open(f.dev, 4*genMaxBatch)
	if err != nil {
		return err
	}
	defer tx.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// The schedule absorbs late wake-ups; a small slack keeps the batches
	// near their nominal size. Best effort.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	p := pacer{rate: f.rate, start: time.Now(), limit: f.count}
	sport := f.s.PortLo
	var sent, full uint64
	// burst: frames sent since the last sleep; maxBurst the largest such
	// run (a late wake-up's catch-up, sent back to back), bursts64 how
	// many runs exceeded 64 frames.
	var burst, maxBurst, bursts64 int
	ts := unix.NsecToTimespec(int64(f.tick))
	for ctx.Err() == nil && !p.Done() {
		n := p.Take(time.Now(), genMaxBatch)
		burst += n
		for range n {
			slot, ok := tx.Slot()
			if !ok {
				_ = tx.Flush()
				if slot, ok = tx.Slot(); !ok {
					full++
					continue
				}
			}
			if l := f.s.frame(slot, sport); l > 0 && tx.Commit(l) {
				sent++
			}
			if sport == f.s.PortHi {
				sport = f.s.PortLo
			} else {
				sport++
			}
		}
		if n > 0 {
			_ = tx.Flush()
		}
		if n == genMaxBatch {
			continue // behind the schedule: no sleep
		}
		if burst > 64 {
			bursts64++
		}
		maxBurst, burst = max(maxBurst, burst), 0
		// EINTR (a signal) ends the sleep early; the loop checks ctx.
		_ = unix.Nanosleep(&ts, nil)
	}
	txgen.Drain(tx)
	el := time.Since(p.start)
	st := tx.Stats()
	fmt.Fprintf(stdout, "gen: %d frames sent, %d kernel-accepted, %d ring-full drops, %d kicks; largest burst %d frames, %d bursts over 64\n",
		sent, st.Frames, full, st.Kicks, max(maxBurst, burst), bursts64)
	fmt.Fprintf(stdout, "  %d sec, %d usec on CPU0 (%d packets)\n", int64(el/time.Second), int64(el%time.Second/time.Microsecond), st.Frames)
	return nil
}

// genBursts is the burst part of the paced generator's summary line
// ("largest burst N frames, M bursts over 64"), or "".
func genBursts(out string) string {
	_, rest, ok := strings.Cut(out, "largest burst ")
	if !ok {
		return ""
	}
	line, _, _ := strings.Cut(rest, "\n")
	return "largest burst " + line
}
