package forwarder_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"gvs/forwarder/replay"
)

// What each replay case is about, checked on the golden outputs. The
// scheduler cases (sched-*) are checked by schedulerCase.
var caseChecks = map[string]func(*testing.T, goldenRun){
	"nat-tcp": func(t *testing.T, r goldenRun) {
		// IPVS's NAT path: SYN(in) SYN_RECV, SYN/ACK(out), ACK ESTABLISHED,
		// FIN(in) CLOSE_WAIT, FIN(out) TIME_WAIT; ActiveConn/InActConn follow.
		wantStates := "SYN_RECV SYN_RECV ESTABLISHED ESTABLISHED ESTABLISHED CLOSE_WAIT CLOSE_WAIT TIME_WAIT TIME_WAIT SYN_RECV"
		wantActive := "1 1 1 1 1 0 0 0 0 1"
		wantInact := "0 0 0 0 0 1 1 1 1 0"
		wantDir := "in out in in out in out out in in"
		expectSeq(t, r, "state", wantStates, func(v replay.Verdict) string { return v.State })
		expectSeq(t, r, "active", wantActive, func(v replay.Verdict) string { return fmt.Sprint(*v.Active) })
		expectSeq(t, r, "inactive", wantInact, func(v replay.Verdict) string { return fmt.Sprint(*v.Inactive) })
		expectSeq(t, r, "dir", wantDir, func(v replay.Verdict) string { return v.Dir })
		if r.verdicts[9].Conn != "new" {
			t.Errorf("after TIME_WAIT ran out the next SYN must be a new connection")
		}
		for i, f := range r.frames {
			ip, tcp := ipOf(t, f), tcpOf(t, f)
			switch r.verdicts[i].Dir {
			case "in": // DNAT to the real server, port 8080
				expectEq(t, i, "dst", addrOf(ip.DstIP), rs1)
				expectEq(t, i, "src", addrOf(ip.SrcIP), client)
				expectEq(t, i, "dport", uint16(tcp.DstPort), uint16(8080))
				expectEq(t, i, "iface", f.iface, "dip0")
				expectEq(t, i, "dst mac", ethOf(t, f).DstMAC.String(), derivedMAC(rs1))
				expectEq(t, i, "ttl", ip.TTL, uint8(63))
			case "out": // SNAT back to VIP:80
				expectEq(t, i, "src", addrOf(ip.SrcIP), vip)
				expectEq(t, i, "sport", uint16(tcp.SrcPort), uint16(80))
				expectEq(t, i, "dst", addrOf(ip.DstIP), client)
				expectEq(t, i, "iface", f.iface, "vip0")
				expectEq(t, i, "dst mac", ethOf(t, f).DstMAC.String(), derivedMAC(client))
			}
		}
	},
	"syn-flood": func(t *testing.T, r goldenRun) {
		// 64 spoofed SYNs fill the 64-entry table; the legitimate SYN
		// (frame 64) still creates a connection (a half-open entry is
		// evicted), which establishes and survives 16 more spoofed SYNs
		// (each evicting a spoofed entry) and the flood's expiry.
		for i, v := range r.verdicts {
			if v.Action != "transmit" {
				t.Errorf("frame %d: %s (%s): nothing is refused while half-open entries can be evicted", i, v.Action, v.Reason)
			}
		}
		expectEq(t, 64, "legitimate SYN", r.verdicts[64].Conn, "new")
		expectEq(t, 63, "active when full", *r.verdicts[63].Active, int32(64))
		expectEq(t, 64, "active after eviction", *r.verdicts[64].Active, int32(64))
		expectEq(t, 66, "state", r.verdicts[66].State, "ESTABLISHED")
		for i := 67; i < 83; i++ {
			expectEq(t, i, "flood SYN", r.verdicts[i].Conn, "new")
		}
		for i := 83; i < 86; i++ {
			expectEq(t, i, "legitimate connection", r.verdicts[i].Conn+" "+r.verdicts[i].State, "existing ESTABLISHED")
		}
		expectEq(t, 85, "active after the flood expired", *r.verdicts[85].Active, int32(1))
		// drop_entry 1 reads back 2 while short of room, 1 after; the scan
		// at 1 s dropped spoofed SYN_RECV entries.
		want := []string{"drop_entry=1 drop_entry = 1", "drop_entry drop_entry = 2", "drop_entry drop_entry = 1"}
		var got []string
		for _, st := range r.script {
			if strings.Contains(st.cmd, "drop_entry") {
				_, name, _ := strings.Cut(st.cmd, "--sysctl ")
				got = append(got, name+" "+strings.TrimPrefix(strings.TrimSpace(st.out), "net.ipv4.vs."))
			}
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("drop_entry read-backs %q, want %q", got, want)
		}
		for _, st := range r.script {
			if st.cmd == "1.5 -Ln" && strings.Contains(st.out, " 64 ") {
				t.Errorf("the drop_entry scan at 1 s dropped nothing:\n%s", st.out)
			}
		}
	},
	"dr-tcp": func(t *testing.T, r goldenRun) {
		// INPUT_ONLY table: FIN leads to FIN_WAIT; 120 s later it is gone.
		expectSeq(t, r, "state", "SYN_RECV ESTABLISHED ESTABLISHED FIN_WAIT FIN_WAIT FIN_WAIT -", func(v replay.Verdict) string { return orDash(v.State) })
		// The last ACK finds no connection: the host's TCP would answer
		// with a RST (ack set: seq = its ack number), which gvs sends.
		expectSeq(t, r, "action", "transmit transmit transmit transmit transmit transmit reply", func(v replay.Verdict) string { return v.Action })
		expectEq(t, 6, "reason", r.verdicts[6].Reason, "no_conn")
		for i, f := range r.frames {
			ip := ipOf(t, f)
			if r.verdictFor(i).Action == "reply" {
				tcp := tcpOf(t, f)
				expectEq(t, i, "rst", tcp.RST && !tcp.ACK && !tcp.SYN && !tcp.FIN, true)
				expectEq(t, i, "rst src", addrOf(ip.SrcIP), vip)
				expectEq(t, i, "rst dst", addrOf(ip.DstIP), client)
				expectEq(t, i, "rst iface", f.iface, "vip0")
				continue
			}
			// Direct routing changes only the MACs and the TTL.
			expectEq(t, i, "dst", addrOf(ip.DstIP), vip)
			expectEq(t, i, "src", addrOf(ip.SrcIP), client)
			expectEq(t, i, "dst mac", ethOf(t, f).DstMAC.String(), derivedMAC(rs1))
			expectEq(t, i, "src mac", ethOf(t, f).SrcMAC.String(), derivedMAC(dip))
			expectEq(t, i, "ttl", ip.TTL, uint8(63))
		}
	},
	"tun-tcp": func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "action", "transmit transmit transmit reply transmit", func(v replay.Verdict) string { return v.Action })
		for i, f := range r.frames {
			if r.verdictFor(i).Action == "reply" {
				// Path MTU: 1500-byte DF packet + 20 does not fit 1500.
				ic := icmpOf(t, f)
				expectEq(t, i, "icmp type", ic.TypeCode, layers.CreateICMPv4TypeCode(3, 4))
				expectEq(t, i, "mtu", ic.Seq, uint16(1480))
				ip := ipOf(t, f)
				expectEq(t, i, "src", addrOf(ip.SrcIP), vip)
				expectEq(t, i, "dst", addrOf(ip.DstIP), client)
				expectEq(t, i, "iface", f.iface, "vip0")
				continue
			}
			outer, inner := ipsOf(t, f)
			expectEq(t, i, "outer proto", outer.Protocol, layers.IPProtocolIPv4)
			expectEq(t, i, "outer src", addrOf(outer.SrcIP), dip)
			expectEq(t, i, "outer dst", addrOf(outer.DstIP), rs1)
			expectEq(t, i, "outer ttl = inner ttl", outer.TTL, inner.TTL)
			expectEq(t, i, "inner ttl", inner.TTL, uint8(63))
			expectEq(t, i, "outer DF copied", outer.Flags&layers.IPv4DontFragment != 0, inner.Flags&layers.IPv4DontFragment != 0)
			expectEq(t, i, "inner dst", addrOf(inner.DstIP), vip)
			expectEq(t, i, "length", int(outer.Length), int(inner.Length)+20)
			if outer.Length > 1500 {
				t.Errorf("frame %d: %d bytes exceed the 1500 MTU", i, outer.Length)
			}
		}
	},
	"nat-udp": func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "dest", "198.18.2.12:5353 198.18.2.12:5353 198.18.2.11:5353 198.18.2.11:5353 198.18.2.12:5353 198.18.2.12:5353 -", func(v replay.Verdict) string { return orDash(v.Dest) })
		expectSeq(t, r, "active", "0 0 0 0 0 0 -", func(v replay.Verdict) string { return ptr(v.Active) }) // UDP is never active
		expectEq(t, 6, "stray reply", r.verdicts[6].Action, "pass")
		// IPVS's udp_dnat_handler/udp_snat_handler compute the full
		// checksum of a datagram sent without one (0), both ways; the
		// frames' checksums are verified by checkFrame.
		for i, f := range r.frames {
			if u := udpOf(t, f); u.Checksum == 0 {
				t.Errorf("frame %d (%q): UDP checksum 0 after NAT, IPVS computes it", i, u.Payload)
			}
		}
	},
	"persistence": func(t *testing.T, r goldenRun) {
		// Template affinity by /24, rr for another /24, re-armed by use,
		// rescheduled after the template's 360 s ran out.
		expectSeq(t, r, "dest", "198.18.2.12:53 198.18.2.12:53 198.18.2.12:53 198.18.2.11:53 198.18.2.12:53 198.18.2.12:53", func(v replay.Verdict) string { return v.Dest })
		expectSeq(t, r, "inactive", "1 2 3 1 4 1", func(v replay.Verdict) string { return ptr(v.Inactive) })
	},
	"mh-kernel": func(t *testing.T, r goldenRun) {
		// The kernel's mh picks (checked in package scheduler against a
		// transcription of ip_vs_mh.c). Port 53: the quiesced .14 keeps its
		// slots, its clients get port unreachable. Port 54 (mh-fallback,
		// mh-port): they rehash onto live servers.
		want := "13 - 12 11 12 - 11 11 12 - - - " +
			"13 13 11 12 13 13 12 12 12 13 12 13"
		expectSeq(t, r, "picks", want, func(v replay.Verdict) string {
			if v.Action == "reply" && v.Reason == "no_dest" {
				return "-"
			}
			a, _, _ := strings.Cut(v.Dest, ":")
			return strings.TrimPrefix(a, "198.18.2.")
		})
	},
	"weight0": func(t *testing.T, r goldenRun) {
		for i, v := range r.verdicts {
			expectEq(t, i, "dest", v.Dest, "198.18.2.11:53")
		}
	},
	"timeouts": func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "conn", "new existing new new -", func(v replay.Verdict) string { return orDash(v.Conn) })
		expectSeq(t, r, "dest", "198.18.2.12:53 198.18.2.12:53 198.18.2.11:53 198.18.2.11:80 -", func(v replay.Verdict) string { return orDash(v.Dest) })
		expectEq(t, 4, "reason", r.verdicts[4].Reason, "no_conn")
	},
	"icmp-nat": func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "action", "transmit transmit transmit transmit transmit pass", func(v replay.Verdict) string { return v.Action })
		// Frame 2: error from outside about VIP:80 -> client, goes to the
		// real server with the embedded source rewritten to RIP:8080.
		f := r.frames[2]
		ip := ipOf(t, f)
		expectEq(t, 2, "outer dst", addrOf(ip.DstIP), rs1)
		emb := embedded(t, f)
		expectEq(t, 2, "embedded src", addrOf(emb.SrcIP), rs1)
		expectEq(t, 2, "embedded sport", embeddedPorts(emb)[0], uint16(8080))
		// Frame 4: error from the real server about client -> RIP:5353, goes
		// to the client as coming from the VIP with the embedded dst VIP:53.
		f = r.frames[4]
		ip = ipOf(t, f)
		expectEq(t, 4, "outer src", addrOf(ip.SrcIP), vip)
		expectEq(t, 4, "outer dst", addrOf(ip.DstIP), client)
		emb = embedded(t, f)
		expectEq(t, 4, "embedded dst", addrOf(emb.DstIP), vip)
		expectEq(t, 4, "embedded dport", embeddedPorts(emb)[1], uint16(53))
	},
	"icmp-dr-tun": func(t *testing.T, r goldenRun) {
		// DR: the error goes unchanged to the real server's MAC.
		f := r.frames[1]
		expectEq(t, 1, "dst mac", ethOf(t, f).DstMAC.String(), derivedMAC(rs1))
		expectEq(t, 1, "proto", ipOf(t, f).Protocol, layers.IPProtocolICMPv4)
		expectEq(t, 1, "dst", addrOf(ipOf(t, f).DstIP), vip)
		// TUN: encapsulated to the real server.
		outer, inner := ipsOf(t, r.frames[3])
		expectEq(t, 3, "outer dst", addrOf(outer.DstIP), rs2)
		expectEq(t, 3, "inner proto", inner.Protocol, layers.IPProtocolICMPv4)
	},
	"ttl": func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "action", "reply transmit", func(v replay.Verdict) string { return v.Action })
		ic := icmpOf(t, r.frames[0])
		expectEq(t, 0, "icmp", ic.TypeCode, layers.CreateICMPv4TypeCode(11, 0))
		expectEq(t, 0, "to", addrOf(ipOf(t, r.frames[0]).DstIP), client)
		expectEq(t, 1, "ttl", ipOf(t, r.frames[1]).TTL, uint8(1))
		// IPVS schedules before its transmitter checks the TTL: the TTL-1
		// SYN's connection exists (SYN_RECV, active) and the next one is
		// the real server's second.
		expectSeq(t, r, "conn", "new new", func(v replay.Verdict) string { return v.Conn })
		expectSeq(t, r, "state", "SYN_RECV SYN_RECV", func(v replay.Verdict) string { return v.State })
		expectEq(t, 1, "active", *r.verdicts[1].Active, int32(2))
	},
	"no-dest": func(t *testing.T, r goldenRun) {
		for i, f := range r.frames {
			ic := icmpOf(t, f)
			expectEq(t, i, "icmp", ic.TypeCode, layers.CreateICMPv4TypeCode(3, 3))
			expectEq(t, i, "src", addrOf(ipOf(t, f).SrcIP), vip)
			expectEq(t, i, "dst", addrOf(ipOf(t, f).DstIP), client)
		}
		expectSeq(t, r, "reason", "no_dest no_dest", func(v replay.Verdict) string { return v.Reason })
	},
	"vlan": func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "dir", "in out", func(v replay.Verdict) string { return v.Dir })
		expectEq(t, 0, "dst", addrOf(ipOf(t, r.frames[0]).DstIP), rs1)
		expectEq(t, 1, "src", addrOf(ipOf(t, r.frames[1]).SrcIP), vip)
	},
	"malformed": func(t *testing.T, r goldenRun) {
		want := "truncated_ethernet truncated_ip bad_ip_version bad_ihl bad_total_length bad_ip_checksum bad_tcp_offset bad_total_length bad_udp_length - bad_icmp_checksum - - no_conn - fragment"
		expectSeq(t, r, "reason", want, func(v replay.Verdict) string { return orDash(v.Reason) })
		// The well-formed segment without a connection gets the host's
		// RST; nothing else is sent.
		expectSeq(t, r, "action", "drop drop drop drop drop drop drop drop drop pass drop control pass reply pass drop", func(v replay.Verdict) string { return v.Action })
		if len(r.frames) != 1 || !tcpOf(t, r.frames[0]).RST {
			t.Errorf("only the RST for the segment without a connection may be sent, got %d frames", len(r.frames))
		}
	},
}

