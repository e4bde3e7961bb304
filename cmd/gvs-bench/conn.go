package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// connResult is one `gvs-bench conn` run.
type connResult struct {
	OK      int64   `json:"ok"`      // connections that got a 200 and were closed
	Errors  int64   `json:"errors"`  // connect, read or status failures
	Skipped int64   `json:"skipped"` // due but not started: max-inflight reached (the far side is too slow)
	Secs    float64 `json:"secs"`
}

// httpOK reports whether a response starts with an HTTP 200 status line.
func httpOK(b []byte) bool {
	return bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) || bytes.HasPrefix(b, []byte("HTTP/1.0 200 "))
}

// runConn is `gvs-bench conn`: new HTTP connections at a paced rate (a
// fixed connection rate for the cps case's exact measurement; wrk only
// runs flat out, and CPU per connection depends on the rate). Each
// connection sends one GET with Connection: close, reads the answer to EOF
// (the server closes first, so the client keeps no TIME_WAIT) and closes.
// It prints a connResult as JSON.
func runConn(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gvs-bench conn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dst := fs.String("dst", "", "HTTP server ADDR:PORT (required)")
	rate := fs.Float64("rate", 3000, "new connections per second")
	dur := fs.Duration("duration", 5*time.Second, "how long to open connections")
	inflight := fs.Int("max-inflight", 512, "connections open at once at most")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(*dst); err != nil {
		return fmt.Errorf("-dst: %w", err)
	}
	if !(*rate >= 1 && *rate <= 1e6) || *dur <= 0 || *dur > 10*time.Minute || *inflight < 1 {
		return errors.New("-rate must be 1..1M, -duration up to 10m, -max-inflight ≥ 1")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	req := []byte("GET / HTTP/1.1\r\nHost: gvs-bench\r\nConnection: close\r\n\r\n")
	var res connResult
	var open atomic.Int64
	var wg sync.WaitGroup
	one := func() {
		defer wg.Done()
		defer open.Add(-1)
		c, err := net.DialTimeout("tcp4", *dst, 2*time.Second)
		if err != nil {
			atomic.AddInt64(&res.Errors, 1)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		var buf [512]byte
		if _, err := c.Write(req); err != nil {
			atomic.AddInt64(&res.Errors, 1)
			return
		}
		n, err := io.ReadAtLeast(c, buf[:], 13)
		if err != nil || !httpOK(buf[:n]) {
			atomic.AddInt64(&res.Errors, 1)
			return
		}
		if _, err := io.Copy(io.Discard, c); err != nil {
			atomic.AddInt64(&res.Errors, 1)
			return
		}
		atomic.AddInt64(&res.OK, 1)
	}
	start := time.Now()
	p := pacer{rate: *rate, start: start, limit: uint64(*rate * dur.Seconds())}
	for ctx.Err() == nil && !p.Done() {
		for range p.Take(time.Now(), 1<<16) {
			if open.Load() >= int64(*inflight) {
				res.Skipped++
				continue
			}
			open.Add(1)
			wg.Add(1)
			go one()
		}
		time.Sleep(500 * time.Microsecond)
	}
	wg.Wait()
	res.Secs = time.Since(start).Seconds()
	return json.NewEncoder(stdout).Encode(res)
}
