// Command gvs-demo is `make demo`: it builds a lab of network namespaces (a
// client, a director with two NICs, three real servers on a bridged LAN),
// starts gvsd on the director, configures a virtual service with gvsadm the
// way an LVS operator would with ipvsadm, sends real client traffic (curl,
// UDP) through the VIP, shows which real server answered each request and
// the director's counters; then runs gvsd from a keepalived.conf with TCP
// health checks, stops a real server (traffic moves away within the
// checks' bound), starts it again (it comes back), and tears everything
// down.
//
//	gvs-demo [-mode nat|dr|tun] [-sched rr] [-requests 9] [-bin DIR]
//
// It needs root (network namespaces) and the binaries gvsd, gvsadm,
// gvs-testsrv and gvs-decap in -bin (default: the folder gvs-demo is in).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gvs/internal/lab"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gvs-demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	out      io.Writer
	l        *lab.Lab
	bin      string
	vipPort  int
	realPort int
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gvs-demo", flag.ContinueOnError)
	mode := fs.String("mode", "nat", "forwarding method: nat (-m), dr (-g) or tun (-i)")
	sched := fs.String("sched", "rr", "scheduler (-s)")
	requests := fs.Int("requests", 9, "HTTP requests to send through the VIP")
	exe, _ := os.Executable()
	bin := fs.String("bin", filepath.Dir(exe), "folder with gvsd, gvsadm, gvs-testsrv, gvs-decap")
	if err := fs.Parse(args); err != nil {
		return err
	}
	d := &demo{out: out, bin: *bin}
	opts := lab.Options{Prefix: "gvsdemo"}
	switch *mode {
	case "nat":
		d.vipPort, d.realPort = 80, 8080 // NAT may change the port
	case "dr", "tun":
		// DR and TUN deliver the packet unchanged: the real servers hold the
		// VIP on lo and answer the client directly over their client-LAN leg.
		d.vipPort, d.realPort = 8080, 8080
		opts.VIPOnServers, opts.ClientLegOnServers = true, true
		if *mode == "tun" {
			opts.ServerMTU = 1520 // room for the 20-byte IPIP header
		}
	default:
		return fmt.Errorf("unknown -mode %q (nat, dr or tun)", *mode)
	}
	for _, b := range []string{"gvsd", "gvsadm", "gvs-testsrv", "gvs-decap"} {
		if _, err := os.Stat(filepath.Join(d.bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s (run make build): %w", b, d.bin, err)
		}
	}
	if err := lab.Check(); err != nil {
		return err
	}
	if _, err := exec.LookPath("curl"); err != nil {
		return errors.New("curl is not installed (make deps installs it)")
	}
	lab.Cleanup(opts.Prefix) // leftovers of an interrupted demo

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d.step("building the lab: client, director (vip0, dip0), 3 real servers (%s)", strings.ToUpper(*mode))
	l, err := lab.New(opts)
	if err != nil {
		return err
	}
	d.l = l
	stop := l.CloseOnSignal()
	defer func() {
		stop()
		d.step("tearing down the lab")
		l.Close()
	}()
	fmt.Fprintln(out, l)

	var servers []*lab.Proc
	for i, s := range l.Servers() {
		name := fmt.Sprintf("rs%d", i+1)
		p, err := l.Start(s.NS, filepath.Join(d.bin, "gvs-testsrv"), "--name", name)
		if err != nil {
			return err
		}
		servers = append(servers, p)
		if _, err := p.WaitFor(ctx, "ready name="+name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if *mode == "tun" {
			// This kernel has no ipip module: a userspace decapsulator stands
			// in for tunl0 on the real servers.
			p, err := l.Start(s.NS, filepath.Join(d.bin, "gvs-decap"), "--if", lab.ServerIf, "--vip", l.VIP().String())
			if err != nil {
				return err
			}
			if _, err := p.WaitFor(ctx, "ready"); err != nil {
				return fmt.Errorf("gvs-decap on %s: %w", name, err)
			}
		}
	}

	d.step("starting gvsd on the director")
	gvsd, err := l.Start(l.Director().NS, filepath.Join(d.bin, "gvsd"), "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf, "--log-format", "console")
	if err != nil {
		return err
	}
	if _, err := gvsd.WaitFor(ctx, "gvsd ready"); err != nil {
		return fmt.Errorf("gvsd: %w\n%s", err, gvsd.Output())
	}

	flagFor := map[string]string{"nat": "-m", "dr": "-g", "tun": "-i"}[*mode]
	vip := fmt.Sprintf("%s:%d", l.VIP(), d.vipPort)
	cmds := [][]string{{"-A", "-t", vip, "-s", *sched}}
	for i, s := range l.Servers() {
		cmds = append(cmds, []string{"-a", "-t", vip, "-r", fmt.Sprintf("%s:%d", s.LAN.Addr(), d.realPort), flagFor, "-w", fmt.Sprint(i + 1)})
	}
	udpVIP := fmt.Sprintf("%s:9000", l.VIP())
	cmds = append(cmds, []string{"-A", "-u", udpVIP, "-s", "rr"})
	for _, s := range l.Servers() {
		cmds = append(cmds, []string{"-a", "-u", udpVIP, "-r", s.LAN.Addr().String() + ":9000", flagFor})
	}
	for _, c := range cmds {
		if err := d.gvsadm(ctx, c...); err != nil {
			return err
		}
	}
	d.gvsadm(ctx, "-Ln")

	d.step("%d HTTP requests with curl from the client to http://%s/", *requests, vip)
	count := map[string]int{}
	client := l.Clients()[0]
	for i := 1; i <= *requests; i++ {
		body, err := l.Output(ctx, client.NS, "curl", "-sS", "--max-time", "5", "http://"+vip+"/")
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		name, local := field(body, "name"), field(body, "local")
		count[name]++
		fmt.Fprintf(out, "  request %d answered by %-4s (real server socket %s)\n", i, name, local)
	}
	fmt.Fprintf(out, "  answers per real server: %v\n", count)

	d.step("3 UDP requests from the client to %s", udpVIP)
	for i := 1; i <= 3; i++ {
		reply, from, err := udpRequest(ctx, client.NS, udpVIP, fmt.Sprintf("hello %d", i))
		if err != nil {
			return fmt.Errorf("udp request %d: %w", i, err)
		}
		fmt.Fprintf(out, "  %q answered %q from %s\n", fmt.Sprintf("hello %d", i), reply, from)
	}

	d.step("what the director shows")
	d.gvsadm(ctx, "-Ln")
	d.gvsadm(ctx, "-Ln", "--stats")
	d.gvsadm(ctx, "-Lnc")

	d.step("stopping gvsd (SIGTERM removes its nftables table)")
	if err := gvsd.Stop(); err != nil {
		fmt.Fprintf(out, "  gvsd: %v\n", err)
	}
	if len(count) == 0 {
		return errors.New("no answers")
	}
	return d.failingServer(ctx, *mode, servers)
}

// failingServer is the health-check scene: gvsd runs a keepalived.conf
// with TCP checks; a real server stops, traffic moves away from it, it
// comes back.
func (d *demo) failingServer(ctx context.Context, mode string, servers []*lab.Proc) error {
	l := d.l
	method := map[string]string{"nat": "NAT", "dr": "DR", "tun": "TUN"}[mode]
	var b strings.Builder
	fmt.Fprintf(&b, "virtual_server %s %d {\n    delay_loop 1\n    lvs_sched rr\n    lvs_method %s\n    protocol TCP\n", l.VIP(), d.vipPort, method)
	for _, s := range l.Servers() {
		fmt.Fprintf(&b, "    real_server %s %d {\n        weight 1\n        TCP_CHECK {\n            connect_timeout 1\n            retry 1\n            delay_before_retry 1\n        }\n    }\n", s.LAN.Addr(), d.realPort)
	}
	b.WriteString("}\n")
	dir, err := os.MkdirTemp("", "gvs-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	conf := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	d.step("health checks: gvsd --keepalived-conf %s", conf)
	io.WriteString(d.out, b.String())
	if out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "gvsd"), "--keepalived-conf", conf, "--config-test").CombinedOutput(); err != nil {
		return fmt.Errorf("gvsd --config-test: %w\n%s", err, out)
	} else {
		fmt.Fprintf(d.out, "# gvsd --keepalived-conf keepalived.conf --config-test  (what it programs)\n%s", out)
	}
	gvsd, err := l.Start(l.Director().NS, filepath.Join(d.bin, "gvsd"), "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--keepalived-conf", conf, "--log-format", "console")
	if err != nil {
		return err
	}
	defer gvsd.Stop()
	if _, err := gvsd.WaitFor(ctx, "gvsd ready"); err != nil {
		return fmt.Errorf("gvsd: %w\n%s", err, gvsd.Output())
	}
	vip := fmt.Sprintf("%s:%d", l.VIP(), d.vipPort)
	rip := fmt.Sprintf("%s:%d", l.Servers()[1].LAN.Addr(), d.realPort)
	if _, err := gvsd.WaitFor(ctx, "TCP connection to ["+l.Servers()[1].LAN.Addr().String()); err != nil {
		return err
	}
	d.gvsadm(ctx, "--status")
	round := func(label string) {
		count := map[string]int{}
		for i := 0; i < 6; i++ {
			body, err := l.Output(ctx, l.Clients()[0].NS, "curl", "-sS", "--max-time", "2", "http://"+vip+"/")
			if err != nil {
				count["error"]++
				continue
			}
			count[field(body, "name")]++
		}
		fmt.Fprintf(d.out, "  6 requests %s: %v\n", label, count)
	}
	round("with every real server up")

	d.step("rs2 stops (its gvs-testsrv exits): the TCP check fails, gvsd takes it out")
	start := time.Now()
	servers[1].Stop()
	if err := d.waitDest(ctx, vip, rip, false, 10*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  rs2 left the pool %.1f s after it stopped (connect_timeout 1 + delay_before_retry 1 x retry 1 + delay_loop 1 at most)\n",
		time.Since(start).Seconds())
	d.gvsadm(ctx, "-Ln")
	round("while rs2 is down")

	d.step("rs2 comes back: the next check succeeds, it is added again")
	p, err := l.Start(l.Servers()[1].NS, filepath.Join(d.bin, "gvs-testsrv"), "--name", "rs2")
	if err != nil {
		return err
	}
	if _, err := p.WaitFor(ctx, "ready name=rs2"); err != nil {
		return err
	}
	if err := d.waitDest(ctx, vip, rip, true, 10*time.Second); err != nil {
		return err
	}
	d.gvsadm(ctx, "-Ln")
	round("after rs2 is back")
	d.gvsadm(ctx, "--status")
	fmt.Fprintln(d.out, "# gvsd's log, in keepalived's words:")
	for _, line := range strings.Split(gvsd.Output(), "\n") {
		for _, w := range []string{"Removing service", "Adding service", "TCP_CHECK", "TCP connection"} {
			if strings.Contains(line, w) {
				if i := strings.Index(line, w); i >= 0 {
					fmt.Fprintf(d.out, "  %s\n", line[i:])
				}
				break
			}
		}
	}
	return nil
}

// waitDest waits until rip is (or is not) a real server of the TCP service
// vip in gvsadm -Ln.
func (d *demo) waitDest(ctx context.Context, vip, rip string, present bool, max time.Duration) error {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		out, err := d.l.Output(ctx, d.l.Director().NS, filepath.Join(d.bin, "gvsadm"), "-Ln", "-t", vip)
		if err == nil && strings.Contains(out, "-> "+rip+" ") == present {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not %s the pool of %s within %v", rip, map[bool]string{true: "join", false: "leave"}[present], vip, max)
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n== "+format+"\n", args...)
}

// gvsadm runs one ipvsadm-style command in the director's namespace and
// shows it with its output, as an operator would see it.
func (d *demo) gvsadm(ctx context.Context, args ...string) error {
	fmt.Fprintf(d.out, "# gvsadm %s\n", strings.Join(args, " "))
	out, err := d.l.Run(ctx, d.l.Director().NS, filepath.Join(d.bin, "gvsadm"), args...)
	if len(out) > 0 {
		io.WriteString(d.out, out)
	}
	if err != nil {
		return fmt.Errorf("gvsadm %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func field(body, key string) string {
	for _, f := range strings.Fields(body) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return "?"
}

// udpRequest sends one datagram from inside ns and waits for the answer.
func udpRequest(ctx context.Context, ns, addr, msg string) (reply string, from net.Addr, err error) {
	pc, err := lab.ListenPacket(ctx, ns, "udp4", ":0")
	if err != nil {
		return "", nil, err
	}
	defer pc.Close()
	dst, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return "", nil, err
	}
	buf := make([]byte, 1500)
	for try := 0; try < 3; try++ {
		if _, err := pc.WriteTo([]byte(msg), dst); err != nil {
			return "", nil, err
		}
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, src, err := pc.ReadFrom(buf)
		if err == nil {
			return string(bytes.TrimSpace(buf[:n])), src, nil
		}
	}
	return "", nil, errors.New("no answer")
}
