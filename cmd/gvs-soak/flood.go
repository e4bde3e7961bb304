package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gvs/checksum"
	"gvs/internal/txgen"
)

// The SYN flood: `gvs-soak flood`, run inside the attacker's namespace as a
// process of its own (so that its CPU is not the clients'), sends TCP SYNs
// from spoofed sources to the VIP's service ports through a TPACKET TX
// ring, as fast as the ring drains (or at -rate), until -duration is over,
// -count frames are sent or SIGTERM.

// synLen is the length of a flood frame: Ethernet, IPv4 and a TCP header
// with the MSS option, padded to the Ethernet minimum.
const synLen = 14 + 20 + 24 + 2

// synSpec is what every flood frame shares.
type synSpec struct {
	SrcMAC, DstMAC net.HardwareAddr
	// Spoof is the network the source addresses are drawn from.
	Spoof netip.Prefix
	VIP   netip.Addr
	Ports []uint16 // destination ports, in turn
}

// synFrame writes the SYN from src:sport to the VIP's port dport into b
// (at least synLen bytes) with sequence number seq, and returns its length.
// The IPv4 and TCP checksums are computed.
func (s *synSpec) synFrame(b []byte, src netip.Addr, sport, dport uint16, seq uint32) int {
	b = b[:synLen]
	sa, da := src.As4(), s.VIP.As4()
	txgen.PutEthIPv4(b, s.DstMAC, s.SrcMAC, sa, da, 6, uint16(seq), 20+24)
	tcp := b[34:58]
	binary.BigEndian.PutUint16(tcp[0:2], sport)
	binary.BigEndian.PutUint16(tcp[2:4], dport)
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	binary.BigEndian.PutUint32(tcp[8:12], 0)
	tcp[12] = 6 << 4 // data offset: 24 bytes
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:16], 64240)
	tcp[16], tcp[17], tcp[18], tcp[19] = 0, 0, 0, 0
	tcp[20], tcp[21] = 2, 4 // MSS
	binary.BigEndian.PutUint16(tcp[22:24], 1460)
	ph := checksum.Fold(checksum.PseudoHeaderV4(sa, da, 6, 24))
	binary.BigEndian.PutUint16(tcp[16:18], checksum.Checksum(tcp, ph))
	b[58], b[59] = 0, 0 // padding
	return synLen
}

// xorshift is a small fast PRNG for the spoofed sources (not for anything
// that must be unpredictable).
type xorshift uint64

func (x *xorshift) next() uint64 {
	v := uint64(*x)
	v ^= v << 13
	v ^= v >> 7
	v ^= v << 17
	*x = xorshift(v)
	return v
}

// source draws a spoofed source address and port: a random host of
// s.Spoof (never its network or broadcast address) and a random port
// 1024..65535.
func (s *synSpec) source(r uint64) (netip.Addr, uint16) {
	bits := 32 - s.Spoof.Bits()
	base := s.Spoof.Masked().Addr().As4()
	b := binary.BigEndian.Uint32(base[:])
	if bits >= 2 {
		span := uint64(1)<<bits - 2
		b += 1 + uint32(r%span)
	}
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], b)
	return netip.AddrFrom4(a), uint16(1024 + (r>>32)%(65536-1024))
}

// floodFlags are the parsed flags of `gvs-soak flood`.
type floodFlags struct {
	dev      string
	rate     float64
	count    uint64
	duration time.Duration
	spec     synSpec
}

