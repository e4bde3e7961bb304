package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// tunDevice is a layer-3 TUN device opened with IFF_TUN|IFF_NO_PI: every
// write is one raw IP packet that the kernel receives as if it had arrived on
// the device.
type tunDevice struct {
	fd   int
	name string
}

// openTUN creates (or attaches to) the TUN device name, disables IPv6 and
// reverse-path filtering on it and brings it up. The device is not
// persistent: it disappears when the descriptor is closed.
func openTUN(name string) (*tunDevice, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	t := &tunDevice{fd: fd, name: ifr.Name()}

	// Decapsulated packets come from client addresses that are not routed
	// via this device: strict or loose reverse-path filtering would drop
	// them. The effective value is max(all, dev), so conf/all must be 0 too
	// (the lab sets it); only this device is changed here.
	if err := writeSysctl("net/ipv4/conf/"+t.name+"/rp_filter", "0"); err != nil {
		t.Close()
		return nil, err
	}
	// No router solicitations or MLD reports from the device.
	_ = writeSysctl("net/ipv6/conf/"+t.name+"/disable_ipv6", "1")
	if err := setLinkUp(t.name); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Write injects one IPv4 packet.
func (t *tunDevice) Write(p []byte) (int, error) {
	n, err := unix.Write(t.fd, p)
	if err != nil {
		return n, fmt.Errorf("writing to %s: %w", t.name, err)
	}
	return n, nil
}

// Close removes the device.
func (t *tunDevice) Close() error { return unix.Close(t.fd) }

// setLinkUp sets IFF_UP on the named interface with SIOCSIFFLAGS.
func setLinkUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for SIOCSIFFLAGS: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS %s up: %w", name, err)
	}
	return nil
}

// writeSysctl writes value to /proc/sys/<key> (key uses slashes).
func writeSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", key)
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// readSysctl reads /proc/sys/<key> without the trailing newline.
func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return strings.TrimSpace(string(b)), err
}
