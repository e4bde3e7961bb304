package health

import (
	"context"
	"crypto/rand"
	"errors"
	"time"
)

// UDPProbe is UDP_CHECK (check_udp.c): send Payload (32 random bytes when empty) on a connected
// socket and wait connect_timeout. An ICMP destination-unreachable (seen as a receive error on
// the connected socket) is a failure. Without RequireReply, silence is a success; with it a
// reply is required, and when ReplyData is set the reply must have MinReply..MaxReply bytes and
// match ReplyData on the common length, ignoring the bits set in ReplyMask.
type UDPProbe struct {
	Conn         ConnOpts
	Payload      []byte
	RequireReply bool
	ReplyData    []byte
	ReplyMask    []byte
	MinReply     int // keepalived default 0
	MaxReply     int // keepalived default 255
}

// Kind is UDP_CHECK.
func (*UDPProbe) Kind() Kind { return KindUDP }

// Steps is 1.
func (*UDPProbe) Steps() int { return 1 }

// Check sends the datagram and judges the answer.
func (p *UDPProbe) Check(ctx context.Context, _ int) Result {
	c, err := p.Conn.dial(ctx, "udp")
	if err != nil {
		return Result{Err: &ProbeError{Msg: "connection failed", Err: err}}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	payload := p.Payload
	if len(payload) == 0 {
		payload = make([]byte, 32)
		rand.Read(payload)
	}
	if _, err := c.Write(payload); err != nil {
		return Result{Err: &ProbeError{Msg: "connection failed", Err: err}}
	}
	maxLen := p.MaxReply
	if maxLen <= 0 {
		maxLen = 255
	}
	c.SetReadDeadline(time.Now().Add(p.Conn.timeout()))
	buf := make([]byte, maxLen+1)
	n, err := c.Read(buf)
	if err != nil {
		if isTimeout(err) && ctx.Err() == nil {
			if p.RequireReply {
				return Result{Err: &ProbeError{Msg: "connection failed", Err: errors.New("no reply")}}
			}
			return Result{}
		}
		return Result{Err: &ProbeError{Msg: "connection failed", Err: err}}
	}
	if p.RequireReply && len(p.ReplyData) > 0 && !p.replyOK(buf[:n]) {
		return Result{Err: &ProbeError{Msg: "reply data mismatch"}}
	}
	return Result{}
}

func (p *UDPProbe) replyOK(b []byte) bool {
	maxLen := p.MaxReply
	if maxLen <= 0 {
		maxLen = 255
	}
	if len(b) < p.MinReply || len(b) > maxLen {
		return false
	}
	n := min(len(b), len(p.ReplyData))
	for i := 0; i < n; i++ {
		mask := byte(0)
		if i < len(p.ReplyMask) {
			mask = p.ReplyMask[i]
		}
		if (b[i]^p.ReplyData[i])&^mask != 0 {
			return false
		}
	}
	return true
}
