package forwarder_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"gvs/forwarder/replay"
	"gvs/forwarder/staticenv"
)

var update = flag.Bool("update", false, "rewrite the golden outputs in testdata/replay")

const replayDir = "../testdata/replay"

// outFrame is one transmitted frame read back from a golden pcapng.
type outFrame struct {
	iface string
	data  []byte
	pkt   gopacket.Packet
}

type goldenRun struct {
	verdicts []replay.Verdict
	frames   []outFrame
	script   []scriptStep // the golden script.out, for a case with a script
}

// scriptStep is one command's part of a script's output: the header line
// after "== " and what follows it up to the next header.
type scriptStep struct {
	cmd, out string
}

// TestGolden replays every case under testdata/replay and compares the
// transmitted frames and the verdicts with the golden files byte for byte;
// then it decodes every transmitted frame with gopacket, checks all
// checksums independently, and checks what each case is about.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(replayDir, "*", "in.pcapng"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no replay cases in %s (run make golden): %v", replayDir, err)
	}
	seen := map[string]bool{}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		name := filepath.Base(dir)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			run := replayCase(t, dir)
			for i, f := range run.frames {
				checkFrame(t, i, f)
			}
			check, ok := caseChecks[name]
			if !ok {
				if sc := schedulerCase(name); sc != nil {
					check = sc
				} else {
					t.Fatalf("case %s has no semantic check: add one to caseChecks", name)
				}
			}
			check(t, run)
		})
	}
	for name := range caseChecks {
		if !seen[name] {
			t.Errorf("case %s is checked but has no input in %s", name, replayDir)
		}
	}
}

