// Reassembly of IPv4 fragments, as the kernel's ip_defrag does before
// IPVS sees a packet (net/ipv4/ip_fragment.c, net/ipv4/inet_fragment.c):
// the fragments of a TCP or UDP datagram are collected per worker, and the
// whole datagram then takes the normal walk as one packet (one connection
// lookup, one schedule, one count). On the way out it is fragmented again
// (xmit.go), as ip_finish_output does for every reassembled packet.
//
// The fragments of one datagram reach the same worker: the fanout hash of
// a fragment (the kernel's flow dissector stops at the IPv4 header of any
// fragment) covers its addresses and protocol only, never ports. Under
// AF_XDP a worker serves whole RX queues and the XDP program redirects
// every fragment (first included) to its queue's socket: the fragments of
// a datagram meet when the NIC's receive hash puts them on one queue, the
// same condition as for the fanout hash, which is the NIC's hash when the
// driver supplies one.
//
// Memory is bounded and allocated when the worker is made: a fixed number
// of slots (Config.DefragSlots), each one buffer for a datagram of up to
// 65535 bytes and at most defragMaxFrags fragments. When every slot is
// taken, a fragment of a new datagram evicts the datagram started first
// (counted FragEvicted); the kernel instead refuses new datagrams while its
// fragment memory is above ipfrag_high_thresh, which lets a flood of first
// fragments shut out every other datagram for ipfrag_time.

package forwarder

import (
	"encoding/binary"
	"time"

	"gvs/rewrite"
)

const (
	// DefaultDefragSlots is the number of datagrams a worker reassembles
	// at once when Config.DefragSlots is 0.
	DefaultDefragSlots = 8
	// defragMaxFrags bounds the fragments of one datagram: one more
	// discards the datagram (FragBad).
	defragMaxFrags = 64
	// defragTimeout is the kernel's net.ipv4.ipfrag_time (30 s): a
	// datagram not complete that long after its first fragment arrived
	// is discarded (ip_expire; the timer is never re-armed).
	defragTimeout = 30 * int64(time.Second)
	// defragBase is where a datagram's payload starts in its slot's
	// buffer: after the pipeline's headroom and room for the first
	// fragment's link and IP headers, which are put right before it.
	defragBase = Headroom + rewrite.EthernetLen + rewrite.VLANLen + rewrite.IPv4MaxLen
	// defragBufLen is the size of a slot's buffer.
	defragBufLen = defragBase + 0xffff
)

// fragRun is a run of fragments that arrived in order one after the
// other: payload bytes [lo, hi) of the datagram (inet_frag's fragment
// runs, which tell duplicates from overlaps).
type fragRun struct{ lo, hi int32 }

// defragSlot is one datagram being reassembled (ipq).
type defragSlot struct {
	used     bool
	first    bool // the fragment at offset 0 is in (INET_FRAG_FIRST_IN)
	last     bool // the fragment without MF is in (INET_FRAG_LAST_IN)
	proto    uint8
	id       uint16
	src, dst [4]byte
	link     int
	expires  int64
	size     int // payload length: final when last, else the highest end seen (q.len)
	meat     int // payload bytes received
	maxSize  int // largest fragment's IP length (q.max_size)
	maxDF    int // largest DF fragment's IP length (max_df_size)
	nfrags   int
	l3, ihl  int // the first fragment's link and IP header lengths, before defragBase
	firstLen int // the first fragment's IP total length
	nruns    int
	runs     [defragMaxFrags + 1]fragRun // never more than the fragments, plus the one refused
	buf      []byte                      // defragBufLen bytes
}

// defragPool is a worker's reassembly slots.
type defragPool struct {
	slots []defragSlot
	inUse int
}

func newDefragPool(n int) *defragPool {
	if n <= 0 {
		n = DefaultDefragSlots
	}
	d := &defragPool{slots: make([]defragSlot, n)}
	mem := make([]byte, n*defragBufLen)
	for i := range d.slots {
		d.slots[i].buf = mem[i*defragBufLen : (i+1)*defragBufLen : (i+1)*defragBufLen]
	}
	return d
}

