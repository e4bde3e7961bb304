package ipvs

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The kernel's defaults, written from ip_vs_control_net_init_sysctl,
// include/net/ip_vs.h (DEFAULT_SYNC_*), ip_vs_lblc.c / ip_vs_lblcr.c
// (DEFAULT_EXPIRATION 24*60*60*HZ, shown in seconds) and the /proc
// format (sync_threshold is "3\t50").
var kernelDefaults = map[string]string{
	"am_droprate":               "10",
	"amemthresh":                "1024",
	"backup_only":               "0",
	"cache_bypass":              "0",
	"conn_reuse_mode":           "1",
	"conntrack":                 "0",
	"drop_entry":                "0",
	"drop_packet":               "0",
	"expire_nodest_conn":        "0",
	"expire_quiescent_template": "0",
	"ignore_tunneled":           "0",
	"lblc_expiration":           "86400",
	"lblcr_expiration":          "86400",
	"nat_icmp_send":             "0",
	"pmtu_disc":                 "1",
	"run_estimation":            "1",
	"schedule_icmp":             "0",
	"secure_tcp":                "0",
	"sloppy_sctp":               "0",
	"sloppy_tcp":                "0",
	"snat_reroute":              "1",
	"sync_persist_mode":         "0",
	"sync_ports":                "1",
	"sync_qlen_max":             "65536",
	"sync_refresh_period":       "0",
	"sync_retries":              "0",
	"sync_sock_size":            "0",
	"sync_threshold":            "3\t50",
	"sync_version":              "1",
}

func TestSysctlDefaults(t *testing.T) {
	s := NewSettings()
	if len(kernelDefaults) != int(NumSysctls) {
		t.Fatalf("%d sysctls, want %d", NumSysctls, len(kernelDefaults))
	}
	prev := ""
	for k := Sysctl(0); k < NumSysctls; k++ {
		name := k.String()
		if name <= prev {
			t.Errorf("%s listed after %s: not sorted like sysctl(8)", name, prev)
		}
		prev = name
		want, ok := kernelDefaults[name]
		if !ok {
			t.Errorf("%s: not a kernel sysctl", name)
			continue
		}
		if got := s.Format(k); got != want {
			t.Errorf("%s = %q, want the kernel's %q", name, got, want)
		}
		if got, ok := LookupSysctl(SysctlPrefix + name); !ok || got != k {
			t.Errorf("LookupSysctl(%q) = %v, %v", SysctlPrefix+name, got, ok)
		}
		if got, ok := LookupSysctl("net/ipv4/vs/" + name); !ok || got != k {
			t.Errorf("LookupSysctl(net/ipv4/vs/%s) = %v, %v", name, got, ok)
		}
		if info := k.Info(); info.Acted == (info.NotActed != "") {
			t.Errorf("%s: Acted %v with NotActed %q", name, info.Acted, info.NotActed)
		}
	}
	for _, bad := range []string{"", "debug_level", "net.ipv4.vs.", "net.ipv4.ip_forward", "Secure_tcp"} {
		if _, ok := LookupSysctl(bad); ok {
			t.Errorf("LookupSysctl(%q) found", bad)
		}
	}
}

