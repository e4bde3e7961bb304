package control

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// CallTimeout bounds one Call: connecting, sending, and waiting for the
// daemon's answer.
const CallTimeout = 2 * time.Minute

// DialError is returned by Call when the control socket cannot be reached
// (no daemon listens on @Name in this network namespace, or it refuses).
type DialError struct {
	Name string // socket name, without the leading @
	Err  error
}

// Error describes the failure.
func (e *DialError) Error() string {
	return fmt.Sprintf("control: connecting to @%s: %v", e.Name, e.Err)
}

// Unwrap returns the underlying error (a *net.OpError wrapping the errno).
func (e *DialError) Unwrap() error { return e.Err }

// Call sends one command line to the daemon listening on the abstract
// socket @name and returns what it printed and its exit status. argv[0] is
// the program name (the daemon prints it where ipvsadm prints its own
// name). stdin, when not nil, is read to its end (at most MaxStdin bytes)
// and sent along, for -R. A daemon that cannot be reached gives a
// *DialError.
func Call(name string, argv []string, stdin io.Reader) (stdout, stderr []byte, code int, err error) {
	name = strings.TrimPrefix(name, "@")
	req := Request{Argv: argv}
	if stdin != nil {
		req.Stdin, err = io.ReadAll(io.LimitReader(stdin, MaxStdin+1))
		if err != nil {
			return nil, nil, 0, fmt.Errorf("control: reading stdin: %w", err)
		}
		if len(req.Stdin) > MaxStdin {
			return nil, nil, 0, fmt.Errorf("control: stdin larger than %d bytes: %w", MaxStdin, ErrTooLarge)
		}
	}
	payload, err := req.MarshalBinary()
	if err != nil {
		return nil, nil, 0, err
	}
	conn, err := net.DialUnix("unix", nil, socketAddr(name))
	if err != nil {
		return nil, nil, 0, &DialError{Name: name, Err: err}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(CallTimeout))
	// A daemon that rejects the request answers without reading it all:
	// a failed write is reported only if no answer can be read either.
	werr := writeFrame(conn, payload)
	b, rerr := readFrame(conn, MaxResponseSize)
	if rerr != nil {
		if werr != nil {
			return nil, nil, 0, fmt.Errorf("control: sending request to @%s: %w", name, werr)
		}
		if errors.Is(rerr, io.EOF) {
			rerr = io.ErrUnexpectedEOF
		}
		return nil, nil, 0, fmt.Errorf("control: reading response from @%s: %w", name, rerr)
	}
	var resp Response
	if err := resp.UnmarshalBinary(b); err != nil {
		return nil, nil, 0, err
	}
	return resp.Stdout, resp.Stderr, resp.Code, nil
}
