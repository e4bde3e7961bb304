package forwarder_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"gvs/forwarder/replay"
)

// Semantic checks of the golden cases for divergences from IPVS fixed in
// gvs (cmd/gvs-pcapgen/conform.go). Each case's golden output differs on
// the code before its fix, and the check says what the kernel does.

func init() {
	caseChecks["nodest-drop"] = checkNodestDrop
	caseChecks["nodest-expire"] = checkNodestExpire
	caseChecks["conn-reuse"] = checkConnReuse
	caseChecks["ftp-port21"] = checkFTPPort21
	caseChecks["ftp-data-port20"] = checkFTPDataPort20
	caseChecks["no-conn-rst"] = checkNoConnRST
	caseChecks["tun-icmp-relay"] = checkTunICMPRelay
	caseChecks["ttl1-syn"] = checkTTL1SYN
	caseChecks["sloppy-tcp"] = checkSloppyTCP
	caseChecks["lblc-overload"] = checkLblcOverload
	caseChecks["secure-tcp"] = checkSecureTCP
	caseChecks["quiescent-template"] = checkQuiescentTemplate
}

// scriptOf returns has and lacks over a case's script.out: whether the
// output of the command written cmd contains each line (without its
// newline).
func scriptOf(t *testing.T, r goldenRun) (has, lacks func(cmd string, lines ...string)) {
	at := func(cmd string) string {
		t.Helper()
		for _, st := range r.script {
			if st.cmd == cmd {
				return st.out
			}
		}
		t.Fatalf("no %q in script.out", cmd)
		return ""
	}
	has = func(cmd string, lines ...string) {
		t.Helper()
		out := at(cmd)
		for _, l := range lines {
			if !strings.Contains(out, l+"\n") {
				t.Errorf("output of %q lacks %q:\n%s", cmd, l, out)
			}
		}
	}
	lacks = func(cmd string, lines ...string) {
		t.Helper()
		out := at(cmd)
		for _, l := range lines {
			if strings.Contains(out, l) {
				t.Errorf("output of %q has %q:\n%s", cmd, l, out)
			}
		}
	}
	return has, lacks
}

// counts fails the check unless the case sent n frames and has m
// verdicts (the checks index them).
func counts(t *testing.T, r goldenRun, n, m int) {
	t.Helper()
	if len(r.frames) != n || len(r.verdicts) != m {
		t.Fatalf("%d frames sent, %d verdicts; want %d and %d", len(r.frames), len(r.verdicts), n, m)
	}
}

// dest returns a verdict's real server, "-" without one.
func dest(v replay.Verdict) string { return orDash(v.Dest) }

// conn returns a verdict's connection field, "-" without one.
func conn(v replay.Verdict) string { return orDash(v.Conn) }

// rstCheck checks a RST frame from VIP:vport to the client's port as the
// kernel's tcp_v4_send_reset builds it: to a segment with ACK, a bare RST
// whose sequence is the segment's ack; otherwise RST|ACK acknowledging
// the segment's sequence space.
func rstCheck(t *testing.T, i int, f outFrame, vport, cport uint16, seq, ack uint32, withAck bool) {
	t.Helper()
	ip, tcp := ipOf(t, f), tcpOf(t, f)
	expectEq(t, i, "rst src", addrOf(ip.SrcIP), vip)
	expectEq(t, i, "rst dst", addrOf(ip.DstIP), client)
	expectEq(t, i, "rst ports", [2]uint16{uint16(tcp.SrcPort), uint16(tcp.DstPort)}, [2]uint16{vport, cport})
	expectEq(t, i, "rst flags", [5]bool{tcp.RST, tcp.ACK, tcp.SYN, tcp.FIN, tcp.PSH}, [5]bool{true, withAck, false, false, false})
	expectEq(t, i, "rst seq", tcp.Seq, seq)
	if withAck {
		expectEq(t, i, "rst ack", tcp.Ack, ack)
	}
	expectEq(t, i, "rst window", tcp.Window, uint16(0))
	expectEq(t, i, "rst payload", len(tcp.Payload), 0)
	expectEq(t, i, "rst iface", f.iface, "vip0")
	expectEq(t, i, "rst mac", ethOf(t, f).DstMAC.String(), derivedMAC(client))
}

