package ipvs_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"gvs/internal/ipvstest"
	"gvs/ipvs"
	"gvs/ipvsadm"
)

var newFakeSched = ipvstest.NewFakeSched

// mustApply parses and applies command lines to t.
func mustApply(t testing.TB, tab *ipvs.Table, lines ...string) {
	t.Helper()
	for _, l := range lines {
		c, err := ipvsadm.ParseArgs(strings.Fields(l))
		if err != nil {
			t.Fatalf("ParseArgs(%q): %v", l, err)
		}
		if err := ipvsadm.Apply(tab, c); err != nil {
			t.Fatalf("Apply(%q): %v", l, err)
		}
	}
}

func applyErr(t *testing.T, tab *ipvs.Table, line string) error {
	t.Helper()
	c, err := ipvsadm.ParseArgs(strings.Fields(line))
	if err != nil {
		t.Fatalf("ParseArgs(%q): %v", line, err)
	}
	return ipvsadm.Apply(tab, c)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func key(s string) ipvs.ServiceKey {
	c, err := ipvsadm.ParseArgs(append([]string{"-D"}, strings.Fields(s)...))
	if err != nil {
		panic(err)
	}
	return c.Service.ServiceKey
}

func TestTableErrors(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab,
		"-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 192.168.1.1 -m",
	)
	tests := []struct {
		line     string
		msg      string
		sentinel error
	}{
		{"-A -t 10.0.0.1:80", "Service already exists", ipvs.ErrServiceExists},
		{"-A -t 10.0.0.2:80 -s nosuch", "Scheduler or persistence engine not found", ipvs.ErrNoScheduler},
		{"-A -t 10.0.0.2:80 --pe sip", "Scheduler or persistence engine not found", ipvs.ErrNoPE},
		{"-E -t 10.0.0.2:80", "No such service", ipvs.ErrNoService},
		{"-E -t 10.0.0.1:80 -s nosuch", "Scheduler or persistence engine not found", ipvs.ErrNoScheduler},
		{"-D -u 10.0.0.1:80", "No such service", ipvs.ErrNoService},
		{"-Z -t 10.0.0.1:81", "No such service", ipvs.ErrNoService},
		{"-a -t 10.0.0.2:80 -r 192.168.1.1", "Service not defined", ipvs.ErrNoService},
		{"-e -t 10.0.0.2:80 -r 192.168.1.1", "Service not defined", ipvs.ErrNoService},
		{"-d -t 10.0.0.2:80 -r 192.168.1.1", "Service not defined", ipvs.ErrNoService},
		{"-a -t 10.0.0.1:80 -r 192.168.1.1 -m", "Destination already exists", ipvs.ErrDestExists},
		{"-e -t 10.0.0.1:80 -r 192.168.1.2 -m", "No such destination", ipvs.ErrNoDest},
		{"-d -t 10.0.0.1:80 -r 192.168.1.2", "No such destination", ipvs.ErrNoDest},
		{"-a -t 10.0.0.1:80 -r 192.168.1.3 -y 5", "Numerical result out of range", ipvs.ErrRange},
		{"-e -t 10.0.0.1:80 -r 192.168.1.1 -m -x 5 -y 6", "Numerical result out of range", ipvs.ErrRange},
		{"-a -t 10.0.0.1:80 -r 224.0.0.1 -m", "Invalid operation.  Possibly wrong module version, address not unicast, ...", ipvs.ErrInvalid},
		{"-a -t 10.0.0.1:80 -r 0.0.0.0 -m", "Invalid operation.  Possibly wrong module version, address not unicast, ...", ipvs.ErrInvalid},
		{"--start-daemon master", "the connection sync daemon is not supported by gvs", ipvsadm.ErrUnsupported},
		{"-L", "the 'list' command does not change the table", ipvs.ErrInvalid},
	}
	for _, tc := range tests {
		err := applyErr(t, tab, tc.line)
		var e *ipvsadm.Error
		if !errors.As(err, &e) || e.Msg != tc.msg || e.Code != ipvsadm.ExitFailure || !errors.Is(err, tc.sentinel) {
			t.Errorf("%q: got %v, want %q (exit 255, %v)", tc.line, err, tc.msg, tc.sentinel)
		}
	}
	// Nothing changed.
	svcs := tab.Services()
	if len(svcs) != 1 || len(svcs[0].Dests()) != 1 || svcs[0].Config.Scheduler != "rr" {
		t.Fatalf("table changed by failing commands: %d services", len(svcs))
	}
}