func replayCase(t *testing.T, dir string) goldenRun {
	t.Helper()
	table, err := replay.LoadRules(filepath.Join(dir, "rules"))
	if err != nil {
		t.Fatal(err)
	}
	facts := staticenv.DefaultFacts()
	if _, err := os.Stat(filepath.Join(dir, "facts.json")); err == nil {
		if facts, err = staticenv.LoadFacts(filepath.Join(dir, "facts.json")); err != nil {
			t.Fatal(err)
		}
	}
	in, err := os.ReadFile(filepath.Join(dir, "in.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	// A case may have a script of ipvsadm commands (gvs-replay --script),
	// whose output is compared with script.out.
	var script replay.Script
	scriptPath, sOutPath := filepath.Join(dir, "script"), filepath.Join(dir, "script.out")
	hasScript := false
	if _, err := os.Stat(scriptPath); err == nil {
		hasScript = true
		if script, err = replay.LoadScript(scriptPath); err != nil {
			t.Fatal(err)
		}
	}
	// A case may set the connection table's capacity (gvs-replay
	// --conn-capacity).
	capacity := 0
	if b, err := os.ReadFile(filepath.Join(dir, "conn-capacity")); err == nil {
		if capacity, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatal(err)
		}
	}
	var out, verdicts, sout bytes.Buffer
	if _, err := replay.ReplayScript(table, facts, capacity, in, &out, &verdicts, script, &sout); err != nil {
		t.Fatal(err)
	}
	outPath, vPath := filepath.Join(dir, "out.pcapng"), filepath.Join(dir, "verdicts.jsonl")
	var run goldenRun
	if hasScript {
		if *update {
			if err := os.WriteFile(sOutPath, sout.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		gold, err := os.ReadFile(sOutPath)
		if err != nil {
			t.Fatalf("%v (run make golden)", err)
		}
		if !bytes.Equal(sout.Bytes(), gold) {
			t.Errorf("script output differs from %s:\ngot:\n%s\nwant:\n%s", sOutPath, sout.Bytes(), gold)
		}
		run.script = splitScriptOut(string(gold))
	} else if _, err := os.Stat(sOutPath); err == nil {
		t.Errorf("%s without a script", sOutPath)
	}
	if *update {
		if err := os.WriteFile(outPath, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vPath, verdicts.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goldOut, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatalf("%v (run make golden)", err)
	}
	goldV, err := os.ReadFile(vPath)
	if err != nil {
		t.Fatalf("%v (run make golden)", err)
	}
	if !bytes.Equal(out.Bytes(), goldOut) {
		t.Errorf("transmitted frames differ from %s (%d vs %d bytes)", outPath, out.Len(), len(goldOut))
	}
	if !bytes.Equal(verdicts.Bytes(), goldV) {
		t.Errorf("verdicts differ from %s:\ngot:\n%s\nwant:\n%s", vPath, verdicts.Bytes(), goldV)
	}
	// The semantic checks read the golden files, so they also vouch for
	// what is committed.
	sc := bufio.NewScanner(bytes.NewReader(goldV))
	for sc.Scan() {
		var v replay.Verdict
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		run.verdicts = append(run.verdicts, v)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(goldOut), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		intf, err := r.Interface(ci.InterfaceIndex)
		if err != nil {
			t.Fatal(err)
		}
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		run.frames = append(run.frames, outFrame{iface: intf.Name, data: data, pkt: pkt})
	}
	// Every transmit/reply verdict has its frame, on the interface it names.
	var sent []replay.Verdict
	for _, v := range run.verdicts {
		if v.Action == "transmit" || v.Action == "reply" {
			for range max(v.Frags, 1) { // one frame per fragment
				sent = append(sent, v)
			}
		}
	}
	// A reassembly timeout's ICMP error answers no frame (it goes out
	// before the frame that moved the clock past it): no verdict.
	j := 0
	for i, f := range run.frames {
		if len(run.frames)-i > len(sent)-j && isReassemblyTimeout(f) {
			continue
		}
		if j == len(sent) {
			t.Fatalf("frame %d has no transmit/reply verdict (%d verdicts, %d frames)", i, len(sent), len(run.frames))
		}
		if f.iface != sent[j].Egress {
			t.Errorf("frame %d on %s, verdict says %s", i, f.iface, sent[j].Egress)
		}
		j++
	}
	if j != len(sent) {
		t.Fatalf("%d transmit/reply verdicts but %d frames", len(sent), len(run.frames))
	}
	return run
}

// splitScriptOut cuts a script's output at its "== " header lines.
func splitScriptOut(s string) []scriptStep {
	var steps []scriptStep
	for _, line := range strings.SplitAfter(s, "\n") {
		if h, ok := strings.CutPrefix(line, "== "); ok {
			steps = append(steps, scriptStep{cmd: strings.TrimSuffix(h, "\n")})
		} else if len(steps) > 0 {
			steps[len(steps)-1].out += line
		}
	}
	return steps
}

// checkFrame decodes a transmitted frame with gopacket and recomputes every
// checksum with gopacket's serializer, independently of gvs's code.
func checkFrame(t *testing.T, i int, f outFrame) {
	t.Helper()
	// Decoding must succeed through the transport layer; what gopacket
	// makes of the payload (it reads anything on port 53 as DNS) is not
	// the director's business.
	if el := f.pkt.ErrorLayer(); el != nil && f.pkt.TransportLayer() == nil && f.pkt.Layer(layers.LayerTypeICMPv4) == nil {
		t.Fatalf("frame %d: gopacket cannot decode: %v", i, el.Error())
	}
	if f.pkt.Layer(layers.LayerTypeDot1Q) != nil {
		t.Errorf("frame %d: forwarded frames leave untagged", i)
	}
	ips := []*layers.IPv4{}
	for _, l := range f.pkt.Layers() {
		if ip, ok := l.(*layers.IPv4); ok {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		t.Fatalf("frame %d: no IPv4", i)
	}
	for _, ip := range ips {
		if got, want := ip.Checksum, ipv4Checksum(t, ip); got != want {
			t.Errorf("frame %d: IPv4 %v->%v header checksum %#04x, want %#04x", i, ip.SrcIP, ip.DstIP, got, want)
		}
	}
	inner := ips[len(ips)-1]
	switch l := f.pkt.TransportLayer().(type) {
	case *layers.TCP:
		if got, want := l.Checksum, l4Checksum(t, inner, l); got != want {
			t.Errorf("frame %d: TCP checksum %#04x, want %#04x", i, got, want)
		}
	case *layers.UDP:
		if l.Checksum != 0 { // 0: sent without checksum, allowed for UDP
			if got, want := l.Checksum, l4Checksum(t, inner, l); got != want {
				t.Errorf("frame %d: UDP checksum %#04x, want %#04x", i, got, want)
			}
		}
	}
	if ic, ok := f.pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		if got, want := ic.Checksum, icmpChecksum(t, ic); got != want {
			t.Errorf("frame %d: ICMP checksum %#04x, want %#04x", i, got, want)
		}
	}
}

func ipv4Checksum(t *testing.T, ip *layers.IPv4) uint16 {
	c := *ip
	buf := gopacket.NewSerializeBuffer()
	if err := c.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
		t.Fatal(err)
	}
	return uint16(buf.Bytes()[10])<<8 | uint16(buf.Bytes()[11])
}

func l4Checksum(t *testing.T, ip *layers.IPv4, l gopacket.SerializableLayer) uint16 {
	buf := gopacket.NewSerializeBuffer()
	var off int
	switch x := l.(type) {
	case *layers.TCP:
		c := *x
		c.SetNetworkLayerForChecksum(ip)
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(x.Payload)); err != nil {
			t.Fatal(err)
		}
		off = 16
	case *layers.UDP:
		c := *x
		c.SetNetworkLayerForChecksum(ip)
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(x.Payload)); err != nil {
			t.Fatal(err)
		}
		off = 6
	}
	b := buf.Bytes()
	return uint16(b[off])<<8 | uint16(b[off+1])
}

func icmpChecksum(t *testing.T, ic *layers.ICMPv4) uint16 {
	c := *ic
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(ic.Payload)); err != nil {
		t.Fatal(err)
	}
	return uint16(buf.Bytes()[2])<<8 | uint16(buf.Bytes()[3])
}

