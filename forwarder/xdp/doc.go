// Package xdp is gvs's AF_XDP packet I/O (gvsd --io afxdp): a small XDP
// program that redirects the frames gvs forwards to AF_XDP sockets and
// passes everything else (ARP, the host's own traffic) to the kernel, and
// the sockets themselves: a UMEM shared by the sockets of one worker (on
// the VIP and the DIP interface, XDP_SHARED_UMEM) with its fill,
// completion, RX and TX rings.
//
// The program is assembled in Go (github.com/cilium/ebpf/asm): no C
// compiler at build time. Its rules mirror the nftables ingress drops the
// daemon derives from the service table (VIP:port per service on the VIP
// interface, with an FTP (port-21) service its data ports 1024-65535, a
// masqueraded real server's address:port as source on the DIP interface,
// and every fragment of a service's protocol to the VIP or from
// the real server, by address and protocol, for the pipeline's
// reassembly), plus ICMP errors: a frame redirected to AF_XDP never reaches
// the kernel's stack, so the program must select exactly what the
// pipeline handles. A frame with an 802.1p priority tag (VLAN ID 0) is
// matched like an untagged one and reaches the socket untagged, as the
// pipeline sees it in TPACKET mode; other VLANs are the kernel's. The
// program sees a tag only in the frame: one the driver moved into the
// skb's metadata (VLAN offload; veth keeps its peer's) is invisible to it.
//
// Sockets, rings and UMEM use golang.org/x/sys/unix only.
package xdp

// Mode is an XDP attach mode.
type Mode uint8

const (
	// Native runs the program in the driver (XDP_FLAGS_DRV_MODE); veth has
	// it.
	Native Mode = iota + 1
	// Generic runs it on the skb, after the driver (XDP_FLAGS_SKB_MODE):
	// any interface, at the cost of an skb per frame.
	Generic
)

func (m Mode) String() string {
	switch m {
	case Native:
		return "native"
	case Generic:
		return "generic"
	}
	return "unknown"
}

// Headroom is the room the kernel leaves in front of a received frame in
// its UMEM frame (XDP_PACKET_HEADROOM, with no UMEM headroom of ours).
const Headroom = 256
