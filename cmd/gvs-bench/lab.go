package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"gvs/internal/lab"
)

// Ports of the benchmark services (VIP port = real port for every
// contender, so the kernel's DNAT needs no port map).
const (
	pktPort  = 9    // UDP packet-rate traffic, dropped by the real servers' sink
	echoPort = 9000 // UDP echo (gvs-testsrv) for latency
	httpPort = 80   // nginx for connections per second
)

// linkStats reads an interface's counters (the kernel's rtnl_link_stats64,
// the same numbers as /sys/class/net/IF/statistics) inside namespace ns.
func linkStats(ns, ifname string) (rx, tx uint64, err error) {
	err = lab.Do(ns, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", ifname, ns, err)
		}
		s := l.Attrs().Statistics
		if s == nil {
			return fmt.Errorf("%s in %s: no statistics", ifname, ns)
		}
		rx, tx = s.RxPackets, s.TxPackets
		return nil
	})
	return rx, tx, err
}

// snapshot is every counter a measurement window needs.
type snapshot struct {
	at       time.Time
	clientTX uint64 // frames the generator put on the client link
	dirRX    uint64 // frames the director's vip0 took in
	srvRX    uint64 // frames the real servers' eth0 took in, summed
	perSrv   []uint64
	cpu      procStat
	backlog  uint64 // input-backlog drops summed over CPUs (softnet_stat)
}

func (b *bench) snap() (snapshot, error) {
	var s snapshot
	var err error
	s.at = time.Now()
	if _, s.clientTX, err = linkStats(b.client.NS, b.client.Name); err != nil {
		return s, err
	}
	if s.dirRX, _, err = linkStats(b.dir.NS, lab.DirectorVIPIf); err != nil {
		return s, err
	}
	for _, sv := range b.servers {
		rx, _, err := linkStats(sv.NS, sv.LAN.Name)
		if err != nil {
			return s, err
		}
		s.srvRX += rx
		s.perSrv = append(s.perSrv, rx)
	}
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	if s.cpu, err = parseProcStat(st); err != nil {
		return s, err
	}
	sn, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return s, err
	}
	drops, err := parseSoftnetDrops(sn)
	for _, d := range drops {
		s.backlog += d
	}
	return s, err
}

// window is the difference of two snapshots.
type window struct {
	secs                    float64
	clientTX, dirRX, srvRX  uint64
	backlog                 uint64 // input-backlog drops (all CPUs; 32-bit kernel counters)
	perSrv                  []uint64
	cpu                     map[int]cpuTimes
	offered, arrived, fwded float64 // per second
}

func diff(a, b snapshot) window {
	w := window{secs: b.at.Sub(a.at).Seconds(), cpu: map[int]cpuTimes{}}
	sub := func(x, y uint64) uint64 {
		if y < x {
			return 0
		}
		return y - x
	}
	w.clientTX, w.dirRX, w.srvRX = sub(a.clientTX, b.clientTX), sub(a.dirRX, b.dirRX), sub(a.srvRX, b.srvRX)
	w.backlog = sub(a.backlog, b.backlog)
	for i := range b.perSrv {
		if i < len(a.perSrv) {
			w.perSrv = append(w.perSrv, sub(a.perSrv[i], b.perSrv[i]))
		}
	}
	for n, t := range b.cpu.CPUs {
		w.cpu[n] = t.Sub(a.cpu.CPUs[n])
	}
	if w.secs > 0 {
		w.offered, w.arrived, w.fwded = float64(w.clientTX)/w.secs, float64(w.dirRX)/w.secs, float64(w.srvRX)/w.secs
	}
	return w
}

// nsExec runs a command in ns and returns an error with its output.
func (b *bench) nsExec(ctx context.Context, ns, name string, args ...string) error {
	_, err := b.l.Run(ctx, ns, name, args...)
	return err
}

// sh runs a shell snippet in ns (used for /sys writes, which need the
// namespace's own sysfs that `ip netns exec` mounts).
func (b *bench) sh(ctx context.Context, ns, script string) error {
	return b.nsExec(ctx, ns, "sh", "-c", script)
}

