package control

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvs/conntrack"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/scheduler"
)

var root = Cred{UID: 0, GID: 0, PID: 1}

// testEngine is an Engine over fresh tables with a settable clock.
type testEngine struct {
	*Engine
	clock   int64
	changes int
	defense *conntrack.Defense // set by newSysctlEngine
}

func newTestEngine(t testing.TB) *testEngine {
	t.Helper()
	te := &testEngine{}
	tab := ipvs.NewTable(scheduler.New)
	ct := conntrack.New(conntrack.Config{Shards: 4, Capacity: 1 << 12, Seed: 1})
	te.Engine = NewEngine(tab, ct, func() int64 { return te.clock })
	te.OnChange = func() error { te.changes++; return nil }
	te.clock = int64(1000 * time.Second)
	return te
}

// run executes one command line (argv[0] is "ipvsadm" unless given).
func (te *testEngine) run(cred Cred, stdin string, args ...string) (stdout, stderr string, code int) {
	argv := append([]string{"ipvsadm"}, args...)
	if len(args) > 0 && strings.HasPrefix(args[0], "prog=") {
		argv = append([]string{strings.TrimPrefix(args[0], "prog=")}, args[1:]...)
	}
	var o, e bytes.Buffer
	code = te.Run(argv, strings.NewReader(stdin), cred, &o, &e)
	return o.String(), e.String(), code
}

func (te *testEngine) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := te.run(root, "", args...)
	if code != 0 || errOut != "" {
		t.Fatalf("ipvsadm %s: code %d, stderr %q", strings.Join(args, " "), code, errOut)
	}
	return out
}

const listHead = "IP Virtual Server version 1.2.1 (size=4096)\n" +
	"Prot LocalAddress:Port Scheduler Flags\n" +
	"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"

// step is one command of a session and what it must print.
type step struct {
	args    string // split on spaces; "prog=NAME" first sets argv[0]
	stdin   string
	cred    *Cred
	out     string
	err     string
	code    int
	changes int // OnChange calls expected so far (-1: don't check)
}

func runSession(t *testing.T, te *testEngine, steps []step) {
	t.Helper()
	for i, s := range steps {
		cred := root
		if s.cred != nil {
			cred = *s.cred
		}
		var args []string
		if s.args != "" {
			args = strings.Split(s.args, " ")
		}
		out, errOut, code := te.run(cred, s.stdin, args...)
		if out != s.out || errOut != s.err || code != s.code {
			t.Fatalf("step %d: ipvsadm %s\n got code %d stdout:\n%q\nstderr:\n%q\nwant code %d stdout:\n%q\nstderr:\n%q",
				i, s.args, code, out, errOut, s.code, s.out, s.err)
		}
		if s.changes >= 0 && te.changes != s.changes {
			t.Fatalf("step %d: ipvsadm %s: OnChange called %d times, want %d", i, s.args, te.changes, s.changes)
		}
	}
}

