package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gvs/internal/lab"
)

// kind is how a contender forwards.
type kind int

const (
	kindGen     kind = iota // no forwarder: a sink at the director's ingress
	kindNoop                // gvs-bench noop: ring I/O only
	kindGVS                 // gvsd
	kindNFT                 // kernel nftables DNAT + conntrack
	kindHAProxy             // HAProxy, TCP mode, on the director
)

// contender is one thing measured.
type contender struct {
	Name     string
	kind     kind
	method   string // gvs: nat, dr, tun
	workers  int    // gvs: data-path workers
	busyPoll bool   // gvs: run gvsd with --busy-poll (-busy-poll)
	// gvs: --io afxdp (native XDP on the director's veths), and with
	// fastPath --xdp-fastpath.
	afxdp, fastPath bool
	// peerGRO: GRO on the director's veth peers (the bridge's ports dv-*
	// and dd-*) while the contender runs. veth takes redirected XDP frames
	// only while its peer has NAPI (GRO or an XDP program): the fast path
	// needs it. The kernel contender's twin with the same setting shows
	// what the setting alone does to the kernel's cost.
	peerGRO bool
	cases   []string
}

// takes reports whether the contender runs in case c.
func (c contender) takes(cs string) bool {
	for _, x := range c.cases {
		if x == cs {
			return true
		}
	}
	return false
}

// allContenders lists every contender with the cases it takes part in.
// Identical topology and traffic for all; each case compares what applies.
func allContenders() []contender {
	return []contender{
		{Name: "generator", kind: kindGen, cases: []string{"pps", "cpu", "budget", "latency", "cps"}}, // latency, cps: "direct", client to a real server
		{Name: "noop-ring", kind: kindNoop, cases: []string{"pps", "cpu", "budget"}},
		{Name: "gvs-nat", kind: kindGVS, method: "nat", workers: 1, cases: []string{"pps", "cpu", "budget", "cps", "latency", "scaling", "gc"}},
		{Name: "gvs-dr", kind: kindGVS, method: "dr", workers: 1, cases: []string{"pps", "cpu", "budget", "latency"}},
		{Name: "gvs-tun", kind: kindGVS, method: "tun", workers: 1, cases: []string{"pps", "cpu", "budget"}},
		{Name: "nft-dnat", kind: kindNFT, cases: []string{"pps", "cpu", "budget", "cps", "latency"}},
		{Name: "haproxy", kind: kindHAProxy, cases: []string{"cps"}},
		{Name: "gvs-nat-2w", kind: kindGVS, method: "nat", workers: 2, cases: []string{"scaling"}},
		{Name: "gvs-nat-bp", kind: kindGVS, method: "nat", workers: 1, busyPoll: true, cases: []string{"latency"}},
		{Name: "gvs-nat-afxdp", kind: kindGVS, method: "nat", workers: 1, afxdp: true, peerGRO: true, cases: []string{"pps", "cpu", "budget"}},
		{Name: "gvs-nat-xdpfast", kind: kindGVS, method: "nat", workers: 1, afxdp: true, fastPath: true, peerGRO: true, cases: []string{"pps", "cpu", "budget"}},
		{Name: "nft-dnat-gro", kind: kindNFT, peerGRO: true, cases: []string{"cpu", "budget"}},
	}
}

// running is a started contender.
type running struct {
	stop func()
	proc *lab.Proc // the userspace forwarder, if any
}

// rulesFor is gvsd's ipvsadm-save rules: the three benchmark services,
// round robin over the three real servers with the contender's method.
func (b *bench) rulesFor(method string) string {
	flag := map[string]string{"nat": "-m", "dr": "-g", "tun": "-i"}[method]
	var r strings.Builder
	for _, svc := range []struct {
		proto string
		port  int
	}{{"-u", pktPort}, {"-u", echoPort}, {"-t", httpPort}} {
		vip := fmt.Sprintf("%s:%d", b.l.VIP(), svc.port)
		fmt.Fprintf(&r, "-A %s %s -s rr\n", svc.proto, vip)
		for _, s := range b.servers {
			fmt.Fprintf(&r, "-a %s %s -r %s:%d %s -w 1\n", svc.proto, vip, s.LAN.Addr(), svc.port, flag)
		}
	}
	return r.String()
}

