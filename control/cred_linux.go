package control

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCred reads the connected peer's credentials (SO_PEERCRED): the
// kernel's record of the process that connected, not anything it sent.
func peerCred(c *net.UnixConn) (Cred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	var uc *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	if serr != nil {
		return Cred{}, fmt.Errorf("control: SO_PEERCRED: %w", serr)
	}
	return Cred{UID: uc.Uid, GID: uc.Gid, PID: uc.Pid}, nil
}
