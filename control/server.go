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
	"go.uber.org/zap/zapcore"

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
	// DefaultMaxConns bounds the connections of privileged callers (root,
	// AdminGID) served at once; further ones wait for a slot.
	DefaultMaxConns = 8
	// DefaultMaxUserConns bounds the connections of unprivileged callers
	// served at once, all together; further ones are closed at once.
	// Privileged callers have their own slots: no number of unprivileged
	// connections delays root.
	DefaultMaxUserConns = 8
	// DefaultMaxConnsPerUID bounds one unprivileged user's connections.
	DefaultMaxConnsPerUID = 2
	// DefaultUserTimeout bounds reading an unprivileged caller's request.
	DefaultUserTimeout = 2 * time.Second
	// MaxUserRequestSize bounds the request of an unprivileged caller. It
	// may only run -h and -v (Engine.Allowed): a few bytes. A larger one is
	// refused from the frame header, unread, with ipvsadm's "permission
	// denied" (what any other command would answer).
	MaxUserRequestSize = 4 << 10
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
//
// The caller's credentials (SO_PEERCRED) are read as soon as a connection
// is accepted, before anything it sent: privileged callers (root, the
// Engine's AdminGID) and the others get separate connection slots, limits
// and timeouts, so that no local user can hold the socket or the daemon's
// memory hostage.
type Server struct {
	// Engine runs the commands.
	Engine *Engine
	// Log receives one line per command (nil: no logging). Lines caused
	// by unprivileged callers, and warnings about misbehaving clients, are
	// rate-limited.
	Log *zap.Logger
	// ConnTimeout bounds each connection (0: DefaultConnTimeout).
	ConnTimeout time.Duration
	// MaxConns bounds concurrent privileged connections (0:
	// DefaultMaxConns).
	MaxConns int
	// MaxUserConns bounds concurrent unprivileged connections, all users
	// together (0: DefaultMaxUserConns); MaxConnsPerUID one user's (0:
	// DefaultMaxConnsPerUID).
	MaxUserConns, MaxConnsPerUID int
	// UserTimeout bounds reading an unprivileged caller's request (0:
	// DefaultUserTimeout).
	UserTimeout time.Duration

	mu      sync.Mutex
	users   int            // unprivileged connections being served
	perUID  map[uint32]int // the same, by uid
	limiter warnLimiter
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
// one request; the caller's credentials come from SO_PEERCRED. The accept
// loop never waits for a connection slot.
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
	privSem := make(chan struct{}, maxConns)
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
			s.limiter.warn(log, "control socket accept", zap.Error(err))
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		cred, err := peerCred(conn)
		if err != nil {
			s.limiter.warn(log, "control socket peer credentials", zap.Error(err))
			conn.Close()
			continue
		}
		if !s.Engine.Allowed(cred) {
			if !s.admitUser(cred.UID) {
				s.limiter.warn(log, "control socket: too many connections from unprivileged callers, refused",
					zap.Uint32("uid", cred.UID), zap.Int32("pid", cred.PID))
				conn.Close()
				continue
			}
			wg.Go(func() {
				defer s.releaseUser(cred.UID)
				s.handle(conn, cred, false, log)
			})
			continue
		}
		wg.Go(func() {
			select {
			case privSem <- struct{}{}:
			case <-ctx.Done():
				conn.Close()
				return
			}
			defer func() { <-privSem }()
			s.handle(conn, cred, true, log)
		})
	}
}

// admitUser takes a slot for an unprivileged connection of uid, if one is
// free.
func (s *Server) admitUser(uid uint32) bool {
	maxUsers, perUID := s.MaxUserConns, s.MaxConnsPerUID
	if maxUsers <= 0 {
		maxUsers = DefaultMaxUserConns
	}
	if perUID <= 0 {
		perUID = DefaultMaxConnsPerUID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users >= maxUsers || s.perUID[uid] >= perUID {
		return false
	}
	if s.perUID == nil {
		s.perUID = map[uint32]int{}
	}
	s.users++
	s.perUID[uid]++
	return true
}

func (s *Server) releaseUser(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users--
	if s.perUID[uid]--; s.perUID[uid] <= 0 {
		delete(s.perUID, uid)
	}
}

// handle serves one connection of a caller whose credentials are known.
func (s *Server) handle(conn *net.UnixConn, cred Cred, privileged bool, log *zap.Logger) {
	defer conn.Close()
	timeout := s.ConnTimeout
	if timeout <= 0 {
		timeout = DefaultConnTimeout
	}
	now := time.Now()
	_ = conn.SetDeadline(now.Add(timeout))
	maxReq := MaxRequestSize
	if !privileged {
		maxReq = MaxUserRequestSize
		ut := s.UserTimeout
		if ut <= 0 {
			ut = DefaultUserTimeout
		}
		_ = conn.SetReadDeadline(now.Add(min(ut, timeout)))
	}
	payload, err := readFrame(conn, maxReq)
	var req Request
	if err == nil {
		err = req.UnmarshalBinary(payload)
	}
	if err != nil {
		s.limiter.warn(log, "control socket request", zap.Int32("pid", cred.PID), zap.Uint32("uid", cred.UID), zap.Error(err))
		switch {
		case !privileged && errors.Is(err, ErrTooLarge):
			// Whatever it is, an unprivileged caller may not run it.
			s.respond(conn, &Response{Code: ExitInit, Stderr: []byte(msgPerm + "\n")}, log)
		case errors.Is(err, ErrTooLarge) || errors.Is(err, errMalformed):
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
	fields := []zap.Field{zap.Strings("argv", req.Argv), zap.Int("stdin_bytes", len(req.Stdin)),
		zap.Uint32("uid", cred.UID), zap.Uint32("gid", cred.GID), zap.Int32("pid", cred.PID), zap.Int("code", code)}
	if privileged {
		log.Log(level, "control command", fields...)
	} else if ce := log.Check(level, "control command"); ce != nil {
		s.limiter.log(ce, fields...)
	}
	s.respond(conn, &Response{Code: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, log)
}

func (s *Server) respond(conn *net.UnixConn, r *Response, log *zap.Logger) {
	b, err := r.MarshalBinary()
	if err != nil {
		b, _ = (&Response{Code: ipvsadm.ExitFailure, Stderr: []byte("gvsd: " + err.Error() + "\n")}).MarshalBinary()
	}
	if err := writeFrame(conn, b); err != nil {
		s.limiter.warn(log, "control socket response", zap.Error(err))
	}
}

// warnLimiter lets through one log line per second (warnEvery) and counts
// the ones it holds back, reported with the next line let through: a
// client that misbehaves in a loop cannot flood the log.
type warnLimiter struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

const warnEvery = time.Second

func (l *warnLimiter) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	l.next = now.Add(warnEvery)
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

func (l *warnLimiter) warn(log *zap.Logger, msg string, fields ...zap.Field) {
	if ce := log.Check(zap.WarnLevel, msg); ce != nil {
		l.log(ce, fields...)
	}
}

func (l *warnLimiter) log(ce *zapcore.CheckedEntry, fields ...zap.Field) {
	ok, n := l.allow()
	if !ok {
		return
	}
	if n > 0 {
		fields = append(fields, zap.Int("suppressed_since_last", n))
	}
	ce.Write(fields...)
}
