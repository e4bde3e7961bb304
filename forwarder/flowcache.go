// The per-worker caches: the flow cache (steady packets of an established
// connection skip the table) and the route cache with its transmit plans.

package forwarder

import (
	"encoding/binary"
	"net/netip"
	"time"

	"gvs/conntrack"
	"gvs/ipvs"
	"gvs/rewrite"
)

// The route cache: direct-mapped by the destination's low address bits.
const routeCacheSize = 64

// routeEntry caches a successful Route answer, as a transmit plan (misses
// are not cached).
type routeEntry struct {
	addr netip.Addr
	tx   txPlan
}

// The flow cache. Most packets of an established connection cannot change
// its state: a TCP segment with ACK and none of SYN, FIN or RST on an
// ESTABLISHED connection (in either direction, whatever the other direction
// did meanwhile: see steadyPacket), and any UDP datagram. For those, a
// worker reuses the connection it last got from the table for up to
// flowSlack, skipping the table's hash, shard lock and copy (and, while the
// route generation stands, the next-hop lookup: see txPlan); the table still
// sees the flow at least once per flowSlack, which re-arms its timer and
// applies any state change the other direction made. The cost is bounded
// and documented: a connection's timer may run out up to flowSlack earlier
// than IPVS's, and a transition the skipped packet would have made in a
// pathological sequence is delayed by at most flowSlack.
//
// The cache is per worker and the same flow always reaches the same worker
// (fanout hashes the flow), so it needs no locking. The only path that
// removes a connection from the table while its packets still flow (SYN
// reuse) is the same worker's, and forgets the entry.
const (
	flowCacheSize = 1024 // entries per worker, direct-mapped
	flowSlack     = int64(time.Second)
)

// flowKey packs a flow's tuple into two words (cheap to build, hash and
// compare): addresses, then ports, protocol and direction.
type flowKey struct{ addrs, rest uint64 }

func makeFlowKey(src, dst [4]byte, sport, dport uint16, proto uint8, out bool) flowKey {
	return packFlowKey(binary.BigEndian.Uint32(src[:]), binary.BigEndian.Uint32(dst[:]), sport, dport, proto, out)
}

// parsedFlowKey is the flow key of a parsed packet, read through the
// pointer: passing its address arrays by value would bounce them through
// the stack.
func parsedFlowKey(p *rewrite.Parsed, out bool) flowKey {
	return packFlowKey(binary.BigEndian.Uint32(p.Src[:]), binary.BigEndian.Uint32(p.Dst[:]), p.SrcPort, p.DstPort, p.Proto, out)
}

func packFlowKey(src, dst uint32, sport, dport uint16, proto uint8, out bool) flowKey {
	k := flowKey{
		addrs: uint64(src)<<32 | uint64(dst),
		rest:  uint64(sport)<<48 | uint64(dport)<<32 | uint64(proto)<<8 | 1, // 1: never the zero key
	}
	if out {
		k.rest |= 2
	}
	return k
}

func (k flowKey) out() bool { return k.rest&2 != 0 }

type flowEntry struct {
	key  flowKey
	at   int64 // when the table last saw the flow
	conn conntrack.Conn
	tx   txPlan
}

// txPlan is how the packets of one cached flow leave: the route answer
// and the rewrite's inputs, worked out once per route generation instead
// of once per packet. It is valid while gen equals the Env's generation+1
// (0: never; without a Generationer no plan is valid).
type txPlan struct {
	gen  uint64
	macs rewrite.MACs
	link int
	mtu  int     // the hop's MTU
	src  [4]byte // the hop's source address (the IPIP outer source)
}

func (k *flowKey) index() uint32 {
	h := (k.addrs ^ k.rest>>32) * 0x9e3779b97f4a7c15
	return uint32(h>>54) & (flowCacheSize - 1)
}

// steadyPacket reports a packet that cannot change the state of a
// connection that was ESTABLISHED (or UDP) when the table last saw it. In
// IPVS's tables an ACK (without SYN, FIN, RST) leaves ESTABLISHED, and every
// state the other direction can lead ESTABLISHED into without this
// direction's help, unchanged — except OUTPUT ack on SYN_RECV (after a
// client FIN then SYN), whose move to ESTABLISHED is then delayed until the
// table next sees the flow.
func steadyPacket(proto ipvs.Protocol, flags uint8) bool {
	if proto == ipvs.ProtoUDP {
		return true
	}
	return flags&(rewrite.TCPSyn|rewrite.TCPFin|rewrite.TCPRst) == 0 && flags&rewrite.TCPAck != 0
}

