package health

// Pool is a bounded prober pool: at most N probes run at once; the others wait in their own
// goroutines (each checker has at most one check in flight, so waiting goroutines are bounded
// by the number of checkers).
type Pool struct {
	sem chan struct{}
}

// NewPool builds a pool running at most n probes at once (n < 1 is taken as 1).
func NewPool(n int) *Pool {
	return &Pool{sem: make(chan struct{}, max(n, 1))}
}

// Go runs f once a slot is free; it does not block the caller.
func (p *Pool) Go(f func()) {
	go func() {
		p.sem <- struct{}{}
		defer func() { <-p.sem }()
		f()
	}()
}

// InlineRunner runs each probe synchronously in the caller: with a FakeClock and fake probes it
// makes the engine fully deterministic (tests, replay).
type InlineRunner struct{}

// Go calls f.
func (InlineRunner) Go(f func()) { f() }
