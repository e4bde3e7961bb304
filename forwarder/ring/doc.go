// Package ring is the data-path packet I/O of gvsd: AF_PACKET sockets with
// memory-mapped TPACKET_V2 receive (RX) and transmit (TX) rings, plus a small
// classic-BPF filter builder that keeps non-VIP traffic out of the RX rings.
//
// # Why TPACKET_V2
//
// A V2 ring hands every frame to userspace as soon as the kernel has copied
// it, so forwarding adds no batching latency (V3 releases a whole block only
// when it is full or its timer fires: +1 ms to +60 ms per hop when forwarding).
// No syscall is made per frame: the reader walks the ring and only calls
// ppoll(2) when it is empty; the writer fills TX frames and kicks the kernel
// with one sendto(fd, NULL, 0, MSG_DONTWAIT) per batch. On the project's
// 2-vCPU VM this measured about 1 Mpps per core, 3x a syscall-per-frame loop
// (shared/docs/PACKET-IO.md §3, §6).
//
// # Layout and sizes
//
// A ring is FrameCount fixed-size frame slots grouped in blocks. Blocks must
// be a multiple of the page size; frames a multiple of 16 bytes
// (TPACKET_ALIGNMENT) and never straddle a block, so FrameCount is rounded up
// to whole blocks. Defaults: 2048-byte frames, 64 KiB blocks, 2048 frames,
// i.e. 4 MiB per ring. Every slot starts with the 32-byte tpacket2_hdr
// (status, len, snaplen, mac, net, timestamp, VLAN TCI/TPID).
//
//   - RX: the kernel writes the frame at tp_mac, which for an Ethernet frame
//     on a SOCK_RAW socket is 66 bytes into the slot, so a 2048-byte slot
//     holds up to 1982 bytes of frame: a 1500-MTU frame fits whole. Longer
//     frames (GRO/LRO/TSO super-frames, jumbo MTUs) are truncated: the
//     returned frame is shorter than [Meta.Len] ([Meta.Truncated]). Use
//     4096-byte frames (or larger) for jumbo MTUs.
//   - TX: frame data starts 32 bytes into the slot (TPACKET_ALIGN of
//     tpacket2_hdr). The socket sets PACKET_TX_HAS_OFF, so a frame may also
//     start further in ([TX.CommitAt]); [TX.Slot] hands out FrameSize-32
//     writable bytes. The kernel refuses frames longer than the device
//     MTU + 14 (+4 when the frame carries an 802.1Q tag); [TX.MaxFrame]
//     reports that limit as sampled when the ring was opened.
//
// # Headroom for encapsulation
//
// Forwarding always copies: the frame read from an RX ring is rewritten
// while it is copied into a TX slot (the RX slot must be returned to the
// kernel quickly, and the two rings belong to different sockets). The copy
// makes headroom free: to add an IPIP header, copy the received frame to
// slot[20:] and write the new Ethernet header and the 20-byte outer IPv4
// header into slot[0:34] (over the old Ethernet header); commit
// len(frame)+20. A caller that prefers to copy to a fixed offset first and
// decide later can copy to slot[H:] and commit (H, n) or (H-20, n+20) with
// [TX.CommitAt].
//
// # Status bits (RX)
//
// [Meta.Status] is the slot's tp_status:
//
//   - [StatusCsumNotReady]: the frame came from a local or virtual sender
//     with CHECKSUM_PARTIAL; its L4 checksum field only holds the
//     pseudo-header sum. Do not verify it and do not update it
//     incrementally: compute the full L4 checksum before forwarding.
//   - [StatusCsumValid]: the device (or the kernel) validated the L4
//     checksum.
//   - [StatusLosing]: the ring dropped frames since the last statistics read
//     (the consumer is too slow or the ring too small); see [RX.Stats].
//   - [StatusCopy]: set only with PACKET_COPY_THRESH (not used here); a
//     truncated frame is detected with [Meta.Truncated] (snaplen < len).
//   - [StatusVLANValid] / [StatusVLANTPIDValid]: see below.
//   - [StatusGSOTCP]: the frame is a TCP GSO super-frame.
//
// # VLAN tags
//
// The kernel removes the outermost 802.1Q/802.1ad tag of every received
// frame before AF_PACKET sees it (skb_vlan_untag in the receive path, or the
// NIC's VLAN offload). An RX frame therefore never carries its outer tag:
// bytes 12-13 hold the inner EtherType (0x0800 for IPv4), [Meta.Len] and the
// frame exclude the 4 tag bytes, and the tag is reported in [Meta.VLANTCI]
// and [Meta.VLANTPID] with [StatusVLANValid] (see [Meta.VLAN]). Only the
// outermost tag is removed: in a QinQ frame the inner tag stays in the
// data. The cBPF filter sees the same untagged data; [Filter] also accepts
// frames that still carry one tag in the data. To forward a frame onto a
// VLAN, the caller writes the tag into the TX frame itself.
//
// # Concurrency
//
// An [RX] or [TX] is owned by one goroutine (a worker, normally on a locked
// OS thread): Next, Release, Recv, Wait, Slot, Commit, Flush are not safe for
// concurrent use. Stats, Fd and Ifindex may be called from any goroutine.
// Close must not run concurrently with the owner's calls: stop the worker
// first (a worker blocked in Wait wakes at its timeout; use finite timeouts,
// e.g. 100 ms, and check a stop flag).
//
// # Kernel coexistence
//
// Sockets are created with protocol 0 and only bound to ETH_P_ALL (RX) after
// the filter and the ring are set up, so no unfiltered frame is ever queued.
// RX sockets ignore outgoing frames by default (PACKET_IGNORE_OUTGOING, and
// PACKET_FANOUT_FLAG_IGNORE_OUTGOING for fanout groups, whose hook replaces
// the socket's) so they do not see frames sent on the same interface (by
// gvsd or anyone else). TX sockets stay bound
// with protocol 0 and therefore receive nothing. AF_PACKET hands over a copy:
// keeping the kernel from answering VIP traffic itself is the job of the
// nftables netdev-ingress drop (forwarder/kernel).
package ring
