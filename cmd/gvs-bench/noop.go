package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"gvs/forwarder/ring"
)

// noopFlags are the flags of `gvs-bench noop`.
type noopFlags struct {
	in, out string
	vip     netip.Addr
	macs    []net.HardwareAddr
	batch   int
	spin    bool
}

func parseNoopFlags(args []string, stderr io.Writer) (noopFlags, error) {
	var f noopFlags
	fs := flag.NewFlagSet("gvs-bench noop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.in, "in", "vip0", "interface to receive on")
	fs.StringVar(&f.out, "out", "dip0", "interface to send on")
	vip := fs.String("vip", "", "only frames to this IPv4 address are forwarded (required)")
	macs := fs.String("dst-macs", "", "comma-separated next-hop MACs, chosen by UDP/TCP source port (required)")
	fs.IntVar(&f.batch, "batch", 64, "frames per RX turn before the TX ring is kicked")
	fs.BoolVar(&f.spin, "spin", false, "busy-poll the RX ring instead of sleeping in ppoll when it is empty (diagnostic)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	var err error
	if f.vip, err = netip.ParseAddr(*vip); err != nil || !f.vip.Is4() {
		return f, fmt.Errorf("-vip %q: want an IPv4 address", *vip)
	}
	for m := range strings.SplitSeq(*macs, ",") {
		hw, err := net.ParseMAC(strings.TrimSpace(m))
		if err != nil || len(hw) != 6 {
			return f, fmt.Errorf("-dst-macs: %q is not an Ethernet MAC", m)
		}
		f.macs = append(f.macs, hw)
	}
	if f.batch < 1 {
		return f, errors.New("-batch must be positive")
	}
	return f, nil
}

// noopCounters are the no-op forwarder's frame counters.
type noopCounters struct {
	rx, tx, full atomic.Uint64
}

// rewriteNoop turns a received frame (already copied into a TX slot) into
// the frame to send: destination MAC by source port (frames too short for
// one use the first MAC), source MAC src. It is the whole per-frame work of
// the ceiling forwarder and does not allocate.
func rewriteNoop(f []byte, macs []net.HardwareAddr, src net.HardwareAddr) {
	if len(f) < 14 {
		return
	}
	i := 0
	// IPv4 with a transport header: pick by source port.
	if len(f) >= 14+20+2 && f[12] == 0x08 && f[13] == 0x00 {
		ihl := int(f[14]&0x0f) * 4
		if ihl >= 20 && len(f) >= 14+ihl+2 {
			i = int(uint16(f[14+ihl])<<8|uint16(f[15+ihl])) % len(macs)
		}
	}
	copy(f[0:6], macs[i])
	copy(f[6:12], src)
}

// runNoop is `gvs-bench noop`: the ceiling of gvs's I/O design. It receives
// VIP frames from a TPACKET_V2 RX ring, copies each into a TX ring on the
// other interface with the MACs rewritten, and kicks the TX ring once per
// batch, exactly like a gvsd worker but without the forwarding pipeline
// (no parsing beyond the source port, no lookup, no NAT, no checksums).
func runNoop(args []string, stdout, stderr io.Writer) error {
	f, err := parseNoopFlags(args, stderr)
	if err != nil {
		return err
	}
	in, err := net.InterfaceByName(f.in)
	if err != nil {
		return err
	}
	out, err := net.InterfaceByName(f.out)
	if err != nil {
		return err
	}
	filter, err := ring.FilterIPv4Dst([]netip.Addr{f.vip})
	if err != nil {
		return err
	}
	rcfg := ring.DefaultRXConfig()
	rcfg.Filter = filter
	rx, err := ring.OpenRX(in.Index, &rcfg)
	if err != nil {
		return err
	}
	defer rx.Close()
	tcfg := ring.DefaultTXConfig()
	tcfg.FlushEvery = -1
	tx, err := ring.OpenTX(out.Index, &tcfg)
	if err != nil {
		return err
	}
	defer tx.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var c noopCounters
	var done atomic.Bool
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		runtime.LockOSThread()
		noopLoop(rx, tx, f.macs, out.HardwareAddr, f.batch, f.spin, &c, &done)
	}()
	fmt.Fprintf(stdout, "noop ready in=%s out=%s vip=%s\n", f.in, f.out, f.vip)
	<-ctx.Done()
	done.Store(true)
	<-finished
	st, _ := rx.Stats()
	fmt.Fprintf(stdout, "noop stopped rx=%d tx=%d tx_full=%d ring_drops=%d\n", c.rx.Load(), c.tx.Load(), c.full.Load(), st.Drops)
	return nil
}

// noopLoop is the forwarding loop; it returns when done is set (within the
// 100 ms idle wait). With spin it never sleeps.
func noopLoop(rx *ring.RX, tx *ring.TX, macs []net.HardwareAddr, src net.HardwareAddr, batch int, spin bool, c *noopCounters, done *atomic.Bool) {
	for !done.Load() {
		n := 0
		for n < batch {
			frame, _, ok := rx.Next()
			if !ok {
				break
			}
			n++
			slot, ok := tx.Slot()
			if !ok {
				_ = tx.Flush()
				if slot, ok = tx.Slot(); !ok {
					c.full.Add(1)
					rx.Release()
					continue
				}
			}
			k := copy(slot, frame)
			rewriteNoop(slot[:k], macs, src)
			if tx.Commit(k) {
				c.tx.Add(1)
			}
			rx.Release()
		}
		c.rx.Add(uint64(n))
		_ = tx.Flush()
		if n == 0 && !spin {
			timeout := 100 * time.Millisecond
			if tx.Pending() > 0 {
				timeout = time.Millisecond
			}
			_ = rx.Wait(timeout)
		}
	}
	_ = tx.Flush()
}
