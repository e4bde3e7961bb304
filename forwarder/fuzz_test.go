package forwarder_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/conntrack"
	"gvs/control"
	"gvs/forwarder"
	"gvs/forwarder/replay"
	"gvs/forwarder/staticenv"
	"gvs/internal/frames"
	"gvs/ipvs"

	"gvs/internal/oracle"
)

// FuzzProcess drives ONE pipeline, with a small connection table, through a
// sequence of steps decoded from the fuzz input: frames from a small grammar
// (valid TCP/UDP/ICMP/IPIP-quoting frames built with internal/frames, then
// mutated), arrival links, time passing, CHECKSUM_PARTIAL input, and control
// changes through control.Engine (real server deletes and adds, --set,
// sysctls, restores). The same sequence runs through a second, independent
// pipeline. Oracles, checked with internal/oracle's RFC 1071 sum (not package checksum):
//
//   - every transmitted or replied frame has a valid IPv4 header checksum, an
//     IP total length equal to the frame's IP part, and valid TCP/UDP/ICMP
//     checksums when the input's were valid (or partial); a forwarded frame
//     whose input L4 checksum was wrong still carries a wrong one (no
//     laundering);
//   - a forwarded frame's TTL is the input's minus one (IPIP: the inner
//     header's; the outer TTL is the inner's); a reply has TTL 64;
//   - a NAT frame's addresses and ports are those of a connection of the
//     table (ipvsadm -Lnc), DR and TUN leave the IP packet alone but for
//     the TTL;
//   - after every step: Len equals the number of entries Walk lists, Len
//     never exceeds Capacity, every real server's ActiveConn, InActConn and
//     PersistConn equal a recount over the entries;
//   - both pipelines give byte-identical frames, identical verdicts and
//     identical tables.
func FuzzProcess(f *testing.F) {
	for _, s := range fuzzProcessSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 2048 {
			data = data[:2048]
		}
		runProcessFuzz(t, data, nil)
	})
}