// TestSelftestSession follows the kernel's IPVS selftest (NAT case) and the
// commands around it, comparing ipvsadm's exact output.
func TestSelftestSession(t *testing.T) {
	const svc = "-t 198.51.100.10:8080"
	runSession(t, newTestEngine(t), []step{
		{args: "-Ln", out: listHead},
		{args: "", out: listHead},
		{args: "-A " + svc + " -s rr", changes: 1},
		{args: "-a " + svc + " -r 198.18.2.11:8080 -m", changes: 2},
		{args: "-Ln", changes: 2, out: listHead +
			"TCP  198.51.100.10:8080 rr\n" +
			"  -> 198.18.2.11:8080             Masq    1      0          0         \n"},
		{args: "-S -n", changes: 2, out: "-A -t 198.51.100.10:8080 -s rr\n" +
			"-a -t 198.51.100.10:8080 -r 198.18.2.11:8080 -m -w 1\n"},
		{args: "-L -n " + svc, changes: 2, out: "Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
			"TCP  198.51.100.10:8080 rr\n" +
			"  -> 198.18.2.11:8080             Masq    1      0          0         \n"},
		{args: "-e " + svc + " -r 198.18.2.11:8080 -m -w 0", changes: 3},
		{args: "-a " + svc + " -r 198.18.2.12 -x 100 -y 50", changes: 4},
		{args: "-Ln --thresholds", changes: 4, out: "IP Virtual Server version 1.2.1 (size=4096)\n" +
			"Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n" +
			"  -> RemoteAddress:Port\n" +
			"TCP  198.51.100.10:8080 rr\n" +
			"  -> 198.18.2.11:8080             0          0          0          0         \n" +
			"  -> 198.18.2.12:8080             100        50         0          0         \n"},
		{args: "-Ln", changes: 4, out: listHead +
			"TCP  198.51.100.10:8080 rr\n" +
			"  -> 198.18.2.11:8080             Masq    0      0          0         \n" +
			"  -> 198.18.2.12:8080             Route   1      0          0         \n"},
		{args: "-d " + svc + " -r 198.18.2.11:8080", changes: 5},
		{args: "-d " + svc + " -r 198.18.2.11:8080", changes: 5, err: "No such destination\n", code: 255},
		{args: "-a -t 198.51.100.99:80 -r 198.18.2.11", changes: 5, err: "Service not defined\n", code: 255},
		{args: "-A " + svc, changes: 5, err: "Service already exists\n", code: 255},
		{args: "-E -t 198.51.100.99:80", changes: 5, err: "No such service\n", code: 255},
		{args: "-A -t 198.51.100.11:80 -s bogus", changes: 5, err: "Scheduler or persistence engine not found\n", code: 255},
		{args: "-L -t 198.51.100.99:80", changes: 5, err: "No such service\n", code: 1},
		{args: "-Z -t 198.51.100.99:80", changes: 5, err: "No such service\n", code: 255},
		{args: "-E " + svc + " -s wlc -p", changes: 6},
		{args: "-L " + svc, changes: 6, out: "Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
			"TCP  198.51.100.10:http-alt wlc persistent 360\n" +
			"  -> 198.18.2.12:http-alt         Route   1      0          0         \n"},
		{args: "-D " + svc, changes: 7},
		{args: "-Ln", changes: 7, out: listHead},
		{args: "-A -t 198.51.100.10:http", changes: 8},
		{args: "-L", changes: 8, out: listHead + "TCP  198.51.100.10:http wlc\n"},
		{args: "-C", changes: 9},
		{args: "-S", changes: 9, out: ""},
		{args: "-L --daemon", changes: 9, out: ""},
		{args: "--start-daemon master", changes: 9, err: "the connection sync daemon is not supported by gvs\n", code: 255},
	})
}

// TestParseErrors checks that ipvsadm's parse errors reach stderr with
// its status, and that the program name is argv[0]'s base name.
func TestParseErrors(t *testing.T) {
	runSession(t, newTestEngine(t), []step{
		{args: "-q", changes: -1, err: "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n", code: 255},
		{args: "prog=/usr/local/sbin/gvsadm -q", changes: -1, err: "Try `gvsadm -h' or 'gvsadm --help' for more information.\n", code: 255},
		{args: "-L -q", changes: -1, err: "-q: unknown option\n", code: 255},
		{args: "-A -t 198.51.100.10", changes: -1, err: "Zero port specified for non-persistent service\n", code: 2},
		{args: "-a -t 198.51.100.10:80 -r 198.18.2.11 -w 70000", changes: -1, err: "illegal weight specified\n", code: 2},
		{args: "-A -f 1 -p 10 -p", changes: -1, err: "multiple 'persistent' options specified\n", code: 2},
		{args: "-L -c --stats", changes: -1, err: "options conflicts in the list command\n", code: 2},
		{args: "-L -6", changes: -1, err: "-6 used before -f\n\n", code: 2},
		{args: "--set 1 2", changes: -1, err: "--set option requires 3 timeout values\n", code: 2},
		{args: "-R -n", changes: -1, err: "Illegal 'numeric' option with the 'restore' command\n", code: 2},
	})
}