// TestSysctlWrite writes values as to the /proc files and checks the result
// against what the kernel's handlers do: store (and read back), or EINVAL
// with the old value kept.
func TestSysctlWrite(t *testing.T) {
	const inval = "EINVAL"
	cases := []struct {
		name, write, want string // want: what the file reads after, or inval
	}{
		// proc_dointvec: any int, C notation, blanks around.
		{"am_droprate", "5", "5"},
		{"am_droprate", "-7", "-7"},
		{"am_droprate", " 0x10\n", "16"},
		{"am_droprate", "010", "8"},
		{"am_droprate", "2147483647", "2147483647"},
		{"am_droprate", "-2147483648", "-2147483648"},
		{"am_droprate", "2147483648", inval},
		{"am_droprate", "-2147483649", inval},
		{"amemthresh", "abc", inval},
		{"amemthresh", "5x", inval},
		{"amemthresh", "+5", inval},
		{"amemthresh", "08", inval},
		{"amemthresh", "", inval},
		{"amemthresh", "1 2", inval},
		{"conn_reuse_mode", "7", "7"},
		{"expire_nodest_conn", "-1", "-1"},
		{"snat_reroute", "0", "0"},
		{"conntrack", "42", "42"},
		// proc_do_defense_mode: 0..3, EINVAL otherwise; then
		// update_defense_level with enough memory turns 2 into 1.
		{"secure_tcp", "3", "3"},
		{"secure_tcp", "4", inval},
		{"secure_tcp", "-1", inval},
		// Stored as written: rewriting 2 as 1 (or 1 as 2) is
		// update_defense_level's, which conntrack.Defense runs from a
		// change hook (tested there and in package control).
		{"secure_tcp", "2", "2"},
		{"drop_entry", "1", "1"},
		{"drop_entry", "2", "2"},
		{"drop_packet", "3", "3"},
		{"drop_packet", "9", inval},
		// proc_dointvec_minmax.
		{"sync_retries", "3", "3"},
		{"sync_retries", "4", inval},
		{"sync_retries", "-1", inval},
		{"sync_version", "0", "0"},
		{"sync_version", "2", inval},
		// proc_do_sync_ports: a power of two.
		{"sync_ports", "4", "4"},
		{"sync_ports", "3", inval},
		{"sync_ports", "0", inval},
		{"sync_ports", "-2", inval},
		{"sync_ports", "1073741824", "1073741824"},
		// proc_do_sync_threshold: threshold < period unless period is 0.
		{"sync_threshold", "2 10", "2\t10"},
		{"sync_threshold", "10 10", inval},
		{"sync_threshold", "11 10", inval},
		{"sync_threshold", "-1 10", inval},
		{"sync_threshold", "1 -10", inval},
		{"sync_threshold", "100 0", "100\t0"},
		{"sync_threshold", "5", "5\t0"}, // keeps the period 0
		{"sync_threshold", "1 2 3", inval},
		// proc_dointvec_jiffies: seconds, |v| <= INT_MAX/HZ.
		{"lblc_expiration", "3600", "3600"},
		{"lblc_expiration", "2147483", "2147483"},
		{"lblc_expiration", "2147484", inval},
		{"lblcr_expiration", "-60", "-60"},
		{"lblcr_expiration", "-2147484", inval},
		{"sync_refresh_period", "30", "30"},
		// proc_doulongvec_minmax without bounds: unsigned long.
		{"sync_qlen_max", "18446744073709551615", "18446744073709551615"},
		{"sync_qlen_max", "18446744073709551616", inval},
		{"sync_qlen_max", "-1", inval},
		{"sync_qlen_max", "0", "0"},
	}
	s := NewSettings()
	for _, c := range cases {
		k, ok := LookupSysctl(c.name)
		if !ok {
			t.Fatalf("no sysctl %s", c.name)
		}
		before := s.Format(k)
		err := s.SetText(k, c.write)
		after := s.Format(k)
		if c.want == inval {
			if !errors.Is(err, ErrInvalidValue) || after != before {
				t.Errorf("write %q to %s: err %v, %q -> %q; want EINVAL, unchanged", c.write, c.name, err, before, after)
			}
			continue
		}
		if err != nil || after != c.want {
			t.Errorf("write %q to %s: err %v, reads %q; want %q", c.write, c.name, err, after, c.want)
		}
	}
}

func TestSysctlThresholdOneValue(t *testing.T) {
	// The kernel's write fills the vector from the start: one value sets
	// the threshold and keeps the period.
	s := NewSettings()
	if err := s.SetText(SysSyncThreshold, "7"); err != nil || s.Format(SysSyncThreshold) != "7\t50" {
		t.Fatalf("write 7: %v, %q", err, s.Format(SysSyncThreshold))
	}
	if err := s.SetText(SysSyncThreshold, "50"); !errors.Is(err, ErrInvalidValue) || s.Format(SysSyncThreshold) != "7\t50" {
		t.Fatalf("write 50 (= period): %v, %q", err, s.Format(SysSyncThreshold))
	}
}

