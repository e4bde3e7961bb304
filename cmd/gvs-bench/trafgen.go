package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// udpStream describes the benchmark traffic: UDP frames from one client to
// the VIP over many flows (a range of source ports), as a trafgen packet
// configuration.
type udpStream struct {
	SrcMAC, DstMAC net.HardwareAddr
	Src, Dst       netip.Addr
	// PortLo..PortHi are the source ports, incremented per frame (one flow
	// each).
	PortLo, PortHi uint16
	DstPort        uint16
	// FrameLen is the Ethernet frame length without the 4-byte FCS
	// (60 for a 64-byte frame on the wire); at least 42.
	FrameLen int
}

// headerLen is Ethernet + IPv4 + UDP.
const headerLen = 14 + 20 + 8

// trafgenConfig renders the stream in trafgen's packet language. trafgen
// fills in the IPv4 and UDP lengths and checksums, recomputing the UDP
// checksum for every source port.
func (s udpStream) trafgenConfig() (string, error) {
	switch {
	case len(s.SrcMAC) != 6 || len(s.DstMAC) != 6:
		return "", fmt.Errorf("trafgen: MACs must have 6 bytes")
	case !s.Src.Is4() || !s.Dst.Is4():
		return "", fmt.Errorf("trafgen: addresses must be IPv4")
	case s.PortLo == 0 || s.PortHi < s.PortLo:
		return "", fmt.Errorf("trafgen: bad source port range %d-%d", s.PortLo, s.PortHi)
	case s.FrameLen < headerLen || s.FrameLen > 1514:
		return "", fmt.Errorf("trafgen: frame length %d out of range %d..1514", s.FrameLen, headerLen)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "{ eth(da=%s, sa=%s), ipv4(sa=%s, da=%s, ttl=64, df), udp(sp=dinc(%d, %d), dp=%d)",
		s.DstMAC, s.SrcMAC, s.Src, s.Dst, s.PortLo, s.PortHi, s.DstPort)
	if pad := s.FrameLen - headerLen; pad > 0 {
		fmt.Fprintf(&b, ", fill(0x61, %d)", pad)
	}
	b.WriteString(" }\n")
	return b.String(), nil
}

// trafgenArgs is the trafgen command line on dev: one process (the caller
// pins it with taskset), no socket-memory or IRQ tuning (the namespace
// cannot and the host must not be touched), rate 0 = as fast as possible,
// count 0 = until stopped. trafgen prints its sending time per CPU at the
// end (see parseTrafgenTime).
func trafgenArgs(cfgFile, dev string, rate float64, count uint64) []string {
	a := []string{"-i", cfgFile, "-o", dev, "-P", "1", "-q", "-Q"}
	if rate > 0 {
		a = append(a, "-b", fmt.Sprintf("%dpps", int64(rate)))
	}
	if count > 0 {
		a = append(a, "-n", fmt.Sprint(count))
	}
	return a
}

// parseTrafgenTime reads the time trafgen spent sending from its closing
// statistics ("  2 sec, 3512 usec on CPU0 (400000 packets)"); with several
// CPUs the longest counts. ok is false when no such line was printed.
func parseTrafgenTime(out string) (d time.Duration, ok bool) {
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		// N sec, M usec on CPUk (P packets)
		if len(f) < 6 || f[1] != "sec," || f[3] != "usec" || f[4] != "on" || !strings.HasPrefix(f[5], "CPU") {
			continue
		}
		sec, err1 := strconv.ParseUint(f[0], 10, 32)
		usec, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		v := time.Duration(sec)*time.Second + time.Duration(usec)*time.Microsecond
		if v > d {
			d = v
		}
		ok = true
	}
	return d, ok
}
