package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

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
