//go:build !linux

package control

import (
	"errors"
	"net"
)

// peerCred is only implemented on Linux: without SO_PEERCRED no caller can
// be trusted, so every connection is refused.
func peerCred(*net.UnixConn) (Cred, error) {
	return Cred{}, errors.New("control: peer credentials are only available on linux")
}
