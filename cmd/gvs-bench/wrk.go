package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what gvs-bench takes from wrk's output.
type wrkResult struct {
	Requests    float64 // completed requests
	RPS         float64 // Requests/sec
	P50, P99    time.Duration
	SocketError int // connect+read+write+timeout errors
	Non2xx      int
}

// parseWrkDuration parses wrk's latency values ("812.00us", "1.23ms",
// "2.00s", "1.50m").
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		scale  float64
	}{{"us", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk duration %q: %w", s, err)
			}
			return time.Duration(f * u.scale), nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q: unknown unit", s)
}

// parseWrk reads `wrk --latency` output. Requests/sec and the request
// count are required; the latency percentiles and error lines are taken
// when present.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, haveReq bool
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk Requests/sec %q: %w", f[1], err)
			}
			r.RPS, haveRPS = v, true
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return r, fmt.Errorf("wrk request count %q: %w", f[0], err)
			}
			r.Requests, haveReq = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.P50 = d
			} else {
				r.P99 = d
			}
		case len(f) >= 2 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.Atoi(strings.TrimSuffix(f[i+1], ","))
				if err != nil {
					return r, fmt.Errorf("wrk socket errors %q: %w", strings.TrimSpace(line), err)
				}
				r.SocketError += n
			}
		case len(f) >= 2 && f[0] == "Non-2xx":
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return r, fmt.Errorf("wrk non-2xx %q: %w", strings.TrimSpace(line), err)
			}
			r.Non2xx = n
		}
	}
	if !haveRPS || !haveReq {
		return r, fmt.Errorf("wrk: no result in output: %q", out)
	}
	return r, nil
}

// nginxConfig is a minimal single-process nginx serving "ok" on port 80,
// with every path inside dir.
func nginxConfig(dir string) string {
	return fmt.Sprintf(`worker_processes 1;
master_process off;
daemon off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	keepalive_requests 1000000;
	server {
		listen 80 backlog=8192;
		location / { return 200 "ok\n"; }
	}
}
`, dir)
}

// haproxyConfig is HAProxy in TCP mode on vip:port, round robin over reals.
func haproxyConfig(vip string, port int, reals []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
	maxconn 8000
	nbthread 1
defaults
	mode tcp
	timeout connect 2s
	timeout client 10s
	timeout server 10s
frontend fe
	bind %s:%d
	default_backend be
backend be
	balance roundrobin
`, vip, port)
	for i, r := range reals {
		fmt.Fprintf(&b, "\tserver r%d %s:%d\n", i+1, r, port)
	}
	return b.String()
}