// schedulerCase checks the distribution of 120 new UDP flows over real
// servers with weights 3, 2, 1 (rs1, rs2, rs3) for each scheduler.
func schedulerCase(name string) func(*testing.T, goldenRun) {
	sched, ok := strings.CutPrefix(name, "sched-")
	if !ok {
		return nil
	}
	return func(t *testing.T, r goldenRun) {
		count := map[string]int{}
		for i, v := range r.verdicts {
			if v.Action != "transmit" || v.Conn != "new" {
				t.Fatalf("flow %d: %s %s, want a new connection", i, v.Action, v.Conn)
			}
			count[strings.TrimSuffix(v.Dest, ":53")]++
		}
		c1, c2, c3 := count["198.18.2.11"], count["198.18.2.12"], count["198.18.2.13"]
		got := fmt.Sprintf("%d/%d/%d", c1, c2, c3)
		if c1+c2+c3 != 120 {
			t.Fatalf("%s: %s does not add up to 120", sched, got)
		}
		near := func(c, want, tol int) bool { return c >= want-tol && c <= want+tol }
		switch sched {
		case "rr", "lc":
			// rr: one each in turn. lc: UDP connections are all inactive,
			// overhead grows by one each: the same as round robin.
			if got != "40/40/40" {
				t.Errorf("%s: %s, want 40/40/40", sched, got)
			}
		case "wrr", "wlc":
			// wrr: exact 3:2:1; wlc: least inactive/weight keeps 3:2:1.
			if got != "60/40/20" {
				t.Errorf("%s: %s, want 60/40/20", sched, got)
			}
		case "sed", "fo", "ovf":
			// sed counts active connections only (UDP has none): the
			// heaviest wins every tie; fo and ovf pick the highest weight.
			if got != "120/0/0" {
				t.Errorf("%s: %s, want 120/0/0", sched, got)
			}
		case "nq":
			// nq takes the first server with no active connection, in list
			// order: the newest (rs3).
			if got != "0/0/120" {
				t.Errorf("%s: %s, want 0/0/120", sched, got)
			}
		case "dh", "lblc", "lblcr":
			// Destination-address hashing and locality: one VIP, one server.
			if c1 != 120 && c2 != 120 && c3 != 120 {
				t.Errorf("%s: %s, want all flows on one server", sched, got)
			}
		case "sh", "mh", "twos":
			// Hashing of 120 client addresses / random choice, weighted 3:2:1.
			if !near(c1, 60, 18) || !near(c2, 40, 16) || !near(c3, 20, 14) {
				t.Errorf("%s: %s, want about 60/40/20", sched, got)
			}
		default:
			t.Fatalf("no expectation for scheduler %s", sched)
		}
	}
}

