package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"gvs/internal/lab"
)

// A long-lived client: one TCP connection at a time to a virtual service,
// an HTTP/1.1 keep-alive request every requestEvery, each answer awaited
// for at most requestTimeout. A failed request closes the connection and
// the client connects again.

const (
	requestEvery = 20 * time.Millisecond
	// requestTimeout covers TCP's retransmissions across the 2 s link
	// flap (about 0.2, 0.6, 1.4, 3.0 and 6.2 s after the first loss).
	requestTimeout = 8 * time.Second
	dialTimeout    = 3 * time.Second
	redialDelay    = 100 * time.Millisecond
)

var httpRequest = []byte("GET / HTTP/1.1\r\nHost: soak\r\nUser-Agent: gvs-soak\r\n\r\n")

// recorder collects the clients' requests and dials; offsets are from t0.
type recorder struct {
	t0    time.Time
	mu    sync.Mutex
	reqs  []request
	dials []dial
}

func (r *recorder) since(t time.Time) time.Duration { return t.Sub(r.t0) }

func (r *recorder) request(q request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, q)
	r.mu.Unlock()
}

func (r *recorder) dial(d dial) {
	r.mu.Lock()
	r.dials = append(r.dials, d)
	r.mu.Unlock()
}

// snapshot returns copies of what was recorded so far.
func (r *recorder) snapshot() ([]request, []dial) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...), append([]dial(nil), r.dials...)
}

// client is one long-lived client.
type client struct {
	id   int
	name string // nat-01, dr-01, ...
	ns   string // its namespace
	addr string // VIP:port
}

// run keeps the client going until ctx ends. Requests still open then are
// not recorded.
func (c *client) run(ctx context.Context, rec *recorder) {
	gen := 0
	for ctx.Err() == nil {
		at := time.Now()
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		conn, err := lab.Dial(dctx, c.ns, "tcp4", c.addr)
		cancel()
		if ctx.Err() != nil {
			if conn != nil {
				conn.Close()
			}
			return
		}
		if err != nil {
			rec.dial(dial{Client: c.id, At: rec.since(at), Err: dialErrKind(err)})
			sleepCtx(ctx, redialDelay)
			continue
		}
		gen++
		rec.dial(dial{Client: c.id, At: rec.since(at), OK: true})
		c.serve(ctx, rec, conn, gen)
	}
}

// serve runs requests on conn until one fails or ctx ends.
func (c *client) serve(ctx context.Context, rec *recorder, conn net.Conn, gen int) {
	defer conn.Close()
	// Ending ctx unblocks a request in flight.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	br := bufio.NewReader(conn)
	server := ""
	next := time.Now()
	for {
		next = next.Add(requestEvery)
		now := time.Now()
		if d := next.Sub(now); d > 0 {
			if !sleepCtx(ctx, d) {
				return
			}
		} else if -d > requestEvery {
			next = now // behind after a stall: no burst to catch up
		}
		sent := time.Now()
		conn.SetDeadline(sent.Add(requestTimeout))
		name, err := exchange(conn, br)
		took := time.Since(sent)
		if ctx.Err() != nil {
			return
		}
		if err == nil && server == "" {
			server = name
		}
		out, msg := outOK, ""
		if err != nil {
			out, msg = requestErrKind(err), err.Error()
		} else if name != server {
			// The same connection answered by another real server is a
			// bug (a reload or the flood re-scheduling an established
			// connection would show as a reset instead).
			out, msg = outError, "answered by "+name
		}
		rec.request(request{Client: c.id, Gen: gen, Server: server, Sent: rec.since(sent), Took: took, Out: out, Err: msg})
		if out != outOK {
			return
		}
	}
}

// exchange writes one request and reads the answer; it returns the real
// server's name from gvs-testsrv's answer.
func exchange(conn net.Conn, br *bufio.Reader) (string, error) {
	if _, err := conn.Write(httpRequest); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	name := answerField(string(body), "name")
	if name == "" {
		return "", fmt.Errorf("answer without a name: %q", body)
	}
	return name, nil
}

// answerField returns the value of key=value in a gvs-testsrv answer.
func answerField(body, key string) string {
	for f := range strings.FieldsSeq(body) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// requestErrKind sorts a failed request.
func requestErrKind(err error) outcome {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return outReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return outEOF
	case errors.As(err, &ne) && ne.Timeout():
		return outTimeout
	}
	return outError
}

// dialErrKind names a failed connection attempt.
func dialErrKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	return "other"
}

// sleepCtx sleeps for d or until ctx ends; it reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
