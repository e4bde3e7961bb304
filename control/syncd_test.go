package control

import (
	"testing"

	"gvs/lvssync"
)

// fakeSyncd records the daemon commands and keeps the running daemons as
// the kernel does (one of each role).
type fakeSyncd struct {
	m, b *lvssync.Config
}

func (f *fakeSyncd) StartSyncDaemon(c lvssync.Config) error {
	p := &f.m
	if c.State == lvssync.Backup {
		p = &f.b
	}
	if *p != nil {
		return ErrDaemonRunning
	}
	if c.McastIfn == "nosuchif0" {
		return ErrNoDevice
	}
	c, _ = c.WithDefaults(1500)
	*p = &c
	return nil
}

func (f *fakeSyncd) StopSyncDaemon(s lvssync.State) error {
	p := &f.m
	if s == lvssync.Backup {
		p = &f.b
	}
	if *p == nil {
		return ErrNoDaemon
	}
	*p = nil
	return nil
}

func (f *fakeSyncd) SyncDaemons() (m, b *lvssync.Config) { return f.m, f.b }

func TestSyncDaemonCommands(t *testing.T) {
	te := newTestEngine(t)
	te.Syncd = &fakeSyncd{}
	runSession(t, te, []step{
		{args: "-L --daemon", out: "", changes: -1},
		{args: "--start-daemon master --mcast-interface lo --syncid 7", changes: -1},
		{args: "--start-daemon master --mcast-interface lo", err: "Daemon has already run\n", code: 255, changes: -1},
		{args: "--start-daemon backup --mcast-interface lo --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 2", changes: -1},
		{args: "-L --daemon", out: "master sync daemon (mcast=lo, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" +
			"backup sync daemon (mcast=lo, syncid=0, maxlen=1472, group=239.1.2.3, port=9000, ttl=2)\n", changes: -1},
		{args: "--stop-daemon master", changes: -1},
		{args: "--stop-daemon master", err: "No daemon is running\n", code: 255, changes: -1},
		{args: "-L --daemon", out: "backup sync daemon (mcast=lo, syncid=0, maxlen=1472, group=239.1.2.3, port=9000, ttl=2)\n", changes: -1},
		{args: "--start-daemon master --mcast-interface nosuchif0", err: "No such device\n", code: 255, changes: -1},
		{args: "-L --daemon", out: "backup sync daemon (mcast=lo, syncid=0, maxlen=1472, group=239.1.2.3, port=9000, ttl=2)\n", changes: -1},
	})
	// ipvsadm's default interface is eth0.
	f := te.Syncd.(*fakeSyncd)
	_ = te.mustRun(t, "--start-daemon", "master")
	if f.m == nil || f.m.McastIfn != "eth0" {
		t.Fatalf("default interface: %+v", f.m)
	}
	// Without a sync daemon runner the command is refused as before.
	te.Syncd = nil
	if _, errOut, code := te.run(root, "", "--start-daemon", "master"); code != 255 || errOut == "" {
		t.Fatalf("no runner: code %d stderr %q", code, errOut)
	}
}
