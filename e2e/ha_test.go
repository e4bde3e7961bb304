package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvs/internal/lab"
)

// Two directors, one VIP (README "Two directors"): gvsd on two director
// namespaces on the same client and server LANs, keepalived in VRRP-only
// mode on each with notify scripts that switch gvs's sync daemons
// (master <-> backup), backup_only=1. Long-lived TCP connections through
// the VIP must survive the master's death on the backup, without a reset.
//
// Addresses: director 1 198.18.1.2 / 198.18.2.2, director 2 198.18.1.3 /
// 198.18.2.3; keepalived holds 198.18.2.1 (the real servers' gateway, for
// NAT) on the master. The clients reach the VIP on-link (a /32 route on
// eth0), so the VIP is answered by the ARP responder of the gvsd that is
// not in standby, and announced by it on becoming master.

const (
	haEchoPort = 7000
	haConns    = 50
	haInterval = 20 * time.Millisecond
	// haFailover is VRRP's failover time with advert_int 1: three adverts
	// missed plus the skew time ((256-priority)/256 s).
	haFailover = 3*time.Second + 610*time.Millisecond
	haSyncID   = 51
)

// haDirector is one director of the HA lab.
type haDirector struct {
	name, ns string
	vipIP    string // on vip0
	dipIP    string // on dip0
	prio     int
	dir      string // keepalived config, scripts, pid files
	gvsd     *lab.Proc
	ka       *lab.Proc
}

type haLab struct {
	e   *env
	l   *lab.Lab
	d   [2]*haDirector
	vip netip.Addr
	m   mode
}

func TestHAFailover(t *testing.T) {
	requireTools(t, "keepalived")
	for _, m := range []mode{modeNAT, modeDR} {
		for _, cut := range []bool{false, true} {
			name := m.name + "/kill"
			if cut {
				name = m.name + "/linkcut"
			}
			t.Run(name, func(t *testing.T) { haScenario(t, m, cut) })
		}
	}
}

