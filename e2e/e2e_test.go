package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvs/internal/lab"
)

// TestModes covers each forwarding method with three real servers and rr:
// HTTP with curl, a socat transfer, UDP request/response, the connection
// counters of -Ln while connections are held and after they close, and
// the exact packet and byte counters of --stats.
func TestModes(t *testing.T) {
	for _, m := range []mode{modeNAT, modeDR, modeTUN} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testMode(t, m)
		})
	}
}

func testMode(t *testing.T, m mode) {
	e := newEnv(t, m, envOptions{}, 45*time.Second)
	cli := e.client(0)
	httpSvc := e.addService("-t", m.httpPort, "rr", httpPort, nil)
	udpSvc := e.addService("-u", udpPort, "rr", udpPort, nil)
	sinkSvc := e.addService("-t", sinkPort, "rr", sinkPort, nil)
	const socatPort = 7000
	socatSvc := e.vipPort(socatPort)
	e.ipvsadm("-A", "-t", socatSvc, "-s", "rr")
	e.ipvsadm("-a", "-t", socatSvc, "-r", e.rip(1, socatPort), m.flag)

	s := e.service("TCP", httpSvc)
	if s.Rest != "rr" || len(s.Dests) != 3 {
		t.Fatalf("-Ln of %s: %+v", httpSvc, s)
	}
	for i, d := range s.Dests {
		if d.Addr != e.rip(i, httpPort) || d.Forward != m.fwd || d.Weight != 1 {
			t.Errorf("-Ln dest %d: %+v, want %s %s weight 1", i, d, e.rip(i, httpPort), m.fwd)
		}
	}

	t.Run("curl", func(t *testing.T) {
		e := e.with(t)
		seen := map[string]int{}
		for i := range 6 {
			body, err := e.curl(cli, "http://"+httpSvc+"/")
			if err != nil {
				t.Fatalf("curl %d: %v", i+1, err)
			}
			// The real server sees the client's own address (no SNAT), and
			// as its local address the VIP (DR, TUN: the packet is
			// unchanged) or its own address (NAT rewrites the destination).
			if r := field(body, "remote"); !strings.HasPrefix(r, e.l.Clients()[0].Addr().String()+":") {
				t.Errorf("curl %d: the server saw remote %q, want the client's address", i+1, r)
			}
			name := field(body, "name")
			wantLocal := e.vipPort(httpPort)
			if n, err := strconv.Atoi(strings.TrimPrefix(name, "r")); err == nil && e.m == modeNAT {
				wantLocal = e.rip(n-1, httpPort)
			}
			if l := field(body, "local"); l != wantLocal {
				t.Errorf("curl %d: %s saw local %q, want %q", i+1, name, l, wantLocal)
			}
			seen[name]++
		}
		if want := map[string]int{"r1": 2, "r2": 2, "r3": 2}; !maps.Equal(seen, want) {
			t.Errorf("rr, 6 curl requests: answers %v, want %v", seen, want)
		}
	})

	t.Run("socat", func(t *testing.T) {
		e := e.with(t)
		e.socatTransfer(e.server(1).NS, cli, socatPort, socatSvc)
	})

	t.Run("udp", func(t *testing.T) { testUDP(t, e.with(t), udpSvc) })

	t.Run("conns", func(t *testing.T) { testConnCounters(t, e.with(t), sinkSvc) })
}

