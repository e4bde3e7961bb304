package forwarder_test

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/forwarder"
	"gvs/internal/frames"
)

// FuzzProcess feeds arbitrary frames, on either link, to a pipeline with NAT,
// DR and TUN services: it must never panic, and whatever it transmits or
// replies must be a well-formed Ethernet/IPv4 frame inside the caller's
// buffer or the worker's scratch space.
func FuzzProcess(f *testing.F) {
	l2 := frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))}
	f.Add(syn(client, 1000), false)
	f.Add(frames.UDP(l2, frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: 1, DstPort: 53, Payload: []byte("x")}), false)
	f.Add(frames.TCP(l2, frames.IP{Src: client, Dst: vip, TTL: 1}, frames.TCPSeg{SrcPort: 1, DstPort: 81, SYN: true}), false)
	f.Add(frames.ICMPError(l2, frames.IP{Src: client, Dst: vip}, 3, 1, 0, syn(vip, 80)), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, frame []byte, dipSide bool) {
		h := newHarness(t, twoNAT+
			"-A -t 198.51.100.10:81 -s rr\n-a -t 198.51.100.10:81 -r 198.18.2.11:81 -g\n"+
			"-A -t 198.51.100.10:82 -s rr\n-a -t 198.51.100.10:82 -r 198.18.2.11:82 -i\n"+
			"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m\n")
		if len(frame) > 9000 {
			frame = frame[:9000]
		}
		link := forwarder.VIPSide
		if dipSide {
			link = forwarder.DIPSide
		}
		for i := 0; i < 2; i++ { // twice: once new, once established
			r := h.send(frame, link)
			if r.Action != forwarder.Transmit && r.Action != forwarder.Reply {
				continue
			}
			pkt := gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.NoCopy)
			if pkt.Layer(layers.LayerTypeIPv4) == nil {
				t.Fatalf("%v frame without IPv4: %x", r.Action, r.Frame)
			}
		}
	})
}
