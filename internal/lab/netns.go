package lab

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// NSPath is the file that names namespace ns (usable with setns(2) or
// `nsenter --net=`).
func NSPath(ns string) string { return filepath.Join(netnsDir, ns) }

// Do runs fn on a goroutine locked to an OS thread that has joined network
// namespace ns, and returns fn's error. Sockets that fn creates stay in ns
// and may be used from any goroutine afterwards. Goroutines that fn starts
// do NOT run in ns. If the thread cannot return to its original namespace it
// is discarded rather than reused.
func Do(ns string, fn func() error) error {
	fd, err := unix.Open(NSPath(ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	return doFD(fd, ns, fn)
}

// doFD is Do for an open namespace descriptor.
func doFD(fd int, name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering namespace %s: %w", name, err)
			return
		}
		var ferr error
		defer func() {
			// Also runs when fn panics, so a panicking test never leaves
			// a thread in the wrong namespace for other goroutines.
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Stay locked: the runtime ends the thread with the
				// goroutine.
				errc <- fmt.Errorf("returning from namespace %s: %w (fn: %v)", name, err, ferr)
				return
			}
			runtime.UnlockOSThread()
			errc <- ferr
		}()
		ferr = fn()
	}()
	return <-errc
}

// Dial connects to address from inside namespace ns. The connection may be
// used from anywhere.
func Dial(ctx context.Context, ns, network, address string) (net.Conn, error) {
	var c net.Conn
	err := Do(ns, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen opens a stream listener inside namespace ns.
func Listen(ctx context.Context, ns, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := Do(ns, func() (err error) {
		var lc net.ListenConfig
		ln, err = lc.Listen(ctx, network, address)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket (e.g. "udp4") inside namespace ns.
func ListenPacket(ctx context.Context, ns, network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := Do(ns, func() (err error) {
		var lc net.ListenConfig
		pc, err = lc.ListenPacket(ctx, network, address)
		return err
	})
	return pc, err
}

// sysctlPath maps a dotted sysctl key to its /proc/sys file. Interface
// names may not contain dots here.
func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// Sysctl sets one sysctl (dotted key, e.g. "net.ipv4.ip_forward") inside
// namespace ns.
func Sysctl(ns, key, value string) error {
	return Sysctls(ns, map[string]string{key: value})
}

// Sysctls sets several sysctls inside namespace ns, in key order. Errors
// wrap the underlying *os.PathError (os.ErrNotExist for a missing key).
func Sysctls(ns string, kv map[string]string) error {
	return Do(ns, func() error {
		for _, k := range slices.Sorted(maps.Keys(kv)) {
			if err := os.WriteFile(sysctlPath(k), []byte(kv[k]), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", k, kv[k], ns, err)
			}
		}
		return nil
	})
}

// ReadSysctl reads one sysctl inside namespace ns.
func ReadSysctl(ns, key string) (string, error) {
	var v string
	err := Do(ns, func() error {
		b, err := os.ReadFile(sysctlPath(key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}
