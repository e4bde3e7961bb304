package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// started is a gvs-testsrv run inside the test process.
type started struct {
	http, udp, sink string
	lines           chan string // stdout lines after "ready"
	done            chan error
}

func start(t *testing.T, args ...string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &started{lines: make(chan string, 16), done: make(chan error, 1)}
	go func() {
		s.done <- run(ctx, args, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		cancel()
		t.Fatalf("no ready line: %v", <-s.done)
	}
	for _, f := range strings.Fields(sc.Text())[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "http":
			s.http = v
		case "udp":
			s.udp = v
		case "sink":
			s.sink = v
		}
	}
	go func() {
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	return s
}

func TestServices(t *testing.T) {
	s := start(t, "--name", "rs1", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--sink", "127.0.0.1:0")
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := client.Get("http://" + s.http + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b), resp.Header
	}

	t.Run("http root", func(t *testing.T) {
		code, body, _ := get("/")
		want := fmt.Sprintf("name=rs1 local=%s remote=127.0.0.1:", s.http)
		if code != 200 || !strings.HasPrefix(body, want) || !strings.HasSuffix(body, "\n") {
			t.Fatalf("%d %q, want prefix %q", code, body, want)
		}
	})
	t.Run("http data", func(t *testing.T) {
		for _, n := range []int{0, 1, 26, 100000} {
			code, body, h := get(fmt.Sprintf("/data?bytes=%d", n))
			if code != 200 || len(body) != n || h.Get("X-Served-By") != "rs1" {
				t.Fatalf("bytes=%d: %d, %d bytes, served by %q", n, code, len(body), h.Get("X-Served-By"))
			}
			for i := 0; i < n; i++ {
				if body[i] != byte('a'+i%(32<<10)%26) {
					t.Fatalf("bytes=%d: byte %d is %q", n, i, body[i])
				}
			}
		}
		for _, bad := range []string{"", "x", "-1", "1073741825"} {
			if code, _, _ := get("/data?bytes=" + bad); code != http.StatusBadRequest {
				t.Fatalf("bytes=%q: status %d, want 400", bad, code)
			}
		}
	})
	t.Run("http healthz and 404", func(t *testing.T) {
		if code, body, _ := get("/healthz"); code != 200 || body != "ok\n" {
			t.Fatalf("healthz: %d %q", code, body)
		}
		if code, _, _ := get("/nope"); code != 404 {
			t.Fatalf("/nope: %d", code)
		}
	})
	t.Run("udp echo", func(t *testing.T) {
		c, err := net.Dial("udp", s.udp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		for _, msg := range []string{"hello", "", strings.Repeat("z", 1400)} {
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(buf[:n]); got != "rs1 "+msg {
				t.Fatalf("reply %q, want %q", got, "rs1 "+msg)
			}
		}
	})
	t.Run("tcp sink", func(t *testing.T) {
		c, err := net.Dial("tcp", s.sink)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		data := []byte(strings.Repeat("0123456789", 50000))
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		reply, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		want := fmt.Sprintf("sha256=%s bytes=%d\n", hex.EncodeToString(sum[:]), len(data))
		if string(reply) != want {
			t.Fatalf("reply %q, want %q", reply, want)
		}
		select {
		case line := <-s.lines:
			wantLine := fmt.Sprintf("sink remote=%s bytes=%d sha256=%s", c.LocalAddr(), len(data), hex.EncodeToString(sum[:]))
			if line != wantLine {
				t.Fatalf("stdout %q, want %q", line, wantLine)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no sink line on stdout")
		}
	})
}

// An open sink connection must not keep the server from stopping.
func TestShutdownWithOpenSinkConnection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--http", "", "--udp", "", "--sink", "127.0.0.1:0"}, pw, io.Discard) }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(strings.Fields(line)[4], "sink=")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.Copy(io.Discard, pr)
	time.Sleep(50 * time.Millisecond) // let the server accept it
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return with a sink connection open")
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    config
		wantErr string
	}{
		{[]string{"--name", "a"}, config{name: "a", http: ":8080", udp: ":9000", sink: ":9001"}, ""},
		{[]string{"--name", "a", "--udp", "", "--sink", ""}, config{name: "a", http: ":8080"}, ""},
		{[]string{"--http", "", "--udp", "", "--sink", ""}, config{}, "every service is disabled"},
		{[]string{"--name", "a", "extra"}, config{}, "unexpected arguments"},
		{[]string{"--bogus"}, config{}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestListenErrorIsReported(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = run(context.Background(), []string{"--http", ln.Addr().String(), "--udp", "", "--sink", ""}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "http:") {
		t.Fatalf("err = %v, want an http listen error", err)
	}
}