func TestTableDestLifecycle(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab, "-A -t 10.0.0.1:80 -s wrr")
	svc := tab.Service(key("-t 10.0.0.1:80"))
	if svc == nil {
		t.Fatal("service not found")
	}
	sched := svc.Sched.(*ipvstest.FakeSched)
	mustApply(t, tab,
		"-a -t 10.0.0.1:80 -r 192.168.1.1 -m -w 1",
		"-a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m -w 2",
		"-a -t 10.0.0.1:80 -r 192.168.1.3 -w 3", // DR: port forced to 80
	)
	ds := svc.Dests()
	want := []string{"192.168.1.3:80", "192.168.1.2:8080", "192.168.1.1:80"} // newest first
	for i, d := range ds {
		if d.AddrPort().String() != want[i] || d.Svc != svc || !d.Available() {
			t.Errorf("dest %d = %v (svc ok %v, available %v), want %s", i, d.AddrPort(), d.Svc == svc, d.Available(), want[i])
		}
	}
	if ds[0].Index != 2 || ds[1].Index != 1 || ds[2].Index != 0 {
		t.Errorf("indexes %d %d %d, want 2 1 0", ds[0].Index, ds[1].Index, ds[2].Index)
	}
	// one Update when the service was created, one per -a
	if updates, seen := sched.Updates(); updates != 4 || seen != 3 {
		t.Errorf("scheduler updates %d (saw %d dests), want 4 (3)", updates, seen)
	}

	// -e changes the object in place; an omitted -w means weight 1, as ipvsadm sends it.
	d2 := ds[1]
	mustApply(t, tab, "-e -t 10.0.0.1:80 -r 192.168.1.2:8080 -m -x 10")
	if svc.Dests()[1] != d2 || d2.Weight() != 1 || d2.UThreshold() != 10 {
		t.Errorf("edit: same object %v, weight %d, uthreshold %d", svc.Dests()[1] == d2, d2.Weight(), d2.UThreshold())
	}

	// -d marks the dest unavailable and removes it from the snapshot.
	d2.ActiveConns.Add(1) // a live connection keeps it in the trash
	mustApply(t, tab, "-d -t 10.0.0.1:80 -r 192.168.1.2:8080")
	if d2.Available() || len(svc.Dests()) != 2 {
		t.Fatalf("delete: available %v, %d dests", d2.Available(), len(svc.Dests()))
	}
	// A new dest takes the smallest free index.
	mustApply(t, tab, "-a -t 10.0.0.1:80 -r 192.168.1.4 -m")
	if got := svc.Dests()[0]; got.Index != 1 {
		t.Errorf("new dest index %d, want 1", got.Index)
	}
	// Re-adding the deleted dest brings back the same object (IPVS trash).
	ipvs.SetNow(tab, func() time.Time { return time.Now().Add(time.Hour) })
	mustApply(t, tab, "-a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m -w 5")
	if got := svc.Dests()[0]; got != d2 || !d2.Available() || d2.Weight() != 5 || d2.ActiveConns.Load() != 1 {
		t.Errorf("re-add: same object %v, available %v, weight %d", got == d2, d2.Available(), d2.Weight())
	}
	if d2.Index == svc.Dests()[1].Index {
		t.Errorf("revived dest shares index %d", d2.Index)
	}

	// -E with another scheduler makes a new instance; with the same one it keeps it.
	mustApply(t, tab, "-E -t 10.0.0.1:80 -s wrr -p 100")
	if svc.Sched != sched || !svc.Config.Persistent() || svc.Config.Timeout != 100 {
		t.Errorf("edit with same scheduler replaced it or lost the config")
	}
	mustApply(t, tab, "-E -t 10.0.0.1:80 -s rr")
	if svc.Sched == ipvs.Scheduler(sched) || svc.Sched.Name() != "rr" || svc.Config.Persistent() {
		t.Errorf("edit with a new scheduler: %v persistent %v", svc.Sched.Name(), svc.Config.Persistent())
	}
	if updates, seen := svc.Sched.(*ipvstest.FakeSched).Updates(); updates != 1 || seen != 4 {
		t.Errorf("new scheduler: %d updates, saw %d dests", updates, seen)
	}

	// -D makes every dest unavailable.
	ds = svc.Dests()
	mustApply(t, tab, "-D -t 10.0.0.1:80")
	for _, d := range ds {
		if d.Available() {
			t.Errorf("dest %v still available after -D", d.AddrPort())
		}
	}
	if tab.Lookup(ipvs.ProtoTCP, mustAddr("10.0.0.1"), 80, 0) != nil || len(tab.Services()) != 0 {
		t.Error("service still visible after -D")
	}
}

