package health

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := addrPort(t, ln.Addr())
	accepted := make(chan netip.AddrPort, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- addrPort(t, c.RemoteAddr())
			c.Close()
		}
	}()
	p := &TCPProbe{Conn: ConnOpts{Dst: dst, BindTo: netip.MustParseAddr("127.0.0.2"), Timeout: time.Second}}
	if r := p.Check(context.Background(), 0); r.Err != nil {
		t.Fatalf("listening: %v", r.Err)
	}
	if src := <-accepted; src.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("bindto ignored: connection came from %v", src)
	}
	ln.Close() // the listener closes mid-test: the next check fails
	if r := p.Check(context.Background(), 0); r.Err == nil {
		t.Fatal("closed port reported up")
	}
}

func TestHTTPProbe(t *testing.T) {
	body := "hello keepalived\n"
	sum := md5.Sum([]byte(body))
	var hosts, agents []string
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts = append(hosts, r.Host)
		agents = append(agents, r.UserAgent())
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, body)
		case "/teapot":
			w.WriteHeader(418)
		default:
			http.NotFound(w, r)
		}
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()
	dst := addrPort(t, srv.Listener.Addr())
	p := &HTTPProbe{Conn: ConnOpts{Dst: dst, Timeout: 2 * time.Second}, URLs: []URL{
		{Path: "/ok", Digest: hex.EncodeToString(sum[:])},
		{Path: "/ok", Digest: strings.Repeat("0", 32)},
		{Path: "/missing"},
		{Path: "/missing", Status: []StatusRange{{400, 404}}},
		{Path: "/teapot", Status: []StatusRange{{200, 200}, {418, 418}}},
		{Path: "/ok", VirtualHost: "www.example.com"},
	}}
	want := []bool{true, false, false, true, true, true}
	for i, w := range want {
		r := p.Check(context.Background(), i)
		if (r.Err == nil) != w {
			t.Errorf("url %d (%s): err %v, want ok=%v", i, p.URLs[i].Path, r.Err, w)
		}
	}
	if hosts[0] != dst.String() || hosts[5] != "www.example.com" || agents[0] != "KeepAliveClient" {
		t.Errorf("request headers: hosts %q agents %q", hosts, agents)
	}
	got, err := Genhash(context.Background(), p, 0)
	if err != nil || got != hex.EncodeToString(sum[:]) {
		t.Errorf("genhash %q %v", got, err)
	}
	srv.Close()
	if r := p.Check(context.Background(), 0); r.Err == nil {
		t.Error("closed server reported up")
	}
}

// The digest is over the raw body bytes, limited to Content-Length, as keepalived's.
func TestHTTPDigestRawBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 1024)
			c.Read(buf)
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello trailing junk")
			c.Close()
		}
	}()
	sum := md5.Sum([]byte("hello"))
	p := &HTTPProbe{Conn: ConnOpts{Dst: addrPort(t, ln.Addr()), Timeout: time.Second},
		URLs: []URL{{Path: "/", Digest: hex.EncodeToString(sum[:])}}}
	if r := p.Check(context.Background(), 0); r.Err != nil {
		t.Fatal(r.Err)
	}
}

func TestSSLProbeSNI(t *testing.T) {
	var sni string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni = r.TLS.ServerName
		io.WriteString(w, "secure")
	}))
	srv.StartTLS() // self-signed: not verified, as keepalived
	defer srv.Close()
	p := &HTTPProbe{TLS: true, Conn: ConnOpts{Dst: addrPort(t, srv.Listener.Addr()), Timeout: 2 * time.Second},
		URLs: []URL{{Path: "/"}}, VirtualHost: "www.example.com", EnableSNI: true}
	if p.Kind() != KindSSL {
		t.Fatal(p.Kind())
	}
	if r := p.Check(context.Background(), 0); r.Err != nil {
		t.Fatal(r.Err)
	}
	if sni != "www.example.com" {
		t.Fatalf("SNI %q", sni)
	}
	p.EnableSNI = false
	if r := p.Check(context.Background(), 0); r.Err != nil || sni != "" {
		t.Fatalf("without SNI: %v %q", r.Err, sni)
	}
	// Plain HTTP against a TLS port fails.
	p.TLS = false
	if r := p.Check(context.Background(), 0); r.Err == nil {
		t.Fatal("HTTP_GET to an HTTPS port reported up")
	}
}

