//go:build !linux

package lvssync

import (
	"errors"
	"net"
)

var errNotLinux = errors.New("lvssync: the sync daemon needs Linux")

func openSendSocket(*Config, *net.Interface) (net.Conn, error)    { return nil, errNotLinux }
func openReceiveSocket(*Config, *net.Interface) (net.Conn, error) { return nil, errNotLinux }
