package daemon

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/bpf"

	"gvs/forwarder/ring"
)

// stepRX is an empty RX ring whose Next blocks until the test lets it go
// on: each step is one turn of the worker's loop.
type stepRX struct {
	entered chan struct{} // a token each time the worker is inside Next
	step    chan struct{} // closed or sent to: Next returns (no frame)
}

func newStepRX() *stepRX {
	return &stepRX{entered: make(chan struct{}, 1<<10), step: make(chan struct{})}
}

func (r *stepRX) Next() ([]byte, ring.Meta, bool) {
	r.entered <- struct{}{}
	<-r.step
	return nil, ring.Meta{}, false
}
func (r *stepRX) Release()                             {}
func (r *stepRX) Wait(time.Duration) error             { return ring.ErrTimeout }
func (r *stepRX) SetFilter([]bpf.RawInstruction) error { return nil }
func (r *stepRX) Fd() int                              { return -1 }
func (r *stepRX) TakeError() error                     { return nil }

// stepWorker is a worker on a stepRX, running until stop is set and its
// ring let go.
func stepWorker(t *testing.T, stop *atomic.Bool) (*worker, *stepRX) {
	var wg sync.WaitGroup
	rx := newStepRX()
	w := newWorker(nil, func() int64 { return 0 }, 0)
	w.addRX(rx, 0)
	tx := &fakeTX{slots: 1, max: 1514}
	w.tx = [2]txRing{tx, tx}
	wg.Go(func() { w.run(stop) })
	t.Cleanup(func() {
		stop.Store(true)
		close(rx.step)
		wg.Wait()
	})
	return w, rx
}

// TestWatchdogStuckWorker: with two workers, one turning and one stuck in
// its loop (here: in Next), the watchdog pings while both turn and stops
// once the stuck one has not turned for the stall limit; it resumes when
// that worker turns again.
func TestWatchdogStuckWorker(t *testing.T) {
	var stop atomic.Bool
	w0, rx0 := stepWorker(t, &stop)
	w1, rx1 := stepWorker(t, &stop)
	d := &Daemon{log: zap.NewNop(), workers: []*worker{w0, w1}}

	<-rx0.entered
	<-rx1.entered
	if got := d.Heartbeats(nil); !slices.Equal(got, []uint64{1, 1}) {
		t.Fatalf("heartbeats %v, want [1 1]", got)
	}
	const limit = 5 * time.Second
	t0 := time.Unix(1000, 0)
	var p Progress
	var beats []uint64
	pings := 0
	ping := func() { pings++ }
	wasStalled := false
	turn := func(now time.Time, stepped ...*stepRX) {
		for _, rx := range stepped {
			rx.step <- struct{}{}
			<-rx.entered // the next turn has begun (its number stored)
		}
		d.watchdogTurn(&p, &beats, now, limit, ping, &wasStalled)
	}

	turn(t0) // first look: nothing to compare with
	if pings != 1 {
		t.Fatalf("first check: %d pings, want 1", pings)
	}
	turn(t0.Add(limit/2), rx0, rx1) // both turned
	turn(t0.Add(limit), rx0, rx1)
	if pings != 3 {
		t.Fatalf("both workers turning: %d pings, want 3", pings)
	}
	// Worker 1 is stuck from now on; worker 0 goes on.
	turn(t0.Add(limit*3/2), rx0) // stuck for limit/2: not yet a stall
	if pings != 4 {
		t.Fatalf("stuck for less than the limit: %d pings, want 4", pings)
	}
	turn(t0.Add(2*limit), rx0)
	turn(t0.Add(3*limit), rx0)
	if pings != 4 || !wasStalled {
		t.Fatalf("worker 1 stuck for the limit: %d pings (want still 4), stalled %v", pings, wasStalled)
	}
	if got := p.Stalled(d.Heartbeats(nil), t0.Add(3*limit), limit); !slices.Equal(got, []int{1}) {
		t.Fatalf("stalled workers %v, want [1]", got)
	}
	turn(t0.Add(7*limit/2), rx0, rx1) // it turns again
	if pings != 5 || wasStalled {
		t.Fatalf("after the worker turned again: %d pings (want 5), stalled %v", pings, wasStalled)
	}
}

func TestProgress(t *testing.T) {
	var p Progress
	t0 := time.Unix(0, 0)
	if s := p.Stalled([]uint64{7, 9}, t0, time.Second); s != nil {
		t.Fatalf("first call: %v", s)
	}
	if s := p.Stalled([]uint64{7, 10}, t0.Add(999*time.Millisecond), time.Second); s != nil {
		t.Fatalf("before the limit: %v", s)
	}
	if s := p.Stalled([]uint64{7, 10}, t0.Add(time.Second), time.Second); !slices.Equal(s, []int{0}) {
		t.Fatalf("at the limit: %v, want [0]", s)
	}
	// A different number of workers starts over.
	if s := p.Stalled([]uint64{7}, t0.Add(time.Hour), time.Second); s != nil {
		t.Fatalf("workers changed: %v", s)
	}
}
