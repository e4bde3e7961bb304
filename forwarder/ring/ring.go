package ring

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/net/bpf"
)

// Status bits of an RX slot (tp_status, include/uapi/linux/if_packet.h).
// The values are the kernel's and do not depend on the platform.
const (
	StatusUser          uint32 = 0x1   // the slot belongs to userspace (frame ready)
	StatusCopy          uint32 = 0x2   // frame was also queued to the socket (PACKET_COPY_THRESH)
	StatusLosing        uint32 = 0x4   // the ring dropped frames since the last statistics read
	StatusCsumNotReady  uint32 = 0x8   // CHECKSUM_PARTIAL: L4 checksum not computed yet
	StatusVLANValid     uint32 = 0x10  // VLANTCI holds the stripped outer tag
	StatusVLANTPIDValid uint32 = 0x40  // VLANTPID holds the stripped tag's TPID
	StatusCsumValid     uint32 = 0x80  // the L4 checksum was validated
	StatusGSOTCP        uint32 = 0x100 // TCP GSO super-frame
)

// TX slot states (tp_status of a TX ring slot).
const (
	txAvailable   uint32 = 0x0
	txSendRequest uint32 = 0x1
	txSending     uint32 = 0x2
	txWrongFormat uint32 = 0x4
	txBusyMask           = txSendRequest | txSending | txWrongFormat
)

// Geometry constants of TPACKET_V2.
const (
	// TXDataOffset is where frame data starts in a TX slot of a ZeroCopy
	// ring: TPACKET_ALIGN(sizeof(struct tpacket2_hdr)). Other rings keep
	// txVnetRoom bytes in front of it for the virtio_net_hdr.
	TXDataOffset = 32
	// txVnetRoom is the room reserved for the virtio_net_hdr (10 bytes),
	// rounded up to TPACKET_ALIGNMENT.
	txVnetRoom = 16
	// vnetHdrLen is sizeof(struct virtio_net_hdr).
	vnetHdrLen = 10
	// RXDataOffset is where the kernel writes an Ethernet frame in an RX
	// slot of a SOCK_RAW socket: TPACKET_ALIGN(tpacket2_hdr + sockaddr_ll
	// + 16) - 14.
	RXDataOffset = 66
	// frameAlign is TPACKET_ALIGNMENT.
	frameAlign = 16
	// minFrameSize is the smallest frame slot accepted: room for the
	// header and a minimal Ethernet frame.
	minFrameSize = 128
	// maxRingBytes bounds one ring's memory (sanity limit).
	maxRingBytes = 1 << 30
	// ethHdrLen is the Ethernet header length; shorter TX frames are
	// refused.
	ethHdrLen = 14
	// vlanHdrLen is the 802.1Q tag length the kernel tolerates above MTU.
	vlanHdrLen = 4
)

// Defaults used for zero fields of RXConfig and TXConfig.
const (
	DefaultFrameSize  = 2048
	DefaultBlockSize  = 64 << 10
	DefaultFrameCount = 2048
	DefaultFlushEvery = 64
)

// Errors callers can branch on.
var (
	// ErrUnsupported is returned by OpenRX and OpenTX on platforms without
	// AF_PACKET rings.
	ErrUnsupported = errors.New("ring: AF_PACKET rings are not supported on this platform")
	// ErrTimeout is returned by Wait when the timeout expired first.
	ErrTimeout = errors.New("ring: wait timed out")
	// ErrClosed is returned by operations on a closed ring.
	ErrClosed = errors.New("ring: closed")
)

// FanoutMode selects how the kernel spreads frames over the sockets of one
// PACKET_FANOUT group (values are PACKET_FANOUT_*).
type FanoutMode uint16

// Fanout modes. The zero value is FanoutHash.
const (
	FanoutHash     FanoutMode = 0 // by the skb flow hash: a flow stays on one socket
	FanoutLB       FanoutMode = 1 // round robin (reorders flows)
	FanoutCPU      FanoutMode = 2 // by the CPU that received the frame
	FanoutRollover FanoutMode = 3 // fill one socket, then the next
	FanoutRandom   FanoutMode = 4 // random
	FanoutQM       FanoutMode = 5 // by the NIC receive queue (skb queue mapping)
)