func TestTableLookup(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab,
		"-A -t 10.0.0.1:80",
		"-A -u 10.0.0.1:80",
		"-A -t 10.0.0.1:21",
		"-A -t 10.0.0.2:0 -p",
		"-A -f 7",
		"-A -f 7 -6",
		"-A -t [2001:db8::1]:80",
	)
	get := func(s string) *ipvs.Service { return tab.Service(key(s)) }
	v4, v4b := mustAddr("10.0.0.1"), mustAddr("10.0.0.2")
	tests := []struct {
		name  string
		proto ipvs.Protocol
		addr  netip.Addr
		port  uint16
		mark  uint32
		want  *ipvs.Service
	}{
		{"exact tcp", ipvs.ProtoTCP, v4, 80, 0, get("-t 10.0.0.1:80")},
		{"exact udp", ipvs.ProtoUDP, v4, 80, 0, get("-u 10.0.0.1:80")},
		{"fwmark first", ipvs.ProtoTCP, v4, 80, 7, get("-f 7")},
		{"fwmark v6", ipvs.ProtoTCP, mustAddr("2001:db8::1"), 80, 7, get("-f 7 -6")},
		{"unknown mark falls back", ipvs.ProtoTCP, v4, 80, 8, get("-t 10.0.0.1:80")},
		{"ftp data port 20", ipvs.ProtoTCP, v4, 20, 0, get("-t 10.0.0.1:21")},
		{"ftp passive port", ipvs.ProtoTCP, v4, 40000, 0, get("-t 10.0.0.1:21")},
		{"privileged port: no ftp", ipvs.ProtoTCP, v4, 443, 0, nil},
		{"udp: no ftp", ipvs.ProtoUDP, v4, 40000, 0, nil},
		{"port zero service", ipvs.ProtoTCP, v4b, 443, 0, get("-t 10.0.0.2:0")},
		{"port zero: other protocol", ipvs.ProtoUDP, v4b, 443, 0, nil},
		{"v6 exact", ipvs.ProtoTCP, mustAddr("2001:db8::1"), 80, 0, get("-t [2001:db8::1]:80")},
		{"v4-mapped v6 is not v4", ipvs.ProtoTCP, mustAddr("::ffff:10.0.0.1"), 80, 0, nil},
		{"miss", ipvs.ProtoTCP, mustAddr("10.9.9.9"), 80, 0, nil},
	}
	for _, tc := range tests {
		if got := tab.Lookup(tc.proto, tc.addr, tc.port, tc.mark); got != tc.want {
			t.Errorf("%s: Lookup = %p, want %p", tc.name, got, tc.want)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		_ = tab.Lookup(ipvs.ProtoTCP, v4, 80, 0)
		_ = tab.Lookup(ipvs.ProtoTCP, v4b, 443, 7)
		_ = tab.Lookup(ipvs.ProtoUDP, mustAddr("2001:db8::2"), 53, 0)
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %.1f times per run", allocs)
	}
}

