package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"
)

// ErrUnsupported is wrapped by Check's error when this machine cannot run a
// lab.
var ErrUnsupported = errors.New("lab unsupported")

// Check reports why a lab cannot be built here (not root, no `ip` command,
// no network namespaces), or nil.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root", ErrUnsupported)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: iproute2 `ip` not found", ErrUnsupported)
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("%w: no network namespaces: %v", ErrUnsupported, err)
	}
	return nil
}

// Require stops a test that needs a lab when Check fails: with t.Skip
// normally, and with t.Fatal when the environment variable CI is "true",
// where a missing capability is a failure.
func Require(tb testing.TB) {
	tb.Helper()
	if err := Check(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true: %v", err)
		}
		tb.Skip(err)
	}
}

// Build compiles the main package pkg (an import path such as
// "gvs/cmd/gvs-testsrv") into dir and returns the binary's path. It uses the
// `go` command found in PATH.
func Build(ctx context.Context, dir, pkg string) (string, error) {
	out := filepath.Join(dir, path.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return out, nil
}
