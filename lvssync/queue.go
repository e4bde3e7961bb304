package lvssync

import "sync/atomic"

// Producer is one data-path worker's queue of records for the Sender: a
// bounded single-producer single-consumer ring. Enqueue never blocks and
// never allocates; when the ring is full the record is dropped and
// counted. Only one goroutine may call Enqueue.
type Producer struct {
	_       [64]byte
	tail    atomic.Uint64 // next slot to write; written by the producer
	dropped atomic.Uint64
	_       [48]byte
	head    atomic.Uint64 // next slot to read; written by the consumer
	_       [56]byte
	buf     []Conn
	mask    uint64
}

func newProducer(size int) *Producer {
	n := 1
	for n < size {
		n <<= 1
	}
	return &Producer{buf: make([]Conn, n), mask: uint64(n - 1)}
}

// Enqueue queues a copy of c (whose PEData/PEName, if any, must stay
// unchanged until sent) and reports whether there was room.
func (p *Producer) Enqueue(c *Conn) bool {
	t := p.tail.Load()
	if t-p.head.Load() > p.mask {
		p.dropped.Add(1)
		return false
	}
	p.buf[t&p.mask] = *c
	p.tail.Store(t + 1)
	return true
}

// Dropped is how many records Enqueue dropped because the ring was full.
func (p *Producer) Dropped() uint64 { return p.dropped.Load() }

// Len is the number of queued records.
func (p *Producer) Len() int { return int(p.tail.Load() - p.head.Load()) }

// drain calls fn for every queued record, oldest first, until fn returns
// false; the record fn refused stays queued.
func (p *Producer) drain(fn func(c *Conn) bool) {
	h, t := p.head.Load(), p.tail.Load()
	for h != t {
		if !fn(&p.buf[h&p.mask]) {
			break
		}
		p.buf[h&p.mask] = Conn{} // drop references
		h++
	}
	p.head.Store(h)
}

// NewProducer makes a stand-alone queue of size records (rounded up to a
// power of two), for tests and for callers that drain it themselves.
func NewProducer(size int) *Producer { return newProducer(size) }

// Drain calls fn for every queued record, oldest first, until fn returns
// false (that record stays queued). Only one goroutine may drain a queue,
// and a Sender's queues are drained by the Sender.
func (p *Producer) Drain(fn func(c *Conn) bool) { p.drain(fn) }
