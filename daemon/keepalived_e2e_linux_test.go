package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvs/internal/lab"
)

// kaConf is the lab's keepalived.conf: VIP:80 over r1 (HTTP_GET, slowstart)
// and r2 (TCP_CHECK), quorum 10 with r3 as sorry server; VIP:81 over r3
// decided by a MISC_CHECK script. Timing: delay_loop 1, connect_timeout 1,
// retry 1, delay_before_retry 1.
func kaConf(vip, script string, w2 int) string {
	return fmt.Sprintf(`! gvs e2e
global_defs {
    router_id lab
    lvs_timeouts tcp 600 tcpfin 60 udp 120
}
virtual_server %[1]s 80 {
    delay_loop 1
    lvs_sched wrr
    lvs_method NAT
    protocol TCP
    quorum 10
    sorry_server 198.18.2.13 8080
    real_server 198.18.2.11 8080 {
        weight 10
        slowstart 3
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
    real_server 198.18.2.12 8080 {
        weight %[3]d
        TCP_CHECK {
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
}
virtual_server %[1]s 81 {
    delay_loop 1
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    real_server 198.18.2.13 8080 {
        MISC_CHECK {
            misc_path %[2]s
            misc_timeout 1
        }
    }
}
`, vip, script, w2)
}

// loadRec is one request of the client load.
type loadRec struct {
	at   time.Time
	name string
	err  error
}

// clientLoad GETs url from ns on fresh connections every 20 ms until stop
// is called, and returns what happened.
func clientLoad(ctx context.Context, ns, url string) (stop func() []loadRec) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var recs []loadRec
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			start := time.Now()
			body, err := httpGet(ctx, ns, url)
			if ctx.Err() != nil {
				return
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(body, "name="), " ")
			mu.Lock()
			recs = append(recs, loadRec{at: start, name: name, err: err})
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})
	return func() []loadRec {
		cancel()
		wg.Wait()
		return recs
	}
}

// kaList is gvsadm -Ln's real servers of one service: address → weight.
func kaList(t *testing.T, ctx context.Context, l *lab.Lab, vipPort string) map[string]int {
	t.Helper()
	out, err := l.Output(ctx, l.Director().NS, adminBin, "-Ln", "-t", vipPort)
	if err != nil {
		t.Fatalf("gvsadm -Ln -t %s: %v\n%s", vipPort, err, out)
	}
	got := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[0] == "->" && f[1] != "RemoteAddress:Port" {
			w, _ := strconv.Atoi(f[3])
			got[f[1]] = w
		}
	}
	return got
}

