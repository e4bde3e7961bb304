package lvssync

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The master thread's timing (include/net/ip_vs.h): a queued full message
// goes out within IPVS_SYNC_SEND_DELAY (HZ/50); the message being filled
// is sent once its first record is IPVS_SYNC_FLUSH_TIME (2 s) old, which
// the thread checks every IPVS_SYNC_CHECK_PERIOD (1 s).
const (
	DefaultSendDelay  = 20 * time.Millisecond
	DefaultFlushAfter = 2 * time.Second
	DefaultQueueLen   = 1024
)

// SenderOptions tune a Sender; zero fields take the defaults.
type SenderOptions struct {
	// Producers is the number of producer queues (one per data-path
	// worker); at least 1.
	Producers int
	// QueueLen is each queue's capacity in records (rounded up to a power
	// of two).
	QueueLen int
	// V0 sends version 0 messages (sync_version=0) instead of version 1;
	// SetVersion changes the version while running.
	V0 bool
	// SendDelay is how often the queues are drained.
	SendDelay time.Duration
	// FlushAfter is how long a partial message may wait for more records.
	FlushAfter time.Duration
}

// SenderStats are a Sender's counters.
type SenderStats struct {
	Messages   uint64 // messages sent
	Records    uint64 // records sent
	Bytes      uint64 // UDP payload bytes sent
	SendErrors uint64 // messages the socket refused
	Dropped    uint64 // records dropped by full producer queues
	Invalid    uint64 // records that cannot be encoded in the current version (e.g. IPv6 in version 0)
}

// Sender is the master sync daemon: it drains the producer queues into
// messages and multicasts them.
type Sender struct {
	cfg       Config
	conn      net.Conn
	producers []*Producer
	opts      SenderOptions
	version   atomic.Uint32

	msg   Message
	first time.Time // when the message's first record was added

	messages, records, bytes, sendErrors, invalid atomic.Uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewSender opens the master's socket as make_send_sock does (multicast
// interface cfg.McastIfn, TTL, loop off, no PMTU discovery, bound to the
// interface's first IPv4 address, connected to group:port) and starts the
// sending goroutine. cfg is completed with WithDefaults from the
// interface's MTU; Config returns the result.
func NewSender(cfg Config, opts SenderOptions) (*Sender, error) {
	if cfg.State != Master {
		return nil, fmt.Errorf("%w: a sender is a master", ErrConfig)
	}
	ifi, err := net.InterfaceByName(cfg.McastIfn)
	if err != nil {
		return nil, fmt.Errorf("lvssync: unknown mcast interface: %s", cfg.McastIfn)
	}
	if cfg, err = cfg.WithDefaults(ifi.MTU); err != nil {
		return nil, err
	}
	if opts.Producers < 1 {
		opts.Producers = 1
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = DefaultQueueLen
	}
	if opts.SendDelay <= 0 {
		opts.SendDelay = DefaultSendDelay
	}
	if opts.FlushAfter <= 0 {
		opts.FlushAfter = DefaultFlushAfter
	}
	conn, err := openSendSocket(&cfg, ifi)
	if err != nil {
		return nil, err
	}
	s := &Sender{cfg: cfg, conn: conn, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	version := uint8(1)
	if opts.V0 {
		version = 0
	}
	s.version.Store(uint32(version))
	for range opts.Producers {
		s.producers = append(s.producers, newProducer(opts.QueueLen))
	}
	s.msg.Reset(version, cfg.SyncID)
	go s.run()
	return s, nil
}

// Config is the running configuration (defaults filled).
func (s *Sender) Config() Config { return s.cfg }

// Producer returns queue i (0 <= i < Producers) for worker i.
func (s *Sender) Producer(i int) *Producer { return s.producers[i] }

// SetVersion switches the message version (sync_version) for the next
// message.
func (s *Sender) SetVersion(v uint8) { s.version.Store(uint32(v & 1)) }

// Stats reads the counters.
func (s *Sender) Stats() SenderStats {
	st := SenderStats{
		Messages:   s.messages.Load(),
		Records:    s.records.Load(),
		Bytes:      s.bytes.Load(),
		SendErrors: s.sendErrors.Load(),
		Invalid:    s.invalid.Load(),
	}
	for _, p := range s.producers {
		st.Dropped += p.Dropped()
	}
	return st
}

// Close stops the sender (the queued records and the partial message are
// discarded, as the kernel's master thread does) and closes the socket.
func (s *Sender) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.conn.Close()
}

func (s *Sender) run() {
	defer close(s.done)
	t := time.NewTicker(s.opts.SendDelay)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.poll(now)
		}
	}
}

// poll drains every queue into messages, sending each full one, and sends
// the partial message when it is old enough.
func (s *Sender) poll(now time.Time) {
	v := uint8(s.version.Load())
	if v != s.msg.version {
		s.flush() // the kernel sends a buffer of the other version at once
		s.msg.Reset(v, s.cfg.SyncID)
	}
	for _, p := range s.producers {
		p.drain(func(c *Conn) bool {
			s.add(c, now)
			return true
		})
	}
	if s.msg.Conns() > 0 && now.Sub(s.first) >= s.opts.FlushAfter {
		s.flush()
	}
}

func (s *Sender) add(c *Conn, now time.Time) {
	c.Flags = MasterFlags(c.Flags)
	if s.msg.version == 0 {
		c.Flags &= 0xffff
	}
	cost, err := s.msg.Cost(c)
	if err != nil {
		s.invalid.Add(1)
		return
	}
	// A record always fits an empty message (the kernel sizes the buffer
	// for it).
	if s.msg.Conns() > 0 && (s.msg.Len()+cost > s.cfg.SyncMaxlen || s.msg.Full()) {
		s.flush()
	}
	if err := s.msg.Add(c); err != nil {
		s.invalid.Add(1)
		return
	}
	if s.msg.Conns() == 1 {
		s.first = now
	}
}

func (s *Sender) flush() {
	if s.msg.Conns() == 0 {
		return
	}
	b := s.msg.Bytes()
	if _, err := s.conn.Write(b); err != nil {
		s.sendErrors.Add(1)
	} else {
		s.messages.Add(1)
		s.records.Add(uint64(s.msg.Conns()))
		s.bytes.Add(uint64(len(b)))
	}
	s.msg.Reset(s.msg.version, s.cfg.SyncID)
}

var errNoIPv4 = errors.New("lvssync: IPv6 multicast groups are not supported yet")