// nodest-drop: ip_vs_in checks the real server's status before the
// state machine; a packet for a deleted server is dropped without
// changing the state or re-arming the timer (expire_nodest_conn 0). The
// server added back is the same dest (IPVS's trash), still counting the
// connection as active.
func checkNodestDrop(t *testing.T, r goldenRun) {
	counts(t, r, 6, 7)
	has, _ := scriptOf(t, r)
	expectSeq(t, r, "action", "transmit transmit transmit transmit transmit drop transmit", func(v replay.Verdict) string { return v.Action })
	expectEq(t, 5, "reason", r.verdicts[5].Reason, "dest_removed")
	est := func(exp string) string {
		return "TCP " + exp + "  ESTABLISHED 198.18.1.11:41001  198.51.100.10:80   198.18.2.12:8080"
	}
	has("1 -Lnc", est("14:59"))
	has("1 -Ln", "  -> 198.18.2.12:8080             Masq    1      1          0         ")
	// The FIN at 2.5 s did not move ESTABLISHED to CLOSE_WAIT, nor
	// restart the 900 s timer armed at 0 s.
	has("3 -Lnc", est("14:57"))
	has("4 -Lnc", est("14:56"))
	has("4 -Ln", "  -> 198.18.2.12:8080             Masq    1      1          0         ")
	// The retransmitted FIN after the server is back: CLOSE_WAIT.
	expectEq(t, 6, "state", r.verdicts[6].State, "CLOSE_WAIT")
	has("6 -Lnc", "TCP 00:59  CLOSE_WAIT  198.18.1.11:41001  198.51.100.10:80   198.18.2.12:8080")
	has("6 -Ln", "  -> 198.18.2.12:8080             Masq    1      0          1         ")
}

// nodest-expire: with expire_nodest_conn 1 the next packet of a
// connection to a deleted server expires it and is taken as a first
// packet: a UDP datagram scheduled afresh, a TCP ACK answered by the
// host's RST, then the client's SYN scheduled to the remaining server.
func checkNodestExpire(t *testing.T, r goldenRun) {
	counts(t, r, 9, 9)
	has, lacks := scriptOf(t, r)
	has("0.5 --sysctl expire_nodest_conn=1", "net.ipv4.vs.expire_nodest_conn = 1")
	expectSeq(t, r, "dest", "198.18.2.12:8080 198.18.2.12:8080 198.18.2.12:8080 198.18.2.12:8080 198.18.2.12:5353 198.18.2.12:5353 198.18.2.11:5353 - 198.18.2.11:8080", dest)
	expectSeq(t, r, "conn", "new existing existing existing new existing new - new", conn)
	expectSeq(t, r, "action", "transmit transmit transmit transmit transmit transmit transmit reply transmit", func(v replay.Verdict) string { return v.Action })
	// The deletion alone does not expire anything: a packet does.
	has("2.2 -Lnc", "TCP 14:57  ESTABLISHED 198.18.1.11:41101  198.51.100.10:80   198.18.2.12:8080")
	lacks("2.8 -Lnc", "TCP ", "198.18.2.12")
	has("2.8 -Lnc", "UDP 04:59  UDP         198.18.1.11:33100  198.51.100.10:53   198.18.2.11:5353")
	// The RST answers the ACK (seq = its ack) from VIP:80.
	rst := r.frames[r.sentIndex(7)]
	seg := tcpOf(t, r.frames[r.sentIndex(3)]) // the request before: same seq/ack space
	rstCheck(t, 7, rst, 80, 41101, seg.Ack, 0, false)
	has("3.5 -Lnc", "TCP 00:59  SYN_RECV    198.18.1.11:41101  198.51.100.10:80   198.18.2.11:8080")
	has("3.5 -Ln", "  -> 198.18.2.11:8080             Masq    1      1          0         ")
}

// sentIndex is the index among the transmitted frames of verdict i.
func (r goldenRun) sentIndex(i int) int {
	n := 0
	for j := 0; j < i; j++ {
		if a := r.verdicts[j].Action; a == "transmit" || a == "reply" {
			n++
		}
	}
	return n
}

