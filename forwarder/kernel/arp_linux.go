//go:build linux

package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
	"go.uber.org/zap"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ARPResponder answers ARP requests for a set of IPv4 addresses (VIPs that
// are not configured on the host, so the kernel does not answer for them)
// with the MAC of one interface, and sends gratuitous ARP for them.
//
// It uses an AF_PACKET socket bound to ETH_P_ARP on that interface in the
// network namespace of the goroutine that created it. The address set may be
// replaced at any time with SetAddrs; Run serves requests until its context
// ends or Close is called.
type ARPResponder struct {
	log  *zap.Logger
	ifi  *net.Interface
	mac  [6]byte
	conn *packet.Conn

	addrs atomic.Pointer[addrSet]

	requests, replies, gratuitous, conflicts, errs atomic.Uint64

	// lastConflictLog rate-limits the conflict warning (unix nanoseconds).
	lastConflictLog atomic.Int64

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// arpRequestFilter is a classic BPF program accepting only ARP requests
// (EtherType 0x0806 at offset 12, operation 1 at offset 20), so replies and
// other frames never wake the reader. Like the kernel's arp_rcv, it drops
// frames addressed to another host's MAC (PACKET_OTHERHOST: unicast a
// bridge flooded to us); broadcast requests pass.
var arpRequestFilter = func() []bpf.RawInstruction {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OTHERHOST, SkipTrue: 5},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0806, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 20, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: arpRequest, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic(err) // a constant program: cannot fail
	}
	return prog
}()

// NewARPResponder opens the responder on interface ifname, which must have
// an Ethernet (6-byte) address. It answers nothing until SetAddrs and Run.
func NewARPResponder(ifname string, log *zap.Logger) (*ARPResponder, error) {
	if log == nil {
		log = zap.NewNop()
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("arp responder: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("arp responder: interface %s has no Ethernet address", ifname)
	}
	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: arpRequestFilter})
	if err != nil {
		return nil, fmt.Errorf("arp responder on %s: %w", ifname, err)
	}
	// Our own transmissions (and the kernel's ARP requests) are of no interest.
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		})
	}
	r := &ARPResponder{log: log.With(zap.String("interface", ifname)), ifi: ifi, conn: conn}
	copy(r.mac[:], ifi.HardwareAddr)
	empty := addrSet{}
	r.addrs.Store(&empty)
	return r, nil
}

// SetAddrs replaces the set of addresses answered for. Addresses that are
// not unicast IPv4 are skipped and reported in the error; the others are
// installed anyway.
func (r *ARPResponder) SetAddrs(addrs []netip.Addr) error {
	s, bad := newAddrSet(addrs)
	r.addrs.Store(&s)
	if len(bad) > 0 {
		return fmt.Errorf("arp responder: skipped addresses %v: not unicast IPv4", bad)
	}
	return nil
}

// Addrs lists the addresses answered for, in address order.
func (r *ARPResponder) Addrs() []netip.Addr { return r.addrs.Load().sorted() }

// MAC is the hardware address the responder answers with.
func (r *ARPResponder) MAC() net.HardwareAddr {
	m := r.mac
	return m[:]
}

func (r *ARPResponder) owns(a [4]byte) bool {
	_, ok := (*r.addrs.Load())[a]
	return ok
}

// Gratuitous broadcasts a gratuitous ARP (request form, sender and target
// address addr, sender MAC ours) so that neighbours update entries they
// hold for addr. The address does not have to be in the answered set.
func (r *ARPResponder) Gratuitous(addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.Is4() {
		return fmt.Errorf("gratuitous arp: %v is not IPv4", addr)
	}
	frame, err := marshalARP(broadcastMAC, gratuitousARP(r.mac, addr.As4()))
	if err != nil {
		return fmt.Errorf("gratuitous arp: %w", err)
	}
	if _, err := r.conn.WriteTo(frame, &packet.Addr{HardwareAddr: broadcastMAC[:]}); err != nil {
		r.errs.Add(1)
		return fmt.Errorf("gratuitous arp for %v: %w", addr, err)
	}
	r.gratuitous.Add(1)
	return nil
}

// Run answers requests until ctx ends or Close is called; both return nil.
// Other read errors are returned. Run must not be called twice at once.
func (r *ARPResponder) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = r.conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 1514)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || r.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a deadline from an earlier, already cancelled Run
			}
			if errors.Is(err, unix.ENETDOWN) {
				// The interface went down (or away): the kernel reports it
				// once and clears it. After the link is up again the socket
				// receives as before; a removed interface's socket stays
				// silent until the owner replaces the responder.
				continue
			}
			return fmt.Errorf("arp responder: %w", err)
		}
		r.handle(buf[:n])
	}
}

// handle answers one received frame.
func (r *ARPResponder) handle(frame []byte) {
	req, ok := parseARP(frame)
	if !ok || req.Op != arpRequest {
		return
	}
	r.requests.Add(1)
	dst, reply, conflict, ok := arpAnswer(req, r.mac, r.owns)
	if conflict {
		r.conflicts.Add(1)
		now := time.Now().UnixNano()
		if last := r.lastConflictLog.Load(); now-last > int64(10*time.Second) && r.lastConflictLog.CompareAndSwap(last, now) {
			r.log.Warn("another host announces one of our VIPs",
				zap.Stringer("addr", netip.AddrFrom4(req.SenderIP)),
				zap.Stringer("mac", net.HardwareAddr(req.SenderMAC[:])))
		}
	}
	if !ok {
		return
	}
	out, err := marshalARP(dst, reply)
	if err == nil {
		_, err = r.conn.WriteTo(out, &packet.Addr{HardwareAddr: dst[:]})
	}
	if err != nil {
		r.errs.Add(1)
		return
	}
	r.replies.Add(1)
}

// Stats returns the counters.
func (r *ARPResponder) Stats() ARPStats {
	return ARPStats{
		Requests:   r.requests.Load(),
		Replies:    r.replies.Load(),
		Gratuitous: r.gratuitous.Load(),
		Conflicts:  r.conflicts.Load(),
		Errors:     r.errs.Load(),
	}
}

// Close closes the socket; a running Run returns nil. Close is idempotent.
func (r *ARPResponder) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.closeErr = r.conn.Close()
	})
	return r.closeErr
}
