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
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"gvs/forwarder"
	"gvs/forwarder/replay"
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
	facts := forwarder.DefaultFacts()
	if _, err := os.Stat(filepath.Join(dir, "facts.json")); err == nil {
		if facts, err = forwarder.LoadFacts(filepath.Join(dir, "facts.json")); err != nil {
			t.Fatal(err)
		}
	}
	in, err := os.ReadFile(filepath.Join(dir, "in.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	var out, verdicts bytes.Buffer
	if _, err := replay.Replay(table, facts, 0, in, &out, &verdicts); err != nil {
		t.Fatal(err)
	}
	outPath, vPath := filepath.Join(dir, "out.pcapng"), filepath.Join(dir, "verdicts.jsonl")
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
	var run goldenRun
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
			sent = append(sent, v)
		}
	}
	if len(sent) != len(run.frames) {
		t.Fatalf("%d transmit/reply verdicts but %d frames", len(sent), len(run.frames))
	}
	for i, v := range sent {
		if run.frames[i].iface != v.Egress {
			t.Errorf("frame %d on %s, verdict says %s", i, run.frames[i].iface, v.Egress)
		}
	}
	return run
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
	m := forwarder.DerivedMAC(a)
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

func addrOf(b []byte) netip.Addr { a, _ := netip.AddrFromSlice(b); return a.Unmap() }