func haScenario(t *testing.T, m mode, cut bool) {
	h := newHALab(t, m)
	ctx := h.e.ctx
	vip := netip.AddrPortFrom(h.vip, haEchoPort).String()

	// Director 1 (priority 150) becomes master, director 2 stays backup.
	h.waitDaemons(h.d[0], "master")
	h.waitDaemons(h.d[1], "backup")

	// Before failover only the master answers ARP for the VIP.
	macs := arpProbe(t, h.e.client(0), h.vip, 3)
	if len(macs) != 1 || macs[0] != h.mac(h.d[0]) {
		t.Fatalf("ARP answers for the VIP from %v, want only the master %v", macs, h.mac(h.d[0]))
	}

	// 50 long-lived connections exchanging a message every 20 ms.
	conns := make([]*haConn, haConns)
	for i := range conns {
		c, err := dialHA(ctx, h.e.client(0), vip)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, c := range conns {
		wg.Go(func() { c.run(stop) })
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	// The master syncs a connection at its third packet the table sees
	// (the flow cache shows it one per second) and flushes a partial
	// message after 2 s: the backup must know all of them soon.
	if !h.waitSynced(h.d[1], haConns, 10*time.Second) {
		t.Fatalf("the backup learned %d connections, want %d:\n%s", h.countSynced(h.d[1]), haConns, h.ipvsadm(h.d[1], "-Lnc"))
	}
	// The backup forwards nothing meanwhile.
	if p := h.packets(h.d[1]); p != 0 {
		t.Fatalf("the backup forwarded %d packets before failover", p)
	}
	before := h.packets(h.d[0])
	time.Sleep(300 * time.Millisecond)
	if h.packets(h.d[0]) == before {
		t.Fatal("the master forwards nothing")
	}

	// Failover.
	failAt := time.Now()
	if cut {
		h.cutLinks(h.d[0])
	} else {
		h.kill(h.d[0])
	}
	// New connections work within VRRP's failover time + 1 s.
	var newAfter time.Duration
	for {
		dctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		c, err := dialHA(dctx, h.e.client(0), vip)
		cancel()
		if err == nil {
			err = c.exchange(time.Second)
			c.c.Close()
			if err == nil {
				newAfter = time.Since(failAt)
				break
			}
		}
		if time.Since(failAt) > haFailover+5*time.Second {
			t.Fatalf("no new connection %v after the failure: %v", time.Since(failAt), err)
		}
	}
	t.Logf("new connections work %v after the failure", newAfter.Round(time.Millisecond))
	if newAfter > haFailover+time.Second {
		t.Errorf("new connections worked only %v after the failure, want <= %v", newAfter, haFailover+time.Second)
	}
	h.waitDaemons(h.d[1], "master")
	// Let the old connections recover (TCP retransmission backs off to a
	// few seconds).
	time.Sleep(8 * time.Second)
	alive, gaps := 0, make([]time.Duration, 0, haConns)
	for i, c := range conns {
		st := c.status()
		if st.err != nil {
			t.Logf("connection %d: %v", i, st.err)
			continue
		}
		if time.Since(st.last) < time.Second && st.lastAfter(failAt) {
			alive++
			gaps = append(gaps, st.maxGap)
		}
	}
	slices.Sort(gaps)
	if len(gaps) > 0 {
		t.Logf("%d/%d connections continued on the backup; gap min %v median %v max %v", alive, haConns,
			gaps[0].Round(time.Millisecond), gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
	}
	if alive*100 < haConns*99 {
		t.Fatalf("%d/%d connections continued after failover, want >= 99%%", alive, haConns)
	}

	// The old master returns, as backup: it forwards nothing, and nothing
	// is forwarded twice.
	h.restore(h.d[0], cut)
	h.waitDaemons(h.d[0], "backup")
	mark := h.packets(h.d[0])
	before = h.packets(h.d[1])
	time.Sleep(2 * time.Second)
	if p := h.packets(h.d[0]); p != mark {
		t.Errorf("the returned director forwarded %d packets as backup", p-mark)
	}
	if h.packets(h.d[1]) == before {
		t.Error("the new master stopped forwarding after the old one returned")
	}
	close(stop)
	wg.Wait()
	for i, c := range conns {
		if st := c.status(); st.err != nil {
			t.Errorf("connection %d after the old master returned: %v", i, st.err)
		}
	}
}

// newHALab builds the lab: the standard one (director 1) plus director 2.
func newHALab(t *testing.T, m mode) *haLab {
	e := newHAEnv(t, m)
	l := e.l
	h := &haLab{e: e, l: l, vip: l.VIP(), m: m}
	sfx := l.Suffix()
	d1 := &haDirector{name: "d1", ns: l.Director().NS, vipIP: "198.18.1.2", dipIP: "198.18.2.2", prio: 150}
	d2 := &haDirector{name: "d2", ns: labPrefix + "x-" + sfx, vipIP: "198.18.1.3", dipIP: "198.18.2.3", prio: 100}
	h.d = [2]*haDirector{d1, d2}
	br := l.BridgeNS()
	ipc := func(args ...string) {
		t.Helper()
		if out, err := runCmd(e.ctx, "ip", args...); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	ipc("netns", "add", d2.ns)
	t.Cleanup(func() { _, _ = runCmd(context.Background(), "ip", "netns", "del", d2.ns) })
	_ = lab.Sysctl(d2.ns, "net.ipv6.conf.all.disable_ipv6", "1")
	_ = lab.Sysctl(d2.ns, "net.ipv6.conf.default.disable_ipv6", "1")
	ipc("-n", br, "link", "add", "xv-"+sfx, "type", "veth", "peer", "name", lab.DirectorVIPIf, "netns", d2.ns)
	ipc("-n", br, "link", "add", "xd-"+sfx, "type", "veth", "peer", "name", lab.DirectorDIPIf, "netns", d2.ns)
	ipc("-n", br, "link", "set", "xv-"+sfx, "master", "brc-"+sfx, "up")
	ipc("-n", br, "link", "set", "xd-"+sfx, "master", "brs-"+sfx, "up")
	ipc("-n", d2.ns, "link", "set", "lo", "up")
	for _, d := range h.d {
		if d == d1 {
			ipc("-n", d.ns, "addr", "flush", "dev", lab.DirectorVIPIf)
			ipc("-n", d.ns, "addr", "flush", "dev", lab.DirectorDIPIf)
		}
		ipc("-n", d.ns, "addr", "add", d.vipIP+"/24", "dev", lab.DirectorVIPIf)
		ipc("-n", d.ns, "addr", "add", d.dipIP+"/24", "dev", lab.DirectorDIPIf)
		ipc("-n", d.ns, "link", "set", lab.DirectorVIPIf, "up")
		ipc("-n", d.ns, "link", "set", lab.DirectorDIPIf, "up")
		_ = lab.DisableOffloads(d.ns, lab.DirectorVIPIf)
		_ = lab.DisableOffloads(d.ns, lab.DirectorDIPIf)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, ifn := range []string{lab.DirectorVIPIf, lab.DirectorDIPIf} {
		if err := lab.WaitCarrier(d2.ns, ifn, deadline); err != nil {
			t.Fatal(err)
		}
	}
	// The clients reach the VIP on-link.
	for _, c := range l.Clients() {
		ipc("-n", c.NS, "route", "replace", h.vip.String()+"/32", "dev", lab.ClientIf)
	}
	// Echo servers on the real servers.
	for _, s := range l.Servers() {
		ln, err := lab.Listen(e.ctx, s.NS, "tcp4", ":"+strconv.Itoa(haEchoPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go serveEcho(ln)
	}
	for _, d := range h.d {
		h.startDirector(d)
	}
	return h
}

// newHAEnv is newEnv without gvsd (both directors are started here).
func newHAEnv(t *testing.T, m mode) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	opts := lab.Options{Prefix: labPrefix, Clients: 1, Servers: 3}
	if m != modeNAT {
		opts.VIPOnServers, opts.ClientLegOnServers = true, true
	}
	l, err := lab.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	return &env{t: t, ctx: ctx, l: l, m: m, vip: l.VIP(), dirNS: l.Director().NS}
}

// startDirector starts gvsd, configures it as a backup in standby, and
// starts keepalived.
func (h *haLab) startDirector(d *haDirector) {
	t := h.e.t
	t.Helper()
	if d.dir == "" {
		d.dir = t.TempDir()
	}
	p, err := h.l.Start(d.ns, bin.gvsd, "--vip-if", lab.DirectorVIPIf, "--dip-if", lab.DirectorDIPIf,
		"--log-format", "console", "--stats-interval", "0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor(h.e.ctx, "gvsd ready"); err != nil {
		t.Fatalf("gvsd in %s: %v\n%s", d.ns, err, p.Output())
	}
	d.gvsd = p
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s gvsd output:\n%s", d.name, p.Output())
		}
	})
	// Standby first, then the services: a director that comes up must not
	// announce the VIP before VRRP has made it master.
	h.ipvsadm(d, "--sysctl", "backup_only=1")
	h.ipvsadm(d, "--start-daemon", "backup", "--mcast-interface", lab.DirectorDIPIf, "--syncid", strconv.Itoa(haSyncID))
	svc := netip.AddrPortFrom(h.vip, haEchoPort).String()
	h.ipvsadm(d, "-A", "-t", svc, "-s", "rr")
	for _, s := range h.l.Servers() {
		h.ipvsadm(d, "-a", "-t", svc, "-r", netip.AddrPortFrom(s.LAN.Addr(), haEchoPort).String(), h.m.flag)
	}

	gvsadm := filepath.Join(bin.dir, "gvsadm")
	script := filepath.Join(d.dir, "notify.sh")
	sync := fmt.Sprintf("--mcast-interface %s --syncid %d", lab.DirectorDIPIf, haSyncID)
	writeFile(t, script, 0o755, fmt.Sprintf(`#!/bin/sh
# keepalived notify: $1 is master, backup or fault.
echo "$(date +%%T.%%N) $1" >> %[1]s/notify.log
case "$1" in
master) %[2]s --stop-daemon backup; %[2]s --start-daemon master %[3]s ;;
*)      %[2]s --stop-daemon master; %[2]s --start-daemon backup %[3]s ;;
esac >> %[1]s/notify.log 2>&1
exit 0
`, d.dir, gvsadm, sync))
	conf := filepath.Join(d.dir, "keepalived.conf")
	writeFile(t, conf, 0o644, fmt.Sprintf(`global_defs {
    router_id %[1]s
}
vrrp_instance VI_GVS {
    state BACKUP
    nopreempt
    interface %[2]s
    virtual_router_id %[3]d
    priority %[4]d
    advert_int 1
    virtual_ipaddress {
        198.18.2.1/24 dev %[5]s
    }
    notify_master "%[6]s master"
    notify_backup "%[6]s backup"
    notify_fault  "%[6]s fault"
}
`, d.name, lab.DirectorVIPIf, haSyncID, d.prio, lab.DirectorDIPIf, script))
	ka, err := h.l.Start(d.ns, "keepalived", "--vrrp", "--dont-fork", "--log-console", "--log-detail",
		"--use-file", conf, "--pid", filepath.Join(d.dir, "keepalived.pid"), "--vrrp_pid", filepath.Join(d.dir, "vrrp.pid"))
	if err != nil {
		t.Fatal(err)
	}
	d.ka = ka
	t.Cleanup(func() {
		h.killKeepalived(d)
		if t.Failed() {
			t.Logf("%s keepalived output:\n%s", d.name, ka.Output())
			b, _ := os.ReadFile(filepath.Join(d.dir, "notify.log"))
			t.Logf("%s notify.log:\n%s", d.name, b)
		}
	})
}

func writeFile(t *testing.T, name string, mode os.FileMode, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
}

// killKeepalived SIGKILLs keepalived and its VRRP child.
func (h *haLab) killKeepalived(d *haDirector) {
	if b, err := os.ReadFile(filepath.Join(d.dir, "vrrp.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if d.ka != nil {
		_ = syscall.Kill(d.ka.Pid(), syscall.SIGKILL)
	}
}

// kill is the master's death: SIGKILL gvsd and keepalived. keepalived dies
// without removing its address, which a dead host's kernel would not
// answer ARP for any more: it is removed by hand.
func (h *haLab) kill(d *haDirector) {
	h.killKeepalived(d)
	_ = syscall.Kill(d.gvsd.Pid(), syscall.SIGKILL)
	<-d.gvsd.Done()
	_, _ = runCmd(h.e.ctx, "ip", "-n", d.ns, "addr", "del", "198.18.2.1/24", "dev", lab.DirectorDIPIf)
}

// cutLinks takes both of the director's links down.
func (h *haLab) cutLinks(d *haDirector) {
	for _, ifn := range []string{lab.DirectorVIPIf, lab.DirectorDIPIf} {
		if out, err := runCmd(h.e.ctx, "ip", "-n", d.ns, "link", "set", ifn, "down"); err != nil {
			h.e.t.Fatalf("link down: %v %s", err, out)
		}
	}
}

// restore brings the old master back: links up again (it went to FAULT,
// then BACKUP), or a fresh gvsd and keepalived after its death.
func (h *haLab) restore(d *haDirector, cut bool) {
	if cut {
		for _, ifn := range []string{lab.DirectorVIPIf, lab.DirectorDIPIf} {
			_, _ = runCmd(h.e.ctx, "ip", "-n", d.ns, "link", "set", ifn, "up")
		}
		return
	}
	_ = os.Remove(filepath.Join(d.dir, "notify.log"))
	h.startDirector(d)
}

func (h *haLab) ipvsadm(d *haDirector, args ...string) string {
	h.e.t.Helper()
	ctx, cancel := context.WithTimeout(h.e.ctx, 10*time.Second)
	defer cancel()
	out, err := h.l.Output(ctx, d.ns, "ipvsadm", args...)
	if err != nil {
		h.e.t.Fatalf("%s: ipvsadm %s: %v %s", d.name, strings.Join(args, " "), err, out)
	}
	return out
}

// waitDaemons waits until the director runs only the given sync daemon.
func (h *haLab) waitDaemons(d *haDirector, role string) {
	h.e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var out string
	for time.Now().Before(deadline) {
		out = h.ipvsadm(d, "-L", "--daemon")
		if strings.HasPrefix(out, role+" sync daemon") && strings.Count(out, "\n") == 1 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.e.t.Fatalf("%s: sync daemons %q, want only the %s", d.name, out, role)
}

// countSynced counts the ESTABLISHED connections to the echo service the
// director lists.
func (h *haLab) countSynced(d *haDirector) int {
	n := 0
	for line := range strings.Lines(h.ipvsadm(d, "-Lnc")) {
		if strings.Contains(line, "ESTABLISHED") && strings.Contains(line, netip.AddrPortFrom(h.vip, haEchoPort).String()) {
			n++
		}
	}
	return n
}

func (h *haLab) waitSynced(d *haDirector, n int, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if h.countSynced(d) >= n {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// packets is the director's InPkts+OutPkts of the echo service.
func (h *haLab) packets(d *haDirector) uint64 {
	out := h.ipvsadm(d, "-Ln", "--stats", "--exact")
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == "TCP" {
			in, _ := strconv.ParseUint(f[3], 10, 64)
			o, _ := strconv.ParseUint(f[4], 10, 64)
			return in + o
		}
	}
	return 0
}

// mac is the director's vip0 MAC.
func (h *haLab) mac(d *haDirector) string {
	ifi, err := ifaceIn(d.ns, lab.DirectorVIPIf)
	if err != nil {
		h.e.t.Fatal(err)
	}
	return ifi.HardwareAddr.String()
}

func ifaceIn(ns, name string) (*net.Interface, error) {
	var ifi *net.Interface
	err := lab.Do(ns, func() (err error) {
		ifi, err = net.InterfaceByName(name)
		return err
	})
	return ifi, err
}

func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := osexec.CommandContext(ctx, name, args...)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// arpProbe sends n ARP requests for ip from the client namespace's eth0
// and returns the distinct MACs that answered.
func arpProbe(t *testing.T, ns string, ip netip.Addr, n int) []string {
	t.Helper()
	var macs []string
	err := lab.Do(ns, func() error {
		ifi, err := net.InterfaceByName(lab.ClientIf)
		if err != nil {
			return err
		}
		addrs, err := ifi.Addrs()
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("client addresses: %v", err)
		}
		src := netip.MustParsePrefix(addrs[0].String()).Addr().As4()
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(0x0806)))
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		sa := &syscall.SockaddrLinklayer{Protocol: htons(0x0806), Ifindex: ifi.Index}
		if err := syscall.Bind(fd, sa); err != nil {
			return err
		}
		tv := syscall.Timeval{Usec: 200_000}
		_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
		req := make([]byte, 42)
		copy(req[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(req[6:12], ifi.HardwareAddr)
		binary.BigEndian.PutUint16(req[12:], 0x0806)
		copy(req[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
		copy(req[22:28], ifi.HardwareAddr)
		copy(req[28:32], src[:])
		tgt := ip.As4()
		copy(req[38:42], tgt[:])
		seen := map[string]bool{}
		buf := make([]byte, 1500)
		for range n {
			if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}); err != nil {
				return err
			}
			end := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(end) {
				k, _, err := syscall.Recvfrom(fd, buf, 0)
				if err != nil {
					continue
				}
				if k >= 42 && binary.BigEndian.Uint16(buf[20:22]) == 2 && netip.AddrFrom4([4]byte(buf[28:32])) == ip {
					seen[net.HardwareAddr(buf[22:28]).String()] = true
				}
			}
		}
		for m := range seen {
			macs = append(macs, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(macs)
	return macs
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// serveEcho echoes every connection's bytes back.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// haConn is one long-lived client connection: an 8-byte message every
// haInterval, echoed back.
type haConn struct {
	c      net.Conn
	mu     sync.Mutex
	seq    uint64
	last   time.Time
	maxGap time.Duration
	err    error
}

type haStatus struct {
	last   time.Time
	maxGap time.Duration
	err    error
}

func (s haStatus) lastAfter(t time.Time) bool { return s.last.After(t) }

func dialHA(ctx context.Context, ns, addr string) (*haConn, error) {
	c, err := lab.Dial(ctx, ns, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	hc := &haConn{c: c, last: time.Now()}
	if err := hc.exchange(2 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return hc, nil
}

// exchange sends one message and reads its echo.
func (hc *haConn) exchange(timeout time.Duration) error {
	var b [8]byte
	hc.seq++
	binary.BigEndian.PutUint64(b[:], hc.seq)
	hc.c.SetDeadline(time.Now().Add(timeout))
	if _, err := hc.c.Write(b[:]); err != nil {
		return err
	}
	var r [8]byte
	if _, err := io.ReadFull(hc.c, r[:]); err != nil {
		return err
	}
	if r != b {
		return fmt.Errorf("echo %x, sent %x", r, b)
	}
	now := time.Now()
	hc.mu.Lock()
	if g := now.Sub(hc.last); g > hc.maxGap {
		hc.maxGap = g
	}
	hc.last = now
	hc.mu.Unlock()
	return nil
}

func (hc *haConn) run(stop <-chan struct{}) {
	defer hc.c.Close()
	tick := time.NewTicker(haInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if err := hc.exchange(30 * time.Second); err != nil {
			select {
			case <-stop:
				return
			default:
			}
			hc.mu.Lock()
			hc.err = err
			hc.mu.Unlock()
			return
		}
	}
}

func (hc *haConn) status() haStatus {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return haStatus{last: hc.last, maxGap: hc.maxGap, err: hc.err}
}