func (r goldenRun) verdictFor(frame int) replay.Verdict {
	n := 0
	for _, v := range r.verdicts {
		if v.Action == "transmit" || v.Action == "reply" {
			if n == frame {
				return v
			}
			n++
		}
	}
	return replay.Verdict{}
}

func expectSeq(t *testing.T, r goldenRun, what, want string, f func(replay.Verdict) string) {
	t.Helper()
	var got []string
	for _, v := range r.verdicts {
		got = append(got, f(v))
	}
	if g := strings.Join(got, " "); g != want {
		t.Errorf("%s:\n got %s\nwant %s", what, g, want)
	}
}

func expectEq[T comparable](t *testing.T, i int, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("frame %d: %s = %v, want %v", i, what, got, want)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ptr(p *int32) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

func ethOf(t *testing.T, f outFrame) *layers.Ethernet {
	t.Helper()
	e, ok := f.pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok {
		t.Fatal("no Ethernet layer")
	}
	return e
}

func ipOf(t *testing.T, f outFrame) *layers.IPv4 {
	t.Helper()
	ip, ok := f.pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		t.Fatal("no IPv4 layer")
	}
	return ip
}

func ipsOf(t *testing.T, f outFrame) (outer, inner *layers.IPv4) {
	t.Helper()
	var ips []*layers.IPv4
	for _, l := range f.pkt.Layers() {
		if ip, ok := l.(*layers.IPv4); ok {
			ips = append(ips, ip)
		}
	}
	if len(ips) != 2 {
		t.Fatalf("want IPv4 in IPv4, got %d IPv4 layers", len(ips))
	}
	return ips[0], ips[1]
}