// setLegs brings the real servers' client-LAN legs up (DR, TUN: replies go
// straight to the client) or down (NAT-style contenders: replies must go
// back through the director).
func (b *bench) setLegs(ctx context.Context, up bool) error {
	if b.legsUp == up {
		return nil
	}
	state := "down"
	if up {
		state = "up"
	}
	for _, s := range b.servers {
		if err := b.nsExec(ctx, s.NS, "ip", "link", "set", lab.ServerLegIf, state); err != nil {
			return err
		}
	}
	if up {
		deadline := time.Now().Add(5 * time.Second)
		for _, s := range b.servers {
			if err := lab.WaitCarrier(s.NS, lab.ServerLegIf, deadline); err != nil {
				return err
			}
		}
	}
	b.legsUp = up
	return nil
}

// setupLab builds the lab: one client, a director, three real servers with
// client-LAN legs and the VIP on lo (what DR and TUN need; the legs are
// brought down for NAT-style contenders), offloads off everywhere. Then
// it installs the real servers' sinks and steers the director's receive
// processing to CPU 1 (RPS).
func (b *bench) setupLab(ctx context.Context) error {
	if _, err := lab.Cleanup(labPrefix); err != nil {
		b.logf("cleanup of old runs: %v", err)
	}
	l, err := lab.New(lab.Options{Prefix: labPrefix, Servers: 3, ClientLegOnServers: true, VIPOnServers: true})
	if err != nil {
		return err
	}
	b.l = l
	b.client, b.dir, b.servers = l.Clients()[0], l.Director(), l.Servers()
	b.legsUp = true
	if err := b.staticFDB(ctx); err != nil {
		return err
	}
	// GRO off on the director's veth peers (the veth default, made sure
	// of); the AF_XDP contenders turn it on for their turn.
	b.peerGRO = true
	if err := b.setPeerGRO(false); err != nil {
		return err
	}
	if b.o.clientXDPPass {
		l, err := b.attachClientXDPPass()
		if err != nil {
			return err
		}
		b.clientXDP = l
	}
	// The sink: UDP benchmark frames and IPIP frames die at the real
	// servers' ingress, after the interface has counted them; ARP, the
	// echo service and HTTP pass.
	for _, s := range b.servers {
		rs := nftIngress(benchTable, s.LAN.Name, []string{
			fmt.Sprintf("udp dport %d counter drop", pktPort),
			"ip protocol 4 counter drop",
		})
		if err := nftApply(ctx, s.NS, rs); err != nil {
			return err
		}
	}
	if err := lab.Sysctl(b.client.NS, "net.ipv4.ip_local_port_range", "1024 65000"); err != nil {
		return err
	}
	if b.o.rps != "" {
		script := fmt.Sprintf("for q in /sys/class/net/%s/queues/rx-*/rps_cpus /sys/class/net/%s/queues/rx-*/rps_cpus; do echo %s > $q; done",
			lab.DirectorVIPIf, lab.DirectorDIPIf, b.o.rps)
		if err := b.sh(ctx, b.dir.NS, script); err != nil {
			return fmt.Errorf("RPS on the director: %w", err)
		}
	}
	if b.o.endpointRPS != "" {
		// The client's and the servers' receive processing (their TCP/UDP
		// stacks) on their own CPU, not inline in whoever sent the frame:
		// on veth that would be the director's forwarder.
		rps := func(ns string, ifs ...string) error {
			var script strings.Builder
			for _, ifc := range ifs {
				fmt.Fprintf(&script, "for q in /sys/class/net/%s/queues/rx-*/rps_cpus; do echo %s > $q; done; ", ifc, b.o.endpointRPS)
			}
			return b.sh(ctx, ns, script.String())
		}
		if err := rps(b.client.NS, b.client.Name); err != nil {
			return fmt.Errorf("RPS on the client: %w", err)
		}
		for _, s := range b.servers {
			ifs := []string{s.LAN.Name}
			if s.ClientLeg.IsValid() {
				ifs = append(ifs, s.ClientLeg.Name)
			}
			if err := rps(s.NS, ifs...); err != nil {
				return fmt.Errorf("RPS on %s: %w", s.NS, err)
			}
		}
	}
	return nil
}

// writeTemp writes a file in the run's temp folder and returns its path.
func (b *bench) writeTemp(name, content string) (string, error) {
	p := filepath.Join(b.tmp, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, []byte(content), 0o644)
}