func TestHelpAndVersion(t *testing.T) {
	te := newTestEngine(t)
	nobody := Cred{UID: 65534, GID: 65534}
	for _, tc := range []struct {
		argv []string
		cred Cred
		want string // stdout prefix
	}{
		{[]string{"ipvsadm", "-v"}, nobody, ipvsadm.Version + "\n"},
		{[]string{"ipvsadm", "--version"}, root, ipvsadm.Version + "\n"},
		{[]string{"ipvsadm", "-h"}, nobody, ipvsadm.Version + "\nUsage:\n  ipvsadm -A|E virtual-service"},
		{[]string{"/sbin/gvsadm", "--help", "whatever"}, root, ipvsadm.Version + "\nUsage:\n  gvsadm -A|E virtual-service"},
	} {
		var o, e bytes.Buffer
		code := te.Run(tc.argv, nil, tc.cred, &o, &e)
		if code != 0 || e.Len() != 0 || !strings.HasPrefix(o.String(), tc.want) {
			t.Errorf("%q: code %d stderr %q stdout %q, want prefix %q", tc.argv, code, e.String(), o.String(), tc.want)
		}
	}
}

// TestPermission: only root or AdminGID may do anything but -h/-v, and the
// refusal is ipvsadm's initialisation failure.
func TestPermission(t *testing.T) {
	te := newTestEngine(t)
	user := Cred{UID: 1000, GID: 1000, PID: 42}
	perm := msgPerm + "\n"
	runSession(t, te, []step{
		{args: "-A -t 198.51.100.10:80", cred: &user, err: perm, code: 2, changes: 0},
		{args: "-Ln", cred: &user, err: perm, code: 2, changes: 0},
		{args: "-q", cred: &user, err: perm, code: 2, changes: 0},
		{args: "-R", stdin: "-A -t 198.51.100.10:80\n", cred: &user, err: perm, code: 2, changes: 0},
		{args: "prog=ipvsadm-save -n", cred: &user, err: perm, code: 2, changes: 0},
		{args: "-S -n", out: "", changes: 0},
	})
	te.AdminGID = 1000
	runSession(t, te, []step{
		{args: "-A -t 198.51.100.10:80", cred: &user, changes: 1},
		{args: "-S -n", cred: &user, out: "-A -t 198.51.100.10:80 -s wlc\n", changes: 1},
	})
	other := Cred{UID: 1001, GID: 1001}
	runSession(t, te, []step{{args: "-C", cred: &other, err: perm, code: 2, changes: 1}})
}

