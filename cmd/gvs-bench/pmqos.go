package main

import (
	"encoding/binary"
	"fmt"
	"os"
)

// holdCPULatency asks the kernel's PM QoS for a CPU wake-up latency of at
// most us microseconds, for as long as the returned release is not called
// (the request lives while /dev/cpu_dma_latency stays open). With 0, idle
// CPUs poll instead of entering a halt state. On a VM whose guest halt
// polling is off, a halted vCPU woken by another CPU's IPI pays a VM exit
// and entry, tens of µs; any design that hands a packet from one CPU to
// another (a userspace forwarder on its own core) pays it on every hop to
// an idle CPU. This is what tuned's latency-performance profile does.
func holdCPULatency(us int) (release func(), err error) {
	f, err := os.OpenFile("/dev/cpu_dma_latency", os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("-cpu-dma-latency: %w", err)
	}
	var v [4]byte
	binary.NativeEndian.PutUint32(v[:], uint32(us))
	if _, err := f.Write(v[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpu-dma-latency: writing %d: %w", us, err)
	}
	return func() { f.Close() }, nil
}