// start prepares the director for c and starts its forwarder. The
// returned stop undoes everything.
func (b *bench) start(ctx context.Context, c contender, round int) (*running, error) {
	d := b.dir
	vip := b.l.VIP()
	// Common state: legs for DR/TUN only, the kernel forwards only for
	// nft-dnat, no conntrack state left from a previous contender.
	// Legs up: DR and TUN replies go straight to the client, and the
	// generator contender's latency case talks to a real server directly.
	if err := b.setLegs(ctx, c.kind == kindGVS && c.method != "nat" || c.kind == kindGen); err != nil {
		return nil, err
	}
	if err := b.setPeerGRO(c.peerGRO); err != nil {
		return nil, err
	}
	fwd := "0"
	if c.kind == kindNFT {
		fwd = "1"
	}
	if err := lab.Sysctl(d.NS, "net.ipv4.ip_forward", fwd); err != nil {
		return nil, err
	}
	_ = b.nsExec(ctx, d.NS, "conntrack", "-F")
	logName := fmt.Sprintf("%s-r%d.log", c.Name, round)
	saveLog := func(p *lab.Proc) {
		if p != nil {
			_ = os.WriteFile(filepath.Join(b.logDir, logName), []byte(p.Output()), 0o644)
		}
	}

	switch c.kind {
	case kindGen:
		rs := nftIngress(benchTable, lab.DirectorVIPIf, []string{fmt.Sprintf("ip daddr %s counter drop", vip)})
		if err := nftApply(ctx, d.NS, rs); err != nil {
			return nil, err
		}
		return &running{stop: func() { nftDelete(ctx, d.NS, "netdev", benchTable) }}, nil

	case kindNoop:
		// Like gvsd, keep the kernel away from the VIP frames the ring
		// forwards.
		rs := nftIngress(benchTable, lab.DirectorVIPIf, []string{fmt.Sprintf("ip daddr %s counter drop", vip)})
		if err := nftApply(ctx, d.NS, rs); err != nil {
			return nil, err
		}
		macs := make([]string, len(b.servers))
		for i, s := range b.servers {
			macs[i] = s.LAN.MAC.String()
		}
		args := []string{"-c", b.o.dirCPU, b.self, "noop", "-in", lab.DirectorVIPIf, "-out", lab.DirectorDIPIf,
			"-vip", vip.String(), "-dst-macs", strings.Join(macs, ",")}
		if b.o.noopSpin {
			args = append(args, "-spin")
		}
		p, err := b.l.Start(d.NS, "taskset", args...)
		if err == nil {
			_, err = p.WaitFor(ctx, "noop ready")
		}
		stop := func() {
			if p != nil {
				p.Stop()
			}
			saveLog(p)
			nftDelete(ctx, d.NS, "netdev", benchTable)
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("noop forwarder: %w", err)
		}
		return &running{stop: stop, proc: p}, nil

	case kindGVS:
		rules, err := b.writeTemp(fmt.Sprintf("rules-%s.txt", c.method), b.rulesFor(c.method))
		if err != nil {
			return nil, err
		}
		cpus := b.o.gvsdCPUs
		if c.workers > 1 {
			cpus = b.o.allCPUs
		}
		args := []string{"-c", cpus, filepath.Join(b.o.bin, "gvsd"),
			"--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf, "--rules", rules,
			"--workers", fmt.Sprint(c.workers), "--socket", "gvsbench-" + b.l.Suffix(),
			"--log-format", "console", "--log-level", "debug", "--stats-interval", "2s"}
		if c.afxdp {
			args = append(args, "--io", "afxdp", "--xdp-mode", "native")
		}
		if c.fastPath {
			args = append(args, "--xdp-fastpath")
		}
		args = append(args, b.o.gvsdArgs...)
		if c.busyPoll {
			args = append(args, "--busy-poll", b.o.busyPoll.String())
		}
		p, err := b.l.Start(d.NS, "taskset", args...)
		if err == nil {
			_, err = p.WaitFor(ctx, "gvsd ready")
		}
		if err == nil && c.afxdp {
			err = checkXDP(c, p.Output())
		}
		stop := func() {
			if p != nil {
				p.Stop()
			}
			saveLog(p)
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("gvsd: %w", err)
		}
		return &running{stop: stop, proc: p}, nil

	case kindNFT:
		reals := make([]netip.Addr, len(b.servers))
		for i, s := range b.servers {
			reals[i] = s.LAN.Addr()
		}
		if err := nftApply(ctx, d.NS, nftDNAT(benchTable, vip, reals)); err != nil {
			return nil, err
		}
		return &running{stop: func() {
			nftDelete(ctx, d.NS, "ip", benchTable)
			_ = lab.Sysctl(d.NS, "net.ipv4.ip_forward", "0")
		}}, nil

	case kindHAProxy:
		reals := make([]string, len(b.servers))
		for i, s := range b.servers {
			reals[i] = s.LAN.Addr().String()
		}
		cfg, err := b.writeTemp("haproxy.cfg", haproxyConfig(vip.String(), httpPort, reals))
		if err != nil {
			return nil, err
		}
		vip32 := vip.String() + "/32"
		if err := b.nsExec(ctx, d.NS, "ip", "addr", "add", vip32, "dev", "lo"); err != nil {
			return nil, err
		}
		p, err := b.l.Start(d.NS, "taskset", "-c", b.o.dirCPU, "haproxy", "-db", "-f", cfg)
		stop := func() {
			if p != nil {
				p.Stop()
			}
			saveLog(p)
			_ = b.nsExec(ctx, d.NS, "ip", "addr", "del", vip32, "dev", "lo")
		}
		if err == nil {
			err = waitTCP(ctx, b.client.NS, net.JoinHostPort(vip.String(), fmt.Sprint(httpPort)), 5*time.Second)
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("haproxy: %w", err)
		}
		return &running{stop: stop, proc: p}, nil
	}
	return nil, fmt.Errorf("unknown contender kind %d", c.kind)
}
