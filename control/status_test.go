package control

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvs/health"
	"gvs/ipvs"
	"gvs/scheduler"
)

func statusFixture() []health.ServiceStatus {
	at := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	svc := health.ServiceRef{Proto: health.ProtoTCP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 80}
	return []health.ServiceStatus{{
		Service: svc, Name: svc.String(), QuorumUp: true, Quorum: 2, AliveWeight: 2,
		Sorry: &health.SorryStatus{Name: "[198.18.2.99]:tcp:8080"},
		Reals: []health.RealStatus{
			{Name: "[198.18.2.11]:tcp:8080", Alive: false, Present: true, Weight: 0, Configured: 3, Since: at,
				Checkers: []health.CheckerStatus{{Kind: health.KindTCP, Up: false, HasRun: true, Checks: 4,
					LastError: "connection failed: connection refused", Changed: at}}},
			{Name: "[198.18.2.12]:tcp:8080", Alive: true, Present: true, Weight: 2, Configured: 2, Since: at,
				Checkers: []health.CheckerStatus{
					{Kind: health.KindHTTP, Up: true, HasRun: true, LastOK: true, Checks: 3, Changed: at},
					{Kind: health.KindMisc, Up: true, Changed: at}}},
		},
	}}
}

func TestStatus(t *testing.T) {
	e := NewEngine(ipvs.NewTable(scheduler.New), nil, nil)
	var out, errb bytes.Buffer
	root := Cred{}
	// Without health checks.
	if code := e.Run([]string{"gvsadm", "--status"}, nil, root, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "runs no health checks") {
		t.Fatalf("no health checks: exit %d, %q", code, errb.String())
	}
	e.Status = statusFixture
	out.Reset()
	errb.Reset()
	if code := e.Run([]string{"gvsadm", "--status"}, nil, root, &out, &errb); code != 0 {
		t.Fatalf("exit %d, %q", code, errb.String())
	}
	want := `SERVICE                 REAL SERVER             STATE            WEIGHT  CHECKER     CHECK  LAST RESULT                                    CHANGED
[198.51.100.10]:tcp:80                          quorum up        2/2
                        [198.18.2.11]:tcp:8080  down             3/0     TCP_CHECK   down   failed: connection failed: connection refused  2026-12-04T18:00:00Z
                        [198.18.2.12]:tcp:8080  up               2/2     HTTP_GET    up     ok                                             2026-12-04T18:00:00Z
                                                                         MISC_CHECK  up     none yet                                       2026-12-04T18:00:00Z
                        [198.18.2.99]:tcp:8080  sorry, inactive  -/-
`
	if got := out.String(); got != want {
		t.Errorf("--status:\n%s\nwant\n%s", got, want)
	}
	// JSON: the engine's Status as is.
	out.Reset()
	if code := e.Run([]string{"gvsadm", "--status", "--json"}, nil, root, &out, &errb); code != 0 {
		t.Fatalf("--json: exit %d", code)
	}
	var back []health.ServiceStatus
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0].Reals[0].Configured != 3 || back[0].Reals[1].Checkers[0].Kind != health.KindHTTP {
		t.Errorf("JSON round trip: %+v", back)
	}
	// Unprivileged callers get ipvsadm's answer; bad arguments a usage error.
	errb.Reset()
	if code := e.Run([]string{"gvsadm", "--status"}, nil, Cred{UID: 1000, GID: 1000}, &out, &errb); code != ExitInit {
		t.Errorf("unprivileged: exit %d", code)
	}
	if code := e.Run([]string{"gvsadm", "--status", "--xml"}, nil, root, &out, &errb); code != 2 {
		t.Errorf("--status --xml: exit %d", code)
	}
}
