package control

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvs/conntrack"
	"gvs/ipvs"
)

func newSysctlEngine(t *testing.T) *testEngine {
	te := newTestEngine(t)
	te.Settings = ipvs.NewSettings()
	te.defense = BindSettings(te.Settings, te.Conns, te.Table)
	return te
}

func TestSysctlList(t *testing.T) {
	te := newSysctlEngine(t)
	user := Cred{UID: 1000, GID: 1000}
	out, errOut, code := te.run(user, "", "--sysctl")
	if code != 0 || errOut != "" {
		t.Fatalf("--sysctl: code %d stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != int(ipvs.NumSysctls) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), ipvs.NumSysctls, out)
	}
	for _, want := range []string{
		"net.ipv4.vs.am_droprate = 10",
		"net.ipv4.vs.conn_reuse_mode = 1",
		"net.ipv4.vs.lblc_expiration = 86400",
		"net.ipv4.vs.sync_threshold = 3\t50",
		"net.ipv4.vs.sync_version = 1",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
	if lines[0] != "net.ipv4.vs.am_droprate = 10" || lines[len(lines)-1] != "net.ipv4.vs.sync_version = 1" {
		t.Errorf("not in sysctl(8)'s order: first %q, last %q", lines[0], lines[len(lines)-1])
	}
	for _, name := range []string{"secure_tcp", "net.ipv4.vs.secure_tcp", "net/ipv4/vs/secure_tcp"} {
		if out, errOut, code := te.run(user, "", "--sysctl", name); code != 0 || errOut != "" || out != "net.ipv4.vs.secure_tcp = 0\n" {
			t.Errorf("--sysctl %s: code %d out %q stderr %q", name, code, out, errOut)
		}
	}
	if out, _, code := te.run(user, "", "--sysctl=pmtu_disc"); code != 0 || out != "net.ipv4.vs.pmtu_disc = 1\n" {
		t.Errorf("--sysctl=pmtu_disc: code %d out %q", code, out)
	}
}

func TestSysctlSet(t *testing.T) {
	te := newSysctlEngine(t)
	out, errOut, code := te.run(root, "", "--sysctl", "net.ipv4.vs.expire_quiescent_template=1")
	if code != 0 || errOut != "" || out != "net.ipv4.vs.expire_quiescent_template = 1\n" {
		t.Fatalf("set: code %d out %q stderr %q", code, out, errOut)
	}
	if te.Settings.Get(ipvs.SysExpireQuiescentTemplate) != 1 {
		t.Fatal("not stored")
	}
	// sysctl -w echoes the value as written.
	if out, _, code := te.run(root, "", "--sysctl", "sync_threshold=4 0x10"); code != 0 || out != "net.ipv4.vs.sync_threshold = 4 0x10\n" {
		t.Fatalf("sync_threshold: code %d out %q", code, out)
	}
	if got := te.Settings.Format(ipvs.SysSyncThreshold); got != "4\t16" {
		t.Fatalf("sync_threshold reads %q", got)
	}
	// A setting gvs stores but does not act on: stored, exit 0, one-line notice.
	out, errOut, code = te.run(root, "", "--sysctl", "snat_reroute=0")
	if code != 0 || out != "net.ipv4.vs.snat_reroute = 0\n" || strings.Count(errOut, "\n") != 1 ||
		!strings.Contains(errOut, "net.ipv4.vs.snat_reroute is stored but not acted on yet") {
		t.Fatalf("snat_reroute=0: code %d out %q stderr %q", code, out, errOut)
	}
	if te.Settings.Get(ipvs.SysSnatReroute) != 0 {
		t.Fatal("snat_reroute not stored")
	}
	// The defenses are acted on: no notice. The test table (4096 slots,
	// 128 pages) is always below amemthresh's 1024 pages: the automatic
	// mode 1 reads back as 2 at once (update_defense_level).
	for _, name := range []string{"drop_entry", "drop_packet", "secure_tcp"} {
		out, errOut, code = te.run(root, "", "--sysctl", name+"=1")
		k, _ := ipvs.LookupSysctl(name)
		if code != 0 || out != "net.ipv4.vs."+name+" = 1\n" || errOut != "" || te.Settings.Get(k) != 2 {
			t.Fatalf("%s=1: code %d out %q stderr %q value %d; want echo, no notice, 2", name, code, out, errOut, te.Settings.Get(k))
		}
		if out, _, _ = te.run(root, "", "--sysctl", name); out != "net.ipv4.vs."+name+" = 2\n" {
			t.Fatalf("%s reads %q", name, out)
		}
	}
	if te.changes != 0 {
		t.Errorf("OnChange ran %d times for sysctls", te.changes)
	}
}

func TestSysctlErrors(t *testing.T) {
	te := newSysctlEngine(t)
	before, _, _ := te.run(root, "", "--sysctl")
	cases := []struct {
		cred          Cred
		args          []string
		code          int
		stdout, stder string
	}{
		{root, []string{"--sysctl", "bogus"}, 1, "", "sysctl: cannot stat /proc/sys/net/ipv4/vs/bogus: No such file or directory\n"},
		{root, []string{"--sysctl", "net.ipv4.vs.bogus=1"}, 1, "", "sysctl: cannot stat /proc/sys/net/ipv4/vs/bogus: No such file or directory\n"},
		{root, []string{"--sysctl", "net.ipv4.ip_forward"}, 1, "", "sysctl: cannot stat /proc/sys/net/ipv4/ip_forward: No such file or directory\n"},
		{root, []string{"--sysctl", "secure_tcp=4"}, 1, "", "sysctl: setting key \"net.ipv4.vs.secure_tcp\": Invalid argument\n"},
		{root, []string{"--sysctl", "sync_ports=3"}, 1, "", "sysctl: setting key \"net.ipv4.vs.sync_ports\": Invalid argument\n"},
		{root, []string{"--sysctl", "sync_threshold=50 50"}, 1, "", "sysctl: setting key \"net.ipv4.vs.sync_threshold\": Invalid argument\n"},
		{root, []string{"--sysctl", "am_droprate=ten"}, 1, "", "sysctl: setting key \"net.ipv4.vs.am_droprate\": Invalid argument\n"},
		{root, []string{"--sysctl", "am_droprate="}, 1, "", "sysctl: setting key \"net.ipv4.vs.am_droprate\": Invalid argument\n"},
		{root, []string{"--sysctl", "=5"}, 1, "", "sysctl: malformed setting \"=5\"\n"},
		{root, []string{"--sysctl", "a", "b"}, 2, "", "ipvsadm: --sysctl takes at most one NAME or NAME=VALUE\n"},
		{Cred{UID: 1000, GID: 1000}, []string{"--sysctl", "am_droprate=5"}, 1, "", "sysctl: permission denied on key \"net.ipv4.vs.am_droprate\"\n"},
	}
	for _, c := range cases {
		out, errOut, code := te.run(c.cred, "", c.args...)
		if code != c.code || out != c.stdout || errOut != c.stder {
			t.Errorf("%q: code %d out %q stderr %q; want %d %q %q", c.args, code, out, errOut, c.code, c.stdout, c.stder)
		}
	}
	if after, _, _ := te.run(root, "", "--sysctl"); after != before {
		t.Errorf("errors changed the settings:\n%s\nwas\n%s", after, before)
	}
	// The admin group may set.
	te.AdminGID = 50
	if _, errOut, code := te.run(Cred{UID: 1000, GID: 50}, "", "--sysctl", "conn_reuse_mode=2"); code != 0 || te.Settings.Get(ipvs.SysConnReuseMode) != 2 {
		t.Errorf("admin group: code %d stderr %q", code, errOut)
	}
	// No settings.
	te.Settings = nil
	if _, errOut, code := te.run(root, "", "--sysctl"); code != 1 || !strings.Contains(errOut, "no sysctl settings") {
		t.Errorf("nil settings: code %d stderr %q", code, errOut)
	}
	// Other commands are still ipvsadm's.
	if _, errOut, code := te.run(root, "", "--sysctlx"); code == 0 || !strings.HasPrefix(errOut, "Try `ipvsadm -h'") {
		t.Errorf("--sysctlx: code %d stderr %q", code, errOut)
	}
}

// TestSysctlSecureTCP checks that secure_tcp=3 set through the engine
// switches the connection table to the secure state table (an ACK before
// the SYN/ACK does not establish a NAT connection) and 0 switches it back.
func TestSysctlSecureTCP(t *testing.T) {
	te := newSysctlEngine(t)
	te.mustRun(t, "-A", "-t", "198.18.0.1:80", "-s", "rr")
	te.mustRun(t, "-a", "-t", "198.18.0.1:80", "-r", "198.19.0.2:80", "-m")
	d := te.Table.Services()[0].Dests()[0]
	client := netip.MustParseAddrPort("198.18.5.5:1000")
	state := func(port uint16) conntrack.State {
		k := conntrack.NewInKey(ipvs.ProtoTCP, netip.AddrPortFrom(client.Addr(), port), netip.MustParseAddrPort("198.18.0.1:80"))
		var c conntrack.Conn
		if err := te.Conns.Create(k, d, 80, conntrack.TemplateRef{}, conntrack.TCPSyn, te.clock, &c); err != nil {
			t.Fatal(err)
		}
		te.Conns.In(k, conntrack.TCPAck, te.clock+1, &c)
		return c.State
	}
	if s := state(1); s != conntrack.StateEstablished {
		t.Fatalf("secure_tcp 0: early ACK gives %s, want ESTABLISHED", s)
	}
	te.mustRun(t, "--sysctl", "secure_tcp=3")
	if s := state(2); s != conntrack.StateSynRecv {
		t.Fatalf("secure_tcp 3: early ACK gives %s, want SYN_RECV", s)
	}
	// 1 is automatic: with room (amemthresh 0: never short) the normal
	// table, read back as 1.
	te.mustRun(t, "--sysctl", "amemthresh=0")
	te.run(root, "", "--sysctl", "secure_tcp=1")
	if s := state(3); s != conntrack.StateEstablished || te.Settings.Get(ipvs.SysSecureTCP) != 1 {
		t.Fatalf("secure_tcp 1, room: early ACK gives %s, secure_tcp reads %d; want ESTABLISHED, 1", s, te.Settings.Get(ipvs.SysSecureTCP))
	}
	// Short of room (the 4096-slot table is below 1024 pages): the next
	// tick switches to the secure table and secure_tcp reads 2.
	te.mustRun(t, "--sysctl", "amemthresh=1024")
	if te.Settings.Get(ipvs.SysSecureTCP) != 1 {
		t.Fatal("amemthresh's write ran update_defense_level (the kernel's waits for the timer)")
	}
	te.defense.Tick(te.clock)
	if s := state(4); s != conntrack.StateSynRecv || te.Settings.Get(ipvs.SysSecureTCP) != 2 {
		t.Fatalf("secure_tcp 1, short: early ACK gives %s, secure_tcp reads %d; want SYN_RECV, 2", s, te.Settings.Get(ipvs.SysSecureTCP))
	}
}

// fakeCache is a scheduler with an lblc-style cache expiration.
type fakeCache struct {
	name string
	exp  time.Duration
}

func (f *fakeCache) Name() string                                  { return f.name }
func (f *fakeCache) Schedule(*ipvs.Service, *ipvs.Flow) *ipvs.Dest { return nil }
func (f *fakeCache) Update(*ipvs.Service)                          {}
func (f *fakeCache) SetExpiration(d time.Duration)                 { f.exp = d }

func TestSysctlCacheExpiration(t *testing.T) {
	s := ipvs.NewSettings()
	var made []*fakeCache
	base := func(name string, _ ipvs.SvcFlags) (ipvs.Scheduler, error) {
		f := &fakeCache{name: name}
		made = append(made, f)
		return f, nil
	}
	tab := ipvs.NewTable(SchedulerFactory(s, base))
	BindSettings(s, nil, tab)
	te := &testEngine{Engine: NewEngine(tab, nil, nil)}
	te.Settings = s
	te.mustRun(t, "-A", "-t", "198.18.0.1:80", "-s", "lblc")
	te.mustRun(t, "-A", "-t", "198.18.0.1:81", "-s", "lblcr")
	if len(made) != 2 || made[0].exp != 24*time.Hour || made[1].exp != 24*time.Hour {
		t.Fatalf("new caches: %+v %+v", made[0], made[1])
	}
	te.mustRun(t, "--sysctl", "lblc_expiration=60")
	if made[0].exp != time.Minute || made[1].exp != 24*time.Hour {
		t.Fatalf("lblc_expiration=60: lblc %v lblcr %v", made[0].exp, made[1].exp)
	}
	te.mustRun(t, "--sysctl", "lblcr_expiration=0")
	if made[1].exp != time.Nanosecond {
		t.Fatalf("lblcr_expiration=0: %v", made[1].exp)
	}
	te.mustRun(t, "-A", "-t", "198.18.0.1:82", "-s", "lblc")
	if made[2].exp != time.Minute {
		t.Fatalf("a new lblc starts with %v", made[2].exp)
	}
}
