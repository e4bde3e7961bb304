package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ConnOpts are a checker's connection options (keepalived's conn_opts_t): connect_ip and
// connect_port (Dst), bindto and bind_port, bind_if, fwmark (SO_MARK) and connect_timeout.
type ConnOpts struct {
	Dst      netip.AddrPort
	BindTo   netip.Addr
	BindPort uint16
	BindIf   string
	FWMark   uint32
	Timeout  time.Duration // keepalived default 5 s
}

func (o ConnOpts) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 5 * time.Second
	}
	return o.Timeout
}

// control sets SO_MARK and SO_BINDTODEVICE on a socket before bind/connect.
func (o ConnOpts) control(_, _ string, rc syscall.RawConn) error {
	if o.FWMark == 0 && o.BindIf == "" {
		return nil
	}
	var serr error
	err := rc.Control(func(fd uintptr) {
		if o.FWMark != 0 {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(o.FWMark)); e != nil {
				serr = os.NewSyscallError("setsockopt SO_MARK", e)
				return
			}
		}
		if o.BindIf != "" {
			if e := unix.BindToDevice(int(fd), o.BindIf); e != nil {
				serr = os.NewSyscallError("setsockopt SO_BINDTODEVICE", e)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func (o ConnOpts) local(network string) net.Addr {
	if !o.BindTo.IsValid() && o.BindPort == 0 {
		return nil
	}
	ap := netip.AddrPortFrom(o.BindTo, o.BindPort)
	if network == "udp" {
		return net.UDPAddrFromAddrPort(ap)
	}
	return net.TCPAddrFromAddrPort(ap)
}

// dial connects (TCP) or connects a datagram socket (UDP) with the options.
func (o ConnOpts) dial(ctx context.Context, network string) (net.Conn, error) {
	d := net.Dialer{Timeout: o.timeout(), LocalAddr: o.local(network), Control: o.control}
	return d.DialContext(ctx, network, o.Dst.String())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// TCPProbe is TCP_CHECK: success when the connection is established within connect_timeout.
type TCPProbe struct {
	Conn ConnOpts
}

// Kind is TCP_CHECK.
func (*TCPProbe) Kind() Kind { return KindTCP }

// Steps is 1.
func (*TCPProbe) Steps() int { return 1 }

// Check connects and closes.
func (p *TCPProbe) Check(ctx context.Context, _ int) Result {
	c, err := p.Conn.dial(ctx, "tcp")
	if err != nil {
		msg := "connection failed"
		if isTimeout(err) {
			msg = "connection timeout"
		}
		return Result{Err: &ProbeError{Msg: msg, Err: err}}
	}
	c.Close()
	return Result{}
}
