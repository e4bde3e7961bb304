package daemon

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"

	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/scheduler"
)

const raceRules = `-A -t 198.51.100.10:80 -s rr
-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m
-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 2
-A -u 198.51.100.10:53 -s wrr
-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m
`

// gvsadm-style commands an operator runs on the control socket while the
// daemon reloads: they touch the file's services, and one of their own.
var raceCommands = []string{
	"-d -t 198.51.100.10:80 -r 198.18.2.12:8080",
	"-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 2",
	"-a -t 198.51.100.10:80 -r 198.18.2.13:8080 -m",
	"-e -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 7",
	"-E -t 198.51.100.10:80 -s wlc",
	"-D -u 198.51.100.10:53",
	"-A -u 198.51.100.10:53 -s wrr",
	"-a -u 198.51.100.10:53 -r 198.18.2.11:5353 -m",
	"-A -t 198.51.100.99:80 -s rr",
	"-D -t 198.51.100.99:80",
}

func saveTable(tb *ipvs.Table) string {
	var b bytes.Buffer
	tb.Read(func(svcs []*ipvs.Service) { _ = ipvsadm.WriteSave(&b, svcs, true) })
	return b.String()
}

// TestReloadConcurrentCommands runs reloads of a rules file while
// gvsadm-style commands change the same services. The reload's difference
// is computed and applied in one transaction, so no command can slip in
// between: no reload fails because a command changed the table under it
// (a deleted real server it meant to edit, a service it meant to add),
// none reads a service's configuration while a command writes it (run
// with -race), and a last reload leaves exactly the file's table.
func TestReloadConcurrentCommands(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules")
	if err := os.WriteFile(path, []byte(raceRules), 0o644); err != nil {
		t.Fatal(err)
	}
	table := ipvs.NewTable(scheduler.New)
	d := &Daemon{table: table, cfg: Config{RulesFile: path}, log: zap.NewNop()}
	if err := d.reloadTable(); err != nil {
		t.Fatal(err)
	}
	want := saveTable(table)
	cmds := make([][]*ipvsadm.Command, len(raceCommands))
	for i, c := range raceCommands {
		var err error
		if cmds[i], err = ipvsadm.ParseRules(strings.NewReader(c + "\n")); err != nil {
			t.Fatal(c, err)
		}
	}
	// The commands run for as long as the reloads do (two goroutines, so
	// that one is always between a reload's steps).
	const rounds = 300
	var wg sync.WaitGroup
	errs := make(chan error, rounds)
	done := make(chan struct{})
	wg.Add(3)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 0; i < rounds; i++ {
			if err := d.reloadTable(); err != nil {
				errs <- err
			}
		}
	}()
	for g := uint64(0); g < 2; g++ {
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(3, g))
			for {
				select {
				case <-done:
					return
				default:
				}
				_ = ipvsadm.ApplyAll(table, cmds[rng.IntN(len(cmds))]) // may fail: the table moves under it
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("reload failed under concurrent commands: %v", err)
	}
	if err := d.reloadTable(); err != nil {
		t.Fatal(err)
	}
	if got := saveTable(table); got != want {
		t.Fatalf("after the last reload:\n%s\nwant the file's table:\n%s", got, want)
	}
}
