package control

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var sockSeq atomic.Int64

// testSocketName is a socket name no other test (or daemon) uses.
func testSocketName() string {
	return fmt.Sprintf("gvs-test-%d-%d", os.Getpid(), sockSeq.Add(1))
}

// startServer serves e on a fresh abstract socket until the test ends.
func startServer(t testing.TB, s *Server) string {
	t.Helper()
	name := testSocketName()
	ln, err := Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return name
}

// adminEngine is a test engine that lets the test process in whatever its
// uid (through AdminGID = its group).
func adminEngine(t testing.TB) *testEngine {
	te := newTestEngine(t)
	te.AdminGID = os.Getgid()
	return te
}

func TestCallRoundTrip(t *testing.T) {
	te := adminEngine(t)
	name := startServer(t, &Server{Engine: te.Engine})
	call := func(stdin io.Reader, argv ...string) (string, string, int) {
		t.Helper()
		o, e, code, err := Call(name, argv, stdin)
		if err != nil {
			t.Fatalf("Call(%q): %v", argv, err)
		}
		return string(o), string(e), code
	}
	if o, e, code := call(nil, "ipvsadm", "-A", "-t", "198.51.100.10:8080", "-s", "rr"); o != "" || e != "" || code != 0 {
		t.Fatalf("-A: %q %q %d", o, e, code)
	}
	rules := strings.NewReader("-a -t 198.51.100.10:8080 -r 198.18.2.11:8080 -m\n")
	if o, e, code := call(rules, "ipvsadm", "-R"); o != "" || e != "" || code != 0 {
		t.Fatalf("-R: %q %q %d", o, e, code)
	}
	want := listHead + "TCP  198.51.100.10:8080 rr\n" +
		"  -> 198.18.2.11:8080             Masq    1      0          0         \n"
	if o, e, code := call(nil, "ipvsadm", "-Ln"); o != want || e != "" || code != 0 {
		t.Fatalf("-Ln: %q %q %d", o, e, code)
	}
	if o, e, code := call(nil, "/usr/sbin/ipvsadm", "-A", "-t", "198.51.100.10:8080"); o != "" || e != "Service already exists\n" || code != 255 {
		t.Fatalf("second -A: %q %q %d", o, e, code)
	}
	if _, e, code := call(nil, "gvsadm", "--bogus"); e != "Try `gvsadm -h' or 'gvsadm --help' for more information.\n" || code != 255 {
		t.Fatalf("--bogus: %q %d", e, code)
	}
	// Many sequential clients.
	for i := range 100 {
		if o, _, code := call(nil, "ipvsadm", "-S", "-n"); code != 0 || !strings.HasPrefix(o, "-A -t 198.51.100.10:8080 -s rr\n") {
			t.Fatalf("client %d: %q %d", i, o, code)
		}
	}
}

// TestPeerCred: the server learns the caller from SO_PEERCRED.
func TestPeerCred(t *testing.T) {
	name := testSocketName()
	ln, err := Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialUnix("unix", nil, socketAddr(name))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cred, err := peerCred(s)
	if err != nil {
		t.Fatal(err)
	}
	want := Cred{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid())}
	if cred != want {
		t.Errorf("peer credentials %+v, want %+v", cred, want)
	}
}

// TestServerUsesPeerCred: without AdminGID, the answer depends on the real
// uid of the caller only.
func TestServerUsesPeerCred(t *testing.T) {
	te := newTestEngine(t)
	name := startServer(t, &Server{Engine: te.Engine})
	o, e, code, err := Call(name, []string{"ipvsadm", "-A", "-t", "198.51.100.10:80"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if code != 0 || len(o)+len(e) != 0 {
			t.Errorf("root: %q %q %d", o, e, code)
		}
		return
	}
	if code != ExitInit || string(e) != msgPerm+"\n" || len(te.Table.Services()) != 0 {
		t.Errorf("uid %d: %q %q %d", os.Getuid(), o, e, code)
	}
}

// rawExchange sends raw bytes and reads one response frame.
func rawExchange(t *testing.T, name string, data []byte) (Response, error) {
	t.Helper()
	c, err := net.DialUnix("unix", nil, socketAddr(name))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	b, err := readFrame(c, MaxResponseSize)
	if err != nil {
		return Response{}, err
	}
	var r Response
	return r, r.UnmarshalBinary(b)
}

func TestRejectsBadRequests(t *testing.T) {
	te := adminEngine(t)
	name := startServer(t, &Server{Engine: te.Engine})

	// An oversize frame is refused from its header, without reading it.
	hdr := binary.BigEndian.AppendUint32(nil, MaxRequestSize+1)
	r, err := rawExchange(t, name, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != ExitInit || !strings.Contains(string(r.Stderr), "exceeds the limit") {
		t.Errorf("oversize: %d %q", r.Code, r.Stderr)
	}

	// A malformed payload.
	var frame []byte
	frame = binary.BigEndian.AppendUint32(frame, 3)
	frame = append(frame, wireVersion, kindRequest, 0)
	r, err = rawExchange(t, name, frame)
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != ExitInit || !strings.Contains(string(r.Stderr), "malformed") {
		t.Errorf("malformed: %d %q", r.Code, r.Stderr)
	}

	// The client refuses oversize stdin before connecting.
	big := io.LimitReader(zeroReader{}, MaxStdin+1)
	if _, _, _, err := Call(name, []string{"ipvsadm", "-R"}, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize stdin: %v", err)
	}
	// Nothing was applied by any of it; the server still answers.
	if o, _, code, err := Call(name, []string{"ipvsadm", "-Sn"}, nil); err != nil || code != 0 || len(o) != 0 {
		t.Errorf("after bad requests: %q %d %v", o, code, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// TestSlowClient: a client that connects and sends nothing is dropped at
// the connection timeout and does not hold up others.
func TestSlowClient(t *testing.T) {
	te := adminEngine(t)
	name := startServer(t, &Server{Engine: te.Engine, ConnTimeout: time.Second, MaxConns: 2})
	idle, err := net.DialUnix("unix", nil, socketAddr(name))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, _, code, err := Call(name, []string{"ipvsadm", "-v"}, nil); err != nil || code != 0 {
		t.Fatalf("call beside an idle client: %d %v", code, err)
	}
	// Served while the idle client is still connected: a server that
	// waited for it would only have answered after dropping it.
	_ = idle.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("idle client after the call: %v, want it still connected: blocked by the idle client", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle client: %v, want EOF from the server's timeout", err)
	}
}

func TestServeStopsAndNameInUse(t *testing.T) {
	te := adminEngine(t)
	name := testSocketName()
	ln, err := Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(name); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second Listen: %v, want EADDRINUSE", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Engine: te.Engine}).Serve(ctx, ln) }()
	if _, _, code, err := Call(name, []string{"ipvsadm", "-Ln"}, nil); err != nil || code != 0 {
		t.Fatalf("Call: %d %v", code, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	_, _, _, err = Call(name, []string{"ipvsadm", "-Ln"}, nil)
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, syscall.ECONNREFUSED) || de.Name != name {
		t.Errorf("Call after stop: %v, want a DialError with ECONNREFUSED", err)
	}
}

func BenchmarkCall(b *testing.B) {
	te := adminEngine(b)
	te.mustRun(b, "-A", "-t", "198.51.100.10:80")
	name := startServer(b, &Server{Engine: te.Engine})
	argv := []string{"ipvsadm", "-Ln"}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := Call(name, argv, nil); err != nil {
			b.Fatal(err)
		}
	}
}