// fuzzProcessSeeds are hand-written step sequences. The first byte sets
// the table's capacity (2 + b%31); then each step starts with an op byte:
//
//	op%16 < 10: a frame: kind client cport flags ttl rs misc nmut [pos val]... dt
//	            (kind%8: 0 client->VIP TCP to port [80 81 82 83 84][cport%8%5],
//	            1 real server->client TCP, 2 client->VIP UDP :53/:54,
//	            3 UDP reply, 4 ICMP error to the VIP, 5 ICMP error from a real
//	            server, 6 echo request, 7 frag needed about an IPIP packet;
//	            misc bits: 0 other link, 1 csumPartial, 2 fix the IP checksum
//	            after the mutations, 3 fix the L4 checksum; dt in 10 ms)
//	10, 11: time passes (seconds; 11 also runs the housekeeping Expire)
//	12: a control command (fuzzControl), 13: --set a b c, else: a sysctl.
func fuzzProcessSeeds() [][]byte {
	nat := []byte{30,
		0, 0, 0, 0, tcpSYN, 0, 0, 0, 0, 1, // SYN to :80 (NAT), to rs2 (rr)
		1, 1, 0, 0, tcpSYN | tcpACK, 0, 1, 0, 0, 1, // SYN/ACK from rs2
		2, 0, 0, 0, tcpACK, 0, 0, 0, 0, 1, // ACK
		3, 0, 0, 0, tcpFIN | tcpACK, 0, 0, 2, 0, 1, // FIN, partial
		4, 1, 0, 0, tcpFIN | tcpACK, 0, 1, 0, 0, 1, // FIN from rs2
		1, 1, 0, 0, tcpACK | 0x60, 0, 1, 2, 0, 1, // reply with payload, partial
		0, 4, 0, 0, 0, 0, 0, 0, 0, 1, // ICMP error to the VIP about a NAT reply
		0, 5, 0, 0, 0, 0, 1, 0, 0, 1, // ICMP error from rs2 about a NAT packet
		0, 5, 0, 0, 0, 1, 1, 0, 0, 1, // the same with TTL 1
		10, 200, // two hundred seconds later
		0, 0, 1, 0, tcpSYN, 0, 0, 0, 2, 40, 0x55, 41, 1, 1, // mutated SYN
		0, 0, 1, 0, tcpSYN, 0, 0, 12, 2, 40, 0x55, 41, 1, 1, // mutated SYN, checksums fixed
		0, 0, 1, 0, tcpSYN, 0, 0, 4, 1, 16, 0x00, 1, // total length mutated, IP checksum fixed
	}
	methods := []byte{30,
		0, 0, 0, 1, tcpSYN, 0, 0, 0, 0, 1, // :81 (DR)
		0, 0, 1, 1, tcpSYN, 1, 0, 0, 0, 1, // TTL 1 -> time exceeded
		0, 6, 0, 0, 0, 0, 0, 0, 0, 1, // echo
		0, 2, 0, 0, 0, 0, 0, 0, 0, 1, // UDP to :53
		0, 3, 0, 0, 0, 0, 0, 0, 0, 1, // UDP reply
		0, 2, 0, 0, 0x80, 0, 0, 0, 0, 1, // UDP to :53 without checksum
		0, 2, 1, 0, 0, 0, 1, 2, 0, 1, // UDP to :54 (persistent), partial
		0, 4, 0, 0, 0, 0, 0, 0, 0, 1, // ICMP error to the VIP about a reply
		0, 5, 0, 0, 0, 0, 1, 0, 0, 1, // ICMP error from rs2 about a NAT packet
		0, 0, 2, 2, tcpSYN, 0, 0, 0, 0, 1, // :82 TUN
		0, 0, 2, 2, tcpACK | 0xe0, 0, 0, 2, 0, 1, // :82 TUN, payload, partial
		0, 7, 2, 2, 0, 0, 9, 0, 0, 1, // frag needed about an IPIP packet
		0, 7, 2, 2, 0x40, 0, 9, 0, 0, 1, // the same without DF
		0, 4, 0, 1, 0, 0, 1, 0, 0, 1, // ICMP error to the VIP about a DR packet
		0, 0, 3, 3, tcpSYN, 0, 0, 0, 0, 1, // :83 persistent NAT
		0, 0, 3, 3, tcpACK, 0, 0, 0, 0, 1,
		0, 0, 3, 3, tcpSYN, 0, 0, 0, 0, 1, // another client port, same template
		0, 0, 0, 4, tcpSYN, 0, 0, 0, 0, 1, // :84: no service
		0, 0, 0, 0, tcpACK, 0, 0, 0, 0, 1, // no connection: RST
	}
	control := []byte{30,
		0, 0, 0, 0, tcpSYN, 0, 0, 0, 0, 1,
		12, 0, // delete rs1 from :80
		0, 0, 0, 0, tcpACK, 0, 0, 0, 0, 1,
		14, 1, // expire_nodest_conn=1
		0, 0, 0, 0, tcpACK, 0, 0, 0, 0, 1,
		12, 1, // re-add rs1
		13, 3, 2, 1, // --set 3 2 1
		14, 2, // secure_tcp=3
		0, 0, 1, 0, tcpSYN, 0, 0, 0, 0, 1,
		0, 0, 1, 0, tcpACK, 0, 0, 0, 0, 1,
		10, 5, 11, 1,
		12, 5, // restore
		0, 0, 1, 0, tcpSYN, 0, 0, 0, 0, 1,
		0, 0, 1, 3, tcpSYN, 0, 0, 0, 0, 1,
		12, 4, // delete a persistent real server
		0, 0, 1, 3, tcpACK, 0, 0, 0, 0, 1,
		14, 4, 0, 0, 1, 0, tcpSYN, 0, 0, 0, 0, 1, // conn_reuse_mode=0
	}
	full := []byte{2} // fill a 4-entry table, then let it expire
	for i := 0; i < 12; i++ {
		full = append(full, 0, 0, byte(i), byte(i), tcpSYN, 0, 0, 0, 0, 1)
	}
	full = append(full, 11, 255, 0, 0, 0, 0, tcpSYN, 0, 0, 0, 0, 1)
	return [][]byte{nat, methods, control, full, {}}
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// fuzzRules: NAT :80 (two real servers), DR :81, TUN :82, persistent NAT
// :83, UDP NAT :53 and persistent UDP :54.
const fuzzRules = twoNAT +
	"-A -t 198.51.100.10:81 -s rr\n-a -t 198.51.100.10:81 -r 198.18.2.11:81 -g\n" +
	"-A -t 198.51.100.10:82 -s rr\n-a -t 198.51.100.10:82 -r 198.18.2.11:82 -i\n" +
	"-A -t 198.51.100.10:83 -s rr -p 60\n-a -t 198.51.100.10:83 -r 198.18.2.11:83 -m\n-a -t 198.51.100.10:83 -r 198.18.2.12:83 -m\n" +
	"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m\n" +
	"-A -u 198.51.100.10:54 -s wlc -p 30\n-a -u 198.51.100.10:54 -r 198.18.2.12:54 -m\n"

// fuzzT is what the oracles need of a *testing.T (a recorder in
// TestFuzzProcessOraclesFail).
type fuzzT interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// fuzzTrace (GVS_FUZZ_TRACE=1) logs every step's verdict.
var fuzzTrace = os.Getenv("GVS_FUZZ_TRACE") != ""

// fuzzPipe is one pipeline with its state and clock.
type fuzzPipe struct {
	table *ipvs.Table
	conns *conntrack.Table
	eng   *control.Engine
	w     *forwarder.Worker
	buf   []byte
	now   int64
	dests map[*ipvs.Dest]bool // every destination ever seen
}

func newFuzzPipe(t fuzzT, capacity int) *fuzzPipe {
	table, err := replay.ParseRules(strings.NewReader(fuzzRules), "rules")
	if err != nil {
		t.Fatal(err)
	}
	env, err := staticenv.New(staticenv.DefaultFacts())
	if err != nil {
		t.Fatal(err)
	}
	conns := conntrack.New(conntrack.Config{Seed: 7, Shards: 2, Capacity: capacity})
	set := ipvs.NewSettings()
	control.BindSettings(set, conns, table)
	p := &fuzzPipe{table: table, conns: conns, buf: make([]byte, 4096), now: int64(time.Hour), dests: map[*ipvs.Dest]bool{}}
	p.eng = control.NewEngine(table, conns, func() int64 { return p.now })
	p.eng.Settings = set
	p.w = forwarder.New(forwarder.Config{Env: env, Services: table, Conns: conns, Settings: set}).NewWorker()
	return p
}

// fuzzReader hands out the input's bytes, zeros once it is used up.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) next() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// fuzzInput is one frame step, decoded.
type fuzzInput struct {
	frame   []byte
	link    int
	partial bool
}

var (
	fuzzClients = []netip.Addr{client, netip.MustParseAddr("198.18.1.12"), netip.MustParseAddr("198.18.1.13"), netip.MustParseAddr("198.18.1.14")}
	fuzzRS      = []netip.AddrPort{netip.MustParseAddrPort("198.18.2.11:8080"), netip.MustParseAddrPort("198.18.2.12:8080"),
		netip.MustParseAddrPort("198.18.2.11:83"), netip.MustParseAddrPort("198.18.2.12:83")}
	fuzzPorts   = []uint16{80, 81, 82, 83, 84}
	fuzzUDPRS   = []netip.AddrPort{netip.MustParseAddrPort("198.18.2.11:53"), netip.MustParseAddrPort("198.18.2.12:54")}
	fuzzRouter  = netip.MustParseAddr("198.18.1.254")
	vipSideMAC  = frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))
	dipSideMAC  = frames.DerivedMAC(dip)
	fuzzTTLs    = []uint8{64, 1, 2, 255}
	fuzzControl = []string{
		"-d -t 198.51.100.10:80 -r 198.18.2.11:8080",
		"-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1",
		"-e -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 0",
		"-e -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 3",
		"-d -t 198.51.100.10:83 -r 198.18.2.11:83",
		"", // restore the rules (ipvsadm-restore)
		"-D -u 198.51.100.10:54",
		"-A -u 198.51.100.10:54 -s rr -p 5",
		"-a -u 198.51.100.10:54 -r 198.18.2.12:54 -m",
		"-E -t 198.51.100.10:80 -s wlc",
		"-Z",
		"-d -t 198.51.100.10:82 -r 198.18.2.11:82",
	}
	fuzzSysctls = []string{
		"expire_nodest_conn=0", "expire_nodest_conn=1", "secure_tcp=3", "secure_tcp=0",
		"conn_reuse_mode=0", "conn_reuse_mode=1", "conn_reuse_mode=2", "sloppy_tcp=1", "sloppy_tcp=0",
		"expire_quiescent_template=1", "expire_quiescent_template=0", "nat_icmp_send=1",
	}
)

