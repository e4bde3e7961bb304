package oracle

import "testing"

// RFC 1071 §3's example: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
func TestSum1071(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Sum1071(b, 0); got != 0xddf2 {
		t.Errorf("sum = %#04x, want 0xddf2", got)
	}
	// Odd length: the last byte is the high byte of a zero-padded word.
	if got := Sum1071(b[:7], 0); got != 0xdcfb {
		t.Errorf("odd-length sum = %#04x, want 0xdcfb", got)
	}
}

func TestRecorderCatches(t *testing.T) {
	rec := &Recorder{T: t}
	if msg := rec.Catch(func() { rec.Fatalf("x %d", 1) }); msg != "x 1" {
		t.Errorf("Fatalf caught %q", msg)
	}
	if msg := rec.Catch(func() { rec.Fatal("y") }); msg != "y" {
		t.Errorf("Fatal caught %q", msg)
	}
	if msg := rec.Catch(func() {}); msg != "" {
		t.Errorf("nothing failed, caught %q", msg)
	}
}
