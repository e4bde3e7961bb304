package replay

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"

	"gvs/forwarder/staticenv"
	"gvs/internal/frames"
)

func TestParseScript(t *testing.T) {
	s, err := ParseScript(strings.NewReader("# a comment\n\n  0 -Lnc\n" +
		"1.5\t-d  -t 198.51.100.10:80   -r 198.18.2.11:80\n" +
		"   # indented comment\n" +
		"1.5 ipvsadm-save -n\n" +
		"2.000000001 ipvsadm -Z\n" +
		"3\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Command{
		{Line: 3, Seconds: "0", At: 0, Args: []string{"-Lnc"}, Argv: []string{"ipvsadm", "-Lnc"}},
		{Line: 4, Seconds: "1.5", At: 1500 * time.Millisecond,
			Args: []string{"-d", "-t", "198.51.100.10:80", "-r", "198.18.2.11:80"},
			Argv: []string{"ipvsadm", "-d", "-t", "198.51.100.10:80", "-r", "198.18.2.11:80"}},
		{Line: 6, Seconds: "1.5", At: 1500 * time.Millisecond, Args: []string{"ipvsadm-save", "-n"}, Argv: []string{"ipvsadm-save", "-n"}},
		{Line: 7, Seconds: "2.000000001", At: 2*time.Second + 1, Args: []string{"ipvsadm", "-Z"}, Argv: []string{"ipvsadm", "-Z"}},
		{Line: 8, Seconds: "3", At: 3 * time.Second, Args: []string{}, Argv: []string{"ipvsadm"}},
	}
	if len(s) != len(want) {
		t.Fatalf("%d commands, want %d: %+v", len(s), len(want), s)
	}
	for i := range want {
		g, w := s[i], want[i]
		if g.Line != w.Line || g.Seconds != w.Seconds || g.At != w.At || !slices.Equal(g.Args, w.Args) || !slices.Equal(g.Argv, w.Argv) {
			t.Errorf("command %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestParseScriptErrors(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"x -Ln\n", `line 1: bad time "x"`},
		{"-1 -Ln\n", `line 1: bad time "-1"`},
		{"+1 -Ln\n", `line 1: bad time "+1"`},
		{"1e3 -Ln\n", `line 1: bad time "1e3"`},
		{"0x10 -Ln\n", `line 1: bad time "0x10"`},
		{"1. -Ln\n", `line 1: bad time "1."`},
		{".5 -Ln\n", `line 1: bad time ".5"`},
		{"1.5.2 -Ln\n", `line 1: bad time "1.5.2"`},
		{"1.0000000001 -Ln\n", `line 1: bad time "1.0000000001"`},
		{"NaN -Ln\n", `line 1: bad time "NaN"`},
		{"-Ln\n", `line 1: bad time "-Ln"`},
		{"99999999999 -Ln\n", `line 1: bad time "99999999999": too large`},
		// Times must not decrease: rejected, not sorted.
		{"1 -Ln\n\n2 -Ln\n1.999 -Ln\n", "line 4: time 1.999 is before the previous command's 2"},
	} {
		s, err := ParseScript(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v (%d commands), want an error containing %q", tc.in, err, len(s), tc.err)
		}
	}
}

// Lab addresses.
var (
	vip    = netip.MustParseAddr("198.51.100.10")
	client = netip.MustParseAddr("198.18.1.11")
	rs1    = netip.MustParseAddr("198.18.2.11")
	vip0   = netip.MustParseAddr("198.18.1.1")
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type capFrame struct {
	at   time.Duration // after epoch
	data []byte
}

func syn(cport uint16) []byte {
	return frames.TCP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(vip0)},
		frames.IP{Src: client, Dst: vip, DF: true}, frames.TCPSeg{SrcPort: cport, DstPort: 80, SYN: true, Seq: 1})
}

func udp(cport uint16) []byte {
	return frames.UDP(frames.L2{Src: frames.DerivedMAC(client), Dst: frames.DerivedMAC(vip0)},
		frames.IP{Src: client, Dst: vip}, frames.UDPDgram{SrcPort: cport, DstPort: 53, Payload: []byte("q")})
}

// capture is a pcapng of frames arriving on vip0.
func capture(t *testing.T, fs ...capFrame) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&b, ngIface("vip0"), ngOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		ci := gopacket.CaptureInfo{Timestamp: epoch.Add(f.at), CaptureLength: len(f.data), Length: len(f.data)}
		if err := w.WritePacket(ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const testRules = "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -m -w 1\n" +
	"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m -w 1\n"

// runScript replays in with script over testRules and returns the script's
// output and the verdicts.
func runScript(t *testing.T, in []byte, script string) (string, []Verdict) {
	t.Helper()
	table, err := ParseRules(strings.NewReader(testRules), "rules")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseScript(strings.NewReader(script))
	if err != nil {
		t.Fatal(err)
	}
	var out, verdicts, sout bytes.Buffer
	if _, err := ReplayScript(table, staticenv.DefaultFacts(), 0, in, &out, &verdicts, s, &sout); err != nil {
		t.Fatal(err)
	}
	var vs []Verdict
	for _, l := range strings.Split(strings.TrimSpace(verdicts.String()), "\n") {
		var v Verdict
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return sout.String(), vs
}

const connsHeader = "IPVS connection entries\npro expire state       source             virtual            destination\n"

// A command runs before any frame at or after its time, and after the
// frames before it; times count from the first frame's timestamp.
func TestScriptOrder(t *testing.T) {
	in := capture(t,
		capFrame{10 * time.Second, syn(40001)},
		capFrame{11 * time.Second, syn(40002)},
	)
	got, _ := runScript(t, in, "0 -Lnc\n1 -Lnc\n1 -Lnc\n")
	want := "== 0 -Lnc\n" + connsHeader +
		"== 1 -Lnc\n" + connsHeader +
		"TCP 00:59  SYN_RECV    198.18.1.11:40001  198.51.100.10:80   198.18.2.11:80\n" +
		"== 1 -Lnc\n" + connsHeader +
		"TCP 00:59  SYN_RECV    198.18.1.11:40001  198.51.100.10:80   198.18.2.11:80\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// A change made by a command applies to the frames after it: deleting the
// only real server at the time of a SYN leaves that SYN without a server.
func TestScriptChangeBeforeFrame(t *testing.T) {
	in := capture(t,
		capFrame{0, syn(40001)},
		capFrame{time.Second, syn(40002)},
	)
	got, vs := runScript(t, in, "1 -d -t 198.51.100.10:80 -r 198.18.2.11:80\n")
	if got != "== 1 -d -t 198.51.100.10:80 -r 198.18.2.11:80\n" {
		t.Errorf("output %q", got)
	}
	if vs[0].Dest != "198.18.2.11:80" {
		t.Errorf("first SYN: %+v, want scheduled", vs[0])
	}
	if vs[1].Dest != "" || vs[1].Action == "transmit" {
		t.Errorf("SYN at the deletion's time: %+v, want no real server", vs[1])
	}
}

// Commands after the last frame run at their times, and the connection
// table expires as the clock advances to them: the counters of -Ln (which
// only expiry changes) and -Lnc's expire column follow the capture clock.
func TestScriptAfterLastFrame(t *testing.T) {
	in := capture(t, capFrame{5 * time.Second, udp(33000)})
	got, _ := runScript(t, in, "299.5 -Lnc\n299.5 -Ln\n300 -Lnc\n300 -Ln\n")
	steps := strings.Split(got, "== ")[1:]
	if len(steps) != 4 {
		t.Fatalf("%d outputs:\n%s", len(steps), got)
	}
	wantConn := "UDP 00:00  UDP         198.18.1.11:33000  198.51.100.10:53   198.18.2.11:53\n"
	if steps[0] != "299.5 -Lnc\n"+connsHeader+wantConn {
		t.Errorf("at 299.5 s:\n%s\nwant the UDP entry with 0.5 s left", steps[0])
	}
	if !strings.Contains(steps[1], "  -> 198.18.2.11:53               Masq    1      0          1") {
		t.Errorf("at 299.5 s the entry is inactive:\n%s", steps[1])
	}
	if steps[2] != "300 -Lnc\n"+connsHeader {
		t.Errorf("at 300 s:\n%s\nwant no entries", steps[2])
	}
	if !strings.Contains(steps[3], "  -> 198.18.2.11:53               Masq    1      0          0") {
		t.Errorf("at 300 s the entry has expired and left the counters:\n%s", steps[3])
	}
}

// --set changes the connection table's timeouts for the connections made
// after it, as the daemon's control socket does.
func TestScriptSetTimeouts(t *testing.T) {
	in := capture(t, capFrame{0, udp(33000)}, capFrame{time.Second, udp(33001)})
	got, _ := runScript(t, in, "0.5 --set 0 0 20\n0.5 -L --timeout\n2 -Lnc\n")
	want := "== 0.5 --set 0 0 20\n" +
		"== 0.5 -L --timeout\nTimeout (tcp tcpfin udp): 900 120 20\n" +
		"== 2 -Lnc\n" + connsHeader +
		"UDP 04:58  UDP         198.18.1.11:33000  198.51.100.10:53   198.18.2.11:53\n" +
		"UDP 00:19  UDP         198.18.1.11:33001  198.51.100.10:53   198.18.2.11:53\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// A bad command prints ipvsadm's error and status and changes nothing.
func TestScriptBadCommand(t *testing.T) {
	in := capture(t, capFrame{0, udp(33000)})
	got, _ := runScript(t, in, "0 -a -t 198.51.100.10:80 -r 198.18.2.12:80 -w 70000\n"+
		"0 -D -t 198.51.100.99:80\n0 -Sn\n0 --bogus\n")
	want := "== 0 -a -t 198.51.100.10:80 -r 198.18.2.12:80 -w 70000\n" +
		"illegal weight specified\nexit 2\n" +
		"== 0 -D -t 198.51.100.99:80\nNo such service\nexit 255\n" +
		"== 0 -Sn\n" + testRulesSaved +
		"== 0 --bogus\nTry `ipvsadm -h' or 'ipvsadm --help' for more information.\nexit 255\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// testRulesSaved is testRules as -Sn prints them.
const testRulesSaved = "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -m -w 1\n" +
	"-A -u 198.51.100.10:53 -s rr\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m -w 1\n"

// A script needs a first frame to count its times from.
func TestScriptEmptyCapture(t *testing.T) {
	table, _ := ParseRules(strings.NewReader(testRules), "rules")
	s, _ := ParseScript(strings.NewReader("0 -Ln\n"))
	var out, v, so bytes.Buffer
	_, err := ReplayScript(table, staticenv.DefaultFacts(), 0, capture(t), &out, &v, s, &so)
	if err == nil || !strings.Contains(err.Error(), "at least one frame") {
		t.Fatalf("err = %v, want the script to need a frame", err)
	}
	// Without a script an empty capture is fine.
	if _, err := ReplayScript(table, staticenv.DefaultFacts(), 0, capture(t), &out, &v, nil, &so); err != nil {
		t.Fatal(err)
	}
}

// The connection table expires on the capture clock every 100 ms between
// frames and commands, as the daemon's housekeeping does, not only when a
// command runs: a persistence template that still controls a connection
// when its time comes is extended by 60 s (on its own grid, 10 s + 60 s
// steps), so after its connection died at 300 s it is still listed at
// 305 s, until 310 s, as in IPVS. (No command before 305 s: its own
// expiry would extend the template.)
func TestScriptHousekeeping(t *testing.T) {
	table, err := ParseRules(strings.NewReader("-A -u 198.51.100.10:53 -s rr -p 10\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m -w 1\n"), "rules")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseScript(strings.NewReader("305 -Lnc\n310 -Lnc\n"))
	if err != nil {
		t.Fatal(err)
	}
	var out, verdicts, sout bytes.Buffer
	if _, err := ReplayScript(table, staticenv.DefaultFacts(), 0, capture(t, capFrame{0, udp(33000)}), &out, &verdicts, s, &sout); err != nil {
		t.Fatal(err)
	}
	tmpl := func(left string) string {
		return "UDP " + left + "  NONE        198.18.1.11:0      198.51.100.10:53   198.18.2.11:53\n"
	}
	want := "== 305 -Lnc\n" + connsHeader + tmpl("00:05") +
		"== 310 -Lnc\n" + connsHeader
	if got := sout.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// A script reads and sets IPVS's sysctls (gvsadm --sysctl); secure_tcp=3
// reaches the replay's connection table.
func TestScriptSysctl(t *testing.T) {
	in := capture(t, capFrame{0, udp(33000)})
	got, _ := runScript(t, in, "0 --sysctl secure_tcp\n0 --sysctl secure_tcp=3\n0 --sysctl net.ipv4.vs.secure_tcp\n0 --sysctl secure_tcp=7\n")
	want := "== 0 --sysctl secure_tcp\nnet.ipv4.vs.secure_tcp = 0\n" +
		"== 0 --sysctl secure_tcp=3\nnet.ipv4.vs.secure_tcp = 3\n" +
		"== 0 --sysctl net.ipv4.vs.secure_tcp\nnet.ipv4.vs.secure_tcp = 3\n" +
		"== 0 --sysctl secure_tcp=7\nsysctl: setting key \"net.ipv4.vs.secure_tcp\": Invalid argument\nexit 1\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