// testUDP sends N datagrams from distinct source ports, checks every
// answer comes from the VIP, and checks --stats counted exactly them.
func testUDP(t *testing.T, e *env, svc string) {
	cli := e.client(0)
	vip := netip.MustParseAddrPort(svc)
	// Warm up: one answered datagram per real server, so every neighbour
	// is resolved. Then zero the counters.
	sent := 0
	for range 3 {
		var err error
		for try := 0; try < 5; try++ {
			sent++
			if _, _, err = e.udpExchange(cli, svc, "warm-up", time.Second); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	e.ipvsadm("-Z", "-u", svc)

	const n = 9
	var inBytes, outBytes uint64
	seen := map[string]int{}
	for i := range n {
		payload := fmt.Sprintf("datagram %d %s", i, strings.Repeat("x", 37*i))
		reply, from, err := e.udpExchange(cli, svc, payload, 2*time.Second)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if from != vip {
			t.Errorf("datagram %d: answer from %v, want the VIP %v", i, from, vip)
		}
		name, echoed, _ := strings.Cut(reply, " ")
		if echoed != payload {
			t.Errorf("datagram %d: echo %q, want %q", i, echoed, payload)
		}
		seen[name]++
		inBytes += uint64(20 + 8 + len(payload)) // IP length
		outBytes += uint64(20 + 8 + len(reply))
	}
	if want := map[string]int{"r1": 3, "r2": 3, "r3": 3}; !maps.Equal(seen, want) {
		t.Errorf("rr, %d datagrams from distinct ports: answers %v, want %v", n, seen, want)
	}

	want := counters{Conns: n, InPkts: n, InBytes: inBytes}
	if e.m == modeNAT {
		// Only NAT sees the replies.
		want.OutPkts, want.OutBytes = n, outBytes
	}
	st := e.stats()["UDP "+svc]
	t.Logf("ipvsadm -Ln --stats --exact -u %s after %d datagrams:\n%s", svc, n, e.ipvsadm("-Ln", "--stats", "--exact", "-u", svc))
	if st.counters != want {
		t.Errorf("--stats --exact of %s: %+v, want %+v", svc, st.counters, want)
	}
	var sum counters
	for _, d := range st.Dests {
		if d.Conns != n/3 {
			t.Errorf("--stats: a real server has %d conns, want %d: %+v", d.Conns, n/3, st.Dests)
		}
		sum.Conns += d.Conns
		sum.InPkts += d.InPkts
		sum.OutPkts += d.OutPkts
		sum.InBytes += d.InBytes
		sum.OutBytes += d.OutBytes
	}
	if sum != want {
		t.Errorf("--stats: real servers sum to %+v, want %+v", sum, want)
	}
	// Small numbers print the same with and without --exact.
	if a, b := e.ipvsadm("-Ln", "--stats"), e.ipvsadm("-Ln", "--stats", "--exact"); a != b {
		t.Errorf("--stats and --stats --exact differ for small numbers:\n%s\n%s", a, b)
	}
	// UDP connections are always inactive; each datagram from a new port
	// is a connection (300 s timeout).
	u := e.service("UDP", svc)
	if a, i := u.totals(); a != 0 || i != sent+n {
		t.Errorf("-Ln of %s: ActiveConn %d InActConn %d, want 0 and %d", svc, a, i, sent+n)
	}
}

// testConnCounters holds K connections to the TCP sink, checks ActiveConn,
// closes them and checks they move to InActConn.
func testConnCounters(t *testing.T, e *env, svc string) {
	const k = 6
	conns := e.holdSink(e.client(0), svc, k)
	s, ok := e.waitList("TCP", svc, 3*time.Second, func(s service) bool {
		a, i := s.totals()
		return a == k && i == 0
	})
	if !ok {
		t.Fatalf("%d connections held: -Ln shows %+v, want ActiveConn %d in total", k, s.Dests, k)
	}
	for _, d := range s.Dests {
		if d.Active != k/3 {
			t.Errorf("rr, %d held connections: %s has ActiveConn %d, want %d", k, d.Addr, d.Active, k/3)
		}
	}
	for i, c := range conns {
		ans, err := finishSink(c, 3*time.Second)
		if err != nil || !strings.HasSuffix(ans, " bytes=0") {
			t.Errorf("connection %d: sink answered %q, %v", i, ans, err)
		}
	}
	// NAT: FIN in -> CLOSE_WAIT, FIN out -> TIME_WAIT. DR and TUN see only
	// the client's side (INPUT_ONLY): FIN -> FIN_WAIT. All inactive.
	s, ok = e.waitList("TCP", svc, 3*time.Second, func(s service) bool {
		a, i := s.totals()
		return a == 0 && i == k
	})
	if !ok {
		t.Errorf("%d connections closed: -Ln shows %+v, want ActiveConn 0 and InActConn %d", k, s.Dests, k)
	}
	// The states behind those counters, as ipvsadm -Lnc shows them.
	wantState := "TIME_WAIT"
	if e.m != modeNAT {
		wantState = "FIN_WAIT"
	}
	states := map[string]int{}
	for line := range strings.Lines(e.ipvsadm("-Lnc")) {
		if f := strings.Fields(line); len(f) == 6 && f[0] == "TCP" && f[4] == svc {
			states[f[2]]++
		}
	}
	if want := map[string]int{wantState: k}; !maps.Equal(states, want) {
		t.Errorf("-Lnc states of %s after closing: %v, want %v", svc, states, want)
	}
	if c := e.stats()["TCP "+svc].Conns; c != k {
		t.Errorf("--stats of %s: Conns %d, want %d", svc, c, k)
	}
}

// TestSelftest is the kernel's IPVS selftest scenario (IPVS.md §6) with
// the lab's addresses: one client, the director, one real server; a
// service VIP:8080 with rr and the real server :8080 in DR, NAT and TUN;
// 32 random bytes sent with socat through the VIP must arrive unchanged.
func TestSelftest(t *testing.T) {
	for _, m := range []mode{modeDR, modeNAT, modeTUN} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, m, envOptions{servers: 1, noTestsrv: true}, 30*time.Second)
			if out := e.ipvsadm("-v"); !strings.HasPrefix(out, "ipvsadm v1.31") {
				t.Errorf("ipvsadm -v: %q", out)
			}
			const port = 8080
			svc := e.vipPort(port)
			e.ipvsadm("-A", "-t", svc, "-s", "rr")
			add := []string{"-a", "-t", svc, "-r", e.rip(0, port)}
			if m != modeDR {
				add = append(add, m.flag) // DR is ipvsadm's default
			}
			e.ipvsadm(add...)
			if d := e.service("TCP", svc).Dests; len(d) != 1 || d[0].Forward != m.fwd {
				t.Fatalf("-Ln: %+v, want one %s real server", d, m.fwd)
			}
			e.socatTransfer(e.server(0).NS, e.client(0), port, svc)
		})
	}
}