// TestRestoreAtomic: a bad line anywhere leaves the table as it was and is
// reported with its line number; a good file is applied whole, with one
// OnChange.
func TestRestoreAtomic(t *testing.T) {
	te := newTestEngine(t)
	te.mustRun(t, "-A", "-t", "198.51.100.10:80", "-s", "rr")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-w", "3")
	before := te.mustRun(t, "-S", "-n")
	changes := te.changes

	for _, tc := range []struct {
		name, stdin, err string
		code             int
	}{
		{"missing service", "-A -t 198.51.100.20:80 -s wlc\n" +
			"-a -t 198.51.100.20:80 -r 198.18.2.12:80 -g\n" +
			"-a -t 198.51.100.99:80 -r 198.18.2.13:80\n",
			"line 3: Service not defined\n", 255},
		{"syntax", "-C\n# a comment\n-A -t 198.51.100.20:80\n-a -t 198.51.100.20:80 -r 198.18.2.12 -w x\n",
			"line 4: illegal weight specified\n", 2},
		{"duplicate after clear", "-C\n\n-A -t 198.51.100.20:80\n-A -t 198.51.100.20:80\n",
			"line 4: Service already exists\n", 255},
		{"nested restore", "-C\n-R\n", "line 2: the 'restore' command is not allowed in a rules file\n", 2},
		{"bad dest after edit", "-e -t 198.51.100.10:80 -r 198.18.2.11 -w 9\n-d -t 198.51.100.10:80 -r 198.18.2.99\n",
			"line 2: No such destination\n", 255},
	} {
		out, errOut, code := te.run(root, tc.stdin, "-R")
		if out != "" || errOut != tc.err || code != tc.code {
			t.Errorf("%s: got code %d stderr %q, want %d %q", tc.name, code, errOut, tc.code, tc.err)
		}
		if got := te.mustRun(t, "-S", "-n"); got != before {
			t.Errorf("%s: table changed:\n%s\nwant:\n%s", tc.name, got, before)
		}
		if te.changes != changes {
			t.Errorf("%s: OnChange called", tc.name)
		}
	}

	rules := "ipvsadm -A -t 198.51.100.20:80 -s wlc\n" +
		"-a -t 198.51.100.20:80 -r 198.18.2.12:80 -m -w 2 # NAT\n" +
		"-D -t 198.51.100.10:80\n" +
		"--set 1000 0 0\n"
	if out, errOut, code := te.run(root, rules, "-R"); out != "" || errOut != "" || code != 0 {
		t.Fatalf("-R: code %d stdout %q stderr %q", code, out, errOut)
	}
	if te.changes != changes+1 {
		t.Errorf("OnChange called %d times for one restore", te.changes-changes)
	}
	want := "-A -t 198.51.100.20:80 -s wlc\n-a -t 198.51.100.20:80 -r 198.18.2.12:80 -m -w 2\n"
	if got := te.mustRun(t, "-S", "-n"); got != want {
		t.Errorf("after -R:\n%s\nwant:\n%s", got, want)
	}
	if got := te.mustRun(t, "-L", "--timeout"); got != "Timeout (tcp tcpfin udp): 1000 120 300\n" {
		t.Errorf("--set in -R: %q", got)
	}
	// An empty restore changes nothing and succeeds.
	if _, errOut, code := te.run(root, "", "-R"); code != 0 || errOut != "" || te.changes != changes+1 {
		t.Errorf("empty -R: code %d stderr %q changes %d", code, errOut, te.changes-changes)
	}
}

// TestSaveRestoreWrappers: ipvsadm-save and ipvsadm-restore behaviour.
func TestSaveRestoreWrappers(t *testing.T) {
	te := newTestEngine(t)
	te.mustRun(t, "-A", "-t", "198.51.100.10:80", "-s", "rr")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11")
	saved := "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -g -w 1\n"
	help := "ipvsadm-save: Script to save the IPVS table to stdout.\n" +
		"   With the -n option, prints out the table in numeric format.\n"
	runSession(t, te, []step{
		{args: "prog=ipvsadm-save -n", out: saved, changes: -1},
		{args: "prog=/usr/sbin/ipvsadm-save ignored -n", out: saved, changes: -1},
		{args: "prog=ipvsadm-save", out: "-A -t 198.51.100.10:http -s rr\n-a -t 198.51.100.10:http -r 198.18.2.11:http -g -w 1\n", changes: -1},
		{args: "prog=ipvsadm-save -x", err: help, code: 1, changes: -1},
		{args: "prog=ipvsadm-restore", stdin: "# saved\n-A -t 198.51.100.30:53 -s wlc\n-A -u 198.51.100.30:53 -s sh -b sh-port\n", changes: -1},
		{args: "-S -n", out: "-A -t 198.51.100.30:53 -s wlc\n-A -u 198.51.100.30:53 -s sh -b sh-port\n", changes: -1},
		// The clear and the rules are one batch: a bad rule keeps the table.
		{args: "prog=ipvsadm-restore", stdin: "-A -t 198.51.100.40:80\n-A -t 198.51.100.40:80\n",
			err: "line 2: Service already exists\n", code: 255, changes: -1},
		{args: "-S -n", out: "-A -t 198.51.100.30:53 -s wlc\n-A -u 198.51.100.30:53 -s sh -b sh-port\n", changes: -1},
	})
}