// Fanout flags (PACKET_FANOUT_FLAG_*), OR-ed into Fanout.Flags.
const (
	FanoutFlagRollover       uint16 = 0x1000
	FanoutFlagUniqueID       uint16 = 0x2000
	FanoutFlagIgnoreOutgoing uint16 = 0x4000
	FanoutFlagDefrag         uint16 = 0x8000
)

// Fanout joins an RX socket to a PACKET_FANOUT group (set after bind).
// Sockets of one group must use the same interface, mode and flags.
//
// The kernel delivers a group's frames through the group's hook, not the
// member socket's, so PACKET_IGNORE_OUTGOING has no effect on a member:
// OpenRX adds FanoutFlagIgnoreOutgoing to the group flags unless
// RXConfig.KeepOutgoing is set. All members of a group must therefore use
// the same KeepOutgoing.
type Fanout struct {
	// Group is the group id, unique per network namespace.
	Group uint16
	// Mode is the spreading policy; the zero value is FanoutHash.
	Mode FanoutMode
	// Flags are extra FanoutFlag* bits. FanoutFlagDefrag is always added
	// unless NoDefrag is set, so that fragments of one datagram are
	// reassembled before hashing and reach the same socket.
	Flags uint16
	// NoDefrag drops the default FanoutFlagDefrag.
	NoDefrag bool
}

// sockoptValue is the PACKET_FANOUT option value.
func (f *Fanout) sockoptValue() int {
	flags := f.Flags
	if !f.NoDefrag {
		flags |= FanoutFlagDefrag
	}
	return int(f.Group) | int(uint16(f.Mode)|flags)<<16
}

// RXConfig configures an RX ring. A nil *RXConfig means DefaultRXConfig().
// Zero numeric fields take the package defaults.
type RXConfig struct {
	// FrameSize is the size of one slot in bytes, a multiple of 16
	// (default 2048). A slot holds FrameSize-66 bytes of frame.
	FrameSize int
	// BlockSize is the size of one block in bytes, a multiple of the page
	// size and at least FrameSize (default 64 KiB, or FrameSize rounded up
	// to pages when that is larger).
	BlockSize int
	// FrameCount is the number of slots (default 2048), rounded up to a
	// whole number of blocks.
	FrameCount int
	// Fanout, if not nil, joins the socket to a PACKET_FANOUT group.
	Fanout *Fanout
	// Filter is a classic BPF program (see Filter.Assemble) attached
	// before the socket is bound, so no non-matching frame is ever queued.
	// Nil accepts everything.
	Filter []bpf.RawInstruction
	// KeepOutgoing disables PACKET_IGNORE_OUTGOING (and the fanout
	// group's FanoutFlagIgnoreOutgoing): the ring then also receives
	// copies of frames sent on the interface, except those sent with
	// PACKET_QDISC_BYPASS.
	KeepOutgoing bool
}

// DefaultRXConfig returns the configuration used for a nil *RXConfig.
func DefaultRXConfig() RXConfig {
	return RXConfig{FrameSize: DefaultFrameSize, BlockSize: DefaultBlockSize, FrameCount: DefaultFrameCount}
}

// TXConfig configures a TX ring. A nil *TXConfig means DefaultTXConfig().
// Zero numeric fields take the package defaults; booleans are taken as
// given.
type TXConfig struct {
	// FrameSize, BlockSize, FrameCount: as in RXConfig. A slot holds
	// FrameSize-32 bytes of frame.
	FrameSize  int
	BlockSize  int
	FrameCount int
	// FlushEvery makes Commit kick the kernel after this many frames
	// (default 64). Negative: never; the caller calls Flush.
	FlushEvery int
	// QdiscBypass sets PACKET_QDISC_BYPASS: frames go straight to the
	// driver, skipping the qdisc (and other sockets' taps such as
	// tcpdump). The default configuration enables it.
	QdiscBypass bool
	// ZeroCopy leaves the kernel's TX ring default: it copies only the
	// Ethernet header into the new skb and references the rest of the frame
	// in the ring's pages. That saves a copy on a NIC that sends from page
	// fragments, but a veth (and anything that forwards the skb inside the
	// host) must then copy those fragments into newly allocated pages
	// (skb_copy_ubufs) and pull the headers back into the linear area.
	// Without it (the default), every slot carries a virtio_net_hdr
	// (PACKET_VNET_HDR) asking for the whole frame in the linear area: one
	// copy of at most MTU+14 bytes, no page allocation.
	ZeroCopy bool
}