func tcpOf(t *testing.T, f outFrame) *layers.TCP {
	t.Helper()
	x, ok := f.pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatal("no TCP layer")
	}
	return x
}

func udpOf(t *testing.T, f outFrame) *layers.UDP {
	t.Helper()
	x, ok := f.pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		t.Fatal("no UDP layer")
	}
	return x
}

func icmpOf(t *testing.T, f outFrame) *layers.ICMPv4 {
	t.Helper()
	x, ok := f.pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok {
		t.Fatal("no ICMPv4 layer")
	}
	return x
}

// embedded decodes the IPv4 header quoted in an ICMP error.
func embedded(t *testing.T, f outFrame) *layers.IPv4 {
	t.Helper()
	ic := icmpOf(t, f)
	var ip layers.IPv4
	if err := ip.DecodeFromBytes(ic.Payload, nopFeedback{}); err != nil {
		t.Fatalf("embedded header: %v", err)
	}
	return &ip
}

func embeddedPorts(ip *layers.IPv4) [2]uint16 {
	p := ip.Payload
	if len(p) < 4 {
		return [2]uint16{}
	}
	return [2]uint16{uint16(p[0])<<8 | uint16(p[1]), uint16(p[2])<<8 | uint16(p[3])}
}

type nopFeedback struct{}

func (nopFeedback) SetTruncated() {}

var _ = netip.Addr{}
