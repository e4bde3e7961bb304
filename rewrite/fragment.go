package rewrite

import "encoding/binary"

// Fragmentation of an outgoing IPv4 packet, as the kernel's ip_do_fragment
// (net/ipv4/ip_output.c, the slow path for a linear packet) cuts one that
// is larger than the egress MTU.

// MaxFragments bounds the fragments Fragment writes for one packet.
const MaxFragments = 64

// FragmentBufLen is a dst size that holds the fragments of any packet
// Fragment accepts: the packet itself plus a link and IP header for every
// further fragment.
const FragmentBufLen = 0x10000 + MaxFragments*(EthernetLen+VLANLen+IPv4MaxLen)

// Fragment writes the IPv4 packet of frame (a link header of l2 bytes, then
// the packet, its header and total length final, up to its total length)
// as fragments of at most mtu bytes of IP packet each, every one behind a
// copy of the link header, one after the other into dst; frags[:n] are
// the fragment frames. Like ip_do_fragment: every fragment but the last
// carries a multiple of 8 payload bytes and MF; the offsets continue the
// packet's own (a fragment is fragmented further) and the last keeps the
// packet's MF; every fragment has the packet's header length, ID, TOS, TTL
// and addresses, and DF clear (IPVS sends with ignore_df; the kernel keeps
// DF only for a reassembled packet whose fragments had it); fragments after
// the first carry only the options whose "copied" flag is set, the others
// overwritten with NOOP (ip_options_fragment).
//
// It returns false, writing nothing usable, when mtu leaves fewer than 8
// payload bytes per fragment, more than len(frags) fragments would be
// needed, or dst is too small (FragmentBufLen always suffices).
func Fragment(dst, frame []byte, l2, mtu int, frags [][]byte) (int, bool) {
	return FragmentDF(dst, frame, l2, mtu, frags, false)
}

// FragmentDF is Fragment, with DF set on every fragment when df is true:
// the kernel's ip_do_fragment keeps DF on the fragments of a reassembled
// datagram whose largest fragment had it (IPSKB_FRAG_PMTU).
func FragmentDF(dst, frame []byte, l2, mtu int, frags [][]byte, df bool) (int, bool) {
	if len(frame) < l2+IPv4MinLen {
		return 0, false
	}
	ip := IPv4(frame[l2:])
	hlen := ip.HeaderLen()
	total := int(binary.BigEndian.Uint16(ip[ipTotalLen:]))
	if hlen < IPv4MinLen || total < hlen || l2+total > len(frame) {
		return 0, false
	}
	room := (mtu - hlen) &^ 7
	if room < 8 {
		return 0, false
	}
	left := total - hlen
	if n := (left + room - 1) / room; n > len(frags) || n*(l2+hlen)+left > len(dst) {
		return 0, false
	}
	off := int(ip.FragOff()) * 8
	lastMF := ip.MF()
	data := frame[l2+hlen : l2+total]
	n, at := 0, 0
	for left > 0 {
		size := min(left, mtu-hlen)
		if size < left {
			size &^= 7
		}
		f := dst[at : at+l2+hlen+size]
		copy(f, frame[:l2+hlen])
		copy(f[l2+hlen:], data[:size])
		h := IPv4(f[l2 : l2+hlen])
		fo := uint16(off / 8)
		if size < left || lastMF {
			fo |= ipFlagMF
		}
		if df {
			fo |= ipFlagDF
		}
		binary.BigEndian.PutUint16(h[ipFrag:], fo)
		binary.BigEndian.PutUint16(h[ipTotalLen:], uint16(hlen+size))
		if n > 0 {
			fragmentOptions(h[IPv4MinLen:hlen])
		}
		h.FixChecksum()
		frags[n] = f
		n++
		at += len(f)
		off += size
		data = data[size:]
		left -= size
	}
	return n, true
}

// fragmentOptions overwrites the options not to be copied into fragments
// after the first with NOOP, as ip_options_fragment does.
func fragmentOptions(opts []byte) {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0: // end of options
			return
		case 1: // NOOP
			i++
			continue
		}
		if i+1 >= len(opts) {
			return
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return
		}
		if opts[i]&0x80 == 0 {
			for j := i; j < i+l; j++ {
				opts[j] = 1
			}
		}
		i += l
	}
}

// ClearDF clears the DF flag of an IPv4 header, updating its checksum.
func ClearDF(ip IPv4) {
	if !ip.DF() {
		return
	}
	ip[ipFrag] &^= ipFlagDF >> 8
	ip.FixChecksum()
}
