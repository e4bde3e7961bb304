package health

import (
	"net"
	"testing"
	"time"
)

// The engine with the real clock, the prober pool and a real TCP_CHECK: a listener closed
// mid-test takes the real server out; reopened, it comes back.
func TestEngineRealProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	events := make(chan Event, 64)
	app := &recApplier{}
	sc := ServiceConfig{Ref: vs80(), Quorum: 1, Reals: []RealConfig{{Dest: rs(1), Weight: 1, Checkers: []CheckerConfig{{
		Probe:     &TCPProbe{Conn: ConnOpts{Dst: addrPort(t, ln.Addr()), Timeout: time.Second}},
		DelayLoop: 20 * time.Millisecond, DelayBeforeRetry: 10 * time.Millisecond, Retry: 1,
	}}}}}
	var samples int
	eng, err := New([]ServiceConfig{sc}, Options{Applier: app, Runner: NewPool(2),
		OnEvent:      func(ev Event) { events <- ev },
		ObserveCheck: func(CheckSample) { samples++ }})
	if err != nil {
		t.Fatal(err)
	}
	eng.Start()
	defer eng.Stop(true)
	wait := func(kind EventKind) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Kind == kind && ev.Message != "" {
					return
				}
			case <-deadline:
				t.Fatalf("no %v event", kind)
			}
		}
	}
	ln.Close()
	wait(RealDown)
	if st := eng.Status()[0].Reals[0]; st.Present || st.Alive || st.Checkers[0].Failures < 1 || st.Checkers[0].LastError == "" {
		t.Fatalf("status after the listener closed: %+v", st)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	wait(RealUp)
	eng.Stop(true)
	ops := app.take()
	equal(t, "applier", ops, []string{"rs [198.18.2.11]:tcp:80 w1", "rs [198.18.2.11]:tcp:80 del",
		"rs [198.18.2.11]:tcp:80 w1", "rs [198.18.2.11]:tcp:80 del"})
	if samples == 0 {
		t.Fatal("no check-duration samples")
	}
}
