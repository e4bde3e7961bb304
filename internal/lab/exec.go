package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runIP runs `ip args...` and returns an error carrying its output.
func runIP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Exec returns a command that runs name with args inside namespace ns
// (through `ip netns exec`, which also gives it the namespace's /sys). The
// caller starts and waits for it; nothing tracks it.
func (l *Lab) Exec(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// ExecContext is Exec with a context that kills the command.
func (l *Lab) ExecContext(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs name with args inside ns and returns its combined stdout and
// stderr. A failure's error includes that output.
func (l *Lab) Run(ctx context.Context, ns, name string, args ...string) (string, error) {
	out, err := l.ExecContext(ctx, ns, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Output runs name with args inside ns and returns its stdout only; stderr
// goes into the error on failure.
func (l *Lab) Output(ctx context.Context, ns, name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := l.ExecContext(ctx, ns, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// ErrExited is returned by Proc.WaitFor when the process ends before
// printing the awaited text.
var ErrExited = errors.New("process exited")

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 3 * time.Second

// maxProcOutput bounds the output a Proc keeps (the oldest half is dropped).
const maxProcOutput = 1 << 20

// Proc is a background process started inside a lab namespace with Start.
// Its stdout and stderr are collected together.
type Proc struct {
	NS  string
	cmd *exec.Cmd

	mu      sync.Mutex
	out     []byte
	changed chan struct{} // closed and replaced on every write

	done    chan struct{} // closed when the process has been waited for
	waitErr error         // valid after done
}

// Write collects output; it implements io.Writer for exec.Cmd.
func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, b...)
	if len(p.out) > maxProcOutput {
		p.out = append(p.out[:0], p.out[len(p.out)-maxProcOutput/2:]...)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	return len(b), nil
}

// Start starts name with args inside namespace ns in the background. Close
// stops it if the caller has not. The process gets SIGKILL if the calling
// program dies, so a crashed test leaves no server holding a namespace.
func (l *Lab) Start(ns, name string, args ...string) (*Proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: Start after Close")
	}
	p := &Proc{NS: ns, changed: make(chan struct{}), done: make(chan struct{})}
	// `ip netns exec` execs the command in place, so the pid is the
	// command's own and signals reach it.
	p.cmd = l.Exec(ns, name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s in %s: %w", name, ns, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	l.procs = append(l.procs, p)
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output returns what the process has printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

// WaitFor waits until the process has printed a complete line containing
// substr and returns that line. It fails with ErrExited (wrapped, with the
// output) if the process ends first, or with ctx's error.
func (p *Proc) WaitFor(ctx context.Context, substr string) (string, error) {
	for {
		p.mu.Lock()
		out, changed := string(p.out), p.changed
		p.mu.Unlock()
		for line := range strings.Lines(out) {
			if strings.HasSuffix(line, "\n") && strings.Contains(line, substr) {
				return strings.TrimSuffix(line, "\n"), nil
			}
		}
		select {
		case <-changed:
		case <-p.done:
			// Output written just before exit may not have been seen.
			p.mu.Lock()
			final := string(p.out)
			p.mu.Unlock()
			if final != out {
				continue
			}
			return "", fmt.Errorf("waiting for %q: %w (%v): %s", substr, ErrExited, p.waitErr, strings.TrimSpace(out))
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q: %w: %s", substr, ctx.Err(), strings.TrimSpace(out))
		}
	}
}

// Stop sends SIGTERM, waits up to a few seconds, then sends SIGKILL. It
// returns the process's exit error unless the process ended because of
// Stop's own signal. Stop may be called more than once.
func (p *Proc) Stop() error {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.exitErr()
}

// Wait waits for the process to exit by itself and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

func (p *Proc) exitErr() error {
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
			(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
			return nil
		}
	}
	return p.waitErr
}