// TestSchedulers checks wrr, wlc, sh and mh with real NAT traffic.
func TestSchedulers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, modeNAT, envOptions{clients: 2}, 45*time.Second)
	cli := e.client(0)

	t.Run("wrr", func(t *testing.T) {
		e := e.with(t)
		svc := e.addService("-t", 81, "wrr", httpPort, []int{3, 2, 1})
		seen := e.names(cli, svc, 60)
		if want := map[string]int{"r1": 30, "r2": 20, "r3": 10}; !maps.Equal(seen, want) {
			t.Errorf("wrr 3,2,1 over 60 connections: %v, want %v", seen, want)
		}
	})

	t.Run("wlc", func(t *testing.T) {
		e := e.with(t)
		// r1 alone gets 4 held connections; then r2 and r3 join, and the
		// new connections avoid r1 (wlc: 256*active + inactive).
		svc := e.vipPort(82)
		e.ipvsadm("-A", "-t", svc, "-s", "wlc")
		e.ipvsadm("-a", "-t", svc, "-r", e.rip(0, sinkPort), "-m")
		e.holdSink(cli, svc, 4)
		if s, ok := e.waitList("TCP", svc, 3*time.Second, func(s service) bool { return len(s.Dests) == 1 && s.Dests[0].Active == 4 }); !ok {
			t.Fatalf("4 held connections on r1: %+v", s.Dests)
		}
		e.ipvsadm("-a", "-t", svc, "-r", e.rip(1, sinkPort), "-m")
		e.ipvsadm("-a", "-t", svc, "-r", e.rip(2, sinkPort), "-m")
		for i := range 6 {
			c := e.holdSink(cli, svc, 1)[0]
			if _, err := finishSink(c, 3*time.Second); err != nil {
				t.Fatalf("short connection %d: %v", i, err)
			}
		}
		d := e.stats()["TCP "+svc].Dests
		got := []uint64{d[e.rip(0, sinkPort)].Conns, d[e.rip(1, sinkPort)].Conns, d[e.rip(2, sinkPort)].Conns}
		if want := []uint64{4, 3, 3}; !slices.Equal(got, want) {
			t.Errorf("wlc: connections per real server %v, want %v (r1 busy with 4 held ones)", got, want)
		}
	})

	for i, sched := range []string{"sh", "mh"} {
		t.Run(sched, func(t *testing.T) {
			e := e.with(t)
			svc := e.addService("-t", 83+i, sched, httpPort, nil)
			for c := range 2 {
				seen := e.names(e.client(c), svc, 10)
				if len(seen) != 1 {
					t.Errorf("%s: 10 connections from client %d went to %v, want one server", sched, c+1, seen)
				}
				t.Logf("%s: client %d -> %v", sched, c+1, seen)
			}
		})
	}
}