// waitList polls gvsadm -Ln until cond holds and returns when it did.
func waitList(t *testing.T, ctx context.Context, l *lab.Lab, vipPort string, d time.Duration, what string, cond func(map[string]int) bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := kaList(t, ctx, l, vipPort)
		if cond(m) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; gvsadm -Ln -t %s: %v", what, d, vipPort, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKeepalivedHealthChecks runs gvsd from a keepalived.conf in the NAT
// lab under a client load: a real server whose listener stops leaves
// scheduling within connect_timeout + delay_before_retry × retry +
// delay_loop (+ margin) and no client error happens after that; it comes
// back with its weight ramping (slowstart); losing the quorum brings the
// sorry server in; a MISC_CHECK script decides; SIGHUP with a changed
// weight keeps an established connection; the metrics agree with gvsadm.
func TestKeepalivedHealthChecks(t *testing.T) {
	lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	gvsd, testsrv := binaries(t)
	l, err := lab.New(lab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv := make([]*lab.Proc, 3)
	startSrv := func(i int) {
		t.Helper()
		name := fmt.Sprintf("r%d", i+1)
		p, err := l.Start(l.Servers()[i].NS, testsrv, "--name", name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.WaitFor(ctx, "ready name="+name); err != nil {
			t.Fatal(err)
		}
		srv[i] = p
	}
	for i := range srv {
		startSrv(i)
	}
	dir := t.TempDir()
	flag := filepath.Join(dir, "r3-down")
	script := filepath.Join(dir, "check-r3")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ ! -e "+flag+" ]\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	vip := l.VIP().String()
	conf := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(conf, []byte(kaConf(vip, script, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	dns := l.Director().NS
	p, err := l.Start(dns, gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--keepalived-conf", conf, "--metrics", metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("gvsd output:\n%s", p.Output())
		}
	})
	if _, err := p.WaitFor(ctx, "gvsd ready"); err != nil {
		t.Fatal(err)
	}
	d := &director{l: l, gvsd: p}
	web, misc := vip+":80", vip+":81"
	r1, r2, r3 := "198.18.2.11:8080", "198.18.2.12:8080", "198.18.2.13:8080"
	if out, err := l.Output(ctx, dns, adminBin, "-L", "--timeout"); err != nil || !strings.Contains(out, "600 60 120") {
		t.Errorf("lvs_timeouts: %v %q", err, out)
	}
	// Every check passes: r1 and r2 at weight 10 (the sorry server out).
	waitList(t, ctx, l, web, 5*time.Second, "start", func(m map[string]int) bool {
		return len(m) == 2 && m[r1] == 10 && m[r2] == 10
	})
	if _, err := p.WaitFor(ctx, "Remote Web server [198.18.2.11]:tcp:8080 succeed"); err != nil {
		t.Fatal(err)
	}

	// 1. Stop r1's listener under load.
	stopLoad := clientLoad(ctx, l.Clients()[0].NS, "http://"+web+"/")
	time.Sleep(500 * time.Millisecond)
	stopped := time.Now()
	if err := srv[0].Stop(); err != nil {
		t.Logf("r1 exit: %v", err)
	}
	removed := waitList(t, ctx, l, web, 10*time.Second, "r1 removed", func(m map[string]int) bool {
		_, ok := m[r1]
		return !ok
	})
	// connect_timeout 1 + delay_before_retry 1 × retry 1 + delay_loop 1,
	// plus 0.5 s for the listing poll and process start-up.
	const bound = 3*time.Second + 500*time.Millisecond
	took := removed.Sub(stopped)
	t.Logf("r1 left scheduling %v after its listener stopped (bound %v)", took, bound)
	if took > bound {
		t.Errorf("r1 left scheduling after %v, more than %v", took, bound)
	}
	time.Sleep(1500 * time.Millisecond)
	recs := stopLoad()
	var before, after, errsIn, errsAfter int
	for _, r := range recs {
		switch {
		case r.at.Before(stopped):
			before++
			if r.err != nil {
				t.Errorf("client error before r1 stopped: %v", r.err)
			}
		case r.at.Before(removed):
			if r.err != nil {
				errsIn++
			}
		default:
			after++
			if r.err != nil {
				errsAfter++
				t.Errorf("client error %v after r1 left scheduling: %v", r.at.Sub(removed), r.err)
			} else if r.name != "r2" {
				t.Errorf("answer from %q after r1 left scheduling", r.name)
			}
		}
	}
	t.Logf("load: %d requests before the stop, %d failed in the %v window, %d after (failed %d)", before, errsIn, took, after, errsAfter)
	if after < 20 {
		t.Errorf("only %d requests after r1 left", after)
	}
	// 2. Lose the quorum (r2 too): the sorry server r3 answers.
	if err := srv[1].Stop(); err != nil {
		t.Logf("r2 exit: %v", err)
	}
	waitList(t, ctx, l, web, 6*time.Second, "sorry server in", func(m map[string]int) bool {
		return len(m) == 1 && m[r3] == 1
	})
	if seen := serverNames(t, ctx, d, 3); seen["r3"] != 3 {
		t.Errorf("quorum lost: answers %v, want the sorry server r3", seen)
	}
	if _, err := p.WaitFor(ctx, "Lost quorum"); err != nil {
		t.Error(err)
	}

	// 3. Restart both: quorum back, sorry out, r1's weight ramps up
	// (slowstart 3 s).
	startSrv(0)
	startSrv(1)
	var ramp []int
	waitList(t, ctx, l, web, 10*time.Second, "r1 back at full weight", func(m map[string]int) bool {
		if w, ok := m[r1]; ok {
			ramp = append(ramp, w)
		}
		_, sorry := m[r3]
		return m[r1] == 10 && m[r2] == 10 && !sorry
	})
	partial := false
	for _, w := range ramp {
		if w > 0 && w < 10 {
			partial = true
		}
	}
	if !partial {
		t.Errorf("no slowstart ramp seen for r1: weights %v", ramp)
	}
	if seen := serverNames(t, ctx, d, 4); seen["r1"] == 0 || seen["r2"] == 0 {
		t.Errorf("after recovery: %v", seen)
	}

	// 4. The MISC_CHECK script decides r3 on :81.
	waitList(t, ctx, l, misc, 3*time.Second, "r3 on :81", func(m map[string]int) bool { return m[r3] == 1 })
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitList(t, ctx, l, misc, 5*time.Second, "r3 out of :81 (script exits 1)", func(m map[string]int) bool {
		_, ok := m[r3]
		return !ok
	})
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	waitList(t, ctx, l, misc, 5*time.Second, "r3 back on :81 (script exits 0)", func(m map[string]int) bool { return m[r3] == 1 })

	// 5. SIGHUP with r2's weight 10 → 20, with a connection open: it keeps
	// flowing.
	conn, err := lab.Dial(ctx, l.Clients()[0].NS, "tcp4", web)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(kaConf(vip, script, 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor(ctx, "keepalived configuration reloaded"); err != nil {
		t.Fatal(err)
	}
	if m := kaList(t, ctx, l, web); m[r2] != 20 || m[r1] != 10 {
		t.Errorf("after SIGHUP: %v", m)
	}
	if _, err := conn.Write([]byte("Connection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := readAll(conn)
	if err != nil || !strings.Contains(resp, "200 OK") || !strings.Contains(resp, "name=r") {
		t.Errorf("connection across the reload: %v %q", err, resp)
	}

	// gvsadm --reload (synchronous): r2 back to 10; a broken file is
	// refused (exit 1) and changes nothing.
	if err := os.WriteFile(conf, []byte(kaConf(vip, script, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Output(ctx, dns, adminBin, "--reload"); err != nil {
		t.Fatalf("gvsadm --reload: %v %q", err, out)
	}
	if m := kaList(t, ctx, l, web); m[r2] != 10 {
		t.Errorf("after gvsadm --reload: %v", m)
	}
	if err := os.WriteFile(conf, []byte("virtual_server "+vip+" 80 {\n delay_loop\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Output(ctx, dns, adminBin, "--reload"); err == nil || !strings.Contains(err.Error(), "missing a parameter") {
		t.Errorf("gvsadm --reload of a broken file: %v %q", err, out)
	}
	if m := kaList(t, ctx, l, web); m[r2] != 10 || m[r1] != 10 {
		t.Errorf("after a refused reload: %v", m)
	}

	// 6. gvsadm --status and the metrics agree with the table.
	st, err := l.Output(ctx, dns, adminBin, "--status")
	if err != nil || !strings.Contains(st, "[198.18.2.11]:tcp:8080") || !strings.Contains(st, "HTTP_GET") {
		t.Errorf("gvsadm --status: %v\n%s", err, st)
	}
	m, stats := settledBackendStats(t, ctx, l, dns, "-Ln", "--stats", "--exact", "-t", web)
	checked := checkBackendCounters(t, m, stats, vip, func(_ []string, lv string) {
		if m["gvs_backend_up"+lv] != 1 {
			t.Errorf("gvs_backend_up%s = %v", lv, m["gvs_backend_up"+lv])
		}
	})
	svcLabels := `family="ipv4",fwmark="",port="80",proto="TCP",vip="` + vip + `"`
	if checked != 2 {
		t.Errorf("%d real servers in gvsadm -Ln --stats:\n%s", checked, stats)
	}
	chk := `{backend_address="198.18.2.12",backend_port="8080",checker="TCP_CHECK",family="ipv4",fwmark="",port="80",proto="TCP",to="down",vip="` + vip + `"}`
	if m["gvs_healthcheck_transitions_total"+chk] != 1 {
		t.Errorf("gvs_healthcheck_transitions_total%s = %v, want 1", chk, m["gvs_healthcheck_transitions_total"+chk])
	}
	if m[`gvs_backend_configured_weight{backend_address="198.18.2.12",backend_port="8080",`+svcLabels+`}`] != 10 {
		t.Errorf("configured weight of r2 after the reload: %v", m)
	}
	stopAndCheck(t, d)
}

func readAll(c net.Conn) (string, error) {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			if b.Len() > 0 && (err.Error() == "EOF" || strings.Contains(err.Error(), "EOF")) {
				return b.String(), nil
			}
			return b.String(), err
		}
	}
}
