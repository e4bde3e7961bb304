package health

import (
	"testing"
	"time"
)

// HTTP_GET walks every url, delay_loop apart; a url failing retry+1 times (delay_before_retry
// apart) takes the checker down; the failed url is then polled every max(delay_before_retry,
// delay_loop) and, once it answers, the whole list is walked again before the checker is up.
func TestHTTPMultiURLWalk(t *testing.T) {
	for _, fast := range []bool{false, true} {
		clock := NewFakeClock(t0)
		p := &fakeProbe{kind: KindHTTP, steps: 3, def: true}
		cc := CheckerConfig{DelayLoop: 10 * time.Second, DelayBeforeRetry: 3 * time.Second, Retry: 1, FastRecovery: fast}
		h := newHarness(t, []ServiceConfig{one(clock, cc, p)})
		h.eng.Start()
		h.app.take()
		h.at(35 * time.Second)
		if msgs := h.messages(); !contains(msgs, "Remote Web server [198.18.2.11]:tcp:80 succeed on service.") {
			t.Errorf("first walk: %q", msgs)
		}
		down, okAt, upAt := 44, 60, 94
		if fast {
			down, okAt, upAt = 54, 65, 74
		}
		p.ok = map[int]bool{1: false}
		h.at(time.Duration(down-1) * time.Second)
		equal(t, "before the last retry", h.app.take(), nil)
		h.at(time.Duration(down) * time.Second)
		equal(t, "after retry", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
		if msgs := h.messages(); !contains(msgs, "HTTP_CHECK on service [198.18.2.11]:tcp:80 failed after 1 retries.") {
			t.Errorf("fall: %q", msgs)
		}
		h.at(time.Duration(okAt) * time.Second)
		p.ok = nil
		h.at(time.Duration(upAt-1) * time.Second)
		equal(t, "walking again", h.app.take(), nil)
		h.at(time.Duration(upAt) * time.Second)
		equal(t, "recovered", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 w1"})
		var steps []int
		for _, c := range p.calls {
			steps = append(steps, c.step)
		}
		if !fast {
			equal(t, "times", p.times(), secs(1, 11, 21, 31, 41, 44, 54, 64, 74, 84, 94))
			equal(t, "urls", steps, []int{0, 1, 2, 0, 1, 1, 1, 1, 0, 1, 2})
		} else {
			// fast_recovery: the first walk, and the walk after the failed url answers again,
			// run without delay.
			equal(t, "times", p.times(), secs(1, 1, 1, 11, 21, 31, 41, 51, 54, 64, 74, 74, 74, 74))
			equal(t, "urls", steps, []int{0, 1, 2, 0, 1, 2, 0, 1, 1, 1, 1, 0, 1, 2})
		}
	}
}

// During the first walk any failure decides at once, whatever retry is.
func TestHTTPFirstWalkDecides(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProbe{kind: KindSSL, steps: 3, def: true, ok: map[int]bool{1: false}}
	cc := CheckerConfig{DelayLoop: 10 * time.Second, DelayBeforeRetry: 3 * time.Second, Retry: 3}
	h := newHarness(t, []ServiceConfig{one(clock, cc, p)})
	h.eng.Start()
	h.app.take()
	h.at(11 * time.Second)
	equal(t, "down on the first walk", h.app.take(), []string{"rs [198.18.2.11]:tcp:80 del"})
	if msgs := h.messages(); !contains(msgs, "SSL_CHECK on service [198.18.2.11]:tcp:80 failed after 3 retries.") {
		t.Errorf("%q", msgs)
	}
}
