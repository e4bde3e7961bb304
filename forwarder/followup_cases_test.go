package forwarder_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"gvs/forwarder/replay"
)

// Semantic checks of the golden cases of the IPVS conformance follow-ups:
// drop_packet's place, schedule_icmp, unreachable real servers.
func init() {
	caseChecks["drop-packet"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "reason", "drop_packet drop_packet -", func(v replay.Verdict) string { return orDash(v.Reason) })
		expectSeq(t, r, "dest", "- - 198.18.2.12:8080", func(v replay.Verdict) string { return orDash(v.Dest) })
		if len(r.script) != 5 {
			t.Fatalf("%d script steps, want 5", len(r.script))
		}
		// The dropped SYNs made no persistence template (and no connection).
		if strings.Contains(r.script[2].out, "TCP") {
			t.Errorf("entries after the dropped SYNs:\n%s", r.script[2].out)
		}
		// rr's first pick for the first scheduled SYN: the drops did not
		// move the scheduler.
		if !strings.Contains(r.script[4].out, "NONE        198.18.1.12:0      198.51.100.10:80   198.18.2.12:8080") {
			t.Errorf("no template to rr's first pick:\n%s", r.script[4].out)
		}
	}
}

func init() {
	caseChecks["schedule-icmp"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "action", "pass transmit transmit pass drop pass transmit", func(v replay.Verdict) string { return v.Action })
		expectSeq(t, r, "conn", "- new new - - - new", func(v replay.Verdict) string { return orDash(v.Conn) })
		expectSeq(t, r, "state", "- NONE UDP - - - NONE", func(v replay.Verdict) string { return orDash(v.State) })
		expectSeq(t, r, "reason", "- - - - no_dest - -", func(v replay.Verdict) string { return orDash(v.Reason) })
		if len(r.frames) != 3 {
			t.Fatalf("%d frames, want 3", len(r.frames))
		}
		// NAT: the outer destination and the quoted source are the real
		// server's; DR: the error unchanged to the real server's MAC.
		for _, i := range []int{0, 2} {
			ip, ic := ipOf(t, r.frames[i]), icmpOf(t, r.frames[i])
			expectEq(t, i, "dst", addrOf(ip.DstIP), rs1)
			q := gopacket.NewPacket(ic.Payload, layers.LayerTypeIPv4, gopacket.Default)
			qip, _ := q.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if qip == nil || len(qip.Payload) < 4 {
				t.Fatalf("frame %d: quote not decoded", i)
			}
			expectEq(t, i, "quoted src", addrOf(qip.SrcIP), rs1)
			expectEq(t, i, "quoted sport", binary.BigEndian.Uint16(qip.Payload), 8080)
		}
		expectEq(t, 1, "dst", addrOf(ipOf(t, r.frames[1]).DstIP), vip)
		expectEq(t, 1, "dst mac", ethOf(t, r.frames[1]).DstMAC.String(), derivedMAC(rs2))
		if len(r.script) != 4 {
			t.Fatalf("%d script steps, want 4", len(r.script))
		}
		for _, want := range []string{"TCP 00:02  NONE        198.18.1.11:40001", "UDP 00:02  UDP         198.18.1.12:37000"} {
			if !strings.Contains(r.script[1].out, want) {
				t.Errorf("-Lnc lacks %q:\n%s", want, r.script[1].out)
			}
		}
		if strings.Contains(r.script[3].out, "198.18.1.11") {
			t.Errorf("the NONE entries outlived their 3 s:\n%s", r.script[3].out)
		}
	}
}

func init() {
	caseChecks["host-unreach"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "action", "drop reply", func(v replay.Verdict) string { return v.Action })
		expectSeq(t, r, "reason", "no_route host_unreach", func(v replay.Verdict) string { return v.Reason })
		if len(r.frames) != 1 {
			t.Fatalf("%d frames, want 1", len(r.frames))
		}
		ip, ic := ipOf(t, r.frames[0]), icmpOf(t, r.frames[0])
		expectEq(t, 0, "src", addrOf(ip.SrcIP), vip)
		expectEq(t, 0, "dst", addrOf(ip.DstIP), client)
		expectEq(t, 0, "type", ic.TypeCode, layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost))
		expectEq(t, 0, "iface", r.frames[0].iface, "vip0")
	}
}
