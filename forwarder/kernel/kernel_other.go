//go:build !linux

package kernel

import (
	"context"
	"net"
	"net/netip"

	"go.uber.org/zap"
)

// Ingress is unavailable on this platform: NewIngress returns ErrUnsupported.
type Ingress struct{}

// NewIngress returns ErrUnsupported.
func NewIngress(table string, log *zap.Logger) (*Ingress, error) { return nil, ErrUnsupported }

// Table returns "".
func (in *Ingress) Table() string { return "" }

// Sync returns ErrUnsupported.
func (in *Ingress) Sync(rules []IngressRule) error { return ErrUnsupported }

// Ensure does nothing.
func (in *Ingress) Ensure() (restored bool, err error) { return false, nil }

// Close does nothing.
func (in *Ingress) Close() error { return nil }

// DisableGRO returns ErrUnsupported.
func DisableGRO(ifname string) (changed []string, err error) { return nil, ErrUnsupported }

// ARPResponder is unavailable on this platform: NewARPResponder returns ErrUnsupported.
type ARPResponder struct{}

// NewARPResponder returns ErrUnsupported.
func NewARPResponder(ifname string, log *zap.Logger) (*ARPResponder, error) {
	return nil, ErrUnsupported
}

// SetAddrs returns ErrUnsupported.
func (r *ARPResponder) SetAddrs(addrs []netip.Addr) error { return ErrUnsupported }

// Addrs returns nil.
func (r *ARPResponder) Addrs() []netip.Addr { return nil }

// MAC returns nil.
func (r *ARPResponder) MAC() net.HardwareAddr { return nil }

// Gratuitous returns ErrUnsupported.
func (r *ARPResponder) Gratuitous(addr netip.Addr) error { return ErrUnsupported }

// Run returns ErrUnsupported.
func (r *ARPResponder) Run(ctx context.Context) error { return ErrUnsupported }

// Stats returns zero counters.
func (r *ARPResponder) Stats() ARPStats { return ARPStats{} }

// Close does nothing.
func (r *ARPResponder) Close() error { return nil }

// Resolver is unavailable on this platform: NewResolver returns ErrUnsupported.
type Resolver struct{}

// NewResolver returns ErrUnsupported.
func NewResolver(cfg ResolverConfig) (*Resolver, error) { return nil, ErrUnsupported }

// Lookup reports false.
func (r *Resolver) Lookup(addr netip.Addr) (Neighbor, bool) { return Neighbor{}, false }

// Generation is always 0.
func (r *Resolver) Generation() uint64 { return 0 }

// Gateway reports false.
func (r *Resolver) Gateway(client netip.Addr) (Neighbor, bool) { return Neighbor{}, false }

// Want does nothing.
func (r *Resolver) Want(addrs ...netip.Addr) {}

// Unwant does nothing.
func (r *Resolver) Unwant(addrs ...netip.Addr) {}

// Close does nothing.
func (r *Resolver) Close() error { return nil }
