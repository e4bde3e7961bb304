package main

import (
	"encoding/binary"
	"os"
	"testing"

	"gvs/internal/lab"
)

// readCPULatency is the kernel's current CPU latency constraint (the
// strictest request held by anyone), in µs.
func readCPULatency(t *testing.T) int32 {
	t.Helper()
	f, err := os.Open("/dev/cpu_dma_latency")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var v [4]byte
	if _, err := f.Read(v[:]); err != nil {
		t.Fatal(err)
	}
	return int32(binary.NativeEndian.Uint32(v[:]))
}

// -cpu-dma-latency holds the request exactly while the run lasts.
func TestHoldCPULatency(t *testing.T) {
	lab.Require(t) // root: /dev/cpu_dma_latency is root's
	before := readCPULatency(t)
	if before <= 7 {
		t.Skipf("another process holds the CPU latency at %d µs already", before)
	}
	release, err := holdCPULatency(7)
	if err != nil {
		t.Fatal(err)
	}
	if got := readCPULatency(t); got != 7 {
		release()
		t.Fatalf("while held: CPU latency constraint %d µs, want 7", got)
	}
	release()
	if got := readCPULatency(t); got != before {
		t.Fatalf("after release: %d µs, want %d as before", got, before)
	}
}
