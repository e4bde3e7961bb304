package rewrite

import (
	"encoding/binary"
	"testing"

	"gvs/internal/oracle"
)

// TestOptionsChecked: IPv4 options are judged as the kernel's
// ip_options_compile and ip_rcv_options judge a received packet's, on a
// TCP SYN whose header carries them: malformed ones and a source route
// (accept_source_route 0) are dropped with their reason, others decode.
func TestOptionsChecked(t *testing.T) {
	tests := []struct {
		name string
		opts []byte // a multiple of 4 bytes
		want Reason
	}{
		{"NOPs", []byte{1, 1, 1, 1}, ReasonNone},
		{"end of options, then anything", []byte{0, 0xff, 0xff, 0xff}, ReasonNone},
		{"router alert", []byte{148, 4, 0, 0}, ReasonNone},
		{"record route with room", []byte{7, 7, 4, 0, 0, 0, 0, 0}, ReasonNone},
		{"record route full", []byte{7, 7, 8, 0, 0, 0, 0, 0}, ReasonNone},
		{"timestamp, one slot", []byte{68, 8, 5, 0, 0, 0, 0, 0}, ReasonNone},
		{"unknown option", []byte{0x1e, 4, 0, 0}, ReasonNone},
		{"option of length 0", []byte{7, 0, 0, 0}, BadIPOptions},
		{"option of length 1", []byte{0x1e, 1, 0, 0}, BadIPOptions},
		{"option beyond the header", []byte{7, 11, 4, 0}, BadIPOptions},
		{"option type as the last byte", []byte{1, 1, 1, 7}, BadIPOptions},
		{"record route pointer below 4", []byte{7, 7, 3, 0, 0, 0, 0, 0}, BadIPOptions},
		{"record route, a slot cut short", []byte{7, 6, 4, 0, 0, 0, 0, 0}, BadIPOptions},
		{"two record routes", []byte{7, 3, 4, 7, 3, 4, 0, 0}, BadIPOptions},
		{"timestamp of length 3", []byte{68, 3, 5, 0}, BadIPOptions},
		{"timestamp pointer below 5", []byte{68, 8, 4, 0, 0, 0, 0, 0}, BadIPOptions},
		{"timestamp and address, a slot cut short", []byte{68, 8, 5, 1, 0, 0, 0, 0}, BadIPOptions},
		{"timestamp full, overflow counter full", []byte{68, 4, 5, 0xf0}, BadIPOptions},
		{"timestamp full, overflow counter counting", []byte{68, 4, 5, 0x10}, ReasonNone},
		{"router alert of length 2", []byte{148, 2, 0, 0}, BadIPOptions},
		{"CIPSO", []byte{134, 8, 0, 0, 0, 1, 0, 0}, BadIPOptions},
		{"loose source route", []byte{131, 7, 4, 198, 18, 2, 11, 0}, SourceRoute},
		{"strict source route", []byte{137, 7, 4, 198, 18, 2, 11, 0}, SourceRoute},
		{"source route pointer below 4", []byte{131, 7, 3, 198, 18, 2, 11, 0}, BadIPOptions},
		{"two source routes", []byte{131, 3, 4, 137, 3, 4, 0, 0}, BadIPOptions},
	}
	base := build(t, spec{proto: ProtoTCP})
	for _, tt := range tests {
		f := withIPOpts(base, tt.opts)
		var p Parsed
		v := p.Decode(f)
		switch {
		case tt.want == ReasonNone && v != IP:
			t.Errorf("%s: %v (%v), want ip", tt.name, v, p.Reason)
		case tt.want != ReasonNone && (v != Malformed || p.Reason != tt.want):
			t.Errorf("%s: %v (%v), want malformed (%v)", tt.name, v, p.Reason, tt.want)
		}
	}
}

// withIPOpts returns a copy of the untagged frame f with opts (a multiple
// of 4 bytes) inserted as IPv4 options, lengths and header checksum set.
func withIPOpts(f, opts []byte) []byte {
	g := make([]byte, 0, len(f)+len(opts))
	g = append(g, f[:EthernetLen+IPv4MinLen]...)
	g = append(g, opts...)
	g = append(g, f[EthernetLen+IPv4MinLen:]...)
	ip := g[EthernetLen:]
	ip[0] = 0x40 | byte((IPv4MinLen+len(opts))/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^oracle.Sum1071(ip[:IPv4MinLen+len(opts)], 0))
	return g
}