func TestApplyAllAtomic(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab, "-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 192.168.1.1 -m")
	svc := tab.Service(key("-t 10.0.0.1:80"))
	d := svc.Dests()[0]
	d.InactConns.Add(3)
	d.Stats[0].Conns.Add(42)

	rules := "-C\n-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 192.168.1.1 -m -w 4\n" +
		"-A -t 10.0.0.9:80\n-a -t 10.0.0.8:80 -r 192.168.1.2\n"
	cmds, err := ipvsadm.ParseRules(strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	err = ipvsadm.ApplyAll(tab, cmds)
	if err == nil || err.Error() != "line 5: Service not defined" {
		t.Fatalf("ApplyAll = %v, want line 5: Service not defined", err)
	}
	if got := tab.Services(); len(got) != 1 || got[0] != svc || svc.Config.Scheduler != "rr" || d.Weight() != 1 {
		t.Fatalf("failed batch changed the table")
	}

	// The same batch without the bad line: objects survive the -C.
	if err := ipvsadm.ApplyAll(tab, cmds[:4]); err != nil {
		t.Fatal(err)
	}
	if tab.Service(key("-t 10.0.0.1:80")) != svc || svc.Config.Scheduler != "wrr" {
		t.Fatal("service object not kept across -C in a batch")
	}
	if got := svc.Dests(); len(got) != 1 || got[0] != d || !d.Available() || d.Weight() != 4 ||
		d.InactConns.Load() != 3 || d.Stats.Sum().Conns != 42 {
		t.Fatalf("dest object not kept with its connections")
	}
	// -C then -A -a: the real server was taken back by a service created
	// again, so its listed counters start from zero (ip_vs_zero_stats).
	if svc.Counts().Conns != 0 || d.Counts().Conns != 0 {
		t.Error("re-created service or its real server did not start with zero counters")
	}
	if tab.Lookup(ipvs.ProtoTCP, mustAddr("10.0.0.9"), 80, 0) == nil {
		t.Error("new service not published")
	}
}

func TestZeroAndTimeouts(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab, "-A -t 10.0.0.1:80", "-a -t 10.0.0.1:80 -r 192.168.1.1", "-A -u 10.0.0.1:53")
	a, b := tab.Service(key("-t 10.0.0.1:80")), tab.Service(key("-u 10.0.0.1:53"))
	a.Stats[1].InPkts.Add(5)
	a.Dests()[0].Stats[2].OutBytes.Add(7)
	b.Stats[0].Conns.Add(1)
	mustApply(t, tab, "-Z -t 10.0.0.1:80")
	if a.Counts() != (ipvs.Totals{}) || a.Dests()[0].Counts() != (ipvs.Totals{}) || b.Counts().Conns != 1 {
		t.Error("-Z of one service")
	}
	mustApply(t, tab, "-Z")
	if b.Counts().Conns != 0 {
		t.Error("-Z of all services")
	}
	// The workers' counters themselves are never written.
	if a.Stats.Sum().InPkts != 5 || a.Dests()[0].Stats.Sum().OutBytes != 7 || b.Stats.Sum().Conns != 1 {
		t.Error("-Z wrote the workers' counters")
	}
	if tab.Timeouts() != ipvs.DefaultTimeouts {
		t.Errorf("default timeouts %v", tab.Timeouts())
	}
	mustApply(t, tab, "--set 0 60 0")
	if got := tab.Timeouts(); got != (ipvs.Timeouts{900, 60, 300}) {
		t.Errorf("--set 0 60 0 gave %v", got)
	}
}

func TestSortServicesLikeIpvsadm(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab,
		"-A -u 10.0.0.1:53",
		"-A --sctp-service 10.0.0.1:9",
		"-A -f 2",
		"-A -t 10.0.0.1:443",
		"-A -t 192.168.0.1:80",
		"-A -f 1 -6",
		"-A -t 10.0.0.1:80",
		"-A -f 1",
	)
	var got []string
	for _, s := range tab.Services() {
		got = append(got, s.Config.ServiceKey.String())
	}
	// 192.168.0.1 - 10.0.0.1 overflows a C int: ipvsadm lists it first.
	want := "-t 192.168.0.1:80,-t 10.0.0.1:80,-t 10.0.0.1:443,-u 10.0.0.1:53,--sctp-service 10.0.0.1:9,-f 1,-f 1 -6,-f 2"
	if strings.Join(got, ",") != want {
		t.Errorf("order\n got %s\nwant %s", strings.Join(got, ","), want)
	}
}