// buildFrame makes the frame of a frame step.
func buildFrame(r *fuzzReader) fuzzInput {
	kind := r.next() % 8
	c := fuzzClients[r.next()%4]
	cport := 1000 + uint16(r.next()%8)
	flags := r.next()
	ttlSel := r.next()
	ttl := fuzzTTLs[ttlSel%4]
	if ttlSel >= 4 && ttlSel < 8 {
		ttl = ttlSel // 4..7
	}
	rsSel := r.next()
	misc := r.next()
	vipL2 := frames.L2{Src: frames.DerivedMAC(c), Dst: vipSideMAC}
	seg := func(sp, dp uint16) frames.TCPSeg {
		return frames.TCPSeg{SrcPort: sp, DstPort: dp, Seq: 1 + uint32(flags)<<8, Ack: 77,
			SYN: flags&tcpSYN != 0, ACK: flags&tcpACK != 0, FIN: flags&tcpFIN != 0, RST: flags&tcpRST != 0,
			PSH: flags&0x08 != 0, Payload: bytes.Repeat([]byte{flags}, int(flags>>5))}
	}
	in := fuzzInput{link: forwarder.VIPSide}
	switch kind {
	case 0: // client -> VIP, TCP
		port := fuzzPorts[int(cport-1000)%len(fuzzPorts)]
		in.frame = frames.TCP(vipL2, frames.IP{Src: c, Dst: vip, TTL: ttl, DF: flags&0x40 != 0, ID: uint16(cport)}, seg(cport, port))
	case 1: // real server -> client, TCP
		rs := fuzzRS[rsSel%4]
		in.frame = frames.TCP(frames.L2{Src: frames.DerivedMAC(rs.Addr()), Dst: dipSideMAC},
			frames.IP{Src: rs.Addr(), Dst: c, TTL: ttl}, seg(rs.Port(), cport))
		in.link = forwarder.DIPSide
	case 2: // client -> VIP, UDP
		in.frame = frames.UDP(vipL2, frames.IP{Src: c, Dst: vip, TTL: ttl},
			frames.UDPDgram{SrcPort: cport, DstPort: 53 + uint16(rsSel%2), Payload: []byte("query"), NoChecksum: flags&0x80 != 0})
	case 3: // real server -> client, UDP
		rs := fuzzUDPRS[rsSel%2]
		in.frame = frames.UDP(frames.L2{Src: frames.DerivedMAC(rs.Addr()), Dst: dipSideMAC}, frames.IP{Src: rs.Addr(), Dst: c, TTL: ttl},
			frames.UDPDgram{SrcPort: rs.Port(), DstPort: cport, Payload: []byte("answer"), NoChecksum: flags&0x80 != 0})
		in.link = forwarder.DIPSide
	case 4: // router -> VIP: an ICMP error about a VIP -> client packet
		about := frames.TCP(frames.L2{}, frames.IP{Src: vip, Dst: c}, seg(fuzzPorts[rsSel%5], cport))
		if flags&0x80 != 0 {
			about = frames.UDP(frames.L2{}, frames.IP{Src: vip, Dst: c}, frames.UDPDgram{SrcPort: 53, DstPort: cport})
		}
		in.frame = frames.ICMPError(vipL2, frames.IP{Src: fuzzRouter, Dst: vip, TTL: ttl}, 3, flags&0x0f, 1400, about)
	case 5: // real server -> client: an ICMP error about a client -> real server packet
		rs := fuzzRS[rsSel%4]
		about := frames.TCP(frames.L2{}, frames.IP{Src: c, Dst: rs.Addr()}, seg(cport, rs.Port()))
		if flags&0x80 != 0 {
			rs = fuzzUDPRS[rsSel%2]
			about = frames.UDP(frames.L2{}, frames.IP{Src: c, Dst: rs.Addr()}, frames.UDPDgram{SrcPort: cport, DstPort: rs.Port()})
		}
		in.frame = frames.ICMPError(frames.L2{Src: frames.DerivedMAC(rs.Addr()), Dst: dipSideMAC},
			frames.IP{Src: rs.Addr(), Dst: c, TTL: ttl}, 3, flags&0x0f, 1400, about)
		in.link = forwarder.DIPSide
	case 6: // client -> VIP, echo request
		in.frame = frames.ICMPEcho(vipL2, frames.IP{Src: c, Dst: vip, TTL: ttl}, cport, uint16(flags))
	case 7: // real server -> DIP: fragmentation needed about an IPIP packet
		rs := netip.MustParseAddr("198.18.2.11")
		inner := frames.TCP(frames.L2{}, frames.IP{Src: c, Dst: vip, TTL: 63, DF: flags&0x40 == 0}, seg(cport, 82))
		in.frame = tunFragNeeded(rs, ttl, 1300+uint16(flags), ipip(dip, rs, inner[14:])[14:], int(rsSel))
		in.link = forwarder.DIPSide
	}
	if misc&1 != 0 {
		in.link ^= forwarder.VIPSide ^ forwarder.DIPSide
	}
	if misc&2 != 0 && (kind <= 3) {
		in.partial = makePartial(in.frame)
	}
	nmut := int(r.next() % 4)
	for i := 0; i < nmut; i++ {
		pos, val := int(r.next()), r.next()
		if len(in.frame) > 0 {
			in.frame[pos%len(in.frame)] = val
		}
	}
	if nmut > 0 && misc&4 != 0 {
		fixIPChecksum(in.frame)
	}
	if nmut > 0 && misc&8 != 0 && !in.partial {
		fixL4Checksum(in.frame)
	}
	return in
}

