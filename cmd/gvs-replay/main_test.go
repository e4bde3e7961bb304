package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"gvs/forwarder/replay"
)

const cases = "../../testdata/replay"

func TestRunUsage(t *testing.T) {
	var out, errb bytes.Buffer
	err := run([]string{"--rules", "x"}, &out, &errb)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "required") {
		t.Fatalf("missing --in/--out: %v, want a usage error", err)
	}
	if !strings.Contains(errb.String(), "usage: gvs-replay") {
		t.Errorf("usage not printed: %q", errb.String())
	}
}

// A bad rules line is reported with its line number and ipvsadm's wording,
// and nothing is replayed.
func TestRunBadRules(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.WriteFile(rules, []byte("-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.11:80 -r 198.18.2.11:80 -m\n"), 0o644)
	out := filepath.Join(dir, "out.pcapng")
	err := run([]string{"--rules", rules, "--in", filepath.Join(cases, "nat-tcp", "in.pcapng"), "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "line 2: Service not defined") {
		t.Fatalf("err = %v, want line 2: Service not defined", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("output written despite the bad rules file")
	}
}

// A classic pcap file (not pcapng) replays too: every frame arrives on the
// VIP side, and the direction of NAT replies is still found by lookup.
func TestRunClassicPcap(t *testing.T) {
	dir := t.TempDir()
	ng, err := os.ReadFile(filepath.Join(cases, "nat-tcp", "in.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(ng), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	var pc bytes.Buffer
	w := pcapgo.NewWriterNanos(&pc)
	w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	n := 0
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		w.WritePacket(gopacket.CaptureInfo{Timestamp: ci.Timestamp, CaptureLength: len(data), Length: len(data)}, data)
		n++
	}
	in := filepath.Join(dir, "in.pcap")
	os.WriteFile(in, pc.Bytes(), 0o644)
	vpath := filepath.Join(dir, "v.jsonl")
	var stdout bytes.Buffer
	if err := run([]string{"--rules", filepath.Join(cases, "nat-tcp", "rules"), "--in", in, "--out", filepath.Join(dir, "o.pcapng"), "--verdicts", vpath}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(vpath)
	want, _ := os.ReadFile(filepath.Join(cases, "nat-tcp", "verdicts.jsonl"))
	if !bytes.Equal(got, want) {
		t.Errorf("classic pcap verdicts differ from the pcapng golden:\n%s", got)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) != n {
		t.Fatalf("%d verdicts for %d frames", len(lines), n)
	}
	var v replay.Verdict
	json.Unmarshal([]byte(lines[1]), &v)
	if v.Dir != "out" || v.Egress != "vip0" {
		t.Errorf("the SYN/ACK arriving on the VIP side must still be a NAT reply: %+v", v)
	}
	if !strings.Contains(stdout.String(), "TCP  198.51.100.10:80 rr") {
		t.Errorf("summary lacks the -Ln listing:\n%s", stdout.String())
	}
}

// Facts flags change the director: a smaller DIP-side MTU makes the TUN case
// answer "fragmentation needed" with the smaller MTU.
func TestRunFactsFlags(t *testing.T) {
	dir := t.TempDir()
	vpath := filepath.Join(dir, "v.jsonl")
	opath := filepath.Join(dir, "o.pcapng")
	args := []string{"--rules", filepath.Join(cases, "tun-tcp", "rules"), "--in", filepath.Join(cases, "tun-tcp", "in.pcapng"),
		"--out", opath, "--verdicts", vpath, "--summary=false",
		"--dip-if", "eth1,02:00:00:00:00:02,198.18.2.1/24,1100", "--neigh", "198.18.2.11=02:aa:bb:cc:dd:ee"}
	if err := run(args, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(vpath)
	// Room for 1100 - 20 = 1080 bytes inside the tunnel: the 1040-byte
	// packet fits, the 1500- and 1480-byte ones (DF) do not.
	if c := strings.Count(string(got), `"reason":"frag_needed"`); c != 2 {
		t.Fatalf("%d frag_needed verdicts, want 2:\n%s", c, got)
	}
	if !strings.Contains(string(got), `"egress":"eth1"`) {
		t.Errorf("egress interface name not from --dip-if:\n%s", got)
	}
	f, _ := os.Open(opath)
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	data, _, err := r.ReadPacketData()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data[0:6], []byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}) {
		t.Errorf("dst MAC %x, want the --neigh one", data[0:6])
	}
}

// --script runs the case's ipvsadm commands at their capture times: the
// output matches the golden script.out, in the --script-out file or on
// stdout before the summary.
func TestRunScript(t *testing.T) {
	dir := t.TempDir()
	c := filepath.Join(cases, "script-nat")
	want, err := os.ReadFile(filepath.Join(c, "script.out"))
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"--rules", filepath.Join(c, "rules"), "--in", filepath.Join(c, "in.pcapng"),
		"--out", filepath.Join(dir, "o.pcapng"), "--verdicts", filepath.Join(dir, "v.jsonl"), "--script", filepath.Join(c, "script")}

	sout := filepath.Join(dir, "script.out")
	var stdout bytes.Buffer
	if err := run(append(base, "--script-out", sout), &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(sout)
	if !bytes.Equal(got, want) {
		t.Errorf("--script-out differs from the golden script.out:\n%s", got)
	}
	if !strings.HasPrefix(stdout.String(), "frames: 7\n") {
		t.Errorf("stdout with --script-out is the summary alone:\n%s", stdout.String())
	}
	v, _ := os.ReadFile(filepath.Join(dir, "v.jsonl"))
	wantV, _ := os.ReadFile(filepath.Join(c, "verdicts.jsonl"))
	if !bytes.Equal(v, wantV) {
		t.Errorf("verdicts differ from the golden ones:\n%s", v)
	}

	stdout.Reset()
	if err := run(base, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(stdout.Bytes(), want) || !strings.HasPrefix(stdout.String()[len(want):], "frames: 7\n") {
		t.Errorf("stdout is not the script's output then the summary:\n%s", stdout.String())
	}
}

func TestRunScriptErrors(t *testing.T) {
	dir := t.TempDir()
	c := filepath.Join(cases, "script-nat")
	base := []string{"--rules", filepath.Join(c, "rules"), "--in", filepath.Join(c, "in.pcapng"), "--out", filepath.Join(dir, "o.pcapng")}
	var ue usageError
	if err := run(append(base, "--script-out", filepath.Join(dir, "s")), &bytes.Buffer{}, &bytes.Buffer{}); !errors.As(err, &ue) {
		t.Errorf("--script-out without --script: %v, want a usage error", err)
	}
	bad := filepath.Join(dir, "script")
	os.WriteFile(bad, []byte("1 -Lnc\n0.5 -Ln\n"), 0o644)
	err := run(append(base, "--script", bad), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "line 2: time 0.5 is before the previous command's 1") {
		t.Errorf("decreasing times: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "o.pcapng")); err == nil {
		t.Errorf("output written despite the bad script")
	}
}