// DefaultTXConfig returns the configuration used for a nil *TXConfig.
func DefaultTXConfig() TXConfig {
	return TXConfig{
		FrameSize: DefaultFrameSize, BlockSize: DefaultBlockSize, FrameCount: DefaultFrameCount,
		FlushEvery: DefaultFlushEvery, QdiscBypass: true,
	}
}

// geometry is a validated ring layout (struct tpacket_req).
type geometry struct {
	frameSize  int
	blockSize  int
	blockNr    int
	frameNr    int
	perBlock   int
	totalBytes int
}

// offset returns the byte offset of slot i in the mapped ring.
func (g geometry) offset(i int) int {
	return (i/g.perBlock)*g.blockSize + (i%g.perBlock)*g.frameSize
}

// newGeometry validates and completes a ring layout. pageSize is the
// system page size.
func newGeometry(frameSize, blockSize, frameCount, pageSize int) (geometry, error) {
	if frameSize == 0 {
		frameSize = DefaultFrameSize
	}
	if frameCount == 0 {
		frameCount = DefaultFrameCount
	}
	if blockSize == 0 {
		blockSize = DefaultBlockSize
		if blockSize < frameSize {
			blockSize = (frameSize + pageSize - 1) / pageSize * pageSize
		}
	}
	switch {
	case frameSize < minFrameSize || frameSize%frameAlign != 0:
		return geometry{}, fmt.Errorf("ring: frame size %d: must be a multiple of %d and at least %d", frameSize, frameAlign, minFrameSize)
	case blockSize <= 0 || blockSize%pageSize != 0:
		return geometry{}, fmt.Errorf("ring: block size %d: must be a positive multiple of the page size %d", blockSize, pageSize)
	case blockSize < frameSize:
		return geometry{}, fmt.Errorf("ring: block size %d is smaller than the frame size %d", blockSize, frameSize)
	case frameCount < 0:
		return geometry{}, fmt.Errorf("ring: frame count %d is negative", frameCount)
	case frameCount > maxRingBytes/frameSize:
		return geometry{}, fmt.Errorf("ring: %d frames of %d bytes exceed the %d-byte ring limit", frameCount, frameSize, maxRingBytes)
	}
	perBlock := blockSize / frameSize
	blockNr := (frameCount + perBlock - 1) / perBlock
	g := geometry{
		frameSize:  frameSize,
		blockSize:  blockSize,
		blockNr:    blockNr,
		frameNr:    blockNr * perBlock,
		perBlock:   perBlock,
		totalBytes: blockNr * blockSize,
	}
	if g.totalBytes > maxRingBytes {
		return geometry{}, fmt.Errorf("ring: %d blocks of %d bytes exceed the %d-byte ring limit", blockNr, blockSize, maxRingBytes)
	}
	return g, nil
}

// Meta describes one received frame. It is a plain value: returning it does
// not allocate.
type Meta struct {
	// Status is the slot's raw tp_status (Status* bits).
	Status uint32
	// Len is the frame's original length (tp_len), without a stripped
	// VLAN tag.
	Len uint32
	// Snap is the number of bytes stored in the ring (tp_snaplen), the
	// length of the returned frame.
	Snap uint32
	// Sec and Nsec are the kernel's receive timestamp.
	Sec, Nsec uint32
	// VLANTCI and VLANTPID hold the stripped outer VLAN tag when
	// StatusVLANValid (and StatusVLANTPIDValid) is set.
	VLANTCI  uint16
	VLANTPID uint16
}

