package control

import (
	"errors"
	"strings"
	"testing"
)

func TestReload(t *testing.T) {
	te := newTestEngine(t)
	calls := 0
	var fail error
	te.OnReload = func() error { calls++; return fail }

	out, errOut, code := te.run(root, "", "--reload")
	if code != 0 || out != "" || errOut != "" || calls != 1 {
		t.Fatalf("--reload: code %d out %q stderr %q calls %d", code, out, errOut, calls)
	}

	fail = errors.Join(errors.New("/etc/gvs/rules: line 3: Scheduler or persistence engine not found"), errors.New("second"))
	_, errOut, code = te.run(root, "", "prog=gvsadm", "--reload")
	want := "gvsadm: --reload failed, the configuration in force is unchanged: /etc/gvs/rules: line 3: Scheduler or persistence engine not found; second\n"
	if code != 1 || errOut != want || calls != 2 {
		t.Fatalf("failed --reload: code %d stderr %q (want %q) calls %d", code, errOut, want, calls)
	}
	fail = nil

	// Extra words: usage error, no reload.
	if _, errOut, code := te.run(root, "", "--reload", "now"); code != 2 || !strings.Contains(errOut, "--reload takes no arguments") || calls != 2 {
		t.Fatalf("--reload now: code %d stderr %q calls %d", code, errOut, calls)
	}
}

func TestReloadPermission(t *testing.T) {
	te := newTestEngine(t)
	calls := 0
	te.OnReload = func() error { calls++; return nil }
	defer func(f func() int) { daemonUID = f }(daemonUID)
	daemonUID = func() int { return 997 } // the daemon runs as user 997 (User=gvs)

	if _, errOut, code := te.run(Cred{UID: 1000, GID: 1000}, "", "--reload"); code != ExitInit || errOut != msgPerm+"\n" || calls != 0 {
		t.Fatalf("other user: code %d stderr %q calls %d", code, errOut, calls)
	}
	// The daemon's own user (systemd's ExecReload= runs as User=): allowed,
	// as it could send SIGHUP.
	if _, errOut, code := te.run(Cred{UID: 997, GID: 997}, "", "--reload"); code != 0 || calls != 1 {
		t.Fatalf("daemon's user: code %d stderr %q calls %d", code, errOut, calls)
	}
	te.AdminGID = 1000
	if _, errOut, code := te.run(Cred{UID: 1000, GID: 1000}, "", "--reload"); code != 0 || calls != 2 {
		t.Fatalf("admin group: code %d stderr %q calls %d", code, errOut, calls)
	}
	// The daemon's user may reload, not change anything else.
	if _, _, code := te.run(Cred{UID: 997, GID: 997}, "", "-A", "-t", "198.51.100.1:80"); code != ExitInit {
		t.Fatalf("daemon's user -A: code %d", code)
	}
}

func TestReloadWithoutHook(t *testing.T) {
	te := newTestEngine(t)
	if _, errOut, code := te.run(root, "", "--reload"); code != 1 || !strings.Contains(errOut, "no configuration to reload") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
	if err := te.Reload(); err == nil {
		t.Fatal("Reload without a hook succeeded")
	}
}