// TestPersistence checks -p: every connection of a client goes to the
// server of its first one.
func TestPersistence(t *testing.T) {
	t.Parallel()
	e := newEnv(t, modeNAT, envOptions{clients: 2}, 30*time.Second)
	svc := e.addService("-t", 80, "rr", httpPort, nil, "-p", "60")
	if s := e.service("TCP", svc); s.Rest != "rr persistent 60" {
		t.Errorf("-Ln service line: %q, want \"rr persistent 60\"", s.Rest)
	}
	var first []string
	for c := range 2 {
		seen := e.names(e.client(c), svc, 10)
		if len(seen) != 1 {
			t.Fatalf("client %d: 10 connections with -p went to %v, want one server", c+1, seen)
		}
		first = append(first, slices.Collect(maps.Keys(seen))[0])
	}
	// rr picks the next server for the second client's template.
	if first[0] == first[1] {
		t.Errorf("both clients persist on %s; rr should give the second client another server", first[0])
	}
	t.Logf("client 1 -> %s, client 2 -> %s", first[0], first[1])
}

// TestDrainAndLiveChanges changes the table under traffic: weight 0 drains
// a real server while its connection completes, -d removes one, -D the
// service.
func TestDrainAndLiveChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, modeNAT, envOptions{}, 45*time.Second)
	cli := e.client(0)
	svc := e.addService("-t", sinkPort, "rr", sinkPort, nil)
	httpSvc := e.addService("-t", 80, "rr", httpPort, nil)

	// A long transfer to X, half written.
	data := make([]byte, 4<<20)
	rand.Read(data)
	long := e.holdSink(cli, svc, 1)[0]
	long.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := long.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	s, ok := e.waitList("TCP", svc, 3*time.Second, func(s service) bool { a, _ := s.totals(); return a == 1 })
	if !ok {
		t.Fatalf("one connection open: -Ln %+v", s.Dests)
	}
	x := slices.IndexFunc(s.Dests, func(d dest) bool { return d.Active == 1 })
	xAddr := s.Dests[x].Addr

	// Quiesce X: new connections avoid it, the open one continues.
	e.ipvsadm("-e", "-t", svc, "-r", xAddr, "-m", "-w", "0")
	if d, _ := e.service("TCP", svc).dest(xAddr); d.Weight != 0 || d.Active != 1 {
		t.Errorf("after -w 0: %+v, want weight 0 with its connection still active", d)
	}
	before := e.stats()["TCP "+svc].Dests
	short := func(n int) {
		t.Helper()
		for i := range n {
			c := e.holdSink(cli, svc, 1)[0]
			if _, err := finishSink(c, 3*time.Second); err != nil {
				t.Fatalf("short connection %d: %v", i, err)
			}
		}
	}
	delta := func(before map[string]counters) map[string]uint64 {
		t.Helper()
		d := map[string]uint64{}
		for a, c := range e.stats()["TCP "+svc].Dests {
			d[a] = c.Conns - before[a].Conns
		}
		return d
	}
	short(6)
	got := delta(before)
	want := map[string]uint64{}
	for i := range 3 {
		if a := e.rip(i, sinkPort); a != xAddr {
			want[a] = 3
		} else {
			want[a] = 0
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("6 new connections with %s at weight 0: %v, want %v", xAddr, got, want)
	}

	if _, err := long.Write(data[len(data)/2:]); err != nil {
		t.Fatalf("finishing the transfer to the drained %s: %v", xAddr, err)
	}
	ans, err := finishSink(long, 5*time.Second)
	sum := sha256.Sum256(data)
	if wantAns := fmt.Sprintf("sha256=%s bytes=%d", hex.EncodeToString(sum[:]), len(data)); err != nil || ans != wantAns {
		t.Errorf("transfer to the drained %s: sink answered %q (%v), want %q", xAddr, ans, err, wantAns)
	}

	// Back to weight 1; delete another real server Y: new connections go
	// to X and the third.
	e.ipvsadm("-e", "-t", svc, "-r", xAddr, "-m", "-w", "1")
	yAddr := e.rip((x+1)%3, sinkPort)
	// One open connection per real server, each with data sent.
	open := e.holdSink(cli, svc, 3)
	for _, c := range open {
		if _, err := c.Write([]byte("before -d\n")); err != nil {
			t.Fatal(err)
		}
	}
	toY := slices.IndexFunc(open, func(c *net.TCPConn) bool {
		return e.connDest(svc, c.LocalAddr().String()) == yAddr
	})
	if toY < 0 {
		t.Fatalf("-Lnc shows none of 3 connections going to %s:\n%s", yAddr, e.ipvsadm("-Lnc"))
	}
	e.ipvsadm("-d", "-t", svc, "-r", yAddr)
	if _, ok := e.service("TCP", svc).dest(yAddr); ok {
		t.Errorf("-Ln still lists %s after -d", yAddr)
	}
	// IPVS drops the packets of connections whose real server was deleted
	// (expire_nodest_conn=0): the sink on Y never sees the end of the
	// stream. The connections to the others complete.
	for i, c := range open {
		ans, err := finishSink(c, time.Second)
		switch {
		case i == toY && err == nil:
			t.Errorf("connection to the deleted %s completed after -d: %q", yAddr, ans)
		case i != toY && (err != nil || !strings.HasSuffix(ans, " bytes=10")):
			t.Errorf("connection %d (not to the deleted server): %q, %v", i, ans, err)
		}
	}
	before = e.stats()["TCP "+svc].Dests
	short(4)
	got = delta(before)
	want = map[string]uint64{xAddr: 2, e.rip((x+2)%3, sinkPort): 2}
	if !maps.Equal(got, want) {
		t.Errorf("4 new connections after -d %s: %v, want %v", yAddr, got, want)
	}

	// Delete the service: connecting to it fails; the other service lives.
	e.ipvsadm("-D", "-t", svc)
	if _, ok := e.list().find("TCP", svc); ok {
		t.Errorf("-Ln still lists %s after -D", svc)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	start := time.Now()
	c, err := lab.Dial(ctx, cli, "tcp4", svc)
	cancel()
	if err == nil {
		c.Close()
		t.Errorf("connected to %s after -D", svc)
	} else {
		t.Logf("after -D: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
	if body, err := e.curl(cli, "http://"+httpSvc+"/"); err != nil || field(body, "name") == "" {
		t.Errorf("the other service after -D: %q, %v", body, err)
	}
}

// TestLargeTransfer moves 50 MiB each way through NAT: an upload to the
// TCP sink (sha256 compared) and a curl download of /data (compared with
// gvs-testsrv's pattern).
func TestLargeTransfer(t *testing.T) {
	t.Parallel()
	const size = 50 << 20
	e := newEnv(t, modeNAT, envOptions{servers: 1}, 150*time.Second)
	cli := e.client(0)
	sinkSvc := e.addService("-t", sinkPort, "rr", sinkPort, nil)
	httpSvc := e.addService("-t", 80, "rr", httpPort, nil)

	t.Run("upload", func(t *testing.T) {
		e := e.with(t)
		c := e.holdSink(cli, sinkSvc, 1)[0]
		start := time.Now()
		c.SetWriteDeadline(start.Add(60 * time.Second))
		h := sha256.New()
		rng := mrand.NewChaCha8([32]byte{'g', 'v', 's'})
		buf := make([]byte, 256<<10)
		for n := 0; n < size; n += len(buf) {
			rng.Read(buf)
			h.Write(buf)
			if _, err := c.Write(buf); err != nil {
				t.Fatalf("upload after %d bytes: %v", n, err)
			}
		}
		ans, err := finishSink(c, 30*time.Second)
		took := time.Since(start)
		if want := fmt.Sprintf("sha256=%s bytes=%d", hex.EncodeToString(h.Sum(nil)), size); err != nil || ans != want {
			t.Fatalf("upload: sink answered %q (%v), want %q", ans, err, want)
		}
		t.Logf("upload of %d MiB through NAT: %v, %.0f MB/s", size>>20, took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
	})

	t.Run("download", func(t *testing.T) {
		e := e.with(t)
		ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
		defer cancel()
		cmd := e.l.ExecContext(ctx, cli, "curl", "-sS", "--fail", "--max-time", "60", "-o", "-",
			fmt.Sprintf("http://%s/data?bytes=%d", httpSvc, size))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n, cmpErr := comparePattern(out)
		io.Copy(io.Discard, out)
		werr := cmd.Wait()
		took := time.Since(start)
		if werr != nil {
			t.Fatalf("curl: %v: %s", werr, stderr.String())
		}
		if cmpErr != nil {
			t.Fatal(cmpErr)
		}
		if n != size {
			t.Fatalf("download: %d bytes, want %d", n, size)
		}
		t.Logf("download of %d MiB through NAT: %v, %.0f MB/s", size>>20, took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
	})

	st := e.stats()["TCP "+sinkSvc]
	if st.InBytes < size || st.Conns != 1 {
		t.Errorf("--stats of the upload: %+v, want 1 conn and more than %d InBytes", st.counters, size)
	}
}

// dataPatternChunk is the length of gvs-testsrv's /data pattern: chunks of
// 32 KiB, byte i of a chunk being 'a' + i%26.
const dataPatternChunk = 32 << 10

// comparePattern reads r to EOF and checks it against gvs-testsrv's /data
// pattern; it returns the bytes read.
func comparePattern(r io.Reader) (int, error) {
	var want [dataPatternChunk]byte
	for i := range want {
		want[i] = byte('a' + i%26)
	}
	buf := make([]byte, 64<<10)
	n := 0
	for {
		k, err := r.Read(buf)
		for i, b := range buf[:k] {
			if off := n + i; b != want[off%dataPatternChunk] {
				return off, fmt.Errorf("byte %d is %q, want %q", off, b, want[off%dataPatternChunk])
			}
		}
		n += k
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func TestComparePattern(t *testing.T) {
	good := make([]byte, 3*dataPatternChunk+5)
	for i := range good {
		good[i] = byte('a' + (i%dataPatternChunk)%26)
	}
	if n, err := comparePattern(bytes.NewReader(good)); err != nil || n != len(good) {
		t.Errorf("good pattern: %d, %v", n, err)
	}
	bad := slices.Clone(good)
	bad[dataPatternChunk+1] ^= 1
	if n, err := comparePattern(bytes.NewReader(bad)); err == nil || n != dataPatternChunk+1 {
		t.Errorf("corrupted byte %d: %d, %v", dataPatternChunk+1, n, err)
	}
}

// TestIpvsadmCLI drives the real ipvsadm binary: save, clear and restore
// give back the same table, and errors leave it unchanged with ipvsadm's
// messages and exit statuses.
func TestIpvsadmCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, modeNAT, envOptions{}, 30*time.Second)
	e.addService("-t", 80, "wrr", httpPort, []int{3, 2, 0})
	e.addService("-u", 53, "sh", udpPort, nil, "-p", "120")
	e.addService("-t", 443, "wlc", httpPort, nil, "-p", "300", "-M", "255.255.255.0")
	e.ipvsadm("-A", "-t", e.vipPort(8443), "-s", "mh", "-b", "mh-port")
	e.ipvsadm("-a", "-t", e.vipPort(8443), "-r", e.rip(2, 8443), "-m", "-w", "7")

	t.Run("save-restore", func(t *testing.T) {
		e := e.with(t)
		list := e.ipvsadm("-Ln")
		if ls := e.list(); len(ls) != 4 {
			t.Fatalf("-Ln lists %d services, want 4:\n%s", len(ls), list)
		}
		saved := e.ipvsadm("-S", "-n")
		if got := strings.Count(saved, "\n"); got != 4+3+3+3+1 {
			t.Errorf("-S -n printed %d lines, want 14:\n%s", got, saved)
		}
		e.ipvsadm("-C")
		if got := e.ipvsadm("-Ln"); got != emptyList {
			t.Fatalf("-Ln after -C:\n%s", got)
		}
		if r := e.ipvsadmRun(strings.NewReader(saved), "-R"); r.code != 0 || r.stderr != "" {
			t.Fatalf("ipvsadm -R: exit %d: %s", r.code, r.stderr)
		}
		if got := e.ipvsadm("-Ln"); got != list {
			t.Errorf("-Ln after -S, -C, -R:\n%s\nwant:\n%s", got, list)
		}
		if got := e.ipvsadm("-S", "-n"); got != saved {
			t.Errorf("-S -n after the round trip:\n%s\nwant:\n%s", got, saved)
		}
	})

	t.Run("errors", func(t *testing.T) {
		e := e.with(t)
		list := e.ipvsadm("-Ln")
		missing := e.vipPort(99)
		tests := []struct {
			name   string
			args   []string
			code   int
			stderr string // the exact message, or a prefix when it ends in "…"
		}{
			{"server of a missing service", []string{"-a", "-t", missing, "-r", e.rip(0, 99), "-m"}, 255, "Service not defined\n"},
			{"edit a missing server", []string{"-e", "-t", e.vipPort(80), "-r", e.rip(0, 99), "-m"}, 255, "No such destination\n"},
			{"service exists", []string{"-A", "-t", e.vipPort(80), "-s", "rr"}, 255, "Service already exists\n"},
			{"delete a missing service", []string{"-D", "-t", missing}, 255, "No such service\n"},
			{"unknown scheduler", []string{"-A", "-t", missing, "-s", "nope"}, 255, "Scheduler or persistence engine not found\n"},
			{"bad weight", []string{"-a", "-t", e.vipPort(80), "-r", e.rip(0, 9), "-w", "heavy"}, 2, "illegal weight specified\n"},
			{"bad address", []string{"-A", "-t", "198.51.100.300:80"}, 2, "illegal virtual server address[:port] specified\n"},
			{"missing option", []string{"-a", "-t", e.vipPort(80)}, 2, "You need to supply the 'real-server' option for the 'add-server' command\n"},
			{"illegal option", []string{"-A", "-t", missing, "-w", "1"}, 2, "Illegal 'weight' option with the 'add-service' command\n"},
			{"unknown option", []string{"-A", "-t", missing, "--bogus"}, 255, "--bogus: unknown option\n"},
		}
		for _, tc := range tests {
			r := e.ipvsadmRun(nil, tc.args...)
			if r.code != tc.code || r.stderr != tc.stderr || r.stdout != "" {
				t.Errorf("%s: ipvsadm %s: exit %d, stderr %q, stdout %q; want exit %d, stderr %q",
					tc.name, strings.Join(tc.args, " "), r.code, r.stderr, r.stdout, tc.code, tc.stderr)
			}
		}
		if got := e.ipvsadm("-Ln"); got != list {
			t.Errorf("-Ln changed by failed commands:\n%s\nwant:\n%s", got, list)
		}
	})
}

// TestVIPOnDirector puts the VIP on the director's lo, as kernel IPVS
// setups and its selftest do. The kernel then believes the VIP is its own:
// without gvsd's nftables ingress drop it would answer the client's SYN
// with a RST. Connections must work and the director's kernel must send no
// RST at all.
func TestVIPOnDirector(t *testing.T) {
	for _, m := range []mode{modeNAT, modeDR} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, m, envOptions{vipOnDirector: true}, 30*time.Second)
			rport := 8080
			vport := 80
			if m != modeNAT {
				vport = rport
			}
			svc := e.addService("-t", vport, "rr", rport, nil)
			rsts := tcpOutRsts(t, e)
			got := e.names(e.client(0), svc, 6)
			for i := range e.l.Servers() {
				if got[serverName(i)] != 2 {
					t.Fatalf("answers %v, want 2 from each real server", got)
				}
			}
			if body, err := e.curl(e.client(0), "http://"+svc+"/"); err != nil || field(body, "name") == "" {
				t.Fatalf("curl through a VIP on the director's lo: %v %q", err, body)
			}
			if after := tcpOutRsts(t, e); after != rsts {
				t.Fatalf("the director's kernel sent %d RSTs for VIP traffic", after-rsts)
			}
		})
	}
}

// tcpOutRsts reads the director kernel's Tcp OutRsts counter.
func tcpOutRsts(t *testing.T, e *env) int {
	t.Helper()
	out, err := e.l.Output(e.ctx, e.dirNS, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "OutRsts" && i < len(f) {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Tcp OutRsts in /proc/net/snmp:\n%s", out)
	return 0
}