func TestOnChangeError(t *testing.T) {
	te := newTestEngine(t)
	te.OnChange = func() error { return errors.New("nft: no such table") }
	runSession(t, te, []step{
		{args: "-A -t 198.51.100.10:80", changes: -1, code: 255,
			err: "ipvsadm: the table was changed, but applying it to the host failed: nft: no such table\n"},
		{args: "-S -n", changes: -1, out: "-A -t 198.51.100.10:80 -s wlc\n"},
	})
}

// TestTimeouts: --set changes the connection table's timeouts (0 keeps
// one), --timeout reads them back.
func TestTimeouts(t *testing.T) {
	te := newTestEngine(t)
	runSession(t, te, []step{
		{args: "-L --timeout", out: "Timeout (tcp tcpfin udp): 900 120 300\n"},
		{args: "--set 1800 0 60", changes: 1},
		{args: "-L --timeout", out: "Timeout (tcp tcpfin udp): 1800 120 60\n", changes: 1},
		{args: "--set 0 30 0", changes: 2},
		{args: "-Ln --timeout", out: "Timeout (tcp tcpfin udp): 1800 30 60\n", changes: 2},
		{args: "--set 1 2 x", changes: 2, err: "invalid timeout value `x' specified\n", code: 2},
	})
	tcp, fin, udp := te.Conns.GetTimeouts()
	if tcp != 1800*time.Second || fin != 30*time.Second || udp != 60*time.Second {
		t.Errorf("conntrack timeouts %v %v %v", tcp, fin, udp)
	}
	if got := te.Table.Timeouts(); got != (ipvs.Timeouts{TCP: 1800, TCPFin: 30, UDP: 60}) {
		t.Errorf("table timeouts %+v", got)
	}
}

