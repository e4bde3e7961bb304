//go:build !linux

package ring

import (
	"time"

	"golang.org/x/net/bpf"
)

// RX is a TPACKET_V2 receive ring; on this platform it cannot be opened.
type RX struct{}

// OpenRX returns ErrUnsupported on this platform.
func OpenRX(ifindex int, cfg *RXConfig) (*RX, error) { return nil, ErrUnsupported }

// Next never returns a frame on this platform.
func (r *RX) Next() (frame []byte, meta Meta, ok bool) { return nil, Meta{}, false }

// Release does nothing on this platform.
func (r *RX) Release() {}

// ReleaseAll does nothing on this platform.
func (r *RX) ReleaseAll() {}

// Held returns 0 on this platform.
func (r *RX) Held() int { return 0 }

// Recv returns 0 on this platform.
func (r *RX) Recv(b *Batch) int { b.N = 0; return 0 }

// Ready returns false on this platform.
func (r *RX) Ready() bool { return false }

// Wait returns ErrUnsupported on this platform.
func (r *RX) Wait(timeout time.Duration) error { return ErrUnsupported }

// TakeError returns ErrUnsupported on this platform.
func (r *RX) TakeError() error { return ErrUnsupported }

// SetFilter returns ErrUnsupported on this platform.
func (r *RX) SetFilter(filter []bpf.RawInstruction) error { return ErrUnsupported }

// Stats returns ErrUnsupported on this platform.
func (r *RX) Stats() (RXStats, error) { return RXStats{}, ErrUnsupported }

// FrameCount returns 0 on this platform.
func (r *RX) FrameCount() int { return 0 }

// SnapLen returns 0 on this platform.
func (r *RX) SnapLen() int { return 0 }

// Fd returns -1 on this platform.
func (r *RX) Fd() int { return -1 }

// Ifindex returns 0 on this platform.
func (r *RX) Ifindex() int { return 0 }

// Close does nothing on this platform.
func (r *RX) Close() error { return nil }

// TX is a TPACKET_V2 transmit ring; on this platform it cannot be opened.
type TX struct{}

// OpenTX returns ErrUnsupported on this platform.
func OpenTX(ifindex int, cfg *TXConfig) (*TX, error) { return nil, ErrUnsupported }

// Slot never returns a slot on this platform.
func (t *TX) Slot() ([]byte, bool) { return nil, false }

// Commit returns false on this platform.
func (t *TX) Commit(n int) bool { return false }

// Discard does nothing on this platform.
func (t *TX) Discard() int { return 0 }

// CommitAt returns false on this platform.
func (t *TX) CommitAt(off, n int) bool { return false }

// Pending returns 0 on this platform.
func (t *TX) Pending() int { return 0 }

// Flush returns ErrUnsupported on this platform.
func (t *TX) Flush() error { return ErrUnsupported }

// Wait returns ErrUnsupported on this platform.
func (t *TX) Wait(timeout time.Duration) error { return ErrUnsupported }

// Stats returns zero counters on this platform.
func (t *TX) Stats() TXStats { return TXStats{} }

// MaxFrame returns 0 on this platform.
func (t *TX) MaxFrame() int { return 0 }

// FrameCount returns 0 on this platform.
func (t *TX) FrameCount() int { return 0 }

// Fd returns -1 on this platform.
func (t *TX) Fd() int { return -1 }

// Ifindex returns 0 on this platform.
func (t *TX) Ifindex() int { return 0 }

// Close does nothing on this platform.
func (t *TX) Close() error { return nil }
