package lvssync

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// Handler receives what the backup learns. The coordinator's
// implementation creates or updates the connection in conntrack, as
// ip_vs_proc_conn does:
//
//   - a connection (not FlagTemplate) is looked up by (protocol, caddr,
//     cport, vaddr, vport); if it exists with another daddr/dport it is
//     expired and replaced, unless the record has FlagInactive (then the
//     record is an old one and is ignored); templates are looked up by the
//     full template key (daddr/dport and fwmark included);
//   - an existing entry takes UpdateFlags(cur, c.Flags) (INACTIVE and
//     the SEQ bits) and, when INACTIVE changed, moves between its
//     destination's ActiveConn and InActConn; a new one is created with
//     c.Flags (which carries FlagSync), bound to the local destination
//     daddr:dport of the service, if there is one (forwarding method from
//     that destination);
//   - state = c.State, in_pkts = sync_threshold, timeout = c.Timeout
//     seconds, or when 0 (version 0 messages) the protocol's timeout for
//     the state (3 minutes for templates).
//
// c's Flags are already the backup's (BackupFlags). c is reused after
// SyncConn returns.
type Handler interface {
	SyncConn(c *Conn)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(c *Conn)

// SyncConn calls f(c).
func (f HandlerFunc) SyncConn(c *Conn) { f(c) }

// Receiver is the backup sync daemon.
type Receiver struct {
	cfg      Config
	conn     net.Conn
	h        Handler
	dec      Decoder
	counters Counters
	buf      []byte
	fn       func(*Header, *Conn)

	done chan struct{}
	once sync.Once
	err  error
}

// NewReceiver opens the backup's socket on cfg.McastIfn (cfg completed
// with WithDefaults from the interface's MTU; the receive buffer is
// SyncMaxlen bytes, so longer messages are dropped as bad_size) and starts
// the receiving goroutine, which calls h for every IPv4 record of every
// accepted message. IPv6 records are counted (ReasonIPv6) and skipped.
func NewReceiver(cfg Config, h Handler) (*Receiver, error) {
	if cfg.State != Backup {
		return nil, fmt.Errorf("%w: a receiver is a backup", ErrConfig)
	}
	ifi, err := net.InterfaceByName(cfg.McastIfn)
	if err != nil {
		return nil, fmt.Errorf("lvssync: unknown mcast interface: %s", cfg.McastIfn)
	}
	if cfg, err = cfg.WithDefaults(ifi.MTU); err != nil {
		return nil, err
	}
	conn, err := openReceiveSocket(&cfg, ifi)
	if err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, conn: conn, h: h, buf: make([]byte, cfg.SyncMaxlen), done: make(chan struct{})}
	r.dec = Decoder{SyncID: cfg.SyncID, Counters: &r.counters}
	r.fn = r.deliver
	go r.run()
	return r, nil
}

// Config is the running configuration (defaults filled).
func (r *Receiver) Config() Config { return r.cfg }

// Counters are the receiver's message and record counters.
func (r *Receiver) Counters() *Counters { return &r.counters }

// Close stops the receiver and closes its socket.
func (r *Receiver) Close() error {
	var err error
	r.once.Do(func() { err = r.conn.Close() })
	<-r.done
	return err
}

func (r *Receiver) run() {
	defer close(r.done)
	for {
		n, err := r.conn.Read(r.buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.err = err
			}
			return
		}
		r.process(r.buf[:n])
	}
}

// process decodes one received datagram and hands its IPv4 records to the
// handler.
func (r *Receiver) process(msg []byte) {
	r.dec.Decode(msg, r.fn)
}

func (r *Receiver) deliver(h *Header, c *Conn) {
	if c.IPv6() {
		r.counters.add(ReasonIPv6)
		return
	}
	c.Flags = BackupFlags(h.Version, c.Flags)
	r.h.SyncConn(c)
}
