package lvssync

import (
	"net/netip"
	"testing"
)

func TestWithDefaults(t *testing.T) {
	cases := []struct {
		name      string
		c         Config
		mtu       int
		maxlen    int
		wantError bool
	}{
		{"master ignores a jumbo MTU", Config{State: Master, McastIfn: "eth0"}, 9000, 1472, false},
		{"master on a small MTU", Config{State: Master, McastIfn: "eth0"}, 1280, 1472, false},
		{"backup follows the MTU", Config{State: Backup, McastIfn: "eth0"}, 9000, 8972, false},
		{"backup at least 1500", Config{State: Backup, McastIfn: "eth0"}, 1280, 1472, false},
		{"backup MTU capped", Config{State: Backup, McastIfn: "eth0"}, 70000, 65507, false},
		{"master given maxlen", Config{State: Master, McastIfn: "eth0", SyncMaxlen: 100}, 1500, 100, false},
		{"master maxlen capped", Config{State: Master, McastIfn: "eth0", SyncMaxlen: 70000}, 1500, 65507, false},
		{"backup maxlen at least 1024", Config{State: Backup, McastIfn: "eth0", SyncMaxlen: 500}, 1500, 1024, false},
		{"ipv6 group headers", Config{State: Master, McastIfn: "eth0", McastGroup: netip.MustParseAddr("ff02::81")}, 1500, 1452, false},
		{"no state", Config{McastIfn: "eth0"}, 1500, 0, true},
		{"no interface", Config{State: Master}, 1500, 0, true},
		{"unicast group", Config{State: Master, McastIfn: "eth0", McastGroup: netip.MustParseAddr("198.18.0.1")}, 1500, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.WithDefaults(tc.mtu)
			if (err != nil) != tc.wantError {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			if got.SyncMaxlen != tc.maxlen {
				t.Errorf("maxlen %d, want %d", got.SyncMaxlen, tc.maxlen)
			}
			if !tc.c.McastGroup.IsValid() && got.McastGroup != DefaultGroup {
				t.Errorf("group %v", got.McastGroup)
			}
			if got.McastPort != 8848 || got.McastTTL != 1 {
				t.Errorf("port %d ttl %d", got.McastPort, got.McastTTL)
			}
		})
	}
}

func TestFormatDaemon(t *testing.T) {
	m, _ := Config{State: Master, McastIfn: "eth0"}.WithDefaults(1500)
	b, _ := Config{State: Backup, McastIfn: "dip0", SyncID: 7, McastGroup: netip.MustParseAddr("239.1.2.3"), McastPort: 9000, McastTTL: 3}.WithDefaults(9000)
	want := "master sync daemon (mcast=eth0, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" +
		"backup sync daemon (mcast=dip0, syncid=7, maxlen=8972, group=239.1.2.3, port=9000, ttl=3)\n"
	if got := FormatDaemon(&m, &b); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
	if got := FormatDaemon(nil, &b); got != want[len(want)-len("backup sync daemon (mcast=dip0, syncid=7, maxlen=8972, group=239.1.2.3, port=9000, ttl=3)\n"):] {
		t.Errorf("backup only: %q", got)
	}
	if got := FormatDaemon(nil, nil); got != "" {
		t.Errorf("none: %q", got)
	}
	// Fields the kernel did not report (zero) are left out.
	if got := FormatDaemon(&Config{McastIfn: "eth1", SyncID: 2}, nil); got != "master sync daemon (mcast=eth1, syncid=2)\n" {
		t.Errorf("bare: %q", got)
	}
}

func TestProducerDrops(t *testing.T) {
	p := newProducer(3) // rounded up to 4
	c := connV1TCP
	for i := range 4 {
		c.CPort = uint16(i)
		if !p.Enqueue(&c) {
			t.Fatalf("record %d refused", i)
		}
	}
	if p.Enqueue(&c) || p.Enqueue(&c) {
		t.Fatal("a full queue took a record")
	}
	if p.Dropped() != 2 || p.Len() != 4 {
		t.Fatalf("dropped %d, len %d", p.Dropped(), p.Len())
	}
	var got []uint16
	p.drain(func(c *Conn) bool {
		got = append(got, c.CPort)
		return len(got) < 3 // the third is refused and stays
	})
	if len(got) != 3 || got[0] != 0 || got[2] != 2 || p.Len() != 2 {
		t.Fatalf("drained %v, %d left", got, p.Len())
	}
	c.CPort = 9
	if !p.Enqueue(&c) {
		t.Fatal("room after a drain refused")
	}
	if a := testing.AllocsPerRun(100, func() { p.Enqueue(&c) }); a != 0 {
		t.Errorf("Enqueue allocates %v", a)
	}
}
