// Package control is gvsd's control plane: the ipvsadm command engine and
// the control socket that gvsadm (ipvsadm) talks to.
//
// # Engine
//
// Engine executes one ipvsadm 1.31 command line against the daemon's live
// state (the service table, the connection table, the rate estimator) and
// produces what ipvsadm would print on stdout and stderr and the status it
// would exit with. Parsing, validation, error texts and the listing formats
// come from package ipvs; Engine adds the parts that need the live daemon:
// credentials, the connection listing (-Lc), timeouts (--set, --timeout),
// counters and rates (--stats, --rate, -Z) and the change hook.
//
// Deliberate differences from ipvsadm against the kernel:
//
//   - -R (restore) is atomic. ipvsadm applies the lines one by one and a
//     bad line leaves the earlier ones applied; Engine parses and validates
//     every line first and applies all of them or none, reporting the first
//     bad one as "line N: <ipvsadm's message>".
//   - Invoked as ipvsadm-restore, the clear and the restore are one atomic
//     batch too (the shell wrapper runs "ipvsadm -C" then "ipvsadm -R").
//   - -Lc lists connections sorted by protocol, client, virtual and real
//     address (the kernel prints them in hash-table order); --nosort keeps
//     the table's own order.
//   - -h and -v need no privileges (ipvsadm fails to initialise first when
//     not root).
//
// # Socket
//
// The control socket is an abstract unix stream socket ("@gvsd" by
// default), scoped to the network namespace, so "ip netns exec NS gvsadm"
// reaches that namespace's daemon. Each connection carries one request and
// one response, both length-prefixed binary frames (see wire.go). The server
// takes the caller's identity from SO_PEERCRED, never from the request, and
// before it reads anything: an unprivileged caller (who may only run -h and
// -v) gets a request limit of a few KiB, a short read deadline, two
// connections per uid and a pool of slots separate from root's, so that no
// local user can make root wait or grow the daemon's memory; the warnings
// such callers cause are rate-limited.
package control
