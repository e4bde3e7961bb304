package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// listing is a parsed `ipvsadm -Ln`.
type listing []service

// service is one service of `ipvsadm -Ln`.
type service struct {
	Proto string // TCP, UDP, SCTP or FWM
	Addr  string // VIP:port (or the mark)
	Rest  string // scheduler and flags, as printed
	Dests []dest
}

// dest is one real-server line of `ipvsadm -Ln`.
type dest struct {
	Addr    string
	Forward string
	Weight  int
	Active  int
	InAct   int
}

// find returns the service proto addr.
func (l listing) find(proto, addr string) (service, bool) {
	for _, s := range l {
		if s.Proto == proto && s.Addr == addr {
			return s, true
		}
	}
	return service{}, false
}

// dest returns the real server addr of s.
func (s service) dest(addr string) (dest, bool) {
	for _, d := range s.Dests {
		if d.Addr == addr {
			return d, true
		}
	}
	return dest{}, false
}

// totals sums ActiveConn and InActConn over the real servers.
func (s service) totals() (active, inact int) {
	for _, d := range s.Dests {
		active += d.Active
		inact += d.InAct
	}
	return active, inact
}

// listHeader is the first three lines of `ipvsadm -Ln`.
var listHeader = []string{
	"IP Virtual Server version 1.2.1 (size=",
	"Prot LocalAddress:Port Scheduler Flags",
	"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
}

// parseList parses `ipvsadm -Ln` strictly: the header, then service lines
// each followed by their dest lines.
func parseList(out string) (listing, error) {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < len(listHeader) {
		return nil, fmt.Errorf("%d lines, want at least the %d header lines", len(lines), len(listHeader))
	}
	for i, h := range listHeader {
		if !strings.HasPrefix(lines[i], h) {
			return nil, fmt.Errorf("line %d: %q, want %q...", i+1, lines[i], h)
		}
	}
	var ls listing
	for i, line := range lines[len(listHeader):] {
		n := i + len(listHeader) + 1
		if rest, ok := strings.CutPrefix(line, "  -> "); ok {
			if len(ls) == 0 {
				return nil, fmt.Errorf("line %d: real server before any service", n)
			}
			f := strings.Fields(rest)
			if len(f) != 5 {
				return nil, fmt.Errorf("line %d: %q: want 5 fields", n, line)
			}
			d := dest{Addr: f[0], Forward: f[1]}
			for j, p := range []*int{&d.Weight, &d.Active, &d.InAct} {
				v, err := strconv.Atoi(f[2+j])
				if err != nil {
					return nil, fmt.Errorf("line %d: %q: %v", n, line, err)
				}
				*p = v
			}
			ls[len(ls)-1].Dests = append(ls[len(ls)-1].Dests, d)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || !(f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP" || f[0] == "FWM") {
			return nil, fmt.Errorf("line %d: %q is neither a service nor a real server", n, line)
		}
		ls = append(ls, service{Proto: f[0], Addr: f[1], Rest: strings.Join(f[2:], " ")})
	}
	return ls, nil
}

// counters are the five numbers of a `--stats` line.
type counters struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
}

// statService is one service of `ipvsadm -Ln --stats --exact`, with its
// real servers by address.
type statService struct {
	counters
	Dests map[string]counters
}

var statsHeader = []string{
	"IP Virtual Server version 1.2.1 (size=",
	"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
	"  -> RemoteAddress:Port",
}

