package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall runs `make install` into a DESTDIR: the binaries, the unit
// with the install paths, the sysusers entry, the default file and rules;
// the ipvsadm links only when asked.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is needed")
	}
	dest := t.TempDir()
	bin := t.TempDir()
	make := func(args ...string) {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-C", "../..", "install", "DESTDIR=" + dest, "BIN=" + bin}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install %v: %v\n%s", args, err, out)
		}
	}
	make("PREFIX=/usr")
	for _, f := range []string{"/usr/sbin/gvsd", "/usr/sbin/gvsadm"} {
		st, err := os.Stat(filepath.Join(dest, f))
		if err != nil || st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s: %v, mode %v", f, err, st)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "lib/systemd/system/gvsd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify\n", "ExecStart=/usr/sbin/gvsd $GVSD_OPTS\n", "ExecReload=/usr/sbin/gvsadm --reload\n",
		"User=gvs\n", "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN\n", "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN\n",
		"NoNewPrivileges=yes\n", "WatchdogSec=", "EnvironmentFile=/etc/default/gvsd\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if strings.Contains(string(unit), "@") {
		t.Errorf("unit has an unreplaced @VARIABLE@")
	}
	for _, f := range []string{"usr/lib/sysusers.d/gvs.conf", "etc/default/gvsd", "etc/gvs/rules"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dest, "usr/sbin/ipvsadm")); err == nil {
		t.Error("ipvsadm linked without INSTALL_IPVSADM_LINK")
	}
	// A second install keeps the operator's configuration.
	def := filepath.Join(dest, "etc/default/gvsd")
	if err := os.WriteFile(def, []byte("GVSD_OPTS=mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	make("PREFIX=/usr", "INSTALL_IPVSADM_LINK=1")
	if b, _ := os.ReadFile(def); string(b) != "GVSD_OPTS=mine\n" {
		t.Errorf("make install overwrote %s: %q", def, b)
	}
	for _, n := range []string{"ipvsadm", "ipvsadm-save", "ipvsadm-restore"} {
		if target, err := os.Readlink(filepath.Join(dest, "usr/sbin", n)); err != nil || target != "gvsadm" {
			t.Errorf("%s: link to %q, %v", n, target, err)
		}
	}
}