func TestSysctlHooksAndNotices(t *testing.T) {
	s := NewSettings()
	var got []Sysctl
	s.OnChange(func(k Sysctl) { got = append(got, k) })
	if err := s.Set(SysSecureTCP, [2]int64{9}); err == nil {
		t.Fatal("secure_tcp 9 accepted")
	}
	if err := s.Set(SysSecureTCP, [2]int64{3}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != SysSecureTCP {
		t.Fatalf("hooks ran for %v, want [secure_tcp] only (not for the rejected write)", got)
	}
	if n := s.Notice(SysSecureTCP); n != "" {
		t.Errorf("secure_tcp 3 notice %q, want none", n)
	}
	// proc_do_defense_mode runs update_defense_level only when the value
	// changes: so do the hooks of the defense modes.
	got = nil
	_ = s.Set(SysSecureTCP, [2]int64{3})
	_ = s.Set(SysSecureTCP, [2]int64{1})
	_ = s.Set(SysAmemthresh, [2]int64{1024})
	if len(got) != 2 || got[0] != SysSecureTCP || got[1] != SysAmemthresh {
		t.Fatalf("hooks ran for %v, want [secure_tcp amemthresh] (not for an unchanged secure_tcp)", got)
	}
	if n := s.Notice(SysSecureTCP); n != "" {
		t.Errorf("secure_tcp 1 notice %q, want none (the automatic modes are implemented)", n)
	}
	// Rewrite loses to a write that came in meanwhile.
	s.Rewrite(SysSecureTCP, 2, 1)
	if s.Get(SysSecureTCP) != 1 {
		t.Fatal("Rewrite from a value the sysctl does not hold changed it")
	}
	s.Rewrite(SysSecureTCP, 1, 2)
	if s.Get(SysSecureTCP) != 2 || len(got) != 2 {
		t.Fatalf("Rewrite 1 -> 2: reads %d, hooks %v; want 2 and no hook", s.Get(SysSecureTCP), got)
	}
	for k := Sysctl(0); k < NumSysctls; k++ {
		n := NewSettings().Notice(k)
		if k.Info().Acted != (n == "") {
			t.Errorf("%s: Acted %v, notice %q", k, k.Info().Acted, n)
		}
		if strings.Contains(n, "\n") {
			t.Errorf("%s: notice %q is not one line", k, n)
		}
	}
}

// TestSysctlPairAtomic: a reader of sync_threshold never sees half of a
// write (the new threshold with the old period). The writer stores pairs
// (n, 2n+1); readers check every pair they see has that shape. Run it
// with -race as well.
func TestSysctlPairAtomic(t *testing.T) {
	s := NewSettings()
	if err := s.Set(SysSyncThreshold, [2]int64{0, 1}); err != nil {
		t.Fatal(err)
	}
	const writes = 20000
	done := make(chan struct{})
	bad := make(chan [2]int64, 1)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				v := s.Get2(SysSyncThreshold)
				if v[1] != 2*v[0]+1 {
					select {
					case bad <- v:
					default:
					}
					return
				}
				if f := s.Format(SysSyncThreshold); !validPairText(f) {
					select {
					case bad <- [2]int64{-1, -1}: // the /proc text was torn
					default:
					}
					return
				}
			}
		}()
	}
	for n := int64(1); n <= writes; n++ {
		if err := s.Set(SysSyncThreshold, [2]int64{n, 2*n + 1}); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	select {
	case v := <-bad:
		t.Fatalf("read a torn sync_threshold pair %v (every write is (n, 2n+1))", v)
	default:
	}
	if got := s.Get2(SysSyncThreshold); got != [2]int64{writes, 2*writes + 1} {
		t.Fatalf("final pair %v", got)
	}
	if got := s.Get(SysSyncThreshold); got != writes {
		t.Fatalf("Get: %d, want the threshold %d", got, writes)
	}
}

// validPairText reports whether a formatted sync_threshold is a pair
// (n, 2n+1).
func validPairText(f string) bool {
	a, b, ok := strings.Cut(f, "\t")
	if !ok {
		return false
	}
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	return err1 == nil && err2 == nil && y == 2*x+1
}

// Negative values and the int32 extremes survive the packing of a pair.
func TestSysctlPairPacking(t *testing.T) {
	for _, v := range [][2]int64{{0, 0}, {3, 50}, {-1, 7}, {math.MaxInt32, math.MinInt32}, {math.MinInt32, -1}} {
		if got := unpack2(pack2(v)); got != v {
			t.Errorf("pack2/unpack2 %v: %v", v, got)
		}
	}
}