// tunFragNeeded is a fragmentation-needed error from the real server rs to
// the director quoting the IPIP packet quote, with 40+extra%32 bytes of
// the quote (a router quotes as much as it likes, RFC 1812 4.3.2.3).
func tunFragNeeded(rs netip.Addr, ttl uint8, mtu uint16, quote []byte, extra int) []byte {
	quote = quote[:min(len(quote), 40+extra%32)]
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{EthernetType: layers.EthernetTypeIPv4, SrcMAC: frames.DerivedMAC(rs).HW(), DstMAC: dipSideMAC.HW()}
	ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocolICMPv4, SrcIP: rs.AsSlice(), DstIP: dip.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: mtu}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, icmp, gopacket.Payload(quote)); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ipip wraps an IPv4 packet in an outer IPv4 header (protocol 4), as an
// Ethernet frame with a zero L2 header.
func ipip(src, dst netip.Addr, inner []byte) []byte {
	buf := gopacket.NewSerializeBuffer()
	outer := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Flags: layers.IPv4DontFragment}
	eth := &layers.Ethernet{EthernetType: layers.EthernetTypeIPv4, SrcMAC: make([]byte, 6), DstMAC: make([]byte, 6)}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, outer, gopacket.Payload(inner)); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// runProcessFuzz runs the step sequence in data through two pipelines;
