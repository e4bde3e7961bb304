package health

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Scripts (MISC_CHECK, notify_up/notify_down, quorum_up/quorum_down) never run with gvsd's
// privileges. They are forked from a throwaway OS thread that first drops its own capabilities
// (Linux capabilities are per thread): ambient cleared, and, unless the script runs as a
// configured user (whose setuid clears the capabilities itself), SECBIT_NOROOT set so that
// exec as root grants nothing, the bounding set emptied and the effective, permitted and
// inheritable sets cleared. The thread is never returned to the Go scheduler: it exits with its
// goroutine. Each script runs in its own process group, so a timeout kills everything it
// started.

// startUnprivileged starts cmd from a thread without capabilities.
func startUnprivileged(cmd *exec.Cmd, asUser bool) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if err := dropThreadCaps(asUser); err != nil {
			errc <- err
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

func dropThreadCaps(asUser bool) error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return os.NewSyscallError("prctl PR_CAP_AMBIENT_CLEAR_ALL", err)
	}
	if asUser {
		return nil // the child's setuid to a non-root user clears its capabilities
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.NewSyscallError("capget", err)
	}
	const setpcap = 1 << (unix.CAP_SETPCAP % 32)
	if data[0].Effective&setpcap != 0 {
		bits, err := unix.PrctlRetInt(unix.PR_GET_SECUREBITS, 0, 0, 0, 0)
		if err == nil {
			const noroot, norootLocked = 1 << 0, 1 << 1
			if err := unix.Prctl(unix.PR_SET_SECUREBITS, uintptr(bits|noroot|norootLocked), 0, 0, 0); err != nil {
				return os.NewSyscallError("prctl PR_SET_SECUREBITS", err)
			}
		}
		for c := 0; c <= unix.CAP_LAST_CAP; c++ {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				return os.NewSyscallError("prctl PR_CAPBSET_DROP", err)
			}
		}
	}
	data = [2]unix.CapUserData{}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return os.NewSyscallError("capset", err)
	}
	return nil
}

// runScript runs argv and waits for it. With a timeout, the process group gets SIGTERM when it
// passes and SIGKILL 2 s later (check_misc.c); ctx cancellation kills at once.
func runScript(ctx context.Context, s Script, timeout time.Duration) (ScriptExit, error) {
	ex := ScriptExit{}
	if len(s.Argv) == 0 {
		return ex, errors.New("empty script")
	}
	ex.Path = s.Argv[0]
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.User {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: s.UID, Gid: s.GID, Groups: []uint32{}}
	}
	if err := startUnprivileged(cmd, s.User); err != nil {
		return ex, err
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var tc <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		tc = t.C
	}
	var err error
	select {
	case err = <-done:
	case <-tc:
		ex.TimedOut = true
		unix.Kill(-pgid, unix.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(2 * time.Second):
			unix.Kill(-pgid, unix.SIGKILL)
			err = <-done
		}
	case <-ctx.Done():
		ex.TimedOut = true
		unix.Kill(-pgid, unix.SIGKILL)
		err = <-done
	}
	// Whatever the script left behind in its group goes too.
	unix.Kill(-pgid, unix.SIGKILL)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return ex, err
	}
	st := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case st.Exited():
		ex.Code = st.ExitStatus()
	case st.Signaled():
		ex.Signal = int(st.Signal())
	}
	return ex, nil
}

// ExecRunner is the ScriptRunner gvsd uses: scripts run asynchronously, unprivileged, each in
// its own process group.
type ExecRunner struct {
	Logger  *zap.Logger
	Timeout time.Duration // 0: no timeout (keepalived does not time notify scripts out)
}

// Run starts s in the background.
func (r ExecRunner) Run(s Script) {
	go func() {
		ex, err := runScript(context.Background(), s, r.Timeout)
		if r.Logger == nil {
			return
		}
		if err != nil {
			r.Logger.Warn("script failed to run", zap.Strings("argv", s.Argv), zap.Error(err))
		} else if ex.Code != 0 || ex.Signal != 0 || ex.TimedOut {
			r.Logger.Info("script ended", zap.Strings("argv", s.Argv), zap.Int("status", ex.Code),
				zap.Int("signal", ex.Signal), zap.Bool("timed_out", ex.TimedOut))
		}
	}()
}

// MiscProbe is MISC_CHECK: the script's exit status decides (0 up, 1 down; with Dynamic, 2..255
// is up with weight exit-2, otherwise down). A script still running after Timeout
// (misc_timeout; keepalived defaults it to the virtual server's delay_loop) is killed, process
// group and all, and counts as a failure.
type MiscProbe struct {
	Script  Script
	Timeout time.Duration
	Dynamic bool
}

// Kind is MISC_CHECK.
func (*MiscProbe) Kind() Kind { return KindMisc }

// Steps is 1.
func (*MiscProbe) Steps() int { return 1 }

// ScriptPath is the script, for keepalived's log line.
func (p *MiscProbe) ScriptPath() string {
	if len(p.Script.Argv) == 0 {
		return ""
	}
	return p.Script.Argv[0]
}

// Check runs the script.
func (p *MiscProbe) Check(ctx context.Context, _ int) Result {
	ex, err := runScript(ctx, p.Script, p.Timeout)
	if err != nil {
		return Result{Err: &ProbeError{Msg: "failed to run", Err: err}, Exit: &ex}
	}
	switch {
	case ex.TimedOut:
		return Result{Err: &ProbeError{Msg: "timed out"}, Exit: &ex}
	case ex.Signal != 0:
		return Result{Err: &ProbeError{Msg: "killed by signal " + syscall.Signal(ex.Signal).String()}, Exit: &ex}
	case ex.Code == 0:
		return Result{Exit: &ex}
	case p.Dynamic && ex.Code >= 2 && ex.Code <= 255:
		return Result{HasWeight: true, Weight: ex.Code - 2, Exit: &ex}
	}
	return Result{Err: &ProbeError{Msg: "exited with status " + strconv.Itoa(ex.Code)}, Exit: &ex}
}
