package main

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"io"
	"math"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestWriteSVG(t *testing.T) {
	panels := []chartPanel{
		{Title: "Packet rate <64B> & more", Unit: "Mpps", Bars: []chartBar{
			{Label: "gvs-nat", Median: 0.9, Min: 0.8, Max: 1.0, Ours: true},
			{Label: "nft-dnat", Median: 0.5, Min: 0.5, Max: 0.5},
			{Label: "broken", Median: math.NaN(), Min: math.NaN(), Max: math.NaN()},
		}},
		{Title: "CPU", Unit: "ns", LowerIsBetter: true, Bars: []chartBar{{Label: "gvs-dr", Median: 700, Min: 650, Max: 720}}},
	}
	var buf bytes.Buffer
	if err := writeSVG(&buf, "title", panels); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	// Well-formed XML, every label present and escaped.
	d := xml.NewDecoder(strings.NewReader(out))
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, out)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if rects != 1+3 { // background + three bars with a value
		t.Errorf("%d rects, want 4", rects)
	}
	for _, s := range []string{"gvs-nat", "nft-dnat", "n/a", "&lt;64B&gt; &amp; more", "lower is better", "higher is better", "#1f6fd1", "900"} {
		if !strings.Contains(out, s) {
			t.Errorf("SVG lacks %q", s)
		}
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{0.1234, "0.123"}, {5.678, "5.68"}, {56.78, "56.8"}, {567.8, "568"}, {12345, "12.3k"}, {2.5e6, "2.50M"}, {math.NaN(), "n/a"}} {
		if got := formatValue(tc.v); got != tc.want {
			t.Errorf("formatValue(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestNftIngress(t *testing.T) {
	got := nftIngress("gvsbench", "eth0", []string{"udp dport 9 counter drop", "ip protocol 4 counter drop"})
	want := "table netdev gvsbench {\n\tchain in {\n\t\ttype filter hook ingress device \"eth0\" priority 0; policy accept;\n" +
		"\t\tudp dport 9 counter drop\n\t\tip protocol 4 counter drop\n\t}\n}\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestNftDNAT(t *testing.T) {
	got := nftDNAT("gvsbench", netip.MustParseAddr("198.51.100.10"),
		[]netip.Addr{netip.MustParseAddr("198.18.2.11"), netip.MustParseAddr("198.18.2.12")})
	for _, s := range []string{
		"table ip gvsbench {",
		"type nat hook prerouting priority dstnat; policy accept;",
		"ip daddr 198.51.100.10 dnat to numgen inc mod 2 map { 0 : 198.18.2.11, 1 : 198.18.2.12 }",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("ruleset lacks %q:\n%s", s, got)
		}
	}
	if strings.Count(got, "{") != strings.Count(got, "}") {
		t.Errorf("unbalanced braces:\n%s", got)
	}
}

func TestTrafgenConfig(t *testing.T) {
	s := udpStream{
		SrcMAC: net.HardwareAddr{2, 0, 198, 18, 1, 11}, DstMAC: net.HardwareAddr{2, 0, 198, 18, 1, 1},
		Src: netip.MustParseAddr("198.18.1.11"), Dst: netip.MustParseAddr("198.51.100.10"),
		PortLo: 1024, PortHi: 11023, DstPort: 9, FrameLen: 60,
	}
	got, err := s.trafgenConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := "{ eth(da=02:00:c6:12:01:01, sa=02:00:c6:12:01:0b), ipv4(sa=198.18.1.11, da=198.51.100.10, ttl=64, df), udp(sp=dinc(1024, 11023), dp=9), fill(0x61, 18) }\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	s.FrameLen = headerLen
	if got, _ := s.trafgenConfig(); strings.Contains(got, "fill") {
		t.Errorf("no padding expected: %q", got)
	}
	bad := []func(u *udpStream){
		func(u *udpStream) { u.SrcMAC = u.SrcMAC[:3] },
		func(u *udpStream) { u.Dst = netip.MustParseAddr("2001:db8::1") },
		func(u *udpStream) { u.PortLo, u.PortHi = 10, 5 },
		func(u *udpStream) { u.PortLo = 0 },
		func(u *udpStream) { u.FrameLen = 20 },
		func(u *udpStream) { u.FrameLen = 9000 },
	}
	for i, mut := range bad {
		u := s
		u.FrameLen = 60
		mut(&u)
		if _, err := u.trafgenConfig(); err == nil {
			t.Errorf("bad stream %d accepted", i)
		}
	}
}

func TestTrafgenArgs(t *testing.T) {
	got := strings.Join(trafgenArgs("f.cfg", "eth0", 250000, 500000), " ")
	if want := "-i f.cfg -o eth0 -P 1 -q -Q -b 250000pps -n 500000"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := strings.Join(trafgenArgs("f", "e", 0, 0), " "); strings.Contains(got, "-b") || strings.Contains(got, "-n") {
		t.Errorf("flat-out unbounded run has a rate or count: %q", got)
	}
}

const wrkSample = `Running 5s test @ http://198.51.100.10:80/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.02ms  20.11ms   80.00%
    Req/Sec    10.31k   512.00    11.00k    70.00%
  Latency Distribution
     50%    3.25ms
     75%    3.80ms
     90%    4.50ms
     99%  812.00us
  51234 requests in 5.00s, 7.86MB read
  Socket errors: connect 2, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  10246.80
Transfer/sec:      1.57MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 51234, RPS: 10246.80, P50: 3250 * time.Microsecond, P99: 812 * time.Microsecond, SocketError: 6, Non2xx: 4}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 198.51.100.10:80 Connection refused\n"); err == nil {
		t.Error("output without a result accepted")
	}
	if _, err := parseWrk(strings.Replace(wrkSample, "3.25ms", "3.25parsecs", 1)); err == nil {
		t.Error("bad unit accepted")
	}
}

func TestParseWrkDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{{"812.00us", 812 * time.Microsecond}, {"1.5ms", 1500 * time.Microsecond}, {"2.00s", 2 * time.Second}, {"1.00m", time.Minute}} {
		if got, err := parseWrkDuration(tc.in); err != nil || got != tc.want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestServerConfigs(t *testing.T) {
	n := nginxConfig("/tmp/x")
	for _, s := range []string{"master_process off;", "daemon off;", "pid /tmp/x/nginx.pid;", "listen 80", "return 200"} {
		if !strings.Contains(n, s) {
			t.Errorf("nginx config lacks %q", s)
		}
	}
	h := haproxyConfig("198.51.100.10", 80, []string{"198.18.2.11", "198.18.2.12"})
	for _, s := range []string{"mode tcp", "bind 198.51.100.10:80", "balance roundrobin", "server r1 198.18.2.11:80", "server r2 198.18.2.12:80"} {
		if !strings.Contains(h, s) {
			t.Errorf("haproxy config lacks %q", s)
		}
	}
}

func FuzzParseWrk(f *testing.F) {
	f.Add(wrkSample)
	f.Add("Requests/sec: x\n")
	f.Add("  Socket errors: connect\n 1 requests in\nRequests/sec: 1\n")
	f.Fuzz(func(t *testing.T, s string) { _, _ = parseWrk(s) })
}

func TestParseEcho(t *testing.T) {
	var p [pingPayloadLen]byte
	binary.BigEndian.PutUint64(p[:8], 42)
	binary.BigEndian.PutUint64(p[8:], 123456)
	for _, tc := range []struct {
		in  []byte
		ok  bool
		seq uint64
	}{
		{append([]byte("rs1 "), p[:]...), true, 42},
		{p[:], true, 42},
		{[]byte("rs1 short"), false, 0},
		{nil, false, 0},
	} {
		seq, sent, ok := parseEcho(tc.in)
		if ok != tc.ok || (ok && (seq != tc.seq || sent != 123456)) {
			t.Errorf("parseEcho(%q) = %d, %d, %v", tc.in, seq, sent, ok)
		}
	}
}

func TestRewriteNoop(t *testing.T) {
	macs := []net.HardwareAddr{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, {2, 0, 0, 0, 0, 3}}
	src := net.HardwareAddr{2, 0, 0, 0, 0, 0xaa}
	frame := func(sport uint16) []byte {
		f := make([]byte, 60)
		f[12], f[13] = 0x08, 0x00
		f[14] = 0x45
		binary.BigEndian.PutUint16(f[34:], sport)
		return f
	}
	for _, tc := range []struct {
		f    []byte
		want net.HardwareAddr
	}{
		{frame(1024), macs[1024%3]},
		{frame(1025), macs[1025%3]},
		{append([]byte{}, frame(7)[:20]...), macs[0]},                        // too short for a port
		{func() []byte { f := frame(5); f[12] = 0x86; return f }(), macs[0]}, // not IPv4
	} {
		body := append([]byte{}, tc.f[12:]...)
		rewriteNoop(tc.f, macs, src)
		if !bytes.Equal(tc.f[0:6], tc.want) || !bytes.Equal(tc.f[6:12], src) || !bytes.Equal(tc.f[12:], body) {
			t.Errorf("rewrite: dst %v src %v (want %v %v), body changed: %v", net.HardwareAddr(tc.f[0:6]), net.HardwareAddr(tc.f[6:12]), tc.want, src, !bytes.Equal(tc.f[12:], body))
		}
	}
	short := []byte{1, 2, 3}
	rewriteNoop(short, macs, src) // must not panic
	f := frame(1000)
	if n := testing.AllocsPerRun(1000, func() { rewriteNoop(f, macs, src) }); n != 0 {
		t.Errorf("rewriteNoop allocates %v times per frame", n)
	}
}

func BenchmarkRewriteNoop(b *testing.B) {
	macs := []net.HardwareAddr{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}}
	src := net.HardwareAddr{2, 0, 0, 0, 0, 0xaa}
	f := make([]byte, 60)
	f[12], f[13], f[14] = 0x08, 0x00, 0x45
	b.ReportAllocs()
	for b.Loop() {
		rewriteNoop(f, macs, src)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-cases", "pps", "-rounds", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.rounds != 2 || o.window != 2*time.Second || o.steps != 3 || len(o.cases) != 1 || len(o.ctSizes) != 1 {
		t.Errorf("-quick with explicit -rounds: %+v", o)
	}
	o, err = parseFlags(nil, io.Discard)
	if err != nil || o.rounds != 3 || len(o.cases) != len(caseNames) || len(o.ctSizes) != 2 || o.ctSizes[1] != 10<<20 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	if len(o.cpuRates) != 2 || o.cpuRates[0] != 60000 || o.cpuRates[1] != 150000 || o.budgetRPS != "2" || o.cpsRate != 3000 || o.spinThreshold != spinThreshold {
		t.Errorf("fair-view defaults: rates %v, budget RPS %q, cps rate %v, threshold %v", o.cpuRates, o.budgetRPS, o.cpsRate, o.spinThreshold)
	}
	o, err = parseFlags([]string{"-cpu-rates", " 40000,,200000 ", "-director-cpu", "0", "-gen-cpu", "1"}, io.Discard)
	if err != nil || len(o.cpuRates) != 2 || o.cpuRates[1] != 200000 || o.budgetRPS != "1" {
		t.Errorf("-cpu-rates, -director-cpu 0: %v %q %v", o.cpuRates, o.budgetRPS, err)
	}
	for _, bad := range [][]string{{"-cases", "nope"}, {"-rounds", "0"}, {"-window", "1ms"}, {"-contenders", "x"}, {"-conntrack-sizes", "0"}, {"extra"},
		{"-cpu-rates", "500"}, {"-cpu-rates", ","}, {"-cpu-rates", "60k"}, {"-spin-threshold", "10ns"}, {"-cps-rate", "0"},
		{"-director-cpu", "1-2"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%v): no error", bad)
		}
	}
	if _, err := parseNoopFlags([]string{"-vip", "198.51.100.10", "-dst-macs", "02:00:00:00:00:01,bad"}, io.Discard); err == nil {
		t.Error("bad MAC accepted")
	}
	nf, err := parseNoopFlags([]string{"-vip", "198.51.100.10", "-dst-macs", "02:00:00:00:00:01, 02:00:00:00:00:02"}, io.Discard)
	if err != nil || len(nf.macs) != 2 {
		t.Errorf("noop flags: %+v, %v", nf, err)
	}
}

func TestReportMarkdown(t *testing.T) {
	r := report{Machine: "m", Options: map[string]string{"rounds": "2"}, Samples: []sample{
		{Case: "pps", Contender: "gvs-nat", Round: 1, Metric: "overload_fwd_pps", Value: 900e3},
		{Case: "pps", Contender: "gvs-nat", Round: 2, Metric: "overload_fwd_pps", Value: 1.1e6},
		{Case: "pps", Contender: "nft-dnat", Round: 1, Metric: "overload_fwd_pps", Value: 500e3},
		{Case: "pps", Contender: "nft-dnat", Round: 1, Metric: "lossfree_pps", Value: 400e3, Note: "n1"},
	}}
	var b strings.Builder
	r.markdown(&b)
	out := b.String()
	for _, s := range []string{"| gvs-nat | 1.00 [0.900–1.10] | – |", "| nft-dnat | 0.500 | 0.400 |", "- nft-dnat: n1 (round 1)", "rounds=2"} {
		if !strings.Contains(out, s) {
			t.Errorf("markdown lacks %q:\n%s", s, out)
		}
	}
	ps := r.panels()
	// One panel: the loss-free rate is placement-biased and not charted.
	if len(ps) != 1 || len(ps[0].Bars) != 2 || !ps[0].Bars[0].Ours || ps[0].Bars[1].Ours {
		t.Errorf("panels: %+v", ps)
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("1M, 10M,500k,1000")
	if err != nil || len(got) != 4 || got[0] != 1<<20 || got[1] != 10<<20 || got[2] != 500<<10 || got[3] != 1000 {
		t.Errorf("parseSizes = %v, %v", got, err)
	}
	for _, bad := range []string{"x", "-1", "100M", "1G"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("parseSizes(%q) accepted", bad)
		}
	}
}

func TestMeasureConntrackSmall(t *testing.T) {
	r, err := measureConntrack(20000, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.BytesPerConn < 50 || r.BytesPerConn > 2000 || r.InsertPerSec <= 0 || r.LookupPerSec <= 0 || r.LookupPerSecP <= 0 {
		t.Errorf("implausible: %+v", r)
	}
}

func TestParseTrafgenTime(t *testing.T) {
	out := "\n      400000 packets outgoing\n    23600000 bytes outgoing\n           3 sec, 996985 usec on CPU0 (400000 packets)\n"
	d, ok := parseTrafgenTime(out)
	if !ok || d != 3*time.Second+996985*time.Microsecond {
		t.Errorf("parseTrafgenTime = %v, %v", d, ok)
	}
	two := "  1 sec, 5 usec on CPU0 (1 packets)\n  2 sec, 7 usec on CPU1 (1 packets)\n"
	if d, ok := parseTrafgenTime(two); !ok || d != 2*time.Second+7*time.Microsecond {
		t.Errorf("two CPUs: %v, %v", d, ok)
	}
	for _, bad := range []string{"", "x sec, 5 usec on CPU0", "1 sec, 5 msec on CPU0 (1 packets)"} {
		if _, ok := parseTrafgenTime(bad); ok {
			t.Errorf("parseTrafgenTime(%q) ok", bad)
		}
	}
}

func TestRenderRoundTrip(t *testing.T) {
	dir := t.TempDir()
	r := report{Machine: "m", Load: "l", Options: map[string]string{}, Samples: []sample{
		{Case: "cps", Contender: "gvs-nat", Round: 1, Metric: "cps", Value: 11000},
		{Case: "cps", Contender: "gvs-nat", Round: 1, Metric: "p50_ms", Value: math.NaN()},
	}}
	if err := r.write(dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := render(dir, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| gvs-nat | 11.0 |") {
		t.Errorf("render lost the sample:\n%s", out.String())
	}
	if err := render(t.TempDir(), io.Discard); err == nil {
		t.Error("render of an empty folder succeeded")
	}
}
