package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The control protocol: one request and one response per connection, each
// a frame of a 4-byte big-endian payload length and the payload. Payloads
// start with a version byte and a kind byte; strings and byte strings are a
// 4-byte big-endian length and the bytes; integers are big-endian.
//
//	request:  version=1 kind=1 argc:u32 argc*(len:u32 bytes) stdin(len:u32 bytes)
//	response: version=1 kind=2 code:i32 stdout(len:u32 bytes) stderr(len:u32 bytes)

// Frame size limits.
const (
	// MaxRequestSize bounds a request payload: the -R rules (MaxStdin)
	// plus room for the arguments.
	MaxRequestSize = MaxStdin + 1<<20
	// MaxResponseSize bounds a response payload the client accepts (a -Lnc
	// of millions of connections is tens of megabytes).
	MaxResponseSize = 1 << 30
	// maxArgs bounds the number of arguments of a request.
	maxArgs = 1 << 16
)

const (
	wireVersion  = 1
	kindRequest  = 1
	kindResponse = 2
)

// Errors of the wire format.
var (
	// ErrTooLarge is returned when a frame exceeds its size limit.
	ErrTooLarge = errors.New("control: frame too large")
	// errMalformed wraps every decoding failure.
	errMalformed = errors.New("control: malformed frame")
)

// Request is one command line for the daemon.
type Request struct {
	// Argv is the command line; Argv[0] is the program name.
	Argv []string
	// Stdin is the standard input (the rules of -R), possibly empty.
	Stdin []byte
}

// Response is the outcome of a Request.
type Response struct {
	// Code is the exit status.
	Code int
	// Stdout and Stderr are the output, byte for byte.
	Stdout, Stderr []byte
}

// MarshalBinary encodes the request payload (without the frame length).
func (r *Request) MarshalBinary() ([]byte, error) {
	if len(r.Argv) > maxArgs {
		return nil, fmt.Errorf("control: %d arguments: %w", len(r.Argv), ErrTooLarge)
	}
	n := 2 + 4 + 4 + len(r.Stdin)
	for _, a := range r.Argv {
		n += 4 + len(a)
	}
	if n > MaxRequestSize {
		return nil, fmt.Errorf("control: request of %d bytes: %w", n, ErrTooLarge)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, kindRequest)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Argv)))
	for _, a := range r.Argv {
		b = appendBytes(b, []byte(a))
	}
	return appendBytes(b, r.Stdin), nil
}

// UnmarshalBinary decodes a request payload. It never panics; malformed
// input gives an error.
func (r *Request) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	d.header(kindRequest)
	argc := d.u32()
	// Each argument takes at least 4 bytes: a count the payload cannot
	// hold is rejected before anything is allocated.
	if d.err == nil && (argc > maxArgs || uint64(argc)*4 > uint64(len(d.b))) {
		d.fail("argument count %d", argc)
	}
	var argv []string
	if d.err == nil {
		argv = make([]string, 0, argc)
		for i := uint32(0); i < argc && d.err == nil; i++ {
			argv = append(argv, string(d.bytes()))
		}
	}
	stdin := d.bytes()
	if err := d.finish(); err != nil {
		return err
	}
	r.Argv, r.Stdin = argv, append([]byte(nil), stdin...)
	return nil
}

// MarshalBinary encodes the response payload.
func (r *Response) MarshalBinary() ([]byte, error) {
	n := 2 + 4 + 4 + len(r.Stdout) + 4 + len(r.Stderr)
	if n > MaxResponseSize {
		return nil, fmt.Errorf("control: response of %d bytes: %w", n, ErrTooLarge)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, kindResponse)
	b = binary.BigEndian.AppendUint32(b, uint32(int32(r.Code)))
	b = appendBytes(b, r.Stdout)
	return appendBytes(b, r.Stderr), nil
}

// UnmarshalBinary decodes a response payload. It never panics.
func (r *Response) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	d.header(kindResponse)
	code := int32(d.u32())
	stdout := d.bytes()
	stderr := d.bytes()
	if err := d.finish(); err != nil {
		return err
	}
	r.Code = int(code)
	r.Stdout = append([]byte(nil), stdout...)
	r.Stderr = append([]byte(nil), stderr...)
	return nil
}

func appendBytes(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// decoder reads a payload; the first error sticks and later reads return
// zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, a...))
	}
}

func (d *decoder) header(kind byte) {
	if len(d.b) < 2 {
		d.fail("short header")
		return
	}
	if d.b[0] != wireVersion {
		d.fail("version %d, want %d", d.b[0], wireVersion)
		return
	}
	if d.b[1] != kind {
		d.fail("kind %d, want %d", d.b[1], kind)
		return
	}
	d.b = d.b[2:]
}

func (d *decoder) u32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.fail("truncated")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

// bytes returns a length-prefixed byte string aliasing the payload.
func (d *decoder) bytes() []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(d.b)) {
		d.fail("length %d beyond the %d bytes left", n, len(d.b))
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// writeFrame writes one frame.
func writeFrame(w io.Writer, payload []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// readFrame reads one frame of at most max payload bytes. A larger frame
// gives ErrTooLarge (with the announced size) without reading its payload.
func readFrame(r io.Reader, max int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, &frameSizeError{size: n, max: max}
	}
	// Grow with what arrives instead of allocating the announced size:
	// a peer that announces a large frame and sends little costs little.
	buf := bytes.NewBuffer(make([]byte, 0, min(int(n), 64<<10)))
	if _, err := io.CopyN(buf, r, int64(n)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

// frameSizeError is an announced frame size over the limit.
type frameSizeError struct {
	size uint32
	max  int
}

func (e *frameSizeError) Error() string {
	return fmt.Sprintf("control: frame of %d bytes exceeds the limit of %d", e.size, e.max)
}

func (e *frameSizeError) Unwrap() error { return ErrTooLarge }
