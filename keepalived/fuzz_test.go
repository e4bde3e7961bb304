package keepalived

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"gvs/ipvs"
)

// FuzzParse: the parser never panics, and the IPVS-facing part survives a
// round trip: rendering the programmed state as a keepalived.conf
// (WriteConf) and reading that back gives the same ipvsadm -S output.
func FuzzParse(f *testing.F) {
	confs, _ := filepath.Glob("testdata/*/keepalived.conf")
	for _, p := range confs {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("virtual_server 2001:db8::1 443 { protocol SCTP\nlvs_method TUN type gre csum\npersistence_granularity 64\nreal_server 2001:db8::2 443 { weight 0 }\n}\n"))
	f.Add([]byte("virtual_server fwmark 9 { lvs_sched mh\nmh-fallback\nflag-3\nlb_kind TUN\nreal_server 10.0.0.1 { } sorry_server 10.0.0.9 80\nquorum 5 }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Parse("fuzz.conf", data, nil, Options{})
		var save1 bytes.Buffer
		if err := WriteSave(&save1, c, SaveOptions{State: AllUp, Sorted: true}); err != nil {
			t.Fatal(err)
		}
		WriteSave(&bytes.Buffer{}, c, SaveOptions{State: Startup})
		if c.ExitCode() == ExitAbort {
			return
		}
		// A NAT destination without a port in a group keeps port 0, which
		// a non-group virtual_server cannot express (it takes the
		// service's port): such configurations do not round-trip.
		for _, p := range c.Programmed(AllUp) {
			for _, d := range p.Dests {
				if d.Method == ipvs.Masq && d.Port == 0 && p.Config.FWMark == 0 && p.Config.Port != 0 {
					return
				}
			}
		}
		var conf bytes.Buffer
		if err := WriteConf(&conf, c, AllUp); err != nil {
			t.Fatal(err)
		}
		c2 := Parse("dump.conf", conf.Bytes(), nil, Options{})
		var save2 bytes.Buffer
		if err := WriteSave(&save2, c2, SaveOptions{State: AllUp, Sorted: true}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(save1.Bytes(), save2.Bytes()) {
			t.Fatalf("round trip differs\n--- input\n%s\n--- dump\n%s--- diags\n%v\n--- first\n%s--- second\n%s", data, conf.Bytes(), c2.Diags, save1.Bytes(), save2.Bytes())
		}
	})
}