// conn-reuse: a SYN on a connection IPVS expects a new connection on
// (is_new_conn_expected) expires it and is scheduled afresh, unless
// conn_reuse_mode is 0; bit 2 adds FIN_WAIT without output (DR).
func checkConnReuse(t *testing.T, r goldenRun) {
	counts(t, r, 33, 33)
	has, _ := scriptOf(t, r)
	syns := map[int]struct{ conn, dest, state string }{
		// mode 1, TIME_WAIT: rescheduled, rr moves on from rs2 to rs1.
		8: {"new", "198.18.2.11:8080", "SYN_RECV"},
		// mode 0, TIME_WAIT: reused, same server, SYN_RECV again.
		17: {"existing", "198.18.2.12:8080", "SYN_RECV"},
		// mode 1, DR FIN_WAIT: reused.
		22: {"existing", "198.18.2.12:81", "SYN_RECV"},
		// modes 2 and 3, DR FIN_WAIT without output: rescheduled.
		27: {"new", "198.18.2.12:81", "SYN_RECV"},
		32: {"new", "198.18.2.12:81", "SYN_RECV"},
	}
	for i, w := range syns {
		v := r.verdicts[i]
		if v.Conn != w.conn || v.Dest != w.dest || v.State != w.state {
			t.Errorf("SYN %d: %s %s %s, want %s %s %s", i, v.Conn, v.Dest, v.State, w.conn, w.dest, w.state)
		}
	}
	// The connections the SYNs found were TIME_WAIT and FIN_WAIT.
	for i, st := range map[int]string{7: "TIME_WAIT", 16: "TIME_WAIT", 21: "FIN_WAIT", 26: "FIN_WAIT", 31: "FIN_WAIT"} {
		expectEq(t, i, "state before the SYN", r.verdicts[i].State, st)
	}
	// DR 41204 was on rs1 before its SYN; rescheduled, it is on rs2.
	expectEq(t, 26, "dest", r.verdicts[26].Dest, "198.18.2.11:81")
	expectEq(t, 31, "dest", r.verdicts[31].Dest, "198.18.2.11:81")
	has("1 --sysctl conn_reuse_mode=0", "net.ipv4.vs.conn_reuse_mode = 0")
	has("5 -Lnc",
		"TCP 00:55  SYN_RECV    198.18.1.11:41201  198.51.100.10:80   198.18.2.11:8080",
		"TCP 00:56  SYN_RECV    198.18.1.11:41202  198.51.100.10:80   198.18.2.12:8080",
		"TCP 00:57  SYN_RECV    198.18.1.11:41203  198.51.100.10:81   198.18.2.12:81",
		"TCP 00:58  SYN_RECV    198.18.1.11:41204  198.51.100.10:81   198.18.2.12:81",
		"TCP 00:59  SYN_RECV    198.18.1.11:41205  198.51.100.10:81   198.18.2.12:81")
}

// ftp-port21: ip_vs_leave passes another port of a non-persistent FTP
// service's VIP to the host (RST); persistent, the connection keeps the
// packet's port under a port-zero template.
func checkFTPPort21(t *testing.T, r goldenRun) {
	counts(t, r, 4, 4)
	has, _ := scriptOf(t, r)
	expectSeq(t, r, "action", "transmit reply transmit transmit", func(v replay.Verdict) string { return v.Action })
	expectEq(t, 1, "reason", r.verdicts[1].Reason, "ftp_port")
	// A RST|ACK to the SYN from VIP:2121 (the SYN had no ACK).
	rstCheck(t, 1, r.frames[1], 2121, 41302, 0, 1000+41302*7+1, true)
	// The control connection to rs1:21; the persistent one to rs1:2121.
	expectEq(t, 0, "dport", uint16(tcpOf(t, r.frames[0]).DstPort), uint16(21))
	f := r.frames[2]
	expectEq(t, 2, "dst", addrOf(ipOf(t, f).DstIP), rs1)
	expectEq(t, 2, "dport", uint16(tcpOf(t, f).DstPort), uint16(2121))
	// The reply leaves from VIP:2121.
	expectEq(t, 3, "sport", uint16(tcpOf(t, r.frames[3]).SrcPort), uint16(2121))
	has("2 -Lnc",
		"TCP 04:59  NONE        198.18.1.11:0      198.51.100.10:0    198.18.2.11:0",
		"TCP 00:59  SYN_RECV    198.18.1.11:41303  198.51.100.10:2121 198.18.2.11:2121")
}