// parseStats parses `ipvsadm -Ln --stats --exact` into services keyed
// "PROTO VIP:port". Abbreviated numbers (K, M, ...) are an error: --exact
// prints them in full.
func parseStats(out string) (map[string]statService, error) {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < len(statsHeader) {
		return nil, fmt.Errorf("%d lines, want at least the %d header lines", len(lines), len(statsHeader))
	}
	for i, h := range statsHeader {
		if !strings.HasPrefix(lines[i], h) {
			return nil, fmt.Errorf("line %d: %q, want %q...", i+1, lines[i], h)
		}
	}
	st := map[string]statService{}
	last := ""
	for i, line := range lines[len(statsHeader):] {
		n := i + len(statsHeader) + 1
		isDest := strings.HasPrefix(line, "  -> ")
		f := strings.Fields(strings.TrimPrefix(line, "  -> "))
		want := 7
		if isDest {
			want = 6
		}
		if len(f) != want {
			return nil, fmt.Errorf("line %d: %q: want %d fields", n, line, want)
		}
		nums := f[len(f)-5:]
		var c counters
		for j, p := range []*uint64{&c.Conns, &c.InPkts, &c.OutPkts, &c.InBytes, &c.OutBytes} {
			v, err := strconv.ParseUint(nums[j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q: %v", n, line, err)
			}
			*p = v
		}
		if isDest {
			if last == "" {
				return nil, fmt.Errorf("line %d: real server before any service", n)
			}
			st[last].Dests[f[0]] = c
			continue
		}
		last = f[0] + " " + f[1]
		st[last] = statService{counters: c, Dests: map[string]counters{}}
	}
	return st, nil
}

// emptyList is `ipvsadm -Ln` of an empty table.
const emptyList = "IP Virtual Server version 1.2.1 (size=4096)\n" +
	"Prot LocalAddress:Port Scheduler Flags\n" +
	"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"

func TestParseList(t *testing.T) {
	const good = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  198.51.100.10:80 rr persistent 60
  -> 198.18.2.11:8080             Masq    3      2          12        
  -> 198.18.2.12:8080             Masq    0      0          1         
UDP  198.51.100.10:9000 sh
`
	tests := []struct {
		name    string
		in      string
		want    listing
		wantErr string
	}{
		{name: "services and dests", in: good, want: listing{
			{Proto: "TCP", Addr: "198.51.100.10:80", Rest: "rr persistent 60", Dests: []dest{
				{Addr: "198.18.2.11:8080", Forward: "Masq", Weight: 3, Active: 2, InAct: 12},
				{Addr: "198.18.2.12:8080", Forward: "Masq", Weight: 0, Active: 0, InAct: 1},
			}},
			{Proto: "UDP", Addr: "198.51.100.10:9000", Rest: "sh"},
		}},
		{name: "empty table", in: emptyList},
		{name: "no header", in: "TCP  1.2.3.4:80 rr\n", wantErr: "header"},
		{name: "wrong header", in: "IP Virtual Server version 1.2.1 (size=4096)\nProt\nx\n", wantErr: "line 2"},
		{name: "dest first", in: emptyList + "  -> 1.2.3.4:80 Masq 1 0 0\n", wantErr: "before any service"},
		{name: "bad number", in: strings.Replace(good, "12        ", "x         ", 1), wantErr: "invalid syntax"},
		{name: "junk line", in: good + "hello world\n", wantErr: "neither"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseList(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	ls, _ := parseList(good)
	s, ok := ls.find("TCP", "198.51.100.10:80")
	if a, i := s.totals(); !ok || a != 2 || i != 13 {
		t.Errorf("totals %d %d (found %v), want 2 13", a, i, ok)
	}
}

func TestParseStats(t *testing.T) {
	const good = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
UDP  198.51.100.10:9000                  6        6        6      228      246
  -> 198.18.2.11:9000                    2        2        2       76       82
  -> 198.18.2.12:9000            123456789012 1 0 2 0
`
	st, err := parseStats(good)
	if err != nil {
		t.Fatal(err)
	}
	s := st["UDP 198.51.100.10:9000"]
	if s.counters != (counters{6, 6, 6, 228, 246}) {
		t.Errorf("service counters %+v", s.counters)
	}
	if d := s.Dests["198.18.2.11:9000"]; d != (counters{2, 2, 2, 76, 82}) {
		t.Errorf("dest counters %+v", d)
	}
	if d := s.Dests["198.18.2.12:9000"]; d.Conns != 123456789012 {
		t.Errorf("long exact number: %+v", d)
	}
	for _, bad := range []string{
		strings.Replace(good, "     246", "   2400M", 1), // not --exact
		strings.Replace(good, "  -> 198.18.2.11:9000 ", "  -> ", 1),
		"IP Virtual Server version 1.2.1 (size=4096)\n",
		"IP Virtual Server version 1.2.1 (size=4096)\n" + statsHeader[1] + "\n" + statsHeader[2] + "\n  -> 1.2.3.4:1 1 1 1 1 1\n",
	} {
		if _, err := parseStats(bad); err == nil {
			t.Errorf("parseStats accepted:\n%s", bad)
		}
	}
}
