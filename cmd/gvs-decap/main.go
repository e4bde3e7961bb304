// Command gvs-decap is a test-only userspace IPIP decapsulator for gvs
// TUN-mode ("ipvsadm -i") real servers on kernels without the ipip module.
//
// It reads IPv4 frames from an AF_PACKET socket on the server's LAN
// interface, keeps the IPIP packets (outer protocol 4) whose inner destination
// is a VIP it serves, strips the outer header and writes the inner packet,
// byte for byte unchanged, into a TUN device. The kernel then receives the
// inner packet as if it had arrived on that device and delivers it to the VIP
// configured on lo; the real server answers the client directly, as with the
// kernel's tunl0.
//
// While it runs it also owns an nftables table that drops `ip protocol 4` at
// the input hook, so the kernel does not answer the tunnelled packets with
// ICMP protocol unreachable (see nft_linux.go).
//
// Usage (inside the real server's network namespace):
//
//	gvs-decap --if eth0 --vip 198.51.100.10[,203.0.113.7] [--vip ...] [--tun decap0]
//
// It prints one "ready ..." line on stdout once it is capturing, runs until
// SIGTERM or SIGINT, and then prints its counters. It is low-rate by design:
// one read and one write system call per packet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"gvs/rewrite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gvs-decap:", err)
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	iface string
	tun   string
	vips  []netip.Addr
	noNFT bool
}

// vipList is a repeatable flag.Value that also accepts comma-separated lists.
type vipList struct{ addrs *[]netip.Addr }

func (v vipList) String() string {
	if v.addrs == nil {
		return ""
	}
	s := make([]string, len(*v.addrs))
	for i, a := range *v.addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func (v vipList) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return err
		}
		if !a.Unmap().Is4() {
			return fmt.Errorf("%s: only IPv4 VIPs are supported", f)
		}
		*v.addrs = append(*v.addrs, a.Unmap())
	}
	return nil
}

// parseFlags parses args into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("gvs-decap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.iface, "if", "", "interface to capture IPIP packets on (required)")
	fs.StringVar(&c.tun, "tun", "decap0", "name of the TUN device to create")
	fs.Var(vipList{&c.vips}, "vip", "IPv4 VIP to accept as inner destination (repeatable, or a comma list; required)")
	fs.BoolVar(&c.noNFT, "no-nft", false, "do not install the nftables drop for ip protocol 4 (the kernel will answer with ICMP protocol unreachable)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case c.iface == "":
		return c, errors.New("--if is required")
	case len(c.vips) == 0:
		return c, errors.New("at least one --vip is required")
	case c.tun == "" || len(c.tun) >= unix.IFNAMSIZ:
		return c, fmt.Errorf("--tun %q: need 1 to %d characters", c.tun, unix.IFNAMSIZ-1)
	}
	return c, nil
}

// captureFilter accepts only IPv4 packets addressed to this host (not
// outgoing or promiscuous copies) with protocol 4. The socket is SOCK_DGRAM,
// so offset 0 is the IPv4 header.
func captureFilter() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.PACKET_HOST, SkipTrue: 3},
		bpf.LoadAbsolute{Off: offProtocol, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: rewrite.ProtoIPIP, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
}

// counters counts packets by verdict plus write failures. Only the capture
// goroutine touches it until that goroutine has returned.
type counters struct {
	byVerdict [numVerdicts]uint64
	writeErrs uint64
}

func (c *counters) String() string {
	var b strings.Builder
	for v := range numVerdicts {
		fmt.Fprintf(&b, "%s=%d ", v, c.byVerdict[v])
	}
	fmt.Fprintf(&b, "write-errors=%d", c.writeErrs)
	return b.String()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ifi, err := net.InterfaceByName(cfg.iface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", cfg.iface, err)
	}
	if v, err := readSysctl("net/ipv4/conf/all/rp_filter"); err == nil && v != "0" {
		fmt.Fprintf(stderr, "gvs-decap: warning: net.ipv4.conf.all.rp_filter=%s; decapsulated packets may be dropped\n", v)
	}

	tun, err := openTUN(cfg.tun)
	if err != nil {
		return err
	}
	defer tun.Close()

	if !cfg.noNFT {
		drop, err := installIPIPDrop(tun.name)
		if err != nil {
			return err
		}
		defer func() {
			if err := drop.Remove(); err != nil {
				fmt.Fprintln(stderr, "gvs-decap:", err)
			}
		}()
	}

	filter, err := captureFilter()
	if err != nil {
		return fmt.Errorf("assembling BPF filter: %w", err)
	}
	conn, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_IP, &packet.Config{Filter: filter})
	if err != nil {
		return fmt.Errorf("AF_PACKET socket on %s: %w", cfg.iface, err)
	}
	// Closing the socket is what ends the capture loop.
	go func() {
		<-ctx.Done()
		conn.Close()
	}()

	fmt.Fprintf(stdout, "ready if=%s tun=%s vips=%s\n", cfg.iface, tun.name, vipList{&cfg.vips})
	var cnt counters
	err = capture(conn, tun, newVIPSet(cfg.vips), &cnt)
	fmt.Fprintf(stdout, "stats %s\n", &cnt)
	if ctx.Err() != nil {
		return nil // stopped by a signal: the read error is expected
	}
	return err
}

// packetReader is the part of *packet.Conn the capture loop uses.
type packetReader interface {
	ReadFrom(b []byte) (int, net.Addr, error)
}

// capture reads until r fails, writing every decapsulated packet to w.
func capture(r packetReader, w io.Writer, vips vipSet, cnt *counters) error {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := r.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("reading: %w", err)
		}
		inner, v := decapsulate(buf[:n], vips)
		cnt.byVerdict[v]++
		if v != verdictOK {
			continue
		}
		if _, err := w.Write(inner); err != nil {
			cnt.writeErrs++
		}
	}
}