// ftp-data-port20: ip_vs_schedule never schedules a first packet from
// port 20; the host's stack answers.
func checkFTPDataPort20(t *testing.T, r goldenRun) {
	counts(t, r, 4, 4)
	expectSeq(t, r, "action", "reply reply transmit transmit", func(v replay.Verdict) string { return v.Action })
	expectSeq(t, r, "reason", "ftp_data ftp_data - -", func(v replay.Verdict) string { return orDash(v.Reason) })
	rstCheck(t, 0, r.frames[0], 80, 20, 0, 1000+20*7+1, true)
	ic := icmpOf(t, r.frames[1])
	expectEq(t, 1, "icmp", ic.TypeCode, layers.CreateICMPv4TypeCode(3, 3))
	expectEq(t, 1, "src", addrOf(ipOf(t, r.frames[1]).SrcIP), vip)
	emb := embedded(t, r.frames[1])
	expectEq(t, 1, "quoted ports", embeddedPorts(emb), [2]uint16{20, 53})
}

// no-conn-rst: the host's TCP answers a segment with no connection.
func checkNoConnRST(t *testing.T, r goldenRun) {
	counts(t, r, 76, 85)
	want := "reply reply drop" + strings.Repeat(" reply", 64) + strings.Repeat(" drop", 6) + strings.Repeat(" reply", 10) + strings.Repeat(" drop", 2)
	expectSeq(t, r, "action", want, func(v replay.Verdict) string { return v.Action })
	for i, v := range r.verdicts {
		expectEq(t, i, "reason", v.Reason, "no_conn")
		if v.Conn != "" {
			t.Errorf("verdict %d: a connection (%s)", i, v.Conn)
		}
	}
	// To the ACK with data: RST, seq = its ack.
	rstCheck(t, 0, r.frames[0], 80, 41601, 0x11223344, 0, false)
	// To a FIN without ACK carrying 3 bytes: RST|ACK, ack = seq+3+1.
	rstCheck(t, 1, r.frames[1], 80, 41602, 0, 9004, true)
	// The burst: each RST answers its own segment.
	for i := 2; i < 66; i++ {
		tcp := tcpOf(t, r.frames[i])
		expectEq(t, i, "burst rst seq", tcp.Seq, uint32(1000+i-2))
		expectEq(t, i, "burst rst dport", uint16(tcp.DstPort), uint16(42000+i-2))
	}
}

// tun-icmp-relay: ip_vs_in_icmp's IPIP case.
func checkTunICMPRelay(t *testing.T, r goldenRun) {
	counts(t, r, 7, 8)
	expectSeq(t, r, "action", "transmit transmit transmit reply reply reply transmit drop", func(v replay.Verdict) string { return v.Action })
	expectSeq(t, r, "reason", "- - - tun_icmp tun_icmp tun_icmp - tun_icmp_no_df", func(v replay.Verdict) string { return orDash(v.Reason) })
	for i, tc := range []layers.ICMPv4TypeCode{
		layers.CreateICMPv4TypeCode(3, 4), layers.CreateICMPv4TypeCode(11, 0), layers.CreateICMPv4TypeCode(3, 1),
	} {
		f := r.frames[3+i]
		ip, ic := ipOf(t, f), icmpOf(t, f)
		expectEq(t, 3+i, "type/code", ic.TypeCode, tc)
		expectEq(t, 3+i, "src", addrOf(ip.SrcIP), vip)
		expectEq(t, 3+i, "dst", addrOf(ip.DstIP), client)
		expectEq(t, 3+i, "iface", f.iface, "vip0")
		expectEq(t, 3+i, "mac", ethOf(t, f).DstMAC.String(), derivedMAC(client))
		// The quote is the client's own packet: client -> VIP:80.
		emb := embedded(t, f)
		expectEq(t, 3+i, "quoted src", addrOf(emb.SrcIP), client)
		expectEq(t, 3+i, "quoted dst", addrOf(emb.DstIP), vip)
		expectEq(t, 3+i, "quoted proto", emb.Protocol, layers.IPProtocolTCP)
		expectEq(t, 3+i, "quoted ports", embeddedPorts(emb), [2]uint16{41501, 80})
		if i == 0 {
			// The hop's 1400 less the IPIP header.
			expectEq(t, 3, "mtu", binary.BigEndian.Uint16(ic.Contents[6:8]), uint16(1380))
		}
	}
}

