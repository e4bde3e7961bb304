// Package scheduler implements the IPVS schedulers behind the ipvs.Scheduler
// interface: rr, wrr, lc, wlc (the default), sed, nq, fo, ovf, lblc, lblcr,
// dh, sh, mh and twos, with the semantics of the Linux kernel's
// net/netfilter/ipvs/ip_vs_<name>.c as described in docs/IPVS.md §2 and §4.
//
// # Common rules
//
// A destination is "usable" when its weight is > 0 and it is not flagged
// OVERLOAD (ipvs.Dest.Usable). Weight-0 (quiesced) and overloaded
// destinations never receive new connections from any scheduler. The
// destination list order is ipvs.Service.Dests(): the most recently added
// destination first, as IPVS inserts at the head of its list; it decides
// ties (the first destination in list order wins) and the first rr pick.
// Weighted comparisons a/wa < b/wb are done as a*wb < b*wa in 64 bits.
//
// # Instances and concurrency
//
// New returns one scheduler instance per service: stateful schedulers (rr's
// cursor, wrr's position, the lblc/lblcr caches, the dh/sh/mh tables) keep
// that state in the instance. Schedule is safe for concurrent use by any
// number of workers, never allocates and takes no lock shared by all
// workers:
//
//   - rr and wrr keep their cursor in an atomic word advanced with
//     compare-and-swap, so concurrent picks are serialised exactly as the
//     kernel's sched_lock would serialise them;
//   - wrr precomputes the kernel's interleaved sequence in Update (see wrr.go);
//   - lc, wlc, sed, nq, fo, ovf and twos are stateless scans of the
//     destination snapshot;
//   - dh, sh and mh build immutable tables in Update and publish them with
//     atomic.Pointer;
//   - lblc and lblcr use a fixed-size cache of 1024 buckets with one mutex
//     per bucket (see cache.go).
//
// Update must be called by the control plane after the service's
// destination list, a destination's weight, or thresholds change. The
// scheduler flags (sh-fallback/mh-fallback = ipvs.SvcSched1, sh-port/mh-port
// = ipvs.SvcSched2) are fixed when the scheduler is made by New: when a
// service's flags are edited, the control plane makes a new scheduler.
package scheduler
