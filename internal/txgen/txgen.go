// Package txgen is what the lab's frame senders (gvs-soak flood and
// gvs-bench gen) share: a TPACKET TX ring that only the caller flushes, its
// drain at the end, the Ethernet and IPv4 headers they write in place, and
// the parsing of their MAC flags.
package txgen

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"gvs/checksum"
	"gvs/forwarder/ring"
)

// Open opens a TX ring of frames 256-byte frames on the interface dev. The
// ring is never flushed on its own (FlushEvery -1): the sender flushes
// after each batch.
func Open(dev string, frames int) (*ring.TX, error) {
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, err
	}
	cfg := ring.DefaultTXConfig()
	cfg.FlushEvery = -1
	cfg.FrameSize = 256
	cfg.BlockSize = 4096
	cfg.FrameCount = frames
	return ring.OpenTX(ifc.Index, &cfg)
}

// Drain flushes the frames still in the ring, for about 100 ms at most.
func Drain(tx *ring.TX) {
	for i := 0; i < 100 && tx.Pending() > 0; i++ {
		_ = tx.Flush()
		time.Sleep(time.Millisecond)
	}
}

// HeaderLen is the length of what PutEthIPv4 writes.
const HeaderLen = 14 + 20

// PutEthIPv4 writes at the start of b (at least HeaderLen bytes) an
// Ethernet header (type IPv4) and an IPv4 header without options: total
// length ipLen, identification id, DF, TTL 64, protocol proto, with its
// checksum.
func PutEthIPv4(b []byte, dstMAC, srcMAC net.HardwareAddr, src, dst [4]byte, proto uint8, id uint16, ipLen int) {
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[14:34]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen))
	binary.BigEndian.PutUint16(ip[4:6], id)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF
	ip[8], ip[9] = 64, proto
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum.Checksum(ip, 0))
}

// ParseMAC parses s, the value of the flag -name, as an Ethernet MAC.
func ParseMAC(name, s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return nil, fmt.Errorf("-%s %q: not an Ethernet MAC", name, s)
	}
	return m, nil
}
