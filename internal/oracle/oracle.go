// Package oracle holds what the fuzz tests' oracles share: an RFC 1071
// checksum written independently of package checksum, and a recorder that
// lets a test check that an oracle does fail.
package oracle

import (
	"fmt"
	"testing"
)

// Sum1071 is the RFC 1071 one's complement sum of b, folded, starting
// from s.
func Sum1071(b []byte, s uint32) uint16 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// Pseudo4 is the (unfolded) pseudo-header sum of the IPv4 packet ip for a
// transport segment of protocol proto and length l4len.
func Pseudo4(ip []byte, proto uint8, l4len int) uint32 {
	var s uint32
	for i := 12; i < 20; i += 2 {
		s += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	return s + uint32(proto) + uint32(l4len)
}

// Recorder is a *testing.T whose Fatal and Fatalf record the message and
// stop the code under Catch instead of failing the test: a test runs an
// oracle on a wrong outcome through it and checks that the oracle fails.
type Recorder struct {
	*testing.T
	msg string
}

// Fatalf records the message and unwinds to Catch.
func (f *Recorder) Fatalf(format string, a ...any) {
	f.msg = fmt.Sprintf(format, a...)
	panic(f)
}

// Fatal records the message and unwinds to Catch.
func (f *Recorder) Fatal(a ...any) {
	f.msg = fmt.Sprint(a...)
	panic(f)
}

// Catch runs fn and returns the message of the Fatal or Fatalf that
// stopped it ("" when none did).
func (f *Recorder) Catch(fn func()) (msg string) {
	f.msg = ""
	defer func() {
		if r := recover(); r != nil && r != any(f) {
			panic(r)
		}
		msg = f.msg
	}()
	fn()
	return ""
}