// TestListConns: -Lnc from the connection table, with IPVS's state names,
// mm:ss of the remaining time (truncated) and templates.
func TestListConns(t *testing.T) {
	te := newTestEngine(t)
	te.mustRun(t, "-A", "-t", "198.51.100.10:8080", "-s", "rr")
	te.mustRun(t, "-a", "-t", "198.51.100.10:8080", "-r", "198.18.2.11:8080", "-m")
	te.mustRun(t, "-A", "-u", "198.51.100.10:53", "-s", "rr", "-p", "600")
	te.mustRun(t, "-a", "-u", "198.51.100.10:53", "-r", "198.18.2.12:53", "-m")
	te.mustRun(t, "-A", "-f", "1", "-s", "rr", "-p")
	te.mustRun(t, "-a", "-f", "1", "-r", "198.18.2.13:0")
	tcpDest := te.Table.Service(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 8080}).Dests()[0]
	udpDest := te.Table.Service(ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 53}).Dests()[0]
	fwmDest := te.Table.Service(ipvs.ServiceKey{FWMark: 1}).Dests()[0]

	now := te.clock
	ap := netip.MustParseAddrPort
	var c conntrack.Conn
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	vip := ap("198.51.100.10:8080")
	// SYN: SYN_RECV, 60 s.
	mustCreate(te.Conns.Create(conntrack.NewInKey(ipvs.ProtoTCP, ap("10.0.0.2:41234"), vip), tcpDest, 8080, conntrack.TemplateRef{}, conntrack.TCPSyn, now, &c))
	// SYN then ACK: ESTABLISHED, 900 s.
	k := conntrack.NewInKey(ipvs.ProtoTCP, ap("10.0.0.3:41000"), vip)
	mustCreate(te.Conns.Create(k, tcpDest, 8080, conntrack.TemplateRef{}, conntrack.TCPSyn, now, &c))
	if !te.Conns.In(k, conntrack.TCPAck, now, &c) || c.State != conntrack.StateEstablished {
		t.Fatalf("ACK: state %v", c.State)
	}
	// A UDP connection under a persistence template.
	tk := conntrack.NewTemplateKey(ipvs.ProtoUDP, netip.MustParseAddr("10.0.0.2"), 32, netip.MustParseAddr("198.51.100.10"), 53)
	ref, err := te.Conns.CreateTemplate(tk, udpDest, 600*time.Second, now)
	mustCreate(err)
	mustCreate(te.Conns.Create(conntrack.NewInKey(ipvs.ProtoUDP, ap("10.0.0.2:5353"), ap("198.51.100.10:53")), udpDest, 53, ref, 0, now, &c))
	// A fwmark template (protocol IP, virtual 0.0.0.1:0).
	_, err = te.Conns.CreateTemplate(conntrack.NewFWMarkTemplateKey(1, netip.MustParseAddr("10.0.0.4"), 32), fwmDest, 360*time.Second, now)
	mustCreate(err)

	te.clock += int64(1500 * time.Millisecond)
	want := "IPVS connection entries\n" +
		"pro expire state       source             virtual            destination\n" +
		"IP  05:58  NONE        10.0.0.4:0         0.0.0.1:0          198.18.2.13:0\n" +
		"TCP 00:58  SYN_RECV    10.0.0.2:41234     198.51.100.10:8080 198.18.2.11:8080\n" +
		"TCP 14:58  ESTABLISHED 10.0.0.3:41000     198.51.100.10:8080 198.18.2.11:8080\n" +
		"UDP 09:58  NONE        10.0.0.2:0         198.51.100.10:53   198.18.2.12:53\n" +
		"UDP 04:58  UDP         10.0.0.2:5353      198.51.100.10:53   198.18.2.12:53\n"
	if got := te.mustRun(t, "-L", "-n", "-c"); got != want {
		t.Errorf("-Lnc:\n%s\nwant:\n%s", got, want)
	}
	// Without -n, ports are named.
	if got := te.mustRun(t, "-Lc"); !strings.Contains(got, "UDP 04:58  UDP         10.0.0.2:5353      198.51.100.10:domain 198.18.2.12:domain\n") {
		t.Errorf("-Lc:\n%s", got)
	}
	// --persistent-conn changes the header only (no persistence engines).
	if got := te.mustRun(t, "-Lnc", "--persistent-conn"); !strings.HasPrefix(got, "IPVS connection entries\n"+
		"pro expire state       source             virtual            destination        pe name          pe_data\n") {
		t.Errorf("--persistent-conn:\n%s", got)
	}
	// The connection counters show in -Ln.
	if got := te.mustRun(t, "-Ln", "-t", "198.51.100.10:8080"); !strings.HasSuffix(got,
		"  -> 198.18.2.11:8080             Masq    1      2          0         \n") {
		t.Errorf("-Ln -t:\n%s", got)
	}
	if got := te.mustRun(t, "-Ln", "--persistent-conn", "-u", "198.51.100.10:53"); !strings.HasSuffix(got,
		"  -> 198.18.2.12:53               1         1           0          1         \n") {
		t.Errorf("--persistent-conn -u:\n%s", got)
	}

	// -C deletes the services, not the connections (as ip_vs_flush): they
	// stay listed until they expire, bound to destinations that are no
	// longer available.
	te.mustRun(t, "-C")
	if got := te.mustRun(t, "-Lnc"); got != want {
		t.Errorf("-Lnc after -C:\n%s\nwant:\n%s", got, want)
	}
	if tcpDest.Available() {
		t.Error("destination still available after -C")
	}
	// Time passes: the SYN_RECV entry is gone after 60 s.
	te.clock += int64(59 * time.Second)
	if got := te.mustRun(t, "-Lnc"); strings.Contains(got, "SYN_RECV") || !strings.Contains(got, "TCP 13:59  ESTABLISHED") {
		t.Errorf("-Lnc 60.5 s later:\n%s", got)
	}
}