// defragWanted reports whether a fragment (decoded into p) is reassembled:
// TCP and UDP, to a VIP or passing through the director (a NAT real
// server's reply; IPVS's ip_vs_out gathers every forwarded TCP and UDP
// fragment), not to one of the director's own addresses.
func (w *Worker) defragWanted(p *rewrite.Parsed, isVIP bool) bool {
	if p.Proto != rewrite.ProtoTCP && p.Proto != rewrite.ProtoUDP {
		return false
	}
	return isVIP || !w.isLocal(p.Dst)
}

// defragment takes the fragment pk (decoded into w.parsed) into its
// datagram. When that completes the datagram, pk becomes the reassembled
// datagram, decoded into w.parsed, and defragment returns nil; otherwise
// it returns the fragment's Result (taken: Drop with reason Fragment; or
// dropped for another reason).
func (w *Worker) defragment(pk *packet) *Result {
	p := &w.parsed
	d := w.defrag
	ihl := p.IHL
	off := int(p.FragOff) * 8
	end := off + (p.End - p.L4)
	if end+ihl > 0xffff {
		return w.drop(FragBad) // ip_frag_queue: beyond 64 KiB
	}
	id := binary.BigEndian.Uint16(pk.frame()[p.L3+4:])
	s := d.find(p, id)
	if s == nil {
		s = d.take(w)
		*s = defragSlot{used: true, proto: p.Proto, id: id, src: p.Src, dst: p.Dst,
			link: pk.link, expires: pk.now + defragTimeout, buf: s.buf}
		d.inUse++
	}
	// ip_frag_queue's checks, in its order.
	if !p.MF {
		// The last fragment: the datagram's end, which must not cut
		// what arrived, nor differ from an earlier last fragment's.
		if end < s.size || s.last && end != s.size {
			return w.defragDiscard(s, FragBad)
		}
		s.last, s.size = true, end
	} else {
		if end&7 != 0 {
			end &^= 7 // a fragment but the last carries a multiple of 8
		}
		if end > s.size {
			if s.last { // bytes beyond the end: corrupt
				return w.defragDiscard(s, FragBad)
			}
			s.size = end
		}
	}
	if end == off {
		return w.defragDiscard(s, FragBad)
	}
	switch s.insert(int32(off), int32(end)) {
	case fragDup:
		return w.drop(Fragment) // ignored, the datagram kept
	case fragOverlap:
		// RFC 5722 as the kernel applies it to IPv4 too: an overlap
		// discards the whole datagram.
		return w.defragDiscard(s, FragBad)
	}
	if s.nfrags++; s.nfrags > defragMaxFrags {
		return w.defragDiscard(s, FragBad)
	}
	frame := pk.frame()
	copy(s.buf[defragBase+off:defragBase+end], frame[p.L4:])
	s.meat += end - off
	size := p.End - p.L3
	s.maxSize = max(s.maxSize, size)
	if p.DF {
		s.maxDF = max(s.maxDF, size)
	}
	if off == 0 {
		s.first, s.l3, s.ihl, s.firstLen = true, p.L3, ihl, size
		copy(s.buf[defragBase-p.L4:defragBase], frame[:p.L4])
	}
	if !s.first || !s.last || s.meat != s.size {
		return w.drop(Fragment)
	}
	return w.reassemble(pk, s)
}

// reassemble makes pk the complete datagram of slot s, as ip_frag_reasm:
// the first fragment's headers, the total length, no fragment offset or
// MF, DF when the largest fragment had it. The slot is free again (its
// buffer stays valid until the next frame).
func (w *Worker) reassemble(pk *packet, s *defragSlot) *Result {
	w.defrag.free(s)
	if s.ihl+s.size > 0xffff {
		return w.drop(FragBad) // ip_frag_reasm: oversized
	}
	start := defragBase - s.l3 - s.ihl
	ip := rewrite.IPv4(s.buf[defragBase-s.ihl : defragBase])
	binary.BigEndian.PutUint16(ip[2:], uint16(s.ihl+s.size))
	var fo uint16
	if s.maxDF == s.maxSize {
		fo = 0x4000 // DF
	}
	binary.BigEndian.PutUint16(ip[6:], fo)
	ip.FixChecksum()
	pk.buf, pk.off, pk.n, pk.partial, pk.fragMax = s.buf, start, s.l3+s.ihl+s.size, false, s.maxSize
	if w.parsed.Decode(pk.frame()) != rewrite.IP {
		return w.drop(Reason(w.parsed.Reason))
	}
	return nil
}

