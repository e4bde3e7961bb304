package xdp

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The netdev generic netlink family (include/uapi/linux/netdev.h): a
// device's XDP features.
const (
	netdevCmdDevGet       = 1
	netdevAttrDevIfindex  = 1
	netdevAttrDevXDPFeats = 3
	// XDPActNDOXmit: the device takes frames other devices' XDP programs
	// redirect to it (NETDEV_XDP_ACT_NDO_XMIT).
	XDPActNDOXmit = 1 << 2
)

// Features returns the XDP features the kernel reports for interface
// ifindex (NETDEV_A_DEV_XDP_FEATURES, `ynl --family netdev --do dev-get`),
// in the caller's network namespace.
//
// For the fast path the bit that matters is XDPActNDOXmit: bpf_redirect to
// a device without it fails (the frame is dropped and counted as an RX drop
// of the device the program runs on). A veth has it only while its peer
// has NAPI on, that is while the peer has an XDP program or GRO enabled;
// the peer's owner can change that at any time, so callers poll.
func Features(ifindex int) (uint64, error) {
	fam, err := netlink.GenlFamilyGet("netdev")
	if err != nil {
		return 0, fmt.Errorf("xdp: netdev netlink family: %w", err)
	}
	req := nl.NewNetlinkRequest(int(fam.ID), 0)
	req.AddData(genlHeader{netdevCmdDevGet, 1})
	req.AddData(nl.NewRtAttr(netdevAttrDevIfindex, nl.Uint32Attr(uint32(ifindex))))
	msgs, err := req.Execute(unix.NETLINK_GENERIC, 0)
	if err != nil {
		return 0, fmt.Errorf("xdp: XDP features of ifindex %d: %w", ifindex, err)
	}
	for _, m := range msgs {
		// The generic netlink header, then attributes: length (u16,
		// with the 4-byte header), type (u16), value, padded to 4.
		for b := m[min(len(m), nl.SizeofGenlmsg):]; len(b) >= 4; {
			n := int(binary.NativeEndian.Uint16(b))
			if n < 4 || n > len(b) {
				break
			}
			if binary.NativeEndian.Uint16(b[2:])&0x3fff == netdevAttrDevXDPFeats && n >= 12 {
				return binary.NativeEndian.Uint64(b[4:]), nil
			}
			b = b[min(len(b), (n+3)&^3):]
		}
	}
	return 0, fmt.Errorf("xdp: XDP features of ifindex %d: not reported", ifindex)
}

// RedirectTarget reports whether frames can be redirected to interface
// ifindex (it has XDPActNDOXmit).
func RedirectTarget(ifindex int) (bool, error) {
	f, err := Features(ifindex)
	return f&XDPActNDOXmit != 0, err
}

// genlHeader is struct genlmsghdr: command, version and two reserved zero
// bytes. (nl.Genlmsg serializes 4 bytes from its 2-byte struct: the
// reserved bytes are whatever follows it in memory, and the kernel answers
// EINVAL when they are not zero.)
type genlHeader [4]byte

func (h genlHeader) Len() int          { return len(h) }
func (h genlHeader) Serialize() []byte { return h[:] }
