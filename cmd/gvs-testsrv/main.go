// Command gvs-testsrv is the small real server the gvs lab runs inside its
// real-server namespaces. It offers three services, each optional:
//
//   - HTTP (--http, default :8080):
//     GET /            -> "name=NAME local=IP:PORT remote=IP:PORT\n"
//     GET /data?bytes=N -> N bytes (at most 1 GiB) of a fixed pattern
//     GET /healthz     -> "ok\n"
//   - UDP echo (--udp, default :9000): every datagram is answered with
//     "NAME " followed by the datagram's bytes. The answer's source address is
//     the datagram's destination address (IP_PKTINFO), so a server listening
//     on a wildcard address answers from the VIP in DR and TUN mode.
//   - TCP sink (--sink, default :9001): reads a connection to EOF (the client
//     half-closes), answers "sha256=HEX bytes=N\n" on the same connection and
//     prints "sink remote=IP:PORT bytes=N sha256=HEX" on stdout.
//
// An empty address disables a service. Once every listener is bound it prints
// "ready name=NAME http=ADDR udp=ADDR sink=ADDR" on stdout; it runs until
// SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gvs-testsrv:", err)
		os.Exit(1)
	}
}

// maxDataBytes bounds GET /data.
const maxDataBytes = 1 << 30

// config is the parsed command line.
type config struct {
	name, http, udp, sink string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	host, _ := os.Hostname()
	var c config
	fs := flag.NewFlagSet("gvs-testsrv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.name, "name", host, "name reported in every answer")
	fs.StringVar(&c.http, "http", ":8080", "HTTP listen address (empty: off)")
	fs.StringVar(&c.udp, "udp", ":9000", "UDP echo listen address (empty: off)")
	fs.StringVar(&c.sink, "sink", ":9001", "TCP sink listen address (empty: off)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.http == "" && c.udp == "" && c.sink == "" {
		return c, errors.New("every service is disabled")
	}
	return c, nil
}

// lockedWriter serialises writes of whole lines to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	out := &lockedWriter{w: stdout}
	var lc net.ListenConfig

	var (
		httpLn, sinkLn net.Listener
		udpConn        net.PacketConn
		closers        []io.Closer
	)
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	if cfg.http != "" {
		if httpLn, err = lc.Listen(ctx, "tcp", cfg.http); err != nil {
			return fmt.Errorf("http: %w", err)
		}
		closers = append(closers, httpLn)
	}
	if cfg.udp != "" {
		if udpConn, err = lc.ListenPacket(ctx, "udp", cfg.udp); err != nil {
			return fmt.Errorf("udp: %w", err)
		}
		closers = append(closers, udpConn)
	}
	if cfg.sink != "" {
		if sinkLn, err = lc.Listen(ctx, "tcp", cfg.sink); err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		closers = append(closers, sinkLn)
	}

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	var srv *http.Server
	if httpLn != nil {
		srv = &http.Server{Handler: newHandler(cfg.name), ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		})
	}
	if udpConn != nil {
		wg.Go(func() {
			if err := serveUDP(udpConn, cfg.name); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("udp: %w", err)
			}
		})
	}
	if sinkLn != nil {
		wg.Go(func() {
			if err := serveSink(sinkLn, out); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("sink: %w", err)
			}
		})
	}
	addrs := [3]string{"off", "off", "off"}
	if httpLn != nil {
		addrs[0] = httpLn.Addr().String()
	}
	if udpConn != nil {
		addrs[1] = udpConn.LocalAddr().String()
	}
	if sinkLn != nil {
		addrs[2] = sinkLn.Addr().String()
	}
	out.printf("ready name=%s http=%s udp=%s sink=%s\n", cfg.name, addrs[0], addrs[1], addrs[2])

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	for _, c := range closers {
		c.Close()
	}
	closers = nil
	wg.Wait()
	return err
}

// newHandler returns the HTTP handler answering for the server called name.
func newHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "name=%s local=%v remote=%s\n", name, local, r.RemoteAddr)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /data", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		if err != nil || n < 0 || n > maxDataBytes {
			http.Error(w, "bytes must be 0.."+strconv.Itoa(maxDataBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("X-Served-By", name)
		var chunk [32 << 10]byte
		for i := range chunk {
			chunk[i] = byte('a' + i%26)
		}
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return mux
}

// serveUDP answers every datagram with "name " + datagram until c is closed.
// For IPv4 sockets the reply leaves from the address the datagram was sent
// to, which matters when the socket is bound to a wildcard address and the
// destination was a VIP on lo.
func serveUDP(c net.PacketConn, name string) error {
	buf := make([]byte, 64<<10)
	prefix := name + " "
	reply := make([]byte, 0, len(prefix)+len(buf))

	p4 := ipv4.NewPacketConn(c)
	if err := p4.SetControlMessage(ipv4.FlagDst, true); err != nil {
		// Not an IPv4 socket (e.g. bound to an IPv6 address): plain echo.
		p4 = nil
	}
	for {
		var (
			n    int
			cm   *ipv4.ControlMessage
			peer net.Addr
			err  error
		)
		if p4 != nil {
			n, cm, peer, err = p4.ReadFrom(buf)
		} else {
			n, peer, err = c.ReadFrom(buf)
		}
		if err != nil {
			return err
		}
		reply = append(append(reply[:0], prefix...), buf[:n]...)
		// A failed answer (e.g. no route back) is dropped; a closed socket
		// ends the loop at the next read.
		if p4 != nil && cm != nil && cm.Dst != nil {
			p4.WriteTo(reply, &ipv4.ControlMessage{Src: cm.Dst}, peer)
		} else {
			c.WriteTo(reply, peer)
		}
	}
}

// serveSink accepts connections until ln is closed; see the package comment.
// When ln is closed it also closes the connections still being read.
func serveSink(ln net.Listener, out *lockedWriter) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				out.printf("sink remote=%s bytes=%d error=%q\n", c.RemoteAddr(), n, err.Error())
				return
			}
			sum := hex.EncodeToString(h.Sum(nil))
			fmt.Fprintf(c, "sha256=%s bytes=%d\n", sum, n)
			out.printf("sink remote=%s bytes=%d sha256=%s\n", c.RemoteAddr(), n, sum)
		})
	}
}
