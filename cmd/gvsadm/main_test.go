package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"gvs/conntrack"
	"gvs/control"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/scheduler"
)

// useSocket points GVS_SOCKET at a name no daemon uses.
func useSocket(t *testing.T) string {
	name := fmt.Sprintf("gvsadm-test-%d-%s", os.Getpid(), t.Name())
	t.Setenv("GVS_SOCKET", name)
	return name
}

// startDaemon serves a fresh engine on the test's socket; the test
// process may change state whatever its uid.
func startDaemon(t *testing.T) *ipvs.Table {
	name := useSocket(t)
	tab := ipvs.NewTable(scheduler.New)
	e := control.NewEngine(tab, conntrack.New(conntrack.Config{Shards: 2, Capacity: 64}), nil)
	e.AdminGID = os.Getgid()
	ln, err := control.Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&control.Server{Engine: e}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return tab
}

func runArgs(stdin string, argv ...string) (string, string, int) {
	var o, e bytes.Buffer
	code := run(argv, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), code
}

func TestNoDaemon(t *testing.T) {
	name := useSocket(t)
	want := "Can't initialize ipvs: no gvsd control socket @" + name + " (connection refused)\n" +
		"Are you sure that gvsd is running in this network namespace?\n"
	for _, argv := range [][]string{{"ipvsadm"}, {"gvsadm", "-Ln"}, {"ipvsadm", "-q"}, {"ipvsadm-save", "-n"}} {
		o, e, code := runArgs("", argv...)
		if o != "" || e != want || code != 2 {
			t.Errorf("%q: code %d stdout %q stderr %q", argv, code, o, e)
		}
	}
}

// TestNoDaemonLocal: -h, -v and ipvsadm-save's help need no daemon; the
// program name is argv[0]'s base name.
func TestNoDaemonLocal(t *testing.T) {
	useSocket(t)
	for _, tc := range []struct {
		argv    []string
		out     string // prefix
		err     string
		code    int
		usesOut bool
	}{
		{argv: []string{"/usr/sbin/ipvsadm", "-v"}, out: ipvsadm.Version + "\n"},
		{argv: []string{"ipvsadm", "-h"}, out: ipvsadm.Version + "\nUsage:\n  ipvsadm -A|E virtual-service"},
		{argv: []string{"./bin/gvsadm", "--help"}, out: ipvsadm.Version + "\nUsage:\n  gvsadm -A|E virtual-service"},
		{argv: []string{"/sbin/ipvsadm-save", "-x"}, code: 1,
			err: "ipvsadm-save: Script to save the IPVS table to stdout.\n   With the -n option, prints out the table in numeric format.\n"},
	} {
		o, e, code := runArgs("", tc.argv...)
		if !strings.HasPrefix(o, tc.out) || e != tc.err || code != tc.code {
			t.Errorf("%q: code %d stdout %q stderr %q", tc.argv, code, o, e)
		}
		if tc.out == ipvsadm.Version+"\n" && o != tc.out {
			t.Errorf("%q: stdout %q", tc.argv, o)
		}
	}
}

func TestWithDaemon(t *testing.T) {
	tab := startDaemon(t)
	for i, tc := range []struct {
		argv  []string
		stdin string
		out   string
		err   string
		code  int
	}{
		{argv: []string{"/usr/sbin/ipvsadm", "-A", "-t", "198.51.100.10:80", "-s", "rr"}},
		{argv: []string{"ipvsadm", "-q"}, err: "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n", code: 255},
		{argv: []string{"/opt/gvs/bin/gvsadm", "-q"}, err: "Try `gvsadm -h' or 'gvsadm --help' for more information.\n", code: 255},
		{argv: []string{"gvsadm", "-A", "-t", "198.51.100.10:80"}, err: "Service already exists\n", code: 255},
		{argv: []string{"gvsadm", "-R"}, stdin: "-a -t 198.51.100.10:80 -r 198.18.2.11 -m -w 2\n"},
		{argv: []string{"gvsadm", "-R"}, stdin: "-a -t 198.51.100.10:80 -r 198.18.2.12\n-a -t 198.51.100.99:80 -r 198.18.2.11\n",
			err: "line 2: Service not defined\n", code: 255},
		// stdin is only sent for -R: here it must not be consumed.
		{argv: []string{"gvsadm", "-Sn"}, stdin: "-C\n",
			out: "-A -t 198.51.100.10:80 -s rr\n-a -t 198.51.100.10:80 -r 198.18.2.11:80 -m -w 2\n"},
		{argv: []string{"ipvsadm-save"}, out: "-A -t 198.51.100.10:http -s rr\n-a -t 198.51.100.10:http -r 198.18.2.11:http -m -w 2\n"},
		{argv: []string{"ipvsadm", "-Ln"}, out: "IP Virtual Server version 1.2.1 (size=4096)\n" +
			"Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
			"TCP  198.51.100.10:80 rr\n" +
			"  -> 198.18.2.11:80               Masq    2      0          0         \n"},
		{argv: []string{"/usr/sbin/ipvsadm-restore"}, stdin: "# saved by ipvsadm-save\n-A -u 198.51.100.20:53 -s sh\n"},
		{argv: []string{"ipvsadm", "-S", "-n"}, out: "-A -u 198.51.100.20:53 -s sh\n"},
		{argv: []string{"ipvsadm", "-L", "--timeout"}, out: "Timeout (tcp tcpfin udp): 900 120 300\n"},
	} {
		o, e, code := runArgs(tc.stdin, tc.argv...)
		if o != tc.out || e != tc.err || code != tc.code {
			t.Fatalf("step %d %q: code %d stdout %q stderr %q; want %d %q %q", i, tc.argv, code, o, e, tc.code, tc.out, tc.err)
		}
	}
	if n := len(tab.Services()); n != 1 {
		t.Errorf("%d services, want 1", n)
	}
}
