package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"gvs/daemon"
)

func TestParseFlags(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseFlags([]string{"--vip-if", "eth0", "--dip-if", "eth1", "--ring-frames", "512", "--pprof", "127.0.0.1:0", "--workers", "2"}, &stderr)
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	if o.cfg.VIPIf != "eth0" || o.cfg.DIPIf != "eth1" || o.cfg.RingFrames != 512 || o.pprof != "127.0.0.1:0" || o.cfg.Workers != 2 {
		t.Fatalf("parsed %+v pprof=%q", o.cfg, o.pprof)
	}
	if o, err := parseFlags([]string{"--vip-if", "eth0", "--dip-if", "eth1", "--busy-poll", "200us"}, &stderr); err != nil || o.cfg.BusyPoll != 200*time.Microsecond {
		t.Fatalf("--busy-poll 200us: %v, %v", o.cfg.BusyPoll, err)
	}
	if _, err := parseFlags([]string{"--vip-if", "eth0", "--dip-if", "eth1", "--busy-poll", "-1s"}, &stderr); err == nil {
		t.Fatal("negative --busy-poll accepted")
	}
	if o, err := parseFlags([]string{"--vip-if", "eth0", "--dip-if", "eth1", "--arp", "off"}, &stderr); err != nil || o.cfg.ARP != daemon.ARPOff {
		t.Fatalf("--arp off: %v, %v", o.cfg.ARP, err)
	}
	if _, err := parseFlags([]string{"--vip-if", "eth0", "--dip-if", "eth1", "--arp", "yes"}, &stderr); err == nil {
		t.Fatal("--arp yes accepted")
	}
	if _, err := parseFlags([]string{"--dip-if", "eth1"}, &stderr); err == nil {
		t.Fatal("missing --vip-if accepted")
	}
	if code := run([]string{"--bogus"}, &stderr, &stderr); code != 2 || !strings.Contains(stderr.String(), "bogus") {
		t.Fatalf("bad flag: exit %d, stderr %q", code, stderr.String())
	}
}

// TestHelp: --help prints the manual (all man page sections and every
// option) on stdout and exits 0; a bad flag is one line on stderr.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{arg}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
			t.Fatalf("%s: exit %d, stderr %q", arg, code, stderr.String())
		}
		man := stdout.String()
		for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "FILES", "EXIT STATUS", "SEE ALSO"} {
			if !strings.Contains(man, "\n"+section+"\n") && !strings.HasPrefix(man, section+"\n") {
				t.Errorf("%s: no %s section", arg, section)
			}
		}
		for _, opt := range []string{"--vip-if IF", "--dip-if IF", "--rules FILE", "--socket NAME", "--admin-gid", "--sysctl NAME=VALUE", "--help", "SIGHUP", "gvsadm --reload"} {
			if !strings.Contains(man, opt) {
				t.Errorf("%s: manual lacks %q", arg, opt)
			}
		}
		for line := range strings.Lines(man) {
			if len(strings.TrimSuffix(line, "\n")) > 80 {
				t.Errorf("line longer than 80 columns: %q", line)
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--vip-if"}, &stdout, &stderr); code != 2 || strings.Count(stderr.String(), "\n") != 1 || stdout.Len() != 0 {
		t.Fatalf("--vip-if without a value: exit %d, stderr %q", code, stderr.String())
	}
}

func TestStatusText(t *testing.T) {
	for _, c := range []struct {
		svcs, dests int
		pps         float64
		want        string
	}{
		{0, 0, 0, "0 services, 0 real servers, 0 pps"},
		{1, 1, 12.4, "1 service, 1 real server, 12 pps"},
		{12, 48, 1234, "12 services, 48 real servers, 1.2 kpps"},
		{2, 6, 1.25e6, "2 services, 6 real servers, 1.2 Mpps"},
	} {
		if got := statusText(c.svcs, c.dests, c.pps); got != c.want {
			t.Errorf("statusText(%d, %d, %v) = %q, want %q", c.svcs, c.dests, c.pps, got, c.want)
		}
	}
}

// TestNotifierReload: RELOADING=1 with MONOTONIC_USEC, then READY=1; a
// failed reload ends with READY=1 and its reason, which later STATUS=
// lines repeat until a reload succeeds.
func TestNotifierReload(t *testing.T) {
	var sent []string
	n := &notifier{log: zap.NewNop(), send: func(s string) error { sent = append(sent, s); return nil }}
	if err := n.reload(func() error { return nil }); err != nil || len(sent) != 2 ||
		!strings.HasPrefix(sent[0], "RELOADING=1\nMONOTONIC_USEC=") || sent[1] != "READY=1" {
		t.Fatalf("good reload: %v %q", err, sent)
	}
	sent = nil
	if err := n.reload(func() error { return errors.New("rules: line 2: bad\nmore") }); err == nil || len(sent) != 2 ||
		sent[1] != "READY=1\nSTATUS=reload failed: rules: line 2: bad; more" {
		t.Fatalf("failed reload: %v %q", err, sent)
	}
	n.status("1 service, 1 real server, 0 pps")
	if last := sent[len(sent)-1]; last != "STATUS=1 service, 1 real server, 0 pps; last reload failed: rules: line 2: bad; more" {
		t.Fatalf("status after a failed reload: %q", last)
	}
	_ = n.reload(func() error { return nil })
	n.status("x")
	if last := sent[len(sent)-1]; last != "STATUS=x" {
		t.Fatalf("status after a good reload: %q", last)
	}
	n.stopping()
	n.stopping()
	if last := sent[len(sent)-1]; last != "STOPPING=1\nSTATUS=stopping" || sent[len(sent)-2] == last {
		t.Fatalf("stopping: %q", sent)
	}
}
