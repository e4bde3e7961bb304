package forwarder_test

import (
	"fmt"

	"github.com/gopacket/gopacket/layers"

	"testing"

	"gvs/forwarder/replay"
)

// Semantic checks of the golden cases about transmission, ICMP errors,
// martians and the sysctls acted on there.
func init() {
	caseChecks["martians"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "reason", "martian_source martian_source martian_source martian_source martian_source "+
			"martian_source martian_source martian_source - - martian_mac -",
			func(v replay.Verdict) string { return orDash(v.Reason) })
		expectSeq(t, r, "action", "drop drop drop drop drop drop drop drop transmit transmit drop pass",
			func(v replay.Verdict) string { return v.Action })
	}
}

func init() {
	caseChecks["fragment"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "action", "transmit reply transmit reply transmit transmit", func(v replay.Verdict) string { return v.Action })
		expectSeq(t, r, "frags", "2 0 2 0 2 2", func(v replay.Verdict) string { return fmt.Sprint(v.Frags) })
		expectSeq(t, r, "reason", "- frag_needed - frag_needed - -", func(v replay.Verdict) string { return orDash(v.Reason) })
		// Frames: NAT fragments (2), frag-needed 1000, IPIP fragments
		// (2, outer DF of a DF-less inner: 0), frag-needed 980, IPIP
		// fragments of a DF inner after pmtu_disc=0, the ICMP error's
		// fragments.
		if len(r.frames) != 10 {
			t.Fatalf("%d frames, want 10", len(r.frames))
		}
		for i, f := range r.frames {
			ip := ipOf(t, f)
			if ip.Length > 1000 {
				t.Errorf("frame %d: %d bytes over MTU 1000", i, ip.Length)
			}
			frag := ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0
			if frag && ip.Flags&layers.IPv4DontFragment != 0 {
				t.Errorf("frame %d: a fragment with DF", i)
			}
		}
		for i, mtu := range map[int]uint16{2: 1000, 5: 980} {
			if ic := icmpOf(t, r.frames[i]); ic.TypeCode.Code() != layers.ICMPv4CodeFragmentationNeeded || ic.Seq != mtu {
				t.Errorf("frame %d: %v mtu %d, want frag-needed %d", i, ic.TypeCode, ic.Seq, mtu)
			}
		}
	}
}

func init() {
	caseChecks["nat-icmp-send"] = func(t *testing.T, r goldenRun) {
		expectSeq(t, r, "action", "pass reply pass pass", func(v replay.Verdict) string { return v.Action })
		ip, ic := ipOf(t, r.frames[0]), icmpOf(t, r.frames[0])
		expectEq(t, 0, "src", addrOf(ip.SrcIP), dip)
		expectEq(t, 0, "dst", addrOf(ip.DstIP), rs1)
		expectEq(t, 0, "type", ic.TypeCode, layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort))
		expectEq(t, 0, "iface", r.frames[0].iface, "dip0")
	}
	caseChecks["run-estimation"] = func(t *testing.T, r goldenRun) {
		if len(r.script) != 5 {
			t.Fatalf("%d script steps, want 5", len(r.script))
		}
		if r.script[0].out != r.script[2].out {
			t.Errorf("rates changed while run_estimation was 0:\n%s\n%s", r.script[0].out, r.script[2].out)
		}
		if r.script[4].out == r.script[2].out {
			t.Errorf("rates did not move after run_estimation=1:\n%s", r.script[4].out)
		}
	}
}
