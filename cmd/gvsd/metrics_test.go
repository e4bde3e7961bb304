package main

import (
	"io"
	"testing"
)

func TestMetricsFlags(t *testing.T) {
	base := []string{"--vip-if", "eth0", "--dip-if", "eth1"}
	o, err := parseFlags(append(base, "--metrics", "127.0.0.1:9475", "--metrics-node-ipvs"), io.Discard)
	if err != nil || o.metrics != "127.0.0.1:9475" || !o.nodeIPVS {
		t.Fatalf("--metrics ADDR --metrics-node-ipvs: %+v %v", o, err)
	}
	if o, err := parseFlags(base, io.Discard); err != nil || o.metrics != "" || o.nodeIPVS {
		t.Fatalf("metrics are off by default: %q %v %v", o.metrics, o.nodeIPVS, err)
	}
	if _, err := parseFlags(append(base, "--metrics-node-ipvs"), io.Discard); err == nil {
		t.Fatal("--metrics-node-ipvs without --metrics accepted")
	}
}
