package keepalived

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each directory under testdata holds a keepalived.conf (and whatever it
// includes) with expectations written from keepalived's documented
// behaviour and source, not from this package's output:
//
//	diags         keepalived's messages, one a line, then "exit N"
//	save          ipvsadm -S -n lines once every check passed (program order)
//	save.startup  the same before any check ran (optional)
//	save.sorted   the AllUp state in ipvsadm -S order (optional)
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/keepalived.conf")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, conf := range dirs {
		dir := filepath.Dir(conf)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			cfg, err := LoadFS(os.DirFS(dir), "keepalived.conf", nil, Options{ConfigID: "lb1"})
			if err != nil {
				t.Fatal(err)
			}
			checkDiags(t, dir, cfg)
			checkSave(t, dir, "save", cfg, SaveOptions{State: AllUp})
			checkSave(t, dir, "save.startup", cfg, SaveOptions{State: Startup})
			checkSave(t, dir, "save.sorted", cfg, SaveOptions{State: AllUp, Sorted: true})
		})
	}
}

func checkDiags(t *testing.T, dir string, cfg *Config) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(dir, "diags"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, d := range cfg.Diags {
		b.WriteString(d.String() + "\n")
	}
	fmt.Fprintf(&b, "exit %d\n", cfg.ExitCode())
	if got := b.String(); got != string(want) {
		t.Errorf("diagnostics differ\n--- got\n%s--- want\n%s", got, want)
	}
}

func checkSave(t *testing.T, dir, name string, cfg *Config, o SaveOptions) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(dir, name))
	if os.IsNotExist(err) && name != "save" {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteSave(&b, cfg, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("%s differs\n--- got\n%s--- want\n%s", name, b.Bytes(), want)
	}
}

// WriteSave prints ipvsadm -S's lines: sh with flag-3 alone keeps the
// " -b " with no names after it, as ipvsadm prints it for such a service.
func TestWriteSaveSchedFlagsOnlyFlag3(t *testing.T) {
	c := parseString(t, "virtual_server 10.1.2.3 80 {\n protocol TCP\n lvs_sched sh\n flag-3\n lvs_method DR\n real_server 10.0.0.1 80 {\n }\n}\n")
	var b bytes.Buffer
	if err := WriteSave(&b, c, SaveOptions{State: AllUp}); err != nil {
		t.Fatal(err)
	}
	want := "-A -t 10.1.2.3:80 -s sh -b \n-a -t 10.1.2.3:80 -r 10.0.0.1:80 -g -w 1\n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
}