// ttl1-syn: IPVS schedules before the transmitter checks the TTL.
func checkTTL1SYN(t *testing.T, r goldenRun) {
	counts(t, r, 1, 1)
	has, _ := scriptOf(t, r)
	v := r.verdicts[0]
	if v.Action != "reply" || v.Reason != "ttl_exceeded" || v.Conn != "new" || v.State != "SYN_RECV" {
		t.Errorf("TTL-1 SYN: %+v, want time exceeded and a new SYN_RECV connection", v)
	}
	ic := icmpOf(t, r.frames[0])
	expectEq(t, 0, "icmp", ic.TypeCode, layers.CreateICMPv4TypeCode(11, 0))
	expectEq(t, 0, "dst", addrOf(ipOf(t, r.frames[0]).DstIP), client)
	has("0.5 -Lnc", "TCP 00:59  SYN_RECV    198.18.1.11:41801  198.51.100.10:80   198.18.2.11:8080")
	has("0.5 -Ln", "  -> 198.18.2.11:8080             Masq    1      1          0         ")
	has("0.5 -Ln --stats",
		"TCP  198.51.100.10:80                    1        1        0       40        0",
		"  -> 198.18.2.11:8080                    1        1        0       40        0")
}

// sloppy-tcp: tcp_conn_schedule schedules any non-RST segment under
// sloppy_tcp.
func checkSloppyTCP(t *testing.T, r goldenRun) {
	counts(t, r, 3, 4)
	has, _ := scriptOf(t, r)
	expectSeq(t, r, "action", "reply transmit transmit drop", func(v replay.Verdict) string { return v.Action })
	expectSeq(t, r, "conn", "- new existing -", conn)
	// Without sloppy_tcp: the host's RST, seq = the segment's ack.
	rstCheck(t, 0, r.frames[0], 80, 41701, 8000, 0, false)
	// With it: the ACK makes an ESTABLISHED connection (INPUT ack from
	// NONE), forwarded to rs2:8080.
	expectEq(t, 1, "state", r.verdicts[1].State, "ESTABLISHED")
	expectEq(t, 1, "dst", addrOf(ipOf(t, r.frames[1]).DstIP), rs2)
	expectEq(t, 1, "payload", string(tcpOf(t, r.frames[1]).Payload), "mid-stream")
	has("2 -Lnc", "TCP 14:59  ESTABLISHED 198.18.1.11:41701  198.51.100.10:80   198.18.2.12:8080")
	has("2 -Ln", "  -> 198.18.2.12:8080             Masq    1      1          0         ")
}

// lblc-overload: a cache hit keeps its server although it is over -x.
func checkLblcOverload(t *testing.T, r goldenRun) {
	counts(t, r, 4, 4)
	expectSeq(t, r, "dest", "198.18.2.12:53 198.18.2.12:53 198.18.2.12:53 198.18.2.12:53", dest)
	expectSeq(t, r, "inactive", "1 2 3 4", func(v replay.Verdict) string { return ptr(v.Inactive) })
}

// secure-tcp: secure_tcp 3 selects tcp_states_dos: a DR SYN (INPUT_ONLY)
// goes from NONE to SYNACK, whose timeout is 120 s.
func checkSecureTCP(t *testing.T, r goldenRun) {
	counts(t, r, 2, 2)
	has, _ := scriptOf(t, r)
	expectSeq(t, r, "state", "SYN_RECV SYNACK", func(v replay.Verdict) string { return v.State })
	expectSeq(t, r, "active", "1 2", func(v replay.Verdict) string { return ptr(v.Active) }) // SYNACK is active
	has("2 -Lnc",
		"TCP 00:58  SYN_RECV    198.18.1.11:41901  198.51.100.10:80   198.18.2.11:80",
		"TCP 01:59  SYNACK      198.18.1.11:41902  198.51.100.10:80   198.18.2.11:80")
}

// quiescent-template: ip_vs_check_template invalidates a template whose
// server has weight 0 only under expire_quiescent_template.
func checkQuiescentTemplate(t *testing.T, r goldenRun) {
	counts(t, r, 4, 4)
	has, lacks := scriptOf(t, r)
	expectSeq(t, r, "dest", "198.18.2.12:80 198.18.2.12:80 198.18.2.12:80 198.18.2.11:80", dest)
	expectSeq(t, r, "conn", "new existing new new", conn)
	lacks("2 -Lnc", "65535")
	has("3 -Lnc",
		"TCP 04:58  ASSURED     198.18.1.11:0      198.51.100.10:65535 198.18.2.12:65535",
		"TCP 04:59  NONE        198.18.1.11:0      198.51.100.10:80   198.18.2.11:80",
		"TCP 00:59  SYN_RECV    198.18.1.11:42003  198.51.100.10:80   198.18.2.11:80")
}
