// Command gvs-pcapgen writes the replay regression inputs under testdata/replay:
// one folder per behaviour with `rules` (ipvsadm-save format) and `in.pcapng`
// (two interfaces: vip0 = index 0, dip0 = index 1, as in the lab), and
// optionally `facts.json` and `script` (ipvsadm commands at capture times,
// see gvs-replay --script). The golden outputs next to them (out.pcapng,
// verdicts.jsonl, and script.out for a case with a script) are produced by the
// pipeline itself (`make golden`) and reviewed by the tests in package
// forwarder, which decode them independently with gopacket.
//
// Frames are built with gopacket (internal/frames), not with gvs's own code.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func main() {
	out := flag.String("out", "testdata/replay", "folder to write the cases into")
	only := flag.String("case", "", "write only this case")
	flag.Parse()
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if *only != "" && n != *only {
			continue
		}
		c := cases[n]()
		if err := c.write(filepath.Join(*out, n)); err != nil {
			log.Fatalf("%s: %v", n, err)
		}
		fmt.Printf("%-16s %3d frames\n", n, len(c.frames))
	}
}

// Epoch is the capture time of every case's first frame.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type frame struct {
	at    time.Duration // since Epoch
	iface int           // 0 = vip0, 1 = dip0
	data  []byte
}

type scenario struct {
	rules string
	facts string // optional facts.json content
	// script is an optional gvs-replay script ("SECONDS ARGS..." lines,
	// seconds after the first frame, which is at Epoch+1ms); the golden
	// test replays it and compares its output with script.out.
	script string
	// capacity is the connection table's capacity for the replay (file
	// conn-capacity, gvs-replay --conn-capacity); 0: the default.
	capacity int
	now      time.Duration
	frames   []frame
}

// at moves the scenario clock forward.
func (s *scenario) after(d time.Duration) { s.now += d }

// at sets the scenario clock so that the next frame is d after the first
// one (the origin of script times); frames must already have been added.
func (s *scenario) at(d time.Duration) { s.now = s.frames[0].at + d - time.Millisecond }

func (s *scenario) in(b []byte) {
	s.now += time.Millisecond
	s.frames = append(s.frames, frame{s.now, 0, b})
}

// inSame adds a frame arriving on the VIP side at the same instant as the
// previous one (a burst).
func (s *scenario) inSame(b []byte) {
	s.frames = append(s.frames, frame{s.now, 0, b})
}

func (s *scenario) out(b []byte) {
	s.now += time.Millisecond
	s.frames = append(s.frames, frame{s.now, 1, b})
}

func (s *scenario) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "rules"), []byte(s.rules), 0o644); err != nil {
		return err
	}
	if s.facts != "" {
		if err := os.WriteFile(filepath.Join(dir, "facts.json"), []byte(s.facts), 0o644); err != nil {
			return err
		}
	}
	if s.script != "" {
		if err := os.WriteFile(filepath.Join(dir, "script"), []byte(s.script), 0o644); err != nil {
			return err
		}
	}
	if s.capacity != 0 {
		if err := os.WriteFile(filepath.Join(dir, "conn-capacity"), []byte(strconv.Itoa(s.capacity)+"\n"), 0o644); err != nil {
			return err
		}
	}
	f, err := os.Create(filepath.Join(dir, "in.pcapng"))
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := pcapgo.NewNgWriterInterface(f, ngIface("vip0"), ngOptions)
	if err != nil {
		return err
	}
	if _, err := w.AddInterface(ngIface("dip0")); err != nil {
		return err
	}
	for _, fr := range s.frames {
		ci := gopacket.CaptureInfo{Timestamp: Epoch.Add(fr.at), CaptureLength: len(fr.data), Length: len(fr.data), InterfaceIndex: fr.iface}
		if err := w.WritePacket(ci, fr.data); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

var ngOptions = pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Hardware: "any", OS: "linux", Application: "gvs-pcapgen"}}

func ngIface(name string) pcapgo.NgInterface {
	return pcapgo.NgInterface{Name: name, OS: "linux", LinkType: layers.LinkTypeEthernet, TimestampResolution: 9}
}
