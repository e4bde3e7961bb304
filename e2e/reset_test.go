package e2e

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// TestForgottenConnectionReset: a client whose connection the director no
// longer knows (its entry timed out) gets a RST as soon as it sends, as
// from a kernel IPVS director, whose own TCP answers a segment for a
// service that is neither a SYN nor part of a known connection
// (tcp_conn_schedule leaves it to the host). The client then reconnects
// at once instead of retransmitting into a silent drop until its own
// timeout.
func TestForgottenConnectionReset(t *testing.T) {
	t.Parallel()
	e := newEnv(t, modeNAT, envOptions{servers: 1}, 60*time.Second)
	cli := e.client(0)
	svc := e.addService("-t", sinkPort, "rr", sinkPort, nil)
	c := e.holdSink(cli, svc, 1)[0]
	if err := c.SetKeepAlive(false); err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().String()
	if d := e.connDest(svc, local); d == "" {
		t.Fatalf("no connection entry for %s -> %s:\n%s", local, svc, e.ipvsadm("-Lnc"))
	}
	// ESTABLISHED connections time out after 1 s from their next packet.
	e.ipvsadm("--set", "1", "0", "0")
	if _, err := c.Write([]byte("re-arm")); err != nil {
		t.Fatal(err)
	}
	// The idle connection's entry expires (bounded wait).
	deadline := time.Now().Add(10 * time.Second)
	for e.connDest(svc, local) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the connection entry did not expire after --set 1 0 0:\n%s", e.ipvsadm("-Lnc"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Data on the forgotten connection: the director's RST resets it.
	if _, err := c.Write([]byte("after expiry")); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write after expiry: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 64))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after expiry: %v, want ECONNRESET (the director's RST) within 1 s", err)
	}
	// No connection was made for the data segment.
	if d := e.connDest(svc, local); d != "" {
		t.Errorf("the data segment made a connection to %s", d)
	}
}
