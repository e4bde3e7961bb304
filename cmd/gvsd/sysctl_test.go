package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gvs/ipvs"
)

var ifaces = []string{"--vip-if", "eth0", "--dip-if", "eth1"}

func TestSysctlFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ipvs.conf")
	conf := "# IPVS\n" +
		"; also a comment\n" +
		"\n" +
		"net.ipv4.vs.expire_quiescent_template = 1\n" +
		"  net/ipv4/vs/sync_threshold=2 10\n" +
		"conn_reuse_mode = 2\n" +
		"am_droprate = 20\n" +
		"-net.ipv4.ip_forward = 1\n" +
		"-net.ipv4.vs.secure_tcp = 9\n"
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	o, err := parseFlags(append(ifaces, "--sysctl-file", file, "--sysctl", "secure_tcp=3", "--sysctl", "net.ipv4.vs.am_droprate=30", "--sysctl", "conntrack=1"), &stderr)
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	s := o.cfg.Settings
	for k, want := range map[ipvs.Sysctl]string{
		ipvs.SysExpireQuiescentTemplate: "1",
		ipvs.SysSyncThreshold:           "2\t10",
		ipvs.SysConnReuseMode:           "2",
		ipvs.SysAmDroprate:              "30", // the flag after the file
		ipvs.SysSecureTCP:               "3",  // the optional bad line skipped
		ipvs.SysPmtuDisc:                "1",  // untouched: the default
	} {
		if got := s.Format(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// A notice for each setting gvs stores but does not act on (conntrack
	// never will), none for the others.
	sawConntrack := false
	for _, n := range o.notices {
		sawConntrack = sawConntrack || strings.Contains(n, "net.ipv4.vs.conntrack ")
		acted := false
		for _, k := range []ipvs.Sysctl{ipvs.SysExpireQuiescentTemplate, ipvs.SysConnReuseMode, ipvs.SysAmDroprate, ipvs.SysSecureTCP} {
			acted = acted || strings.Contains(n, "net.ipv4.vs."+k.String()+" ")
		}
		if acted {
			t.Errorf("notice %q for a setting gvs acts on", n)
		}
	}
	if !sawConntrack {
		t.Errorf("notices %q, want one for conntrack", o.notices)
	}
	if o, err := parseFlags(ifaces, &stderr); err != nil || o.cfg.Settings.Format(ipvs.SysConnReuseMode) != "1" {
		t.Errorf("no sysctl flags: %v", err)
	}
}

func TestSysctlFlagErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("# ok\nnet.ipv4.vs.sync_ports = 1\nnet.ipv4.vs.sync_ports = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.conf")
	if err := os.WriteFile(other, []byte("net.ipv4.ip_forward = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--sysctl", "secure_tcp=4"}, "gvsd: --sysctl secure_tcp=4: net.ipv4.vs.secure_tcp = \"4\": invalid argument\n"},
		{[]string{"--sysctl", "bogus=1"}, "gvsd: --sysctl bogus=1: unknown sysctl \"bogus\" (no /proc/sys/net/ipv4/vs/bogus)\n"},
		{[]string{"--sysctl", "secure_tcp"}, "gvsd: --sysctl secure_tcp: \"secure_tcp\" must be of the form name=value\n"},
		{[]string{"--sysctl", "sync_threshold=5 5"}, "gvsd: --sysctl sync_threshold=5 5: net.ipv4.vs.sync_threshold = \"5 5\": invalid argument\n"},
		{[]string{"--sysctl-file", bad}, "gvsd: " + bad + ":3: net.ipv4.vs.sync_ports = \"3\": invalid argument\n"},
		{[]string{"--sysctl-file", other}, "gvsd: " + other + ":1: unknown sysctl \"net.ipv4.ip_forward\" (no /proc/sys/net/ipv4/ip_forward)\n"},
		{[]string{"--sysctl-file", filepath.Join(dir, "none")}, "gvsd: --sysctl-file: open " + filepath.Join(dir, "none") + ": no such file or directory\n"},
	} {
		var stderr bytes.Buffer
		if code := run(append(ifaces, c.args...), io.Discard, &stderr); code != 2 || stderr.String() != c.want {
			t.Errorf("%q: exit %d, stderr %q; want 2, %q", c.args, code, stderr.String(), c.want)
		}
	}
}
