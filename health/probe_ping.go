package health

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// PingSocket picks the ICMP socket PING_CHECK uses.
type PingSocket int

const (
	// PingAuto tries an unprivileged ICMP datagram socket (allowed when the process's group is
	// in net.ipv4.ping_group_range; keepalived widens that sysctl, gvs does not touch it) and
	// falls back to a raw ICMP socket (needs CAP_NET_RAW).
	PingAuto PingSocket = iota
	PingDatagram
	PingRaw
)

// PingProbe is PING_CHECK: one ICMP (or ICMPv6) echo request; success when the matching echo
// reply arrives within connect_timeout.
type PingProbe struct {
	Conn   ConnOpts // Dst's port is ignored
	Socket PingSocket
	seq    atomic.Uint32
}

// Equal reports whether q is a PING_CHECK with the same configuration (Engine.Update keeps
// the checker then).
func (p *PingProbe) Equal(q Probe) bool {
	o, ok := q.(*PingProbe)
	return ok && o.Conn == p.Conn && o.Socket == p.Socket
}

// Kind is PING_CHECK.
func (*PingProbe) Kind() Kind { return KindPing }

// Steps is 1.
func (*PingProbe) Steps() int { return 1 }

func (p *PingProbe) listen() (*icmp.PacketConn, bool, error) {
	v6 := p.Conn.Dst.Addr().Is6() && !p.Conn.Dst.Addr().Is4In6()
	bind := "0.0.0.0"
	if v6 {
		bind = "::"
	}
	if p.Conn.BindTo.IsValid() {
		bind = p.Conn.BindTo.String()
	}
	dgram, raw := "udp4", "ip4:icmp"
	if v6 {
		dgram, raw = "udp6", "ip6:ipv6-icmp"
	}
	if p.Socket != PingRaw {
		c, err := icmp.ListenPacket(dgram, bind)
		if err == nil || p.Socket == PingDatagram {
			return c, true, err
		}
	}
	c, err := icmp.ListenPacket(raw, bind)
	return c, false, err
}

// Check sends one echo request and waits for its reply.
func (p *PingProbe) Check(ctx context.Context, _ int) Result {
	c, dgram, err := p.listen()
	if err != nil {
		return Result{Err: &ProbeError{Msg: "ICMP connect fail to create socket", Err: err}}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	dst := p.Conn.Dst.Addr().Unmap()
	v6 := dst.Is6()
	id := int(rand.Uint32() & 0xffff)
	seq := int(p.seq.Add(1) & 0xffff)
	var typ, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := 1
	if v6 {
		typ, reply, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58
	}
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("gvs health check")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return Result{Err: err}
	}
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if dgram {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	c.SetDeadline(time.Now().Add(p.Conn.timeout()))
	if _, err := c.WriteTo(b, to); err != nil {
		return Result{Err: &ProbeError{Msg: "send ICMP packet fail", Err: err}}
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return Result{Err: &ProbeError{Msg: "ICMP timeout", Err: os.ErrDeadlineExceeded}}
			}
			return Result{Err: &ProbeError{Msg: "recv ICMP packet error", Err: err}}
		}
		if !sameIP(from, dst.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		// A datagram socket's kernel rewrites the ID to the socket's and filters replies.
		if !ok || e.Seq != seq || (!dgram && e.ID != id) {
			continue
		}
		return Result{}
	}
}

func sameIP(a net.Addr, ip net.IP) bool {
	switch x := a.(type) {
	case *net.IPAddr:
		return x.IP.Equal(ip)
	case *net.UDPAddr:
		return x.IP.Equal(ip)
	}
	return false
}
