package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// pingResult is one ping-pong run.
type pingResult struct {
	Sent, Received int
	// RTTs are the round-trip times in microseconds, sorted.
	RTTs []float64
}

// pingPayloadLen is seq (8 bytes) + send time (8 bytes).
const pingPayloadLen = 16

// parseEcho extracts seq and send time from an echo answer. gvs-testsrv
// answers "NAME " + the datagram; a bare echo (no name) is accepted too.
func parseEcho(b []byte) (seq uint64, sent int64, ok bool) {
	if len(b) > pingPayloadLen {
		if i := bytes.IndexByte(b, ' '); i >= 0 && len(b)-i-1 == pingPayloadLen {
			b = b[i+1:]
		}
	}
	if len(b) != pingPayloadLen {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[:8]), int64(binary.BigEndian.Uint64(b[8:])), true
}

// runPing is `gvs-bench ping`: the latency case's client, a process of
// its own so that gvs-bench can pin it (taskset) to the generator's CPU in
// the client namespace, away from the director's CPU. It prints the
// pingResult as JSON.
func runPing(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gvs-bench ping", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dst := fs.String("dst", "", "UDP echo service, ADDR:PORT (required)")
	rate := fs.Float64("rate", 1000, "requests per second")
	dur := fs.Duration("duration", 3*time.Second, "how long to send")
	socks := fs.Int("sockets", 16, "client sockets (source ports)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	to, err := netip.ParseAddrPort(*dst)
	if err != nil {
		return fmt.Errorf("-dst: %w", err)
	}
	if *rate > 1e5 || *dur > time.Minute || *socks > 1024 {
		return errors.New("-rate up to 100k, -duration up to 1m, -sockets up to 1024")
	}
	res, err := udpPingPong(ctx, to, *rate, *dur, *socks)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// udpPingPong sends rate requests/s for dur to dst, spread over socks
// sockets (source ports, hence flows and real servers), and measures each
// answer's round trip. Bounded: at most rate*dur requests; answers later
// than 1 s after the last request count as lost.
func udpPingPong(ctx context.Context, dst netip.AddrPort, rate float64, dur time.Duration, socks int) (pingResult, error) {
	if rate <= 0 || dur <= 0 || socks < 1 {
		return pingResult{}, fmt.Errorf("ping: bad rate %v, duration %v or sockets %d", rate, dur, socks)
	}
	conns := make([]net.PacketConn, socks)
	for i := range conns {
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, "udp4", ":0")
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return pingResult{}, err
		}
		conns[i] = pc
	}
	base := time.Now()
	var mu sync.Mutex
	var rtts []float64
	var wg sync.WaitGroup
	for _, pc := range conns {
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				now := int64(time.Since(base))
				if _, sent, ok := parseEcho(buf[:n]); ok && sent <= now {
					mu.Lock()
					rtts = append(rtts, float64(now-sent)/1e3)
					mu.Unlock()
				}
			}
		})
	}
	total := int(rate * dur.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	to := net.UDPAddrFromAddrPort(dst)
	var pkt [pingPayloadLen]byte
	sent := 0
	var err error
	for i := 0; i < total && ctx.Err() == nil; i++ {
		if d := time.Until(base.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		binary.BigEndian.PutUint64(pkt[:8], uint64(i))
		binary.BigEndian.PutUint64(pkt[8:], uint64(time.Since(base)))
		if _, werr := conns[i%socks].WriteTo(pkt[:], to); werr != nil {
			err = werr
			break
		}
		sent++
	}
	time.Sleep(time.Second)
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	slices.Sort(rtts)
	return pingResult{Sent: sent, Received: len(rtts), RTTs: rtts}, err
}
