// Package health is gvsd's health-check engine: keepalived's checkers (TCP_CHECK, HTTP_GET,
// SSL_GET, UDP_CHECK, DNS_CHECK, PING_CHECK, MISC_CHECK) with keepalived's per-checker state
// machine (delay_loop, retry, delay_before_retry, warmup, alpha, the first result deciding, HTTP's
// per-url walk), real-server liveness (all checkers up), and the virtual-service logic of
// keepalived's ipwrapper.c: quorum with hysteresis, quorum_up/quorum_down, sorry_server (and
// sorry_server_inhibit), inhibit_on_failure, notify_up/notify_down, alpha/omega.
//
// Beyond keepalived it adds rise (N successes to come up), slowstart (a recovered real server's
// weight ramps linearly back) and an operator drain that checks cannot override.
//
// The engine never touches the IPVS model itself: it computes, per virtual service, which
// destinations should be present with which weight and hands the differences to an Applier. It
// runs off the data path: probes run in their own goroutines under a bounded pool, and every timer
// comes from an injectable Clock, so the state machines are tested with a fake clock and fake
// probes, deterministically.
//
// Transitions are logged with keepalived's wording (operators grep for "Removing service ...
// from VS ...", "Lost quorum ...") and emitted as Events for metrics.
package health
