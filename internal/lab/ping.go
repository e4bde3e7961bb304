package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// pingInterval is the time between echo requests.
const pingInterval = 200 * time.Millisecond

// Ping sends ICMP echo requests from namespace ns to the IPv4 address dst,
// one every 200 ms, until a matching reply arrives or ctx ends. It needs no
// ping binary (it uses a raw ICMP socket, so root).
func Ping(ctx context.Context, ns string, dst netip.Addr) error {
	if !dst.Is4() {
		return fmt.Errorf("ping %v: only IPv4", dst)
	}
	var c *icmp.PacketConn
	if err := Do(ns, func() (err error) {
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return fmt.Errorf("ping from %s: %w", ns, err)
	}
	defer c.Close()

	var idb [2]byte
	rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))
	payload := []byte("gvs-lab-ping")
	peer := &net.IPAddr{IP: dst.AsSlice()}
	buf := make([]byte, 1500)
	for seq := 1; ; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, peer); err != nil {
			// e.g. ENETUNREACH: retry until ctx ends, the link may be
			// coming up.
			if ctx.Err() != nil {
				return fmt.Errorf("ping %v from %s: %w (last: %v)", dst, ns, ctx.Err(), err)
			}
		}
		deadline := time.Now().Add(pingInterval)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		c.SetReadDeadline(deadline)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return fmt.Errorf("ping %v from %s: %w", dst, ns, err)
			}
			if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(peer.IP) {
				continue
			}
			rm, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || rm.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == id && bytes.Equal(e.Data, payload) {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ping %v from %s: no reply: %w", dst, ns, ctx.Err())
		}
	}
}