// Truncated reports whether the frame did not fit its slot: the returned
// frame holds only the first Snap of Len bytes.
func (m Meta) Truncated() bool { return m.Snap < m.Len }

// CsumNotReady reports CHECKSUM_PARTIAL: the L4 checksum must be computed
// in full before the frame is forwarded; do not verify it.
func (m Meta) CsumNotReady() bool { return m.Status&StatusCsumNotReady != 0 }

// CsumValid reports that the L4 checksum was already validated.
func (m Meta) CsumValid() bool { return m.Status&StatusCsumValid != 0 }

// Losing reports that the ring dropped frames since statistics were last
// read.
func (m Meta) Losing() bool { return m.Status&StatusLosing != 0 }

// VLAN returns the outer VLAN tag that the kernel stripped from the frame:
// the TCI (priority, DEI and 12-bit VLAN id) and the TPID (0x8100 for
// 802.1Q, 0x88a8 for 802.1ad; 0 if the kernel did not report it). ok is
// false for untagged frames.
func (m Meta) VLAN() (tci, tpid uint16, ok bool) {
	if m.Status&StatusVLANValid == 0 {
		return 0, 0, false
	}
	if m.Status&StatusVLANTPIDValid != 0 {
		tpid = m.VLANTPID
	}
	return m.VLANTCI, tpid, true
}

// Time returns the receive timestamp.
func (m Meta) Time() time.Time { return time.Unix(int64(m.Sec), int64(m.Nsec)) }

// Batch receives up to len(Frames) frames per RX.Recv call. The slices
// point into the ring and stay valid until the frames are released.
type Batch struct {
	Frames [][]byte
	Metas  []Meta
	// N is the number of valid entries after Recv.
	N int
}

// NewBatch returns a Batch for up to size frames.
func NewBatch(size int) *Batch {
	if size < 1 {
		size = 1
	}
	return &Batch{Frames: make([][]byte, size), Metas: make([]Meta, size)}
}

// RXStats are an RX ring's kernel counters (PACKET_STATISTICS), accumulated
// over the ring's lifetime (the kernel resets them on every read).
type RXStats struct {
	// Packets is the number of frames that passed the filter, including
	// dropped ones.
	Packets uint64
	// Drops is the number of frames dropped because the ring was full (or
	// memory was short).
	Drops uint64
}

// TXStats are a TX ring's counters.
type TXStats struct {
	// Frames is the number of frames the kernel took for transmission.
	Frames uint64
	// Kicks is the number of sendto(2) calls.
	Kicks uint64
	// Again counts kicks that returned EAGAIN (socket send buffer full);
	// the frames stay queued for the next Flush.
	Again uint64
	// NoBufs counts kicks that returned ENOBUFS (device queue full); the
	// frame stays queued for the next Flush.
	NoBufs uint64
	// Errors counts kicks that failed otherwise (device down, ...).
	Errors uint64
	// WrongFormat counts frames the kernel refused (TP_STATUS_WRONG_FORMAT,
	// e.g. longer than the MTU); they were reclaimed and dropped.
	WrongFormat uint64
	// Malformed counts Commit calls refused before reaching the kernel
	// (length out of range, or no slot had been reserved).
	Malformed uint64
	// Full counts Slot calls that found no free slot.
	Full uint64
}

// validTXLen reports whether a frame of n bytes, stored at off in a slot
// with capacity bytes, may be committed when the device accepts maxFrame
// bytes (plus a VLAN tag when the frame carries one in its data).
func validTXLen(frame []byte, off, n, capacity, maxFrame int) bool {
	if off < 0 || n < ethHdrLen || n > capacity-off {
		return false
	}
	if n <= maxFrame {
		return true
	}
	if n > maxFrame+vlanHdrLen || len(frame) < ethHdrLen {
		return false
	}
	et := uint16(frame[12])<<8 | uint16(frame[13])
	return et == 0x8100 || et == 0x88a8
}