// cached returns the cache entry of a flow, if fresh enough.
func (w *Worker) cached(k *flowKey, now int64) *flowEntry {
	e := &w.flows[k.index()]
	if e.key != *k || now < e.at || now-e.at >= flowSlack {
		return nil
	}
	return e
}

// remember caches a connection the table just returned for a steady
// packet, if its state lets later steady packets skip the table, and
// returns the entry's transmit plan for the packet's own transmission to
// fill; otherwise it forgets any cached copy and returns nil.
func (w *Worker) remember(k *flowKey, steady bool, c *conntrack.Conn, now int64) *txPlan {
	e := &w.flows[k.index()]
	ok := steady && c.Flags&conntrack.FlagOnePacket == 0 &&
		(c.State == conntrack.StateEstablished || c.State == conntrack.StateUDP)
	switch {
	case ok:
		if e.key != *k || !sameTarget(&e.conn, c) {
			e.tx.gen = 0
		}
		e.key, e.at, e.conn = *k, now, *c
		return &e.tx
	case e.key == *k:
		e.key = flowKey{}
	}
	if c.State != conntrack.StateEstablished && c.State != conntrack.StateUDP {
		// The connection left the steady state: this worker's copy of the
		// other direction is stale too. (Another worker's copy lags by at
		// most flowSlack, as described above.)
		var o flowKey
		if k.out() { // the client's direction: client -> VIP
			o = makeFlowKey(c.CAddr.As4(), c.VAddr.As4(), c.CPort, c.VPort, uint8(c.Proto), false)
		} else { // the NAT reply direction: real server -> client
			o = makeFlowKey(c.DAddr.As4(), c.CAddr.As4(), c.DPort, c.CPort, uint8(c.Proto), true)
		}
		w.forget(&o)
	}
	return nil
}

// sameTarget reports that two copies of a connection are transmitted the
// same way, so that a transmit plan made for one serves the other.
func sameTarget(a, b *conntrack.Conn) bool {
	return a.Dest == b.Dest && a.Method == b.Method && a.DAddr == b.DAddr && a.DPort == b.DPort &&
		a.CAddr == b.CAddr && a.VAddr == b.VAddr && a.VPort == b.VPort
}

func (w *Worker) forget(k *flowKey) {
	if e := &w.flows[k.index()]; e.key == *k {
		e.key = flowKey{}
	}
}

// plan returns the transmit plan for packets to dst: tx itself when it is
// still valid, else tx refilled from the worker's route cache or the Env;
// with tx nil, a plan valid until the worker's next call. ok is false when
// dst has no route.
func (w *Worker) plan(tx *txPlan, dst netip.Addr) (*txPlan, bool) {
	g := w.p.gen
	if g == nil { // answers may change at any time: ask every time
		if tx == nil {
			tx = &w.tx
		}
		return tx, w.fillPlan(tx, dst, 0)
	}
	gen := g.Generation() + 1 // +1: a zero plan is never valid
	if tx != nil && tx.gen == gen {
		return tx, true
	}
	a := dst.As4()
	e := &w.routes[a[3]&(routeCacheSize-1)]
	if e.tx.gen != gen || e.addr != dst {
		// A miss is asked again next time: asking may be what starts
		// resolution.
		if !w.fillPlan(&w.tx, dst, gen) {
			return nil, false
		}
		e.addr, e.tx = dst, w.tx
	}
	if tx == nil {
		return &e.tx, true
	}
	*tx = e.tx
	return tx, true
}

// fillPlan asks the Env for the next hop to dst and fills tx from it with
// generation gen.
func (w *Worker) fillPlan(tx *txPlan, dst netip.Addr, gen uint64) bool {
	hop, ok := w.p.env.Route(dst)
	if !ok {
		return false
	}
	*tx = txPlan{
		gen:  gen,
		macs: rewrite.MACs{Dst: hop.MAC, Src: w.p.env.Links()[hop.Link].MAC},
		link: hop.Link,
		mtu:  hop.MTU,
		src:  hop.Src.As4(),
	}
	return true
}