// fault, when set, may corrupt a transmitted frame before the oracles look
// at it (to show that they can fail).
func runProcessFuzz(t fuzzT, data []byte, fault func(step int, out []byte)) {
	r := &fuzzReader{b: data}
	capacity := 2 + int(r.next()%31)
	a, b := newFuzzPipe(t, capacity), newFuzzPipe(t, capacity)
	pipes := []*fuzzPipe{a, b}
	for step := 0; len(r.b) > 0; step++ {
		op := r.next() % 16
		switch {
		case op < 10:
			in := buildFrame(r)
			dt := int64(r.next()) * int64(10*time.Millisecond)
			var res [2]forwarder.Result
			var outs [2][]byte
			for i, p := range pipes {
				p.now += dt
				inCopy := slices.Clone(in.frame)
				n := copy(p.buf[forwarder.Headroom:], in.frame)
				res[i] = p.w.Process(p.buf, forwarder.Headroom, n, in.link, in.partial, p.now)
				if res[i].Action == forwarder.Transmit || res[i].Action == forwarder.Reply {
					outs[i] = slices.Clone(res[i].Frame)
					if fault != nil && i == 0 {
						fault(step, outs[i])
					}
					checkOutput(t, step, p, inCopy, in, &res[i], outs[i])
				}
			}
			if fuzzTrace {
				t.Logf("step %d: link %d partial %v: %s", step, in.link, in.partial, verdictString(&res[0]))
			}
			if v0, v1 := verdictString(&res[0]), verdictString(&res[1]); v0 != v1 || !bytes.Equal(outs[0], outs[1]) {
				t.Fatalf("step %d: two pipelines differ: %s %x / %s %x", step, v0, outs[0], v1, outs[1])
			}
		case op < 12:
			secs := int64(r.next())
			for _, p := range pipes {
				p.now += secs * int64(time.Second)
				if op == 11 {
					p.conns.Expire(p.now) // housekeeping
				}
			}
		case op < 14:
			var argv []string
			var stdin string
			sel := int(r.next())
			if op == 13 {
				argv = []string{"ipvsadm", "--set", fmt.Sprint(r.next()), fmt.Sprint(r.next()), fmt.Sprint(r.next())}
			} else if cmd := fuzzControl[sel%len(fuzzControl)]; cmd == "" {
				argv, stdin = []string{"ipvsadm-restore"}, fuzzRules
			} else {
				argv = append([]string{"ipvsadm"}, strings.Fields(cmd)...)
			}
			runBoth(t, step, pipes, argv, stdin)
		default:
			argv := []string{"ipvsadm", "--sysctl", fuzzSysctls[int(r.next())%len(fuzzSysctls)]}
			runBoth(t, step, pipes, argv, "")
		}
		var lists [2]string
		for i, p := range pipes {
			lists[i] = checkTable(t, step, p)
		}
		if lists[0] != lists[1] {
			t.Fatalf("step %d: the tables differ:\n%s\n--\n%s", step, lists[0], lists[1])
		}
	}
}

func runBoth(t fuzzT, step int, pipes []*fuzzPipe, argv []string, stdin string) {
	var outs [2]string
	for i, p := range pipes {
		var o, e bytes.Buffer
		code := p.eng.Run(argv, strings.NewReader(stdin), control.Cred{}, &o, &e)
		outs[i] = fmt.Sprintf("%d %s %s", code, o.String(), e.String())
	}
	if outs[0] != outs[1] {
		t.Fatalf("step %d: %q: %s / %s", step, argv, outs[0], outs[1])
	}
}

func verdictString(r *forwarder.Result) string {
	d := "-"
	if r.Dest != nil {
		d = r.Dest.AddrPort().String()
	}
	return fmt.Sprintf("%v/%v link %d dest %s state %v method %v new %v out %v", r.Action, r.Reason, r.Link, d, r.State, r.Method, r.New, r.Out)
}

// checkTable checks the table invariants and returns its listing.
func checkTable(t fuzzT, step int, p *fuzzPipe) string {
	t.Helper()
	type count struct{ active, inact, persist int32 }
	counts := map[*ipvs.Dest]*count{}
	var list []string
	n := 0
	p.conns.Walk(p.now, func(c *conntrack.Conn) {
		n++
		p.dests[c.Dest] = true
		k := counts[c.Dest]
		if k == nil {
			k = &count{}
			counts[c.Dest] = k
		}
		switch {
		case c.Flags&conntrack.FlagTemplate != 0:
			k.persist++
		case c.Flags&conntrack.FlagInactive != 0:
			k.inact++
		default:
			k.active++
		}
		if c.Expires <= p.now {
			t.Fatalf("step %d: Walk lists an entry past its expiry: %+v", step, *c)
		}
		list = append(list, fmt.Sprintf("%v %v:%d %v:%d %v:%d %s %d %v %d", c.Proto, c.CAddr, c.CPort, c.VAddr, c.VPort,
			c.DAddr, c.DPort, c.StateName(), c.Expires, c.Flags, c.NControl))
	})
	if l := p.conns.Len(); l != n {
		t.Fatalf("step %d: Len %d, Walk lists %d", step, l, n)
	}
	if n > p.conns.Capacity() {
		t.Fatalf("step %d: %d entries, capacity %d", step, n, p.conns.Capacity())
	}
	p.table.Read(func(svcs []*ipvs.Service) {
		for _, s := range svcs {
			for _, d := range s.Dests() {
				p.dests[d] = true
			}
		}
	})
	for d := range p.dests {
		k := counts[d]
		if k == nil {
			k = &count{}
		}
		if a, i, ps := d.ActiveConns.Load(), d.InactConns.Load(), d.PersistConns.Load(); a != k.active || i != k.inact || ps != k.persist {
			t.Fatalf("step %d: %v ActiveConn/InActConn/PersistConn %d/%d/%d, recount %d/%d/%d\n%s", step, d.AddrPort(),
				a, i, ps, k.active, k.inact, k.persist, strings.Join(list, "\n"))
		}
	}
	slices.Sort(list)
	return strings.Join(list, "\n")
}

// pkt is an IPv4 packet as the oracles see it.
type pkt struct {
	l2      int
	ip      []byte // the IP header and payload, by the frame's length
	ihl     int
	total   int
	proto   uint8
	ttl     uint8
	frag    bool
	ipValid bool
}