func TestUDPProbe(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := addrPort(t, pc.LocalAddr())
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	co := ConnOpts{Dst: dst, Timeout: 300 * time.Millisecond}
	cases := []struct {
		name string
		p    *UDPProbe
		ok   bool
	}{
		{"echo", &UDPProbe{Conn: co, Payload: []byte("ping")}, true},
		{"require reply", &UDPProbe{Conn: co, Payload: []byte("ping"), RequireReply: true}, true},
		{"reply data", &UDPProbe{Conn: co, Payload: []byte("ping"), RequireReply: true, ReplyData: []byte("echo:p")}, true},
		{"reply mismatch", &UDPProbe{Conn: co, Payload: []byte("ping"), RequireReply: true, ReplyData: []byte("echo:x")}, false},
		{"masked", &UDPProbe{Conn: co, Payload: []byte("ping"), RequireReply: true, ReplyData: []byte("echo:x"), ReplyMask: []byte{0, 0, 0, 0, 0, 0xff}}, true},
		{"too long", &UDPProbe{Conn: co, Payload: []byte("ping"), RequireReply: true, ReplyData: []byte("e"), MaxReply: 4}, false},
	}
	for _, c := range cases {
		if r := c.p.Check(context.Background(), 0); (r.Err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, r.Err)
		}
	}
	pc.Close()
	// Closed port: ICMP port unreachable is a failure; silence would be a success.
	if r := (&UDPProbe{Conn: co}).Check(context.Background(), 0); r.Err == nil {
		t.Error("closed UDP port reported up")
	}
	// A port that drops silently is up unless a reply is required.
	sink, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer sink.Close()
	co.Dst = addrPort(t, sink.LocalAddr())
	if r := (&UDPProbe{Conn: co}).Check(context.Background(), 0); r.Err != nil {
		t.Errorf("silent port: %v", r.Err)
	}
	if r := (&UDPProbe{Conn: co, RequireReply: true}).Check(context.Background(), 0); r.Err == nil {
		t.Error("silent port up despite require_reply")
	}
}

// dnsServer answers every query with the given rcode (after one decoy with a wrong ID).
func dnsServer(t *testing.T, rcode uint16, seen chan<- []byte) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := append([]byte(nil), buf[:n]...)
			if seen != nil {
				seen <- q
			}
			decoy := append([]byte(nil), q...)
			decoy[0] ^= 0xff
			binary.BigEndian.PutUint16(decoy[2:], 0x8180)
			pc.WriteTo(decoy, from)
			resp := append([]byte(nil), q...)
			binary.BigEndian.PutUint16(resp[2:], 0x8180|rcode)
			pc.WriteTo(resp, from)
		}
	}()
	return addrPort(t, pc.LocalAddr())
}

func TestDNSProbe(t *testing.T) {
	seen := make(chan []byte, 4)
	dst := dnsServer(t, 0, seen)
	typ, _ := DNSType("a")
	p := &DNSProbe{Conn: ConnOpts{Dst: dst, Timeout: time.Second}, Type: typ, Name: "www.example.com"}
	if r := p.Check(context.Background(), 0); r.Err != nil {
		t.Fatal(r.Err)
	}
	q := <-seen
	wantQ := "\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01"
	if string(q[2:]) != wantQ {
		t.Fatalf("query %x", q)
	}
	// Defaults: SOA for the root.
	if r := (&DNSProbe{Conn: p.Conn}).Check(context.Background(), 0); r.Err != nil {
		t.Fatal(r.Err)
	}
	if q := <-seen; string(q[2:]) != "\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x01" {
		t.Fatalf("default query %x", q)
	}
	bad := &DNSProbe{Conn: ConnOpts{Dst: dnsServer(t, 2, nil), Timeout: time.Second}}
	r := bad.Check(context.Background(), 0)
	if r.Err == nil || errText(r.Err) != "read error occurred. (rcode = 2)" {
		t.Fatalf("SERVFAIL: %v", r.Err)
	}
}

