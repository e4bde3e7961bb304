package prefetch

import (
	"testing"
	"unsafe"
)

// A prefetch is a hint: it must not fault, not even on a nil pointer (a
// plain load in its place would crash here), and must not change memory.
func TestLineNeverFaults(t *testing.T) {
	buf := []byte{1, 2, 3}
	Line(unsafe.Pointer(&buf[0]))
	Line(nil)
	if buf[0] != 1 || buf[1] != 2 || buf[2] != 3 {
		t.Fatalf("prefetch changed memory: %v", buf)
	}
}

func BenchmarkLine(b *testing.B) {
	var x [64]byte
	for i := 0; i < b.N; i++ {
		Line(unsafe.Pointer(&x))
	}
}
