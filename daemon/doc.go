// Package daemon is gvsd, the live director: it runs the forwarder pipeline
// under AF_PACKET rings on the director's two interfaces (one when the
// director is one-armed) and keeps the host kernel out of the way.
//
// A Daemon owns
//
//   - the service table (ipvs.Table, loaded from an ipvsadm-save rules file
//     and changed by the control socket or a reload) and the connection table
//     (conntrack.Table) on a monotonic nanosecond clock;
//   - a live forwarder.Env (Env): the two links read from netlink and, per
//     destination, the next hop and its MAC from the kernel's routing and
//     neighbour tables (kernel.Resolver);
//   - N data-path workers (worker.go), each a goroutine locked to an OS
//     thread with its own RX rings (one per interface, joined to a
//     PACKET_FANOUT hash group so one flow stays on one worker) and TX rings
//     (one per egress interface, PACKET_QDISC_BYPASS, kicked once per batch);
//   - kernel coexistence (coexist.go): nftables netdev-ingress drops for the
//     traffic gvs forwards, an ARP responder for VIPs the host does not hold,
//     gratuitous ARP at start, GRO/LRO off on both interfaces, and classic
//     BPF socket filters so that only gvs's traffic is copied into the rings.
//
// Whenever the service table changes, Sync recomputes everything derived
// from it (resolver wants, ring filters, ingress rules, ARP addresses,
// timeouts) in that order: the rings start seeing new traffic before the
// kernel stops seeing it.
package daemon