func TestMiscProbe(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := script("ok", "exit 0")
	fail := script("fail", "exit 1")
	dyn := script("dyn", "exit 9")
	capf := filepath.Join(dir, "caps.out")
	caps := script("caps", "grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status > "+capf)
	pidf := filepath.Join(dir, "child")
	slow := script("slow", "trap '' TERM; sleep 30 & echo $! > "+pidf+"; wait")

	run := func(p *MiscProbe) Result { return p.Check(context.Background(), 0) }
	if r := run(&MiscProbe{Script: Script{Argv: []string{ok}}}); r.Err != nil {
		t.Errorf("exit 0: %v", r.Err)
	}
	if r := run(&MiscProbe{Script: Script{Argv: []string{fail}}}); r.Err == nil || r.Exit.Code != 1 {
		t.Errorf("exit 1: %+v", r)
	}
	if r := run(&MiscProbe{Script: Script{Argv: []string{dyn}}}); r.Err == nil {
		t.Errorf("exit 9 without misc_dynamic: %+v", r)
	}
	if r := run(&MiscProbe{Script: Script{Argv: []string{dyn}}, Dynamic: true}); r.Err != nil || !r.HasWeight || r.Weight != 7 {
		t.Errorf("exit 9 with misc_dynamic: %+v", r)
	}
	// Scripts run without gvsd's capabilities (the tests run as root, with all of them).
	if r := run(&MiscProbe{Script: Script{Argv: []string{caps}}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	b, _ := os.ReadFile(capf)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) != 2 || strings.Trim(f[1], "0") != "" {
			t.Errorf("script kept capabilities: %q", b)
		}
	}
	// As a configured user.
	os.Chmod(dir, 0o777)
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Remove(capf)
	if r := run(&MiscProbe{Script: Script{Argv: []string{caps}, User: true, UID: 65534, GID: 65534}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if b, _ := os.ReadFile(capf); !strings.Contains(string(b), "CapEff:\t0000000000000000") {
		t.Errorf("user script capabilities: %q", b)
	}
	// A script that ignores SIGTERM is killed with its whole process group after the timeout.
	start := time.Now()
	r := run(&MiscProbe{Script: Script{Argv: []string{slow}}, Timeout: 200 * time.Millisecond})
	if r.Err == nil || !r.Exit.TimedOut || r.Exit.Signal != int(unix.SIGKILL) {
		t.Fatalf("timeout: %+v %+v", r, r.Exit)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("not killed")
	}
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d survived", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPingProbe(t *testing.T) {
	lo := ConnOpts{Dst: netip.MustParseAddrPort("127.0.0.1:0"), Timeout: time.Second}
	raw := &PingProbe{Conn: lo, Socket: PingRaw}
	if r := raw.Check(context.Background(), 0); r.Err != nil {
		// Tests run as root; without CAP_NET_RAW this is a failure, not a skip.
		t.Fatalf("raw ICMP socket: %v", r.Err)
	}
	auto := &PingProbe{Conn: lo}
	if r := auto.Check(context.Background(), 0); r.Err != nil {
		t.Fatalf("auto: %v", r.Err)
	}
	dg := &PingProbe{Conn: lo, Socket: PingDatagram}
	r := dg.Check(context.Background(), 0)
	if groupAllowed() {
		if r.Err != nil {
			t.Fatalf("datagram ICMP socket allowed by ping_group_range but: %v", r.Err)
		}
	} else if r.Err == nil || !errors.Is(r.Err, os.ErrPermission) {
		t.Fatalf("datagram ICMP socket outside ping_group_range: %v", r.Err)
	}
	// In an empty network namespace nothing answers.
	inEmptyNetns(t, func() {
		none := &PingProbe{Conn: ConnOpts{Dst: netip.MustParseAddrPort("198.18.0.1:0"), Timeout: 300 * time.Millisecond}, Socket: PingRaw}
		if r := none.Check(context.Background(), 0); r.Err == nil {
			t.Error("unreachable address answered")
		}
	})
}

// inEmptyNetns runs f on a thread moved to a new network namespace (the thread is discarded).
func inEmptyNetns(t *testing.T, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		f()
	}()
	<-done
}

func groupAllowed() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return false
	}
	var lo, hi int
	fmt.Sscan(string(b), &lo, &hi)
	gid := os.Getgid()
	return lo <= gid && gid <= hi
}