// Outcomes of fragRun insertion.
const (
	fragNew = iota
	fragDup
	fragOverlap
)

// insert records payload bytes [lo, hi) as inet_frag_queue_insert does:
// appended to the last run when it follows it, a run of its own in a gap,
// a duplicate when within one run, an overlap otherwise.
func (s *defragSlot) insert(lo, hi int32) int {
	n := s.nruns
	if n > 0 {
		last := &s.runs[n-1]
		if last.hi < hi {
			if lo < last.hi {
				return fragOverlap
			}
			if lo == last.hi {
				last.hi = hi
				return fragNew
			}
			s.add(n, lo, hi)
			return fragNew
		}
	}
	i := 0
	for ; i < n; i++ {
		r := s.runs[i]
		if hi <= r.lo {
			break
		}
		if lo >= r.hi {
			continue
		}
		if lo >= r.lo && hi <= r.hi {
			return fragDup
		}
		return fragOverlap
	}
	s.add(i, lo, hi)
	return fragNew
}

// add inserts a run at index i (there is room: runs never outnumber the
// fragments, and the fragment beyond defragMaxFrags discards the
// datagram).
func (s *defragSlot) add(i int, lo, hi int32) {
	copy(s.runs[i+1:s.nruns+1], s.runs[i:s.nruns])
	s.runs[i] = fragRun{lo, hi}
	s.nruns++
}

// find is the slot of the fragment's datagram (ip4_frag key: addresses,
// ID, protocol), or nil.
func (d *defragPool) find(p *rewrite.Parsed, id uint16) *defragSlot {
	if d.inUse == 0 {
		return nil
	}
	for i := range d.slots {
		s := &d.slots[i]
		if s.used && s.id == id && s.src == p.Src && s.dst == p.Dst && s.proto == p.Proto {
			return s
		}
	}
	return nil
}

// take is a free slot, evicting the datagram that expires first when all
// are taken (counted FragEvicted).
func (d *defragPool) take(w *Worker) *defragSlot {
	var old *defragSlot
	for i := range d.slots {
		s := &d.slots[i]
		if !s.used {
			return s
		}
		if old == nil || s.expires < old.expires {
			old = s
		}
	}
	d.free(old)
	w.Counters.Reasons[FragEvicted].Add(1)
	return old
}

func (d *defragPool) free(s *defragSlot) {
	if s.used {
		s.used = false
		d.inUse--
	}
}

// defragDiscard drops a fragment and its whole datagram for reason r.
func (w *Worker) defragDiscard(s *defragSlot, r Reason) *Result {
	w.defrag.free(s)
	return w.drop(r)
}

// Expire ends the reassembly of the worker's datagrams whose time
// (ipfrag_time, 30 s after their first fragment) is up at now, one per
// call: it reports false when there is none. A datagram whose first
// fragment arrived is answered as the kernel's ip_expire does, with an
// ICMP time exceeded, fragment reassembly time exceeded, quoting that
// fragment (Reply, subject to the ICMP rate limits; from the VIP for a
// datagram to a VIP, else from the director's address on the link), the
// others are dropped; both count FragTimeout. The Result's frame is valid
// until the next call of Process or Expire.
func (w *Worker) Expire(now int64) (Result, bool) {
	d := w.defrag
	if d.inUse == 0 {
		return Result{}, false
	}
	for i := range d.slots {
		s := &d.slots[i]
		if !s.used || now < s.expires {
			continue
		}
		d.free(s)
		if !s.first {
			return *w.drop(FragTimeout), true
		}
		// The first fragment as it arrived: its headers (kept apart
		// until completion) and its payload.
		pk := &w.pkt
		pk.buf, pk.off, pk.n, pk.link, pk.partial, pk.now, pk.isNew, pk.related, pk.fragMax =
			s.buf, defragBase-s.l3-s.ihl, s.l3+s.firstLen, s.link, false, now, false, false, 0
		if w.parsed.Decode(pk.frame()) != rewrite.IP {
			return *w.drop(FragTimeout), true
		}
		src := w.linkAddr(s.link)
		if w.p.svcs.IsVIP(w.parsed.DstAddr()) {
			src = w.parsed.Dst
		}
		w.res = Result{}
		return *w.icmpError(pk, FragTimeout, &w.res, src, 0), true
	}
	return Result{}, false
}
