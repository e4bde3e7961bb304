package control

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests with a real unprivileged caller: the test binary runs itself as a
// child that drops to nobody (setgid/setuid, all threads) before it
// connects, so that SO_PEERCRED reports an unprivileged uid.

const (
	childEnv  = "GVS_CONTROL_TEST_CHILD" // mode: idle | oversize
	nobodyUID = 65534                    // nobody
	otherUID  = 65533                    // another unprivileged user
)

// TestMain runs the child's part when the environment says so, the tests
// otherwise.
func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		uid, _ := strconv.Atoi(os.Getenv("GVS_CONTROL_TEST_UID"))
		if err := childMain(mode, uid, os.Getenv("GVS_CONTROL_TEST_SOCKET"), os.Getenv("GVS_CONTROL_TEST_ARG")); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childMain(mode string, uid int, name, arg string) error {
	if err := syscall.Setgid(uid); err != nil {
		return err
	}
	if err := syscall.Setuid(uid); err != nil {
		return err
	}
	switch mode {
	case "idle":
		// Open n connections, send nothing, hold them until stdin ends.
		n, _ := strconv.Atoi(arg)
		var conns []*net.UnixConn
		for range n {
			c, err := net.DialUnix("unix", nil, socketAddr(name))
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		fmt.Println("connected")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		for _, c := range conns {
			c.Close()
		}
		return nil
	case "oversize":
		// Announce a request of arg bytes, send none of it, and print the
		// answer (or what happened instead).
		n, _ := strconv.Atoi(arg)
		c, err := net.DialUnix("unix", nil, socketAddr(name))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(binary.BigEndian.AppendUint32(nil, uint32(n))); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := readFrame(c, MaxResponseSize)
		if err != nil {
			return fmt.Errorf("no answer: %w", err)
		}
		var r Response
		if err := r.UnmarshalBinary(b); err != nil {
			return err
		}
		fmt.Printf("code=%d stderr=%q\n", r.Code, r.Stderr)
		return nil
	case "call":
		_, e, code, err := Call(name, strings.Fields(arg), nil)
		if err != nil {
			return err
		}
		fmt.Printf("code=%d stderr=%q\n", code, e)
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// unprivileged starts the child in mode as uid (and gid) and returns it
// with its stdout; the child holds its state until the test ends (its stdin
// is closed then).
func unprivileged(t *testing.T, uid int, name, mode, arg string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: needs root to run a child as nobody")
		}
		t.Skip("needs root to run a child as nobody")
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "GVS_CONTROL_TEST_UID="+strconv.Itoa(uid), "GVS_CONTROL_TEST_SOCKET="+name, "GVS_CONTROL_TEST_ARG="+arg)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return cmd, bufio.NewReader(stdout)
}

// line reads the child's next output line.
func line(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	s, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("child output: %q, %v", s, err)
	}
	return strings.TrimSpace(s)
}

// callWithin runs Call in the background and fails the test if it has not
// answered within d (a bound on being blocked, not a speed measurement).
func callWithin(t *testing.T, d time.Duration, name string, argv ...string) (string, int) {
	t.Helper()
	type res struct {
		out  []byte
		code int
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		o, _, code, err := Call(name, argv, nil)
		ch <- res{o, code, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Call %v: %v", argv, r.err)
		}
		return string(r.out), r.code
	case <-time.After(d):
		t.Fatalf("Call %v: no answer within %v: blocked", argv, d)
		return "", 0
	}
}

// TestIdleUnprivilegedDoNotBlockRoot: connections an unprivileged user
// opens and never uses take neither root's slots nor more than their own
// share, and root is answered at once.
func TestIdleUnprivilegedDoNotBlockRoot(t *testing.T) {
	te := newTestEngine(t)
	te.mustRun(t, "-A", "-t", "198.51.100.10:80")
	name := startServer(t, &Server{Engine: te.Engine})
	_, out := unprivileged(t, nobodyUID, name, "idle", "20")
	if got := line(t, out); got != "connected" {
		t.Fatalf("child: %s", got)
	}
	// Root (the test process) is served while they idle, well before
	// DefaultConnTimeout would have freed a slot.
	for i := range 3 {
		o, code := callWithin(t, 10*time.Second, name, "ipvsadm", "-Ln")
		if code != 0 || !strings.Contains(o, "198.51.100.10:80") {
			t.Fatalf("root call %d: %d %q", i, code, o)
		}
	}
	// A second unprivileged user still gets an answer (the idle user has
	// only its own share), and it is the permission error.
	_, out2 := unprivileged(t, otherUID, name, "call", "ipvsadm -Ln")
	if got, want := line(t, out2), fmt.Sprintf("code=%d stderr=%q", ExitInit, msgPerm+"\n"); got != want {
		t.Errorf("another unprivileged caller: %s, want %s", got, want)
	}
}

// TestUnprivilegedOversizeRefused: an unprivileged caller announcing a
// request over MaxUserRequestSize is answered from the frame header, before
// it sent the request (so nothing of it was read or allocated).
func TestUnprivilegedOversizeRefused(t *testing.T) {
	te := newTestEngine(t)
	name := startServer(t, &Server{Engine: te.Engine})
	_, out := unprivileged(t, nobodyUID, name, "oversize", strconv.Itoa(MaxStdin))
	if got, want := line(t, out), fmt.Sprintf("code=%d stderr=%q", ExitInit, msgPerm+"\n"); got != want {
		t.Errorf("oversize request from nobody: %s, want %s", got, want)
	}
}

// TestReadFrameAllocatesWhatArrives: a peer announcing a large request and
// sending little of it costs the daemon what it sent, not what it announced
// (8 partial 17 MiB requests used to pin 130 MB).
func TestReadFrameAllocatesWhatArrives(t *testing.T) {
	data := append(binary.BigEndian.AppendUint32(nil, MaxRequestSize), make([]byte, 1000)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := readFrame(bytes.NewReader(data), MaxRequestSize)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readFrame of a cut frame: %v, want unexpected EOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("readFrame allocated %d bytes for 1000 received of %d announced", got, MaxRequestSize)
	}
}
