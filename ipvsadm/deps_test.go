package ipvsadm

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The data path reads the model (package ipvs) and never ipvsadm's
// language: none of its packages may depend on this package.
func TestDataPathDoesNotImportIpvsadm(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatalf("no go command to list dependencies: %v", err)
		}
	}
	dataPath := []string{"gvs/forwarder", "gvs/conntrack", "gvs/scheduler", "gvs/rewrite", "gvs/ipvs"}
	for _, pkg := range dataPath {
		out, err := exec.Command(goBin, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 || deps[len(deps)-1] != pkg {
			t.Fatalf("go list -deps %s: unexpected output %q", pkg, out)
		}
		for _, d := range deps {
			if d == "gvs/ipvsadm" {
				t.Errorf("%s depends on gvs/ipvsadm", pkg)
			}
		}
	}
}
