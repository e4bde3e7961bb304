package ipvsadm

import (
	"strings"
	"testing"

	"gvs/internal/ipvstest"
	"gvs/ipvs"
)

var newFakeSched = ipvstest.NewFakeSched

// mustApply parses and applies command lines to t.
func mustApply(t testing.TB, tab *ipvs.Table, lines ...string) {
	t.Helper()
	for _, l := range lines {
		c, err := ParseArgs(strings.Fields(l))
		if err != nil {
			t.Fatalf("ParseArgs(%q): %v", l, err)
		}
		if err := Apply(tab, c); err != nil {
			t.Fatalf("Apply(%q): %v", l, err)
		}
	}
}

func key(s string) ipvs.ServiceKey {
	c, err := ParseArgs(append([]string{"-D"}, strings.Fields(s)...))
	if err != nil {
		panic(err)
	}
	return c.Service.ServiceKey
}
