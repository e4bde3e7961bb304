package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"gvs/ipvsadm"
)

// DefaultSocket is the default control socket name: the abstract unix
// socket "@gvsd" of the network namespace.
const DefaultSocket = "gvsd"

// Server defaults.
const (
	// DefaultConnTimeout bounds one connection: reading the request,
	// running it and writing the response.
	DefaultConnTimeout = 30 * time.Second
	// DefaultMaxConns bounds the connections served at once; further
	// clients wait in the listen backlog.
	DefaultMaxConns = 8
)

// socketAddr is the address of the abstract socket name ("@" + name).
func socketAddr(name string) *net.UnixAddr {
	return &net.UnixAddr{Name: "@" + strings.TrimPrefix(name, "@"), Net: "unix"}
}

// Listen binds the abstract unix stream socket @name in the current
// network namespace. It fails (address in use) when another daemon of the
// namespace holds the name.
func Listen(name string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", socketAddr(name))
	if err != nil {
		return nil, fmt.Errorf("control: listening on @%s: %w", strings.TrimPrefix(name, "@"), err)
	}
	return ln, nil
}

// Server answers control-socket requests with an Engine.
type Server struct {
	// Engine runs the commands.
	Engine *Engine
	// Log receives one line per command (nil: no logging).
	Log *zap.Logger
	// ConnTimeout bounds each connection (0: DefaultConnTimeout).
	ConnTimeout time.Duration
	// MaxConns bounds concurrent connections (0: DefaultMaxConns).
	MaxConns int
}

// Serve listens on @name and serves e until ctx is done (see Server.Serve).
func Serve(ctx context.Context, name string, e *Engine, log *zap.Logger) error {
	ln, err := Listen(name)
	if err != nil {
		return err
	}
	s := &Server{Engine: e, Log: log}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx is done, then closes ln, waits
// for the connections in progress and returns nil. Each connection carries
// one request; the caller's credentials come from SO_PEERCRED.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	maxConns := s.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxConns)
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like: wait and retry.
			log.Warn("control socket accept", zap.Error(err))
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.handle(conn, log)
		}()
	}
}

// handle serves one connection.
func (s *Server) handle(conn *net.UnixConn, log *zap.Logger) {
	defer conn.Close()
	timeout := s.ConnTimeout
	if timeout <= 0 {
		timeout = DefaultConnTimeout
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	cred, err := peerCred(conn)
	if err != nil {
		log.Warn("control socket peer credentials", zap.Error(err))
		return
	}
	payload, err := readFrame(conn, MaxRequestSize)
	var req Request
	if err == nil {
		err = req.UnmarshalBinary(payload)
	}
	if err != nil {
		log.Warn("control socket request", zap.Int32("pid", cred.PID), zap.Uint32("uid", cred.UID), zap.Error(err))
		if errors.Is(err, ErrTooLarge) || errors.Is(err, errMalformed) {
			s.respond(conn, &Response{Code: ExitInit, Stderr: []byte("gvsd: " + err.Error() + "\n")}, log)
		}
		return
	}
	var stdout, stderr bytes.Buffer
	code := s.Engine.Run(req.Argv, bytes.NewReader(req.Stdin), cred, &stdout, &stderr)
	level := zap.DebugLevel
	if code != ipvsadm.ExitOK || changes(req.Argv) {
		level = zap.InfoLevel
	}
	log.Log(level, "control command", zap.Strings("argv", req.Argv), zap.Int("stdin_bytes", len(req.Stdin)),
		zap.Uint32("uid", cred.UID), zap.Uint32("gid", cred.GID), zap.Int32("pid", cred.PID), zap.Int("code", code))
	s.respond(conn, &Response{Code: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, log)
}

func (s *Server) respond(conn *net.UnixConn, r *Response, log *zap.Logger) {
	b, err := r.MarshalBinary()
	if err != nil {
		b, _ = (&Response{Code: ipvsadm.ExitFailure, Stderr: []byte("gvsd: " + err.Error() + "\n")}).MarshalBinary()
	}
	if err := writeFrame(conn, b); err != nil {
		log.Warn("control socket response", zap.Error(err))
	}
}
