package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"gvs/control"
	"gvs/ipvs"
)

// sysctlFlag collects the repeatable --sysctl NAME=VALUE flags.
type sysctlFlag []string

func (f *sysctlFlag) String() string { return strings.Join(*f, " ") }

// Set collects v; applySysctls checks it (so that a bad one is one line,
// without the flag package's usage text).
func (f *sysctlFlag) Set(v string) error {
	*f = append(*f, v)
	return nil
}

// applySysctls makes the settings gvsd starts with: the kernel's
// defaults, then the --sysctl-file (if any), then the --sysctl flags in
// order. It returns the notices for settings gvs stores but does not act
// on, or the first error, in one line.
func applySysctls(file string, flags []string) (*ipvs.Settings, []string, error) {
	s := ipvs.NewSettings()
	var notices []string
	if file != "" {
		n, err := readSysctlFile(s, file)
		if err != nil {
			return nil, nil, err
		}
		notices = append(notices, n...)
	}
	for _, a := range flags {
		n, err := control.SetSysctl(s, a)
		if err != nil {
			return nil, nil, fmt.Errorf("--sysctl %s: %w", a, err)
		}
		if n != "" {
			notices = append(notices, n)
		}
	}
	return s, notices, nil
}

// readSysctlFile applies a file in sysctl.conf(5) syntax: "KEY = VALUE"
// lines with KEY net.ipv4.vs.NAME (or net/ipv4/vs/NAME, or the bare
// NAME); blank lines and lines starting with '#' or ';' are comments; a
// line starting with '-' is applied if it can be and silently skipped if
// not (sysctl.d(5)).
func readSysctlFile(s *ipvs.Settings, path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--sysctl-file: %w", err)
	}
	defer f.Close()
	var notices []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		optional := line[0] == '-'
		if optional {
			line = line[1:]
		}
		notice, err := control.SetSysctl(s, line)
		if err != nil {
			if optional {
				continue
			}
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if notice != "" {
			notices = append(notices, notice)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return notices, nil
}
