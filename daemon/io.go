package daemon

import "fmt"

// IOMode is the data path's packet I/O (gvsd --io).
type IOMode uint8

const (
	// IOTPacket uses TPACKET_V2 RX and TX rings on AF_PACKET sockets (the
	// default, and the fallback of IOAFXDP).
	IOTPacket IOMode = iota
	// IOAFXDP uses AF_XDP sockets fed by an XDP program on each interface
	// (native XDP where the driver has it, generic otherwise). When the
	// program or the sockets cannot be set up the daemon logs why and
	// uses TPACKET.
	IOAFXDP
)

// ParseIOMode parses "tpacket" or "afxdp".
func ParseIOMode(s string) (IOMode, error) {
	switch s {
	case "tpacket":
		return IOTPacket, nil
	case "afxdp":
		return IOAFXDP, nil
	}
	return IOTPacket, fmt.Errorf("--io %q: want tpacket or afxdp", s)
}

// String gives the mode's name, as ParseIOMode reads it.
func (m IOMode) String() string {
	switch m {
	case IOTPacket:
		return "tpacket"
	case IOAFXDP:
		return "afxdp"
	}
	return fmt.Sprintf("IOMode(%d)", uint8(m))
}