// waitTCP waits until a TCP connect from ns to addr succeeds.
func waitTCP(ctx context.Context, ns, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := lab.Dial(ctx, ns, "tcp4", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.Join(fmt.Errorf("%s not reachable from %s", addr, ns), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// servicesUp starts gvs-testsrv (UDP echo) and nginx on every real server.
func (b *bench) servicesUp(ctx context.Context) error {
	for i, s := range b.servers {
		name := fmt.Sprintf("rs%d", i+1)
		p, err := b.l.Start(s.NS, "taskset", "-c", b.o.worldCPU, filepath.Join(b.o.bin, "gvs-testsrv"), "--name", name, "--http", "", "--sink", "", "--udp", fmt.Sprintf(":%d", echoPort))
		if err != nil {
			return err
		}
		if _, err := p.WaitFor(ctx, "ready name="+name); err != nil {
			return fmt.Errorf("gvs-testsrv %s: %w", name, err)
		}
		if !b.needNginx {
			continue
		}
		dir := filepath.Join(b.tmp, "nginx-"+name)
		for _, d := range []string{dir, dir + "/body", dir + "/proxy"} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		cfg, err := b.writeTemp("nginx-"+name+"/nginx.conf", nginxConfig(dir))
		if err != nil {
			return err
		}
		if _, err := b.l.Start(s.NS, "taskset", "-c", b.o.worldCPU, "nginx", "-c", cfg, "-p", dir); err != nil {
			return err
		}
		if err := waitTCP(ctx, s.NS, fmt.Sprintf("%s:%d", s.LAN.Addr(), httpPort), 5*time.Second); err != nil {
			return fmt.Errorf("nginx on %s: %w", name, err)
		}
	}
	return nil
}

// staticFDB pins every lab MAC to its bridge port. Without it a silent
// host (a real server whose sink drops everything, a director that only
// receives) ages out of the bridges' forwarding tables, and every frame to
// it is flooded to all ports: each real server then receives every frame,
// which triples the delivery work of every contender and inflates the
// servers' receive counters. Port names follow the lab's convention
// (internal/lab plan.go: dv-, dd-, cN-, rN-, rcN- + the run's suffix).
func (b *bench) staticFDB(ctx context.Context) error {
	sfx := b.l.Suffix()
	type entry struct {
		mac  net.HardwareAddr
		port string
	}
	es := []entry{{b.dir.VIPSide.MAC, "dv-" + sfx}, {b.dir.DIPSide.MAC, "dd-" + sfx}}
	for i, c := range b.l.Clients() {
		es = append(es, entry{c.MAC, fmt.Sprintf("c%d-%s", i+1, sfx)})
	}
	for i, s := range b.servers {
		es = append(es, entry{s.LAN.MAC, fmt.Sprintf("r%d-%s", i+1, sfx)})
		if s.ClientLeg.IsValid() {
			es = append(es, entry{s.ClientLeg.MAC, fmt.Sprintf("rc%d-%s", i+1, sfx)})
		}
	}
	for _, e := range es {
		if err := b.nsExec(ctx, b.l.BridgeNS(), "bridge", "fdb", "replace", e.mac.String(), "dev", e.port, "master", "static"); err != nil {
			return fmt.Errorf("static bridge entries: %w", err)
		}
	}
	return nil
}

// linkDrops reads the rx/tx drop counters of every interface in the lab's
// namespaces, keyed "namespace/interface" (for diagnosing where frames
// are lost).
func (b *bench) linkDrops() map[string][2]uint64 {
	m := map[string][2]uint64{}
	for _, ns := range b.l.Namespaces() {
		_ = lab.Do(ns, func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if s := l.Attrs().Statistics; s != nil {
					m[ns+"/"+l.Attrs().Name] = [2]uint64{s.RxDropped, s.TxDropped}
				}
			}
			return nil
		})
	}
	return m
}

// dropDelta lists the interfaces whose drop counters grew between a and b.
func dropDelta(a, b map[string][2]uint64) string {
	var out []string
	for k, v := range b {
		o := a[k]
		if v[0] > o[0] || v[1] > o[1] {
			out = append(out, fmt.Sprintf("%s rx_dropped+%d tx_dropped+%d", k, v[0]-o[0], v[1]-o[1]))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}