func parsePkt(frame []byte) (pkt, bool) {
	var p pkt
	if len(frame) < 14 {
		return p, false
	}
	p.l2 = 14
	if binary.BigEndian.Uint16(frame[12:]) == 0x8100 {
		p.l2 = 18
	}
	if len(frame) < p.l2+20 || binary.BigEndian.Uint16(frame[p.l2-2:]) != 0x0800 {
		return p, false
	}
	return p, p.parseIP(frame[p.l2:])
}

func (p *pkt) parseIP(ip []byte) bool {
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return false
	}
	p.ip, p.ihl = ip, int(ip[0]&0x0f)*4
	p.total = int(binary.BigEndian.Uint16(ip[2:]))
	p.proto, p.ttl = ip[9], ip[8]
	p.frag = binary.BigEndian.Uint16(ip[6:])&0x3fff != 0
	if p.ihl < 20 || p.ihl > len(ip) {
		return false
	}
	p.ipValid = oracle.Sum1071(ip[:p.ihl], 0) == 0xffff
	return true
}

// l4 is the transport part by the IP total length (nil if it does not fit).
func (p *pkt) l4() []byte {
	if p.total < p.ihl || p.total > len(p.ip) {
		return nil
	}
	return p.ip[p.ihl:p.total]
}

// l4Valid reports whether the transport checksum is right (fragments and
// protocols without one count as right).
func (p *pkt) l4Valid() bool {
	l4 := p.l4()
	if l4 == nil || p.frag {
		return l4 != nil
	}
	switch p.proto {
	case 6, 17:
		if (p.proto == 6 && len(l4) < 20) || (p.proto == 17 && len(l4) < 8) {
			return false
		}
		if p.proto == 17 {
			if binary.BigEndian.Uint16(l4[6:]) == 0 {
				return true
			}
			l4 = l4[:udpLen(l4)] // RFC 768: the datagram by its own length
		}
		return oracle.Sum1071(l4, oracle.Pseudo4(p.ip, p.ip[9], len(l4))) == 0xffff
	case 1:
		return oracle.Sum1071(l4, 0) == 0xffff
	}
	return true
}

func l4CsumOff(proto uint8) int {
	switch proto {
	case 6:
		return 16
	case 17:
		return 6
	case 1:
		return 2
	}
	return -1
}

// makePartial turns a TCP/UDP frame into what a sender with checksum
// offload hands over: the checksum field holds the folded pseudo-header sum.
func makePartial(frame []byte) bool {
	p, ok := parsePkt(frame)
	l4 := p.l4()
	if !ok || l4 == nil || p.frag || (p.proto != 6 && p.proto != 17) || len(l4) < 8 || (p.proto == 6 && len(l4) < 20) {
		return false
	}
	if p.proto == 17 {
		l4 = l4[:udpLen(l4)]
	}
	binary.BigEndian.PutUint16(l4[l4CsumOff(p.proto):], oracle.Sum1071(nil, oracle.Pseudo4(p.ip, p.ip[9], len(l4))))
	return true
}

// udpLen is the UDP length field of l4, bounded by len(l4).
func udpLen(l4 []byte) int {
	return min(int(binary.BigEndian.Uint16(l4[4:])), len(l4))
}

func fixIPChecksum(frame []byte) {
	p, ok := parsePkt(frame)
	if !ok {
		return
	}
	binary.BigEndian.PutUint16(p.ip[10:], 0)
	binary.BigEndian.PutUint16(p.ip[10:], ^oracle.Sum1071(p.ip[:p.ihl], 0))
}

func fixL4Checksum(frame []byte) {
	p, ok := parsePkt(frame)
	l4 := p.l4()
	off := l4CsumOff(p.proto)
	if !ok || l4 == nil || p.frag || off < 0 || len(l4) < off+2 || (p.proto == 6 && len(l4) < 20) {
		return
	}
	if p.proto == 17 {
		l4 = l4[:max(udpLen(l4), 8)]
	}
	binary.BigEndian.PutUint16(l4[off:], 0)
	var s uint32
	if p.proto != 1 {
		s = oracle.Pseudo4(p.ip, p.ip[9], len(l4))
	}
	c := ^oracle.Sum1071(l4, s)
	if c == 0 && p.proto == 17 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
}