func parseFloodFlags(args []string, stderr io.Writer) (floodFlags, error) {
	var f floodFlags
	fs := flag.NewFlagSet("gvs-soak flood", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.dev, "dev", "", "interface to send on (required)")
	fs.Float64Var(&f.rate, "rate", 0, "frames per second; 0: as fast as the ring drains")
	fs.Uint64Var(&f.count, "count", 0, "frames to send; 0: no limit")
	fs.DurationVar(&f.duration, "duration", 0, "how long to send (required, at most 10m)")
	srcMAC := fs.String("src-mac", "", "source MAC (required)")
	dstMAC := fs.String("dst-mac", "", "destination MAC: the director's (required)")
	spoof := fs.String("spoof", "198.19.0.0/16", "network of the spoofed source addresses")
	vip := fs.String("vip", "", "the VIP (required)")
	ports := fs.String("ports", "80", "destination ports, comma-separated, in turn")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	var err error
	switch {
	case fs.NArg() > 0:
		return f, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case f.dev == "":
		return f, errors.New("-dev is required")
	case f.rate < 0:
		return f, fmt.Errorf("-rate %v: want 0 or more", f.rate)
	case f.duration <= 0 || f.duration > maxDuration:
		return f, fmt.Errorf("-duration %v: want 0 < d <= %v", f.duration, maxDuration)
	}
	if f.spec.SrcMAC, err = txgen.ParseMAC("src-mac", *srcMAC); err != nil {
		return f, err
	}
	if f.spec.DstMAC, err = txgen.ParseMAC("dst-mac", *dstMAC); err != nil {
		return f, err
	}
	if f.spec.Spoof, err = netip.ParsePrefix(*spoof); err != nil || !f.spec.Spoof.Addr().Is4() || f.spec.Spoof.Bits() > 30 {
		return f, fmt.Errorf("-spoof %q: want an IPv4 network of at least 4 addresses", *spoof)
	}
	if f.spec.VIP, err = netip.ParseAddr(*vip); err != nil || !f.spec.VIP.Is4() {
		return f, fmt.Errorf("-vip %q: want an IPv4 address", *vip)
	}
	for p := range strings.SplitSeq(*ports, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 16)
		if err != nil || n == 0 {
			return f, fmt.Errorf("-ports %q: bad port %q", *ports, p)
		}
		f.spec.Ports = append(f.spec.Ports, uint16(n))
	}
	return f, nil
}

// runFlood is `gvs-soak flood`. It prints "flood ready" once its ring is
// open and, at the end, "flood: sent N frames in D (R/s)".
func runFlood(args []string, stdout, stderr io.Writer) error {
	f, err := parseFloodFlags(args, stderr)
	if err != nil {
		return err
	}
	tx, err := txgen.Open(f.dev, 1024)
	if err != nil {
		return err
	}
	defer tx.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fmt.Fprintln(stdout, "flood ready")

	rng := xorshift(uint64(time.Now().UnixNano()) | 1)
	start := time.Now()
	end := start.Add(f.duration)
	var sent uint64
	const batch = 64
	for {
		if sent%4096 == 0 {
			now := time.Now()
			if ctx.Err() != nil || now.After(end) {
				break
			}
		}
		if f.count > 0 && sent >= f.count {
			break
		}
		if f.rate > 0 && sent%batch == 0 {
			due := uint64(time.Since(start).Seconds() * f.rate)
			if sent >= due {
				_ = tx.Flush()
				time.Sleep(time.Millisecond)
				if ctx.Err() != nil || time.Now().After(end) {
					break
				}
				continue
			}
		}
		slot, ok := tx.Slot()
		if !ok {
			_ = tx.Flush()
			_ = tx.Wait(10 * time.Millisecond)
			continue
		}
		r := rng.next()
		src, sport := f.spec.source(r)
		dport := f.spec.Ports[int(sent%uint64(len(f.spec.Ports)))]
		tx.Commit(f.spec.synFrame(slot, src, sport, dport, uint32(r>>16)))
		sent++
		if sent%batch == 0 {
			_ = tx.Flush()
		}
	}
	txgen.Drain(tx)
	el := time.Since(start)
	fmt.Fprintf(stdout, "flood: sent %d frames in %v (%.0f/s), kernel accepted %d\n",
		sent, el.Round(time.Millisecond), float64(sent)/el.Seconds(), tx.Stats().Frames)
	return nil
}

// parseFloodSent reads the frame count from runFlood's last line.
func parseFloodSent(out string) (sent uint64, perSec float64, ok bool) {
	for line := range strings.Lines(out) {
		var d string
		if n, _ := fmt.Sscanf(strings.TrimSpace(line), "flood: sent %d frames in %s (%f/s)", &sent, &d, &perSec); n == 3 {
			ok = true
		}
	}
	return sent, perSec, ok
}
