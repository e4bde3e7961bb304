package conntrack

import (
	"sync/atomic"
	"time"
)

// Timeouts are the per-state idle timeouts: every packet re-arms a
// connection to now + the timeout of the state it is left in.
type Timeouts struct {
	// TCP is indexed by State (NONE .. SYNACK).
	TCP [NumTCPStates]time.Duration
	// UDP is the timeout of the single UDP state.
	UDP time.Duration
}

// DefaultTimeouts returns IPVS's defaults (tcp_timeouts[], udp_timeouts[]):
// NONE 2, ESTABLISHED 900, SYN_SENT 120, SYN_RECV 60, FIN_WAIT 120,
// TIME_WAIT 120, CLOSE 10, CLOSE_WAIT 60, LAST_ACK 30, LISTEN 120,
// SYNACK 120 and UDP 300 seconds.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCP: [NumTCPStates]time.Duration{
			StateNone:        2 * time.Second,
			StateEstablished: 900 * time.Second,
			StateSynSent:     120 * time.Second,
			StateSynRecv:     60 * time.Second,
			StateFinWait:     120 * time.Second,
			StateTimeWait:    120 * time.Second,
			StateClose:       10 * time.Second,
			StateCloseWait:   60 * time.Second,
			StateLastAck:     30 * time.Second,
			StateListen:      120 * time.Second,
			StateSynAck:      120 * time.Second,
		},
		UDP: 300 * time.Second,
	}
}

// timeoutTable is the live copy of Timeouts, readable by every worker while
// the control plane changes it (ipvsadm --set).
type timeoutTable struct {
	tcp [NumTCPStates]atomic.Int64 // nanoseconds
	udp atomic.Int64
}

// store copies t, replacing zero (or negative) values with the defaults.
func (tt *timeoutTable) store(t Timeouts) {
	def := DefaultTimeouts()
	for i := range tt.tcp {
		v := t.TCP[i]
		if v <= 0 {
			v = def.TCP[i]
		}
		tt.tcp[i].Store(int64(v))
	}
	v := t.UDP
	if v <= 0 {
		v = def.UDP
	}
	tt.udp.Store(int64(v))
}

func (tt *timeoutTable) load() Timeouts {
	var t Timeouts
	for i := range tt.tcp {
		t.TCP[i] = time.Duration(tt.tcp[i].Load())
	}
	t.UDP = time.Duration(tt.udp.Load())
	return t
}