// checkOutput applies the frame oracles to one transmitted or replied frame.
func checkOutput(t fuzzT, step int, fp *fuzzPipe, inFrame []byte, in fuzzInput, r *forwarder.Result, out []byte) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("step %d: %v %v (in %x partial %v link %d): %s\nout %x", step, r.Action, r.Reason, inFrame, in.partial, in.link,
			fmt.Sprintf(format, a...), out)
	}
	o, ok := parsePkt(out)
	if !ok {
		fail("not an IPv4 frame")
	}
	if !o.ipValid {
		fail("IPv4 header checksum invalid")
	}
	if o.total != len(o.ip) {
		fail("IP total length %d, IP part of the frame %d", o.total, len(o.ip))
	}
	if !o.l4Valid() {
		if r.Action == forwarder.Reply {
			fail("reply with an invalid L4 checksum")
		}
	}
	if r.Action == forwarder.Reply {
		if o.ttl != 64 {
			fail("reply TTL %d", o.ttl)
		}
		return
	}
	i, ok := parsePkt(inFrame)
	if !ok {
		fail("transmitted a frame that is not IPv4")
	}
	inL4Valid := i.l4Valid() || in.partial
	// IPIP: the packet forwarded is the inner one.
	fwd := o
	if o.proto == 4 && i.proto != 4 {
		if o.ttl == 0 {
			fail("outer TTL 0")
		}
		var inner pkt
		if !inner.parseIP(o.l4()) {
			fail("IPIP without an inner IPv4 packet")
		}
		if !inner.ipValid {
			fail("inner IPv4 header checksum invalid")
		}
		if inner.total != len(inner.ip) {
			fail("inner total length %d, inner packet %d", inner.total, len(inner.ip))
		}
		if o.ttl != inner.ttl {
			fail("outer TTL %d, inner TTL %d", o.ttl, inner.ttl)
		}
		if r.Dest == nil || netip.AddrFrom4([4]byte(o.ip[16:20])) != r.Dest.Addr {
			fail("IPIP to %v, dest %v", o.ip[16:20], r.Dest)
		}
		fwd = inner
	}
	if fwd.ttl != i.ttl-1 {
		fail("TTL %d, input TTL %d", fwd.ttl, i.ttl)
	}
	if fwd.l4Valid() != inL4Valid && fwd.l4() != nil && i.l4() != nil && len(i.l4()) == len(fwd.l4()) {
		fail("L4 checksum valid %v, input's valid %v", fwd.l4Valid(), inL4Valid)
	}
	if r.Dest == nil {
		return
	}
	switch r.Method {
	case ipvs.Route, ipvs.Tunnel:
		// The IP packet is unchanged but for the TTL and its checksum.
		a, b := slices.Clone(fwd.ip), slices.Clone(i.ip[:min(i.total, len(i.ip))])
		if len(a) != len(b) {
			fail("DR/TUN changed the packet length %d -> %d", len(b), len(a))
		}
		a[8], a[10], a[11], b[8], b[10], b[11] = 0, 0, 0, 0, 0, 0
		if in.partial {
			off := i.ihl + l4CsumOff(i.proto)
			a[off], a[off+1], b[off], b[off+1] = 0, 0, 0, 0
		}
		if !bytes.Equal(a, b) {
			fail("DR/TUN changed the packet beyond TTL and checksums")
		}
	case ipvs.Masq:
		checkNAT(t, fp, &i, &fwd, r, fail)
	}
}

// checkNAT: the NAT frame's addresses and ports are those of an entry of
// the table (as ipvsadm -Lnc lists it).
func checkNAT(t fuzzT, fp *fuzzPipe, i, o *pkt, r *forwarder.Result, fail func(string, ...any)) {
	t.Helper()
	ports := func(p *pkt) (netip.AddrPort, netip.AddrPort, uint8, bool) {
		src := netip.AddrFrom4([4]byte(p.ip[12:16]))
		dst := netip.AddrFrom4([4]byte(p.ip[16:20]))
		l4 := p.l4()
		if (p.proto != 6 && p.proto != 17) || p.frag || len(l4) < 4 {
			return netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0), p.proto, false
		}
		return netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4)), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:])), p.proto, true
	}
	isrc, idst, proto, ok := ports(i)
	osrc, odst, _, _ := ports(o)
	if !ok {
		return // ICMP: its checksums were checked
	}
	var client, virt, real netip.AddrPort
	if r.Out {
		real, client, virt = isrc, idst, osrc
		if odst != client {
			fail("NAT reply to %v, want the client %v", odst, client)
		}
	} else {
		client, virt, real = isrc, idst, odst
		if osrc != client {
			fail("NAT from %v, want the client %v", osrc, client)
		}
	}
	found := false
	fp.conns.Walk(fp.now, func(c *conntrack.Conn) {
		if c.Flags&conntrack.FlagTemplate == 0 && uint8(c.Proto) == proto &&
			netip.AddrPortFrom(c.CAddr, c.CPort) == client && netip.AddrPortFrom(c.VAddr, c.VPort) == virt &&
			netip.AddrPortFrom(c.DAddr, c.DPort) == real && c.Dest == r.Dest {
			found = true
		}
	})
	if !found {
		fail("NAT %v %v -> %v -> %v (out %v) matches no connection of the table", proto, client, virt, real, r.Out)
	}
}

// oracleT records the first Fatal of an oracle and stops the run.
type oracleT struct {
	*testing.T
	msg string
}

type oracleStop struct{}

func (o *oracleT) Fatal(args ...any) { o.msg = fmt.Sprint(args...); panic(oracleStop{}) }
func (o *oracleT) Fatalf(format string, args ...any) {
	o.msg = fmt.Sprintf(format, args...)
	panic(oracleStop{})
}

// runOracle runs the seeds with fault applied to the first pipeline's
// output and returns the first oracle failure ("" if none).
func runOracle(t *testing.T, fault func(step int, out []byte)) (msg string) {
	o := &oracleT{T: t}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(oracleStop); !ok {
				panic(r)
			}
			msg = o.msg
		}
	}()
	for _, s := range fuzzProcessSeeds() {
		runProcessFuzz(o, s, fault)
	}
	return ""
}

