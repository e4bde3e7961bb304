package daemon

import (
	"runtime/metrics"

	"go.uber.org/zap"

	"gvs/forwarder"
)

// Stats are the daemon's frame counters summed over its workers.
type Stats struct {
	// Workers is the number of workers summed.
	Workers int
	// RX, TX, Oversize, TXFull, TXError, VLAN, Sleeps: see WorkerCounters.
	RX, TX, Oversize, TXFull, TXError, VLAN, Sleeps uint64
	// RingDrops counts frames the kernel dropped because an RX ring was
	// full (PACKET_STATISTICS), all rings; SYNRingDrops those of the SYN
	// rings (connection openings: see worker.poll), UDPRingDrops those of
	// the UDP rings, both included in RingDrops.
	// TXAgain and TXNoBufs count TX kicks the kernel refused for the
	// moment (the frames stay queued).
	RingDrops, SYNRingDrops, UDPRingDrops, TXAgain, TXNoBufs uint64
	// SYNBudget counts connection openings dropped by the per-source
	// budget (Config.SYNRate).
	SYNBudget uint64
	// With --io afxdp, the AF_XDP sockets' XDP_STATISTICS summed: frames
	// the kernel dropped for the sockets (XSKRXDropped, all reasons),
	// those dropped because an RX ring was full (XSKRXRingFull) and
	// receives that found a fill ring empty (XSKFillEmpty). A frame the
	// XDP program redirects to a socket that cannot take it is dropped
	// in the driver, and also counted as the interface's rx_dropped.
	XSKRXDropped, XSKRXRingFull, XSKFillEmpty uint64
	// TXKicks counts sendto(2) calls on the TX rings: frames per kick is
	// the transmit batching.
	TXKicks uint64
	// GoAllocs is the number of heap objects the whole process has
	// allocated since it started, GoGCCycles the garbage collections it
	// ran (runtime/metrics). The data path allocates nothing per packet, so
	// over a load both grow only with the control plane (this logger,
	// netlink updates, the control socket), not with the packet count.
	// (runtime/metrics counts allocations when a P's cached span is
	// refilled, without stopping the world: a few small ones may not show
	// yet, one per packet would.)
	GoAllocs, GoGCCycles uint64
	// Actions counts the pipeline's verdicts by name ("transmit", "drop",
	// ...), Reasons its drop and reply reasons by counter name
	// ("no_route", "bad_ip_checksum", ...); zero counters are left out.
	Actions map[string]uint64
	Reasons map[string]uint64
}

// Stats sums the per-worker counters. It may be called at any time from any
// goroutine; it allocates (two small maps) and is not for the data path.
func (d *Daemon) Stats() Stats {
	s := sumStats(d.workers)
	d.ringMu.Lock()
	defer d.ringMu.Unlock()
	s.RingDrops, s.TXAgain, s.TXNoBufs, s.TXKicks = d.retired.drops, d.retired.again, d.retired.nobufs, d.retired.kicks
	s.SYNRingDrops, s.UDPRingDrops = d.retired.synDrops, d.retired.udpDrops
	for _, r := range d.rxs {
		if rs, err := r.Stats(); err == nil {
			s.RingDrops += rs.Drops
		}
	}
	for _, r := range d.synRxs {
		if rs, err := r.Stats(); err == nil {
			s.SYNRingDrops += rs.Drops
		}
	}
	for _, r := range d.udpRxs {
		if rs, err := r.Stats(); err == nil {
			s.UDPRingDrops += rs.Drops
		}
	}
	s.RingDrops += s.SYNRingDrops + s.UDPRingDrops
	for _, w := range d.workers {
		if w.xsk == nil {
			continue
		}
		for _, x := range w.xsk.rx {
			if st, err := x.Stats(); err == nil {
				s.XSKRXDropped += st.Rx_dropped
				s.XSKRXRingFull += st.Rx_ring_full
				s.XSKFillEmpty += st.Rx_fill_ring_empty_descs
			}
		}
	}
	for _, t := range d.txs {
		ts := t.Stats()
		s.TXAgain += ts.Again
		s.TXNoBufs += ts.NoBufs
		s.TXKicks += ts.Kicks
	}
	s.GoAllocs, s.GoGCCycles = goMetrics()
	return s
}

// goMetrics reads the runtime's allocation and GC cycle counts.
func goMetrics() (allocs, cycles uint64) {
	m := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(m)
	if m[0].Value.Kind() == metrics.KindUint64 {
		allocs = m[0].Value.Uint64()
	}
	if m[1].Value.Kind() == metrics.KindUint64 {
		cycles = m[1].Value.Uint64()
	}
	return allocs, cycles
}

func sumStats(ws []*worker) Stats {
	s := Stats{Workers: len(ws)}
	fws := make([]*forwarder.Worker, 0, len(ws))
	for _, w := range ws {
		s.RX += w.c.RX.Load()
		s.TX += w.c.TX.Load()
		s.Oversize += w.c.Oversize.Load()
		s.TXFull += w.c.TXFull.Load()
		s.TXError += w.c.TXError.Load()
		s.VLAN += w.c.VLAN.Load()
		s.Sleeps += w.c.Sleeps.Load()
		s.SYNBudget += w.c.SYNBudget.Load()
		fws = append(fws, w.fw)
	}
	s.Actions, s.Reasons = forwarder.Totals(fws...)
	return s
}

// Fields renders the statistics as log fields.
func (s Stats) Fields() []zap.Field {
	return []zap.Field{
		zap.Uint64("rx", s.RX), zap.Uint64("tx", s.TX), zap.Uint64("oversize", s.Oversize),
		zap.Uint64("tx_full", s.TXFull), zap.Uint64("tx_error", s.TXError), zap.Uint64("vlan", s.VLAN),
		zap.Uint64("ring_drops", s.RingDrops), zap.Uint64("syn_ring_drops", s.SYNRingDrops), zap.Uint64("udp_ring_drops", s.UDPRingDrops), zap.Uint64("syn_budget", s.SYNBudget),
		zap.Uint64("xsk_rx_dropped", s.XSKRXDropped), zap.Uint64("xsk_rx_ring_full", s.XSKRXRingFull), zap.Uint64("xsk_fill_empty", s.XSKFillEmpty),
		zap.Uint64("tx_again", s.TXAgain), zap.Uint64("tx_nobufs", s.TXNoBufs),
		zap.Uint64("sleeps", s.Sleeps), zap.Uint64("tx_kicks", s.TXKicks),
		zap.Uint64("go_allocs", s.GoAllocs), zap.Uint64("go_gc_cycles", s.GoGCCycles),
		zap.Any("actions", s.Actions), zap.Any("reasons", s.Reasons),
	}
}