// TestStats: --stats prints the live counters with ipvsadm's number
// format; -Z zeroes them.
func TestStats(t *testing.T) {
	te := newTestEngine(t)
	te.mustRun(t, "-A", "-t", "198.51.100.10:80", "-s", "rr")
	te.mustRun(t, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-m")
	te.mustRun(t, "-A", "-t", "198.51.100.11:80")
	svc := te.Table.Service(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80})
	d := svc.Dests()[0]
	// Spread over two worker slots: the listing sums them.
	svc.Stats[0].Conns.Add(10)
	svc.Stats[3].Conns.Add(5)
	svc.Stats[0].InPkts.Add(1234)
	svc.Stats[0].OutPkts.Add(1100)
	svc.Stats[0].InBytes.Add(81234)
	svc.Stats[1].OutBytes.Add(2_400_000_000)
	d.Stats[0].Conns.Add(10)
	d.Stats[0].InPkts.Add(800)
	d.Stats[0].OutPkts.Add(700)
	d.Stats[0].InBytes.Add(52000)
	d.Stats[0].OutBytes.Add(1_600_000_000)
	head := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n" +
		"  -> RemoteAddress:Port\n"
	runSession(t, te, []step{
		{args: "-Ln --stats", changes: -1, out: head +
			"TCP  198.51.100.10:80                   15     1234     1100    81234    2400M\n" +
			"  -> 198.18.2.11:80                     10      800      700    52000    1600M\n" +
			"TCP  198.51.100.11:80                    0        0        0        0        0\n"},
		{args: "-Ln --stats --exact -t 198.51.100.10:80", changes: -1, out: head[len("IP Virtual Server version 1.2.1 (size=4096)\n"):] +
			"TCP  198.51.100.10:80                   15     1234     1100    81234 2400000000\n" +
			"  -> 198.18.2.11:80                     10      800      700    52000 1600000000\n"},
		{args: "-Z -t 198.51.100.11:80", changes: -1},
		{args: "-Ln --stats -t 198.51.100.10:80", changes: -1, out: head[len("IP Virtual Server version 1.2.1 (size=4096)\n"):] +
			"TCP  198.51.100.10:80                   15     1234     1100    81234    2400M\n" +
			"  -> 198.18.2.11:80                     10      800      700    52000    1600M\n"},
		{args: "-Z", changes: -1},
		{args: "-Ln --stats", changes: -1, out: head +
			"TCP  198.51.100.10:80                    0        0        0        0        0\n" +
			"  -> 198.18.2.11:80                      0        0        0        0        0\n" +
			"TCP  198.51.100.11:80                    0        0        0        0        0\n"},
	})
}

// TestRunConcurrent: Run is safe to call from several goroutines while the
// estimator ticks (run with -race).
func TestRunConcurrent(t *testing.T) {
	te := newTestEngine(t)
	te.OnChange = nil
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			te.TickEstimator()
		}
	}()
	errs := make(chan string, 4)
	for w := range 4 {
		go func() {
			for i := range 50 {
				var o, e bytes.Buffer
				vip := netip.AddrFrom4([4]byte{198, 51, 100, byte(w*50 + i)})
				if code := te.Run([]string{"ipvsadm", "-A", "-t", vip.String() + ":80"}, nil, root, &o, &e); code != 0 {
					errs <- e.String()
					return
				}
				te.Run([]string{"ipvsadm", "-Ln", "--rate"}, nil, root, &o, &e)
			}
			errs <- ""
		}()
	}
	for range 4 {
		if msg := <-errs; msg != "" {
			t.Error(msg)
		}
	}
	<-done
	if n := len(te.Table.Services()); n != 200 {
		t.Errorf("%d services, want 200", n)
	}
}

