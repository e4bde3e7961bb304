//go:build linux

package lvssync

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// fileConn turns a socket into a net.Conn (runtime poller; Close unblocks
// a pending read).
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// udp4Socket opens the non-blocking UDP socket for cfg's IPv4 group.
func udp4Socket(cfg *Config) (int, error) {
	if !cfg.McastGroup.Is4() {
		return -1, errNoIPv4
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("lvssync: socket: %w", err)
	}
	return fd, nil
}

// closeFail closes fd and reports what failed setting it up.
func closeFail(fd int, what string, err error) (net.Conn, error) {
	unix.Close(fd)
	return nil, fmt.Errorf("lvssync: %s: %w", what, err)
}

// openSendSocket is make_send_sock for an IPv4 group.
func openSendSocket(cfg *Config, ifi *net.Interface) (net.Conn, error) {
	fd, err := udp4Socket(cfg)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (net.Conn, error) { return closeFail(fd, what, err) }
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)}); err != nil {
		return fail("setting the outbound mcast interface", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0); err != nil {
		return fail("IP_MULTICAST_LOOP", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, cfg.McastTTL); err != nil {
		return fail("IP_MULTICAST_TTL", err)
	}
	// Allow fragmentation if the MTU changes.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); err != nil {
		return fail("IP_MTU_DISCOVER", err)
	}
	// Bind to the interface's address (the kernel's inet_select_addr;
	// without one it binds to 0.0.0.0).
	var src [4]byte
	if addrs, err := ifi.Addrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if v4 := n.IP.To4(); v4 != nil {
					copy(src[:], v4)
					break
				}
			}
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src}); err != nil {
		return fail("binding the address of the mcast interface", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: cfg.McastGroup.As4(), Port: cfg.McastPort}); err != nil {
		return fail("connecting to the multicast addr", err)
	}
	return fileConn(fd, "lvssync-master")
}

// openReceiveSocket is make_receive_sock for an IPv4 group: reusable,
// bound to the interface and to group:port, member of the group on the
// interface.
func openReceiveSocket(cfg *Config, ifi *net.Interface) (net.Conn, error) {
	fd, err := udp4Socket(cfg)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (net.Conn, error) { return closeFail(fd, what, err) }
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name); err != nil {
		return fail("binding to "+ifi.Name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: cfg.McastGroup.As4(), Port: cfg.McastPort}); err != nil {
		return fail("binding to the multicast addr", err)
	}
	mreq := &unix.IPMreqn{Multiaddr: cfg.McastGroup.As4(), Ifindex: int32(ifi.Index)}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
		return fail("joining the multicast group", err)
	}
	return fileConn(fd, "lvssync-backup")
}