// Lab addresses (cmd/gvs-pcapgen).
var (
	vip    = netip.MustParseAddr("198.51.100.10")
	client = netip.MustParseAddr("198.18.1.11")
	dip    = netip.MustParseAddr("198.18.2.1")
	rs1    = netip.MustParseAddr("198.18.2.11")
	rs2    = netip.MustParseAddr("198.18.2.12")
)

func derivedMAC(a netip.Addr) string {
	m := staticenv.DerivedMAC(a)
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

func addrOf(b []byte) netip.Addr { a, _ := netip.AddrFromSlice(b); return a.Unmap() }

func init() {
	caseChecks["script-nat"] = checkScriptNAT
}

// checkScriptNAT checks the scripted case: listings taken at capture times
// through the control engine, a real server deleted under a connection,
// bad commands reported with ipvsadm's text and status, and timeouts
// running out after the last frame.
func checkScriptNAT(t *testing.T, r goldenRun) {
	want := []string{
		"1 -Lnc", "1 -Ln",
		"2 -d -t 198.51.100.10:80 -r 198.18.2.12:8080", "2 -d -t 198.51.100.10:80 -r 198.18.2.12:8080",
		"2.5 -Lnc", "3 -Ln --stats", "3 -Ln --rate",
		"4 -a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m", "4 -Q",
		"60 -Lnc", "950 -Lnc", "950 -Ln",
	}
	if len(r.script) != len(want) {
		t.Fatalf("%d commands in script.out, want %d: %q", len(r.script), len(want), r.script)
	}
	for i, w := range want {
		if r.script[i].cmd != w {
			t.Errorf("command %d: %q, want %q", i, r.script[i].cmd, w)
		}
	}
	has := func(i int, s string) {
		t.Helper()
		if !strings.Contains(r.script[i].out, s) {
			t.Errorf("output of %q lacks %q:\n%s", r.script[i].cmd, s, r.script[i].out)
		}
	}
	lacks := func(i int, s string) {
		t.Helper()
		if strings.Contains(r.script[i].out, s) {
			t.Errorf("output of %q has %q:\n%s", r.script[i].cmd, s, r.script[i].out)
		}
	}
	// At 1 s the connection is ESTABLISHED, its 900 s timer armed ~1 s ago.
	has(0, "TCP 14:59  ESTABLISHED 198.18.1.11:40801  198.51.100.10:80   198.18.2.12:8080\n")
	has(1, "  -> 198.18.2.12:8080             Masq    1      1          0")
	// Deleting prints nothing; deleting again fails and changes nothing.
	if r.script[2].out != "" {
		t.Errorf("-d printed %q", r.script[2].out)
	}
	if r.script[3].out != "No such destination\nexit 255\n" {
		t.Errorf("second -d: %q, want ipvsadm's error and status 255", r.script[3].out)
	}
	// The frame after the deletion is dropped: the connection's real
	// server is gone (expire_nodest_conn 0 keeps the entry).
	expectEq(t, 5, "reason", r.verdicts[5].Reason, "dest_removed")
	// The -Lnc at 2.5 s runs before the SYN captured at exactly 2.5 s.
	lacks(4, "40802")
	if v := r.verdicts[6]; v.Conn != "new" || v.Dest != "198.18.2.11:8080" {
		t.Errorf("SYN at 2.5 s: %+v, want a new connection to the remaining real server", v)
	}
	has(5, "TCP  198.51.100.10:80                    2        4        2      178      680\n")
	lacks(5, "198.18.2.12")
	// Rates: the sample at 2 s saw 1 connection, 3+2 packets and 138+680
	// bytes since the baseline at 0 s; each average moves a quarter of the
	// way to diff/2 s: 17 and 85 bytes/s, the rest rounds to 0.
	has(6, "TCP  198.51.100.10:80                    0        0        0       17       85\n")
	has(7, "Destination already exists\nexit 255\n")
	has(8, "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\nexit 255\n")
	// After the last frame: the SYN_RECV entry (60 s from 2.5 s) has 2 s
	// left at 60 s; at 950 s everything has timed out.
	has(9, "TCP 00:02  SYN_RECV    198.18.1.11:40802  198.51.100.10:80   198.18.2.11:8080\n")
	has(9, "ESTABLISHED 198.18.1.11:40801")
	if got := r.script[10].out; got != "IPVS connection entries\npro expire state       source             virtual            destination\n" {
		t.Errorf("-Lnc at 950 s: %q, want no entries", got)
	}
	has(11, "  -> 198.18.2.11:8080             Masq    1      0          0")
}
