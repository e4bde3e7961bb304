//go:build linux

package kernel

import (
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// currentNS is the network namespace of the calling thread, which the
// netlink and nftables sockets opened later (from other threads) must use.
//
// Entering a namespace (setns) needs CAP_SYS_ADMIN. Without it no thread of
// this process can have left the namespace it started in, so the sockets
// are opened where they are (netns.None(): no setns), which lets gvsd run as
// an unprivileged user with only CAP_NET_ADMIN and CAP_NET_RAW.
func currentNS() (netns.NsHandle, error) {
	if !hasCapSysAdmin() {
		return netns.None(), nil
	}
	return netns.Get()
}

// hasCapSysAdmin reports whether CAP_SYS_ADMIN is in the effective set.
func hasCapSysAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return true // unknown: keep the setns path
	}
	return data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) != 0
}