// TestFuzzProcessOraclesFail shows that each of FuzzProcess's frame
// oracles fails on a frame that breaks it: the seeds pass untouched, and
// fail once a fault is injected into what the first pipeline transmitted.
func TestFuzzProcessOraclesFail(t *testing.T) {
	if msg := runOracle(t, nil); msg != "" {
		t.Fatalf("seeds fail without a fault: %s", msg)
	}
	ipOff := func(out []byte) int {
		if binary.BigEndian.Uint16(out[12:]) == 0x8100 {
			return 18
		}
		return 14
	}
	// Each fault is applied once, to the first frame it fits.
	faults := []struct {
		name, want string
		fault      func(out []byte) bool
	}{
		{"IP checksum", "IPv4 header checksum invalid", func(out []byte) bool { out[ipOff(out)+10] ^= 1; return true }},
		{"TTL not decremented", "TTL", func(out []byte) bool {
			ip := out[ipOff(out):]
			if ip[9] == 4 || ip[8] == 64 {
				return false
			}
			ip[8]++
			fixIPChecksum(out)
			return true
		}},
		{"L4 checksum", "checksum valid false", func(out []byte) bool {
			ip := out[ipOff(out):]
			if ip[9] != 6 || ip[8] == 64 {
				return false
			}
			ip[int(ip[0]&15)*4+16] ^= 0x10
			return true
		}},
		{"reply checksum", "reply with an invalid L4 checksum", func(out []byte) bool {
			ip := out[ipOff(out):]
			if ip[8] != 64 || ip[9] != 1 {
				return false
			}
			ip[int(ip[0]&15)*4+2] ^= 0x10
			return true
		}},
		{"total length", "total length", func(out []byte) bool {
			ip := out[ipOff(out):]
			binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])-1)
			fixIPChecksum(out)
			return true
		}},
		{"NAT port", "matches no connection", func(out []byte) bool {
			ip := out[ipOff(out):]
			l4 := ip[int(ip[0]&15)*4:]
			if ip[9] != 6 || ip[8] == 64 || binary.BigEndian.Uint16(l4[2:]) != 8080 {
				return false
			}
			// Another port, with both checksums kept right.
			binary.BigEndian.PutUint16(l4[2:], 8081)
			binary.BigEndian.PutUint16(l4[16:], binary.BigEndian.Uint16(l4[16:])-1)
			return true
		}},
		{"IPIP outer TTL", "outer TTL", func(out []byte) bool {
			ip := out[ipOff(out):]
			if ip[9] != 4 {
				return false
			}
			ip[8]--
			fixIPChecksum(out)
			return true
		}},
		{"DR payload", "DR/TUN changed", func(out []byte) bool {
			ip := out[ipOff(out):]
			if ip[9] != 6 || binary.BigEndian.Uint16(ip[int(ip[0]&15)*4+2:]) != 81 {
				return false
			}
			l4 := ip[int(ip[0]&15)*4:]
			// Swap the sequence number's halves: the checksums stay right.
			if l4[4] == l4[6] && l4[5] == l4[7] {
				return false
			}
			l4[4], l4[5], l4[6], l4[7] = l4[6], l4[7], l4[4], l4[5]
			return true
		}},
		{"determinism", "two pipelines differ", func(out []byte) bool {
			ip := out[ipOff(out):]
			l4 := ip[int(ip[0]&15)*4:]
			if ip[9] != 6 || binary.BigEndian.Uint16(l4[2:]) != 8080 || (l4[4] == l4[6] && l4[5] == l4[7]) {
				return false
			}
			l4[4], l4[5], l4[6], l4[7] = l4[6], l4[7], l4[4], l4[5]
			return true
		}},
	}
	for _, f := range faults {
		done := false
		msg := runOracle(t, func(step int, out []byte) {
			if !done {
				done = f.fault(out)
			}
		})
		if !done {
			t.Errorf("%s: no frame to inject the fault into", f.name)
		} else if !strings.Contains(msg, f.want) {
			t.Errorf("%s: oracle said %q, want %q", f.name, msg, f.want)
		}
	}
}

// TestFuzzProcessTableOracleFails: the table oracle notices a real server
// counter that disagrees with the entries.
func TestFuzzProcessTableOracleFails(t *testing.T) {
	o := &oracleT{T: t}
	p := newFuzzPipe(t, 8)
	n := copy(p.buf[forwarder.Headroom:], syn(client, 1000))
	if r := p.w.Process(p.buf, forwarder.Headroom, n, forwarder.VIPSide, false, p.now); r.Action != forwarder.Transmit {
		t.Fatalf("%v %v", r.Action, r.Reason)
	}
	checkTable(t, 0, p)
	for _, bump := range []func(d *ipvs.Dest){
		func(d *ipvs.Dest) { d.InactConns.Add(1) },
		func(d *ipvs.Dest) { d.ActiveConns.Add(1) },
		func(d *ipvs.Dest) { d.PersistConns.Add(1) },
	} {
		for d := range p.dests {
			bump(d)
			break
		}
		func() {
			defer func() { _ = recover() }()
			checkTable(o, 1, p)
		}()
		if !strings.Contains(o.msg, "recount") {
			t.Fatalf("oracle said %q", o.msg)
		}
		o.msg = ""
	}
}