func TestLookupConcurrentWithApply(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(t, tab, "-A -t 10.0.0.1:80")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &ipvs.Flow{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if svc := tab.Lookup(ipvs.ProtoTCP, mustAddr("10.0.0.1"), 80, 0); svc != nil {
					for _, d := range svc.Dests() {
						_ = d.Usable()
					}
					_ = f
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		mustApply(t, tab, fmt.Sprintf("-a -t 10.0.0.1:80 -r 192.168.%d.%d -m", i/250, i%250+1))
		if i%3 == 0 {
			mustApply(t, tab, fmt.Sprintf("-A -t 10.0.1.%d:80", i+1))
		}
	}
	close(stop)
	wg.Wait()
	if n := len(tab.Service(key("-t 10.0.0.1:80")).Dests()); n != 200 {
		t.Errorf("%d dests, want 200", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	tab := ipvs.NewTable(newFakeSched)
	for i := 0; i < 100; i++ {
		mustApply(b, tab, fmt.Sprintf("-A -t 10.0.%d.%d:80", i/250, i%250+1))
	}
	a := mustAddr("10.0.0.50")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if tab.Lookup(ipvs.ProtoTCP, a, 80, 0) == nil {
			b.Fatal("miss")
		}
	}
}

func BenchmarkApplyAddDest(b *testing.B) {
	tab := ipvs.NewTable(newFakeSched)
	mustApply(b, tab, "-A -t 10.0.0.1:80")
	add, _ := ipvsadm.ParseArgs(strings.Fields("-A -t 10.0.0.1:80"))
	cmds := []*ipvsadm.Command{{Kind: ipvsadm.CmdClear}, add}
	for i := 0; i < 1000; i++ {
		c, _ := ipvsadm.ParseArgs(strings.Fields(fmt.Sprintf("-a -t 10.0.0.1:80 -r 10.1.%d.%d -m", i/250, i%250+1)))
		cmds = append(cmds, c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// a whole rules reload: 1 service, 1000 real servers
		if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
			b.Fatal(err)
		}
	}
}

// IsVIP answers for every service address, through the short list with few
// VIPs and through the map with many.
func TestIsVIP(t *testing.T) {
	for _, n := range []int{1, 16, 17, 40} {
		tab := ipvs.NewTable(newFakeSched)
		var cmds []*ipvsadm.Command
		for i := 0; i < n; i++ {
			c, err := ipvsadm.ParseArgs([]string{"-A", "-t", fmt.Sprintf("198.51.100.%d:80", i+1)})
			if err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, c)
		}
		if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if !tab.IsVIP(netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i+1))) {
				t.Fatalf("%d VIPs: 198.51.100.%d not found", n, i+1)
			}
		}
		for _, a := range []string{"198.51.100.200", "203.0.113.1", "2001:db8::1"} {
			if tab.IsVIP(netip.MustParseAddr(a)) {
				t.Fatalf("%d VIPs: %s reported as a VIP", n, a)
			}
		}
		if got := len(tab.VIPs()); got != n {
			t.Fatalf("VIPs() = %d addresses, want %d", got, n)
		}
	}
}

// TestLastWeightInBatch: last_weight follows __ip_vs_update_dest command by
// command, also inside one ApplyAll (ipvsadm -R): set on every add (0
// included), kept by an edit to weight 0.
func TestLastWeightInBatch(t *testing.T) {
	tab := ipvs.NewTable(newFakeSched)
	apply := func(rules string) {
		t.Helper()
		cmds, err := ipvsadm.ParseRules(strings.NewReader(rules))
		if err != nil {
			t.Fatal(err)
		}
		if err := ipvsadm.ApplyAll(tab, cmds); err != nil {
			t.Fatal(err)
		}
	}
	lw := func() (int, int) {
		d := tab.Service(key("-u 10.0.0.1:53")).Dests()[0]
		return d.Weight(), d.LastWeight()
	}
	apply("-A -u 10.0.0.1:53 -s mh\n-a -u 10.0.0.1:53 -r 192.168.1.1 -g -w 2\n-e -u 10.0.0.1:53 -r 192.168.1.1 -g -w 0\n")
	if w, l := lw(); w != 0 || l != 2 {
		t.Fatalf("add 2, edit 0 in one batch: weight %d last %d, want 0 2", w, l)
	}
	apply("-e -u 10.0.0.1:53 -r 192.168.1.1 -g -w 5\n-e -u 10.0.0.1:53 -r 192.168.1.1 -g -w 0\n")
	if w, l := lw(); w != 0 || l != 5 {
		t.Fatalf("edit 5, edit 0: weight %d last %d, want 0 5", w, l)
	}
	// Deleted and added again (from the trash) with weight 0: last 0.
	apply("-d -u 10.0.0.1:53 -r 192.168.1.1\n-a -u 10.0.0.1:53 -r 192.168.1.1 -g -w 0\n")
	if w, l := lw(); w != 0 || l != 0 {
		t.Fatalf("re-added with 0: weight %d last %d, want 0 0", w, l)
	}
}
