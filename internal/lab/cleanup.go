package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// markerDir holds one file per live lab, named by its suffix, with the
// owner's pid and start time. Cleanup leaves namespaces of live owners alone,
// so a `make demo` or a parallel test package never removes a running lab.
const markerDir = "/run/gvs-lab"

// procStartTime returns field 22 of /proc/PID/stat (start time in clock
// ticks since boot), which tells a process from a later one with the same pid.
func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", errors.New("malformed stat")
	}
	return f[19], nil // field 22 overall; f[0] is field 3
}

func writeMarker(suffix string) error {
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	st, err := procStartTime(os.Getpid())
	if err != nil {
		return fmt.Errorf("lab: own start time: %w", err)
	}
	data := fmt.Sprintf("%d %s\n", os.Getpid(), st)
	if err := os.WriteFile(filepath.Join(markerDir, suffix), []byte(data), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// ownerAlive reports whether the lab with this suffix has a live owner.
func ownerAlive(suffix string) bool {
	if suffix == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(markerDir, suffix))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return false
	}
	st, err := procStartTime(pid)
	return err == nil && st == f[1]
}

// Cleanup removes the namespaces that a lab with this prefix would create
// (prefix + "b", "d", "cN" or "rN" + "-" + a 6-hex-digit suffix; see
// Options.Prefix) and that do not belong to a live lab, with every process
// still inside them and all their links. Other namespaces, even with the same
// prefix, are never touched. It returns the namespaces it removed.
// Call it before New in demo or benchmark drivers to clear what crashed runs
// left behind. An empty prefix is refused.
func Cleanup(prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("lab: Cleanup needs a non-empty prefix")
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	bySuffix := map[string][]string{}
	for _, e := range entries {
		if sfx, ok := labName(prefix, e.Name()); ok {
			bySuffix[sfx] = append(bySuffix[sfx], e.Name())
		}
	}
	var removed []string
	var errs []error
	for sfx, names := range bySuffix {
		if ownerAlive(sfx) {
			continue
		}
		// The bridge namespace goes first so its veth ends take the
		// peers with them.
		slices.SortFunc(names, func(a, b string) int {
			return strings.Compare(bridgeFirst(prefix, a), bridgeFirst(prefix, b))
		})
		if err := removeRun(sfx, names); err != nil {
			errs = append(errs, err)
		}
		removed = append(removed, names...)
	}
	slices.Sort(removed)
	return removed, errors.Join(errs...)
}

// labName reports whether ns is a namespace name a lab with prefix creates,
// and returns its suffix.
func labName(prefix, ns string) (suffix string, ok bool) {
	rest, ok := strings.CutPrefix(ns, prefix)
	if !ok {
		return "", false
	}
	role, sfx, ok := strings.Cut(rest, "-")
	if !ok || len(sfx) != suffixLen || strings.Trim(sfx, "0123456789abcdef") != "" {
		return "", false
	}
	switch {
	case role == "b" || role == "d":
		return sfx, true
	case len(role) >= 2 && (role[0] == 'c' || role[0] == 'r'):
		n, err := strconv.Atoi(role[1:])
		return sfx, err == nil && n >= 1 && strconv.Itoa(n) == role[1:]
	}
	return "", false
}

// bridgeFirst sorts bridge namespaces (prefix+"b-") before the others.
func bridgeFirst(prefix, ns string) string {
	if strings.HasPrefix(ns, prefix+"b-") {
		return "0" + ns
	}
	return "1" + ns
}

// removeRun kills the processes inside namespaces, deletes their links and
// the namespaces, and removes the marker of suffix. It keeps going after
// errors.
func removeRun(suffix string, namespaces []string) error {
	var errs []error
	// Processes first: a process inside a namespace keeps it, and its
	// links, alive after `ip netns del`.
	var killed []int
	for _, ns := range namespaces {
		pids, err := nsPids(ns)
		if err != nil {
			errs = append(errs, err)
		}
		for _, pid := range pids {
			if pid == os.Getpid() {
				continue
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	waitGone(killed, 2*time.Second)

	// Links next: deleting one end of a veth deletes the other, so nothing
	// survives even if something else still holds a namespace open.
	for _, ns := range namespaces {
		if err := deleteLinks(ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range namespaces {
		if err := runIP("netns", "del", ns); err != nil {
			if _, serr := os.Stat(NSPath(ns)); serr == nil {
				errs = append(errs, err)
			}
		}
	}
	if suffix != "" {
		if err := os.Remove(filepath.Join(markerDir, suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// nsPids lists the processes whose network namespace is ns, as
// `ip netns pids` does: by comparing /proc/PID/ns/net with the named file.
func nsPids(ns string) ([]int, error) {
	var want syscall.Stat_t
	if err := syscall.Stat(NSPath(ns), &want); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns/net"), &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// waitGone waits until none of pids exists any more, or timeout passes.
func waitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			if syscall.Kill(pid, 0) != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// deleteLinks deletes every interface but lo in namespace ns.
func deleteLinks(ns string) error {
	if _, err := os.Stat(NSPath(ns)); err != nil {
		return nil
	}
	var names []string
	if err := Do(ns, func() error {
		ifs, err := net.Interfaces()
		for _, ifi := range ifs {
			if ifi.Flags&net.FlagLoopback == 0 {
				names = append(names, ifi.Name)
			}
		}
		return err
	}); err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if err := runIP("-n", ns, "link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
