package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
)

func mustMarshal(t testing.TB, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{},
		{Argv: []string{"ipvsadm"}},
		{Argv: []string{"ipvsadm", "-A", "-t", "198.51.100.10:80", ""}, Stdin: []byte("-C\n")},
		{Argv: []string{"gvsadm", "-R"}, Stdin: bytes.Repeat([]byte{0, 0xff}, 1000)},
	} {
		b := mustMarshal(t, &r)
		var got Request
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%q: %v", r.Argv, err)
		}
		if !slices.Equal(got.Argv, r.Argv) && !(len(got.Argv) == 0 && len(r.Argv) == 0) || !bytes.Equal(got.Stdin, r.Stdin) {
			t.Errorf("round trip: got %q %q, want %q %q", got.Argv, got.Stdin, r.Argv, r.Stdin)
		}
		// The decoded request does not alias the payload.
		for i := range b {
			b[i] = 0xAA
		}
		if len(got.Stdin) > 0 && !bytes.Equal(got.Stdin, r.Stdin) {
			t.Error("decoded stdin aliases the payload")
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, r := range []Response{
		{},
		{Code: 255, Stderr: []byte("Service already exists\n")},
		{Code: -1, Stdout: []byte("x"), Stderr: nil},
	} {
		var got Response
		if err := got.UnmarshalBinary(mustMarshal(t, &r)); err != nil {
			t.Fatal(err)
		}
		if got.Code != r.Code || !bytes.Equal(got.Stdout, r.Stdout) || !bytes.Equal(got.Stderr, r.Stderr) {
			t.Errorf("got %+v, want %+v", got, r)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := mustMarshal(t, &Request{Argv: []string{"ipvsadm", "-L"}, Stdin: []byte("ab")})
	huge := []byte{wireVersion, kindRequest, 0xff, 0xff, 0xff, 0xff}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version", append([]byte{9}, valid[1:]...)},
		{"kind", append([]byte{wireVersion, kindResponse}, valid[2:]...)},
		{"truncated", valid[:len(valid)-1]},
		{"trailing", append(slices.Clone(valid), 0)},
		{"argc beyond payload", huge},
		{"string beyond payload", []byte{wireVersion, kindRequest, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff}},
	} {
		var r Request
		if err := r.UnmarshalBinary(tc.b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err %v, want malformed", tc.name, err)
		}
	}
	var resp Response
	if err := resp.UnmarshalBinary(valid); !errors.Is(err, errMalformed) {
		t.Errorf("request decoded as response: %v", err)
	}
}

func TestMarshalLimits(t *testing.T) {
	r := Request{Argv: []string{"ipvsadm", "-R"}, Stdin: make([]byte, MaxRequestSize)}
	if _, err := r.MarshalBinary(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize stdin: %v", err)
	}
	r = Request{Argv: make([]string, maxArgs+1)}
	if _, err := r.MarshalBinary(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too many args: %v", err)
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	if err := writeFrame(&buf, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	b, err := readFrame(bytes.NewReader(buf.Bytes()), 5)
	if err != nil || string(b) != "hello" {
		t.Fatalf("readFrame = %q, %v", b, err)
	}
	if _, err := readFrame(bytes.NewReader(buf.Bytes()), 4); !errors.Is(err, ErrTooLarge) {
		t.Errorf("limit: %v", err)
	}
	if _, err := readFrame(bytes.NewReader(buf.Bytes()[:7]), 5); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short payload: %v", err)
	}
	if _, err := readFrame(bytes.NewReader(nil), 5); !errors.Is(err, io.EOF) {
		t.Errorf("no frame: %v", err)
	}
}

// FuzzRequest: decoding never panics, and whatever decodes re-encodes to
// the same bytes (the encoding is canonical).
func FuzzRequest(f *testing.F) {
	for _, r := range []Request{
		{},
		{Argv: []string{"ipvsadm", "-Ln"}},
		{Argv: []string{"ipvsadm", "-R"}, Stdin: []byte("-A -t 198.51.100.10:80\n")},
	} {
		b, _ := r.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{wireVersion, kindRequest, 0xff, 0xff, 0xff, 0xff})             // argc far beyond the payload
	f.Add([]byte{wireVersion, kindRequest, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}) // string length overflow
	f.Add([]byte{wireVersion})                                                  // short header
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoded %x, want %x", out, b)
		}
	})
}

// FuzzResponse is FuzzRequest for responses.
func FuzzResponse(f *testing.F) {
	for _, r := range []Response{{}, {Code: 255, Stderr: []byte("No such service\n")}, {Code: 2, Stdout: []byte("x")}} {
		b, _ := r.MarshalBinary()
		f.Add(b)
	}
	f.Add(binary.BigEndian.AppendUint32([]byte{wireVersion, kindResponse, 0, 0, 0, 0}, 1<<31)) // stdout length overflow
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Response
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoded %x, want %x", out, b)
		}
	})
}

func BenchmarkRequestDecode(b *testing.B) {
	payload, _ := (&Request{Argv: []string{"ipvsadm", "-R"}, Stdin: bytes.Repeat([]byte("-a -t 198.51.100.10:80 -r 198.18.2.11 -m\n"), 1000)}).MarshalBinary()
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		var r Request
		if err := r.UnmarshalBinary(payload); err != nil {
			b.Fatal(err)
		}
	}
}