func TestLocalAndNeedsStdin(t *testing.T) {
	for _, tc := range []struct {
		argv      []string
		handled   bool
		code      int
		needStdin bool
	}{
		{[]string{"ipvsadm", "-v"}, true, 0, false},
		{[]string{"ipvsadm", "-h"}, true, 0, false},
		{[]string{"ipvsadm", "-L", "-h"}, false, 0, false},
		{[]string{"ipvsadm", "-R"}, false, 0, true},
		{[]string{"ipvsadm", "--restore"}, false, 0, true},
		{[]string{"ipvsadm", "-R", "-n"}, false, 0, false},
		{[]string{"ipvsadm-restore"}, false, 0, true},
		{[]string{"ipvsadm-save", "-n"}, false, 0, false},
		{[]string{"ipvsadm-save", "--help"}, true, 1, false},
		{nil, false, 0, false},
	} {
		var o, e bytes.Buffer
		code, ok := Local(tc.argv, &o, &e)
		if ok != tc.handled || code != tc.code {
			t.Errorf("Local(%q) = %d, %v; want %d, %v", tc.argv, code, ok, tc.code, tc.handled)
		}
		if !ok && o.Len()+e.Len() != 0 {
			t.Errorf("Local(%q) wrote output without handling", tc.argv)
		}
		if got := NeedsStdin(tc.argv); got != tc.needStdin {
			t.Errorf("NeedsStdin(%q) = %v", tc.argv, got)
		}
	}
}

func TestChanges(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{[]string{"ipvsadm", "-A", "-t", "10.0.0.1:80"}, true},
		{[]string{"ipvsadm", "-C"}, true},
		{[]string{"ipvsadm", "-R"}, true},
		{[]string{"ipvsadm-restore"}, true},
		{[]string{"/usr/sbin/ipvsadm-restore", "-x"}, true},
		{[]string{"ipvsadm-save", "-n"}, false},
		{[]string{"ipvsadm", "-S"}, false},
		{[]string{"ipvsadm", "-Ln"}, false},
		{[]string{"ipvsadm"}, false},
		{[]string{"ipvsadm", "-h"}, false},
		{[]string{"ipvsadm", "-v"}, false},
		{[]string{"ipvsadm", "--no-such-option"}, false},
		{nil, false},
	} {
		if got := changes(tc.argv); got != tc.want {
			t.Errorf("changes(%q) = %v, want %v", tc.argv, got, tc.want)
		}
	}
}

// BenchmarkListConns measures -Lnc over 10000 connections.
func BenchmarkListConns(b *testing.B) {
	te := newTestEngine(b)
	te.Conns = conntrack.New(conntrack.Config{Capacity: 1 << 16})
	te.mustRun(b, "-A", "-t", "198.51.100.10:80", "-s", "rr")
	te.mustRun(b, "-a", "-t", "198.51.100.10:80", "-r", "198.18.2.11", "-m")
	d := te.Table.Service(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80}).Dests()[0]
	vip := netip.MustParseAddrPort("198.51.100.10:80")
	var c conntrack.Conn
	for i := range 10000 {
		cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1024+i))
		if err := te.Conns.Create(conntrack.NewInKey(ipvs.ProtoTCP, cl, vip), d, 80, conntrack.TemplateRef{}, conntrack.TCPSyn, te.clock, &c); err != nil {
			b.Fatal(err)
		}
	}
	argv := []string{"ipvsadm", "-Lnc"}
	var out bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		out.Reset()
		te.Run(argv, nil, root, &out, io.Discard)
	}
	if n := strings.Count(out.String(), "\n"); n != 10002 {
		b.Fatalf("%d lines", n)
	}
}
