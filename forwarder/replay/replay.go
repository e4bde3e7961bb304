// Package replay runs gvs's pipeline over a capture file: the engine of
// cmd/gvs-replay and of the golden-pcap regression tests.
package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"gvs/conntrack"
	"gvs/control"
	"gvs/forwarder"
	"gvs/forwarder/staticenv"
	"gvs/ipvs"
	"gvs/ipvsadm"
	"gvs/scheduler"
)

// Seed keys the connection table's hash and the random schedulers in a
// replay, so that a replay gives the same output every time.
const Seed = 0x6776735f7265706c // "gvs_repl"

// Options are gvs-replay's inputs.
type Options struct {
	Rules     string // rules file (ipvsadm-save format)
	In        string // pcap or pcapng
	Out       string // pcapng to write
	Verdicts  string // JSON lines to write ("" = none)
	FactsFile string // director facts (JSON); "" = defaults
	// Overrides of the facts, "name,mac,addr/len[,mtu]".
	VIPIf, DIPIf string
	Neighbors    NeighborFlags
	Gateway      string
	ConnCapacity int
	Summary      bool
	// Script is a file of ipvsadm commands to run at given capture times
	// ("" = none; see Script). Their output goes to Result.ScriptOutput and,
	// when ScriptOut is set, to that file.
	Script    string
	ScriptOut string
}

// NeighborFlags collects repeated --neigh IP=MAC flags.
type NeighborFlags map[string]string

func (n *NeighborFlags) String() string { return fmt.Sprint(map[string]string(*n)) }

// Set adds one IP=MAC pair.
func (n *NeighborFlags) Set(v string) error {
	ip, mac, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want IP=MAC, got %q", v)
	}
	if *n == nil {
		*n = NeighborFlags{}
	}
	(*n)[strings.TrimSpace(ip)] = strings.TrimSpace(mac)
	return nil
}

// Verdict is one line of the verdicts file.
type Verdict struct {
	Index    int    `json:"index"`
	Action   string `json:"action"`
	Egress   string `json:"egress,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Dest     string `json:"dest,omitempty"`
	Method   string `json:"method,omitempty"`
	Conn     string `json:"conn,omitempty"` // "new" or "existing"
	Dir      string `json:"dir,omitempty"`  // "in" or "out"
	State    string `json:"state,omitempty"`
	Active   *int32 `json:"active,omitempty"`
	Inactive *int32 `json:"inactive,omitempty"`
	// Frags is the number of IPv4 fragments the packet left as (0: one
	// frame, not fragmented); out.pcapng holds every one.
	Frags int `json:"frags,omitempty"`
}

// Result is what a replay did.
type Result struct {
	Frames   int
	Actions  map[string]uint64
	Reasons  map[string]uint64
	Pipeline *forwarder.Pipeline
	// ScriptOutput is what the script's commands printed (see ReplayScript).
	ScriptOutput []byte
}

// facts builds the director facts from the defaults, --facts and the flags.
func (o *Options) facts() (staticenv.Facts, error) {
	f := staticenv.DefaultFacts()
	if o.FactsFile != "" {
		var err error
		if f, err = staticenv.LoadFacts(o.FactsFile); err != nil {
			return f, err
		}
	}
	for _, ov := range []struct {
		spec string
		lf   *staticenv.LinkFacts
	}{{o.VIPIf, &f.VIPIf}, {o.DIPIf, &f.DIPIf}} {
		if ov.spec == "" {
			continue
		}
		parts := strings.Split(ov.spec, ",")
		if len(parts) < 3 || len(parts) > 4 {
			return f, fmt.Errorf("interface %q: want name,mac,addr/len[,mtu]", ov.spec)
		}
		ov.lf.Name, ov.lf.MAC, ov.lf.Addr = parts[0], parts[1], parts[2]
		if len(parts) == 4 {
			mtu, err := strconv.Atoi(parts[3])
			if err != nil {
				return f, fmt.Errorf("interface %q: bad mtu", ov.spec)
			}
			ov.lf.MTU = mtu
		}
	}
	if len(o.Neighbors) > 0 && f.Neighbors == nil {
		f.Neighbors = map[string]string{}
	}
	for ip, mac := range o.Neighbors {
		f.Neighbors[ip] = mac
	}
	if o.Gateway != "" {
		f.Gateway = o.Gateway
	}
	return f, nil
}

// LoadRules reads a rules file into a new service table whose schedulers are
// seeded for reproducible replays.
func LoadRules(path string) (*ipvs.Table, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return ParseRules(fh, path)
}

// ParseRules is LoadRules from a reader; name is used in errors.
func ParseRules(r io.Reader, name string) (*ipvs.Table, error) {
	cmds, err := ipvsadm.ParseRules(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	t := ipvs.NewTable(func(n string, f ipvs.SvcFlags) (ipvs.Scheduler, error) {
		return scheduler.NewSeeded(n, f, Seed)
	})
	if err := ipvsadm.ApplyAll(t, cmds); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// Run replays o.In through the pipeline.
func Run(o Options) (*Result, error) {
	facts, err := o.facts()
	if err != nil {
		return nil, err
	}
	table, err := LoadRules(o.Rules)
	if err != nil {
		return nil, err
	}
	var script Script
	if o.Script != "" {
		if script, err = LoadScript(o.Script); err != nil {
			return nil, err
		}
	}
	in, err := os.ReadFile(o.In)
	if err != nil {
		return nil, err
	}
	var out, verdicts, sout bytes.Buffer
	res, err := ReplayScript(table, facts, o.ConnCapacity, in, &out, &verdicts, script, &sout)
	if err != nil {
		return nil, err
	}
	res.ScriptOutput = sout.Bytes()
	if err := os.WriteFile(o.Out, out.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if o.Verdicts != "" {
		if err := os.WriteFile(o.Verdicts, verdicts.Bytes(), 0o644); err != nil {
			return nil, err
		}
	}
	if o.ScriptOut != "" {
		if err := os.WriteFile(o.ScriptOut, sout.Bytes(), 0o644); err != nil {
			return nil, err
		}
	}
	return res, nil
}

type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// Replay runs the capture in (pcap or pcapng bytes) through a pipeline made
// of table and facts, writing the transmitted frames as pcapng to out and
// the verdicts as JSON lines to verdicts.
func Replay(table *ipvs.Table, facts staticenv.Facts, capacity int, in []byte, out, verdicts io.Writer) (*Result, error) {
	return ReplayScript(table, facts, capacity, in, out, verdicts, nil, nil)
}

// ReplayScript is Replay that also runs script's commands as the capture
// clock reaches their times, through the ipvsadm engine of the daemon's
// control socket (control.Engine, as root) over the replay's tables, and
// writes their output to scriptOut (see clock.run for the format).
// A command runs before any frame at or after its time; the commands left
// after the last frame run at their times, as if the capture went on
// without frames. Before each command the connection table is expired up
// to the command's time, so that listings and counters show what the
// daemon's would at that moment. A failing command is part of the output,
// not an error of the replay. A non-empty script needs at least one frame
// (its times count from the first frame's).
func ReplayScript(table *ipvs.Table, facts staticenv.Facts, capacity int, in []byte, out, verdicts io.Writer,
	script Script, scriptOut io.Writer) (*Result, error) {
	env, err := staticenv.New(facts)
	if err != nil {
		return nil, err
	}
	conns := conntrack.New(conntrack.Config{Seed: Seed, Capacity: capacity, Shards: 16})
	// The IPVS sysctls at the kernel's defaults; a script may change them
	// (--sysctl) like gvsadm does on a daemon.
	settings := ipvs.NewSettings()
	def := control.BindSettings(settings, conns, table)
	pl := forwarder.New(forwarder.Config{Env: env, Services: table, Conns: conns, Settings: settings})
	w := pl.NewWorker()
	clk := newClock(conns, table, settings, script, scriptOut)
	clk.defense = def

	var rd packetReader
	linkOf := func(int) int { return forwarder.VIPSide }
	if len(in) >= 4 && bytes.Equal(in[:4], []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		ng, err := pcapgo.NewNgReader(bytes.NewReader(in), pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("reading pcapng: %w", err)
		}
		if ng.LinkType() != layers.LinkTypeEthernet {
			return nil, fmt.Errorf("capture link type %v: only Ethernet is supported", ng.LinkType())
		}
		rd = ng
		links := env.Links()
		linkOf = func(i int) int {
			if intf, err := ng.Interface(i); err == nil {
				for side := range links {
					if intf.Name != "" && intf.Name == links[side].Name {
						return side
					}
				}
			}
			if i == forwarder.DIPSide {
				return forwarder.DIPSide
			}
			return forwarder.VIPSide
		}
	} else {
		pc, err := pcapgo.NewReader(bytes.NewReader(in))
		if err != nil {
			return nil, fmt.Errorf("reading pcap: %w", err)
		}
		if pc.LinkType() != layers.LinkTypeEthernet {
			return nil, fmt.Errorf("capture link type %v: only Ethernet is supported", pc.LinkType())
		}
		rd = pc
	}

	links := env.Links()
	ngw, err := pcapgo.NewNgWriterInterface(out, ngIface(links[0].Name), ngOptions)
	if err != nil {
		return nil, err
	}
	if _, err := ngw.AddInterface(ngIface(links[1].Name)); err != nil {
		return nil, err
	}
	vw := bufio.NewWriter(verdicts)
	enc := json.NewEncoder(vw)

	res := &Result{Pipeline: pl}
	buf := make([]byte, forwarder.Headroom+65536+64)
	for i := 0; ; i++ {
		data, ci, err := rd.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("frame %d: %w", i, err)
		}
		if len(data) > 65536 {
			data = data[:65536]
		}
		now := ci.Timestamp.UnixNano()
		if !clk.started {
			clk.start(now)
		}
		if err := clk.advance(now, false); err != nil {
			return nil, err
		}
		conns.Expire(now)
		// Datagrams whose reassembly timed out: their ICMP errors go
		// out before the frame (no verdict line: they answer no frame).
		for {
			r, ok := w.Expire(now)
			if !ok {
				break
			}
			if r.Action == forwarder.Reply {
				oci := gopacket.CaptureInfo{Timestamp: ci.Timestamp, CaptureLength: len(r.Frame), Length: len(r.Frame), InterfaceIndex: r.Link}
				if err := ngw.WritePacket(oci, r.Frame); err != nil {
					return nil, err
				}
			}
		}
		n := copy(buf[forwarder.Headroom:], data)
		r := w.Process(buf, forwarder.Headroom, n, linkOf(ci.InterfaceIndex), false, now)
		v := verdict(i, r, links)
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
		if r.Action == forwarder.Transmit || r.Action == forwarder.Reply {
			for i := range max(int(r.Frags), 1) { // fragments: several frames for one
				f := r.Frame
				if r.Frags != 0 {
					f = w.Fragment(i)
				}
				oci := gopacket.CaptureInfo{Timestamp: ci.Timestamp, CaptureLength: len(f), Length: len(f), InterfaceIndex: r.Link}
				if err := ngw.WritePacket(oci, f); err != nil {
					return nil, err
				}
			}
		}
		res.Frames++
	}
	if clk.pending() && !clk.started {
		return nil, errors.New("a script needs a capture with at least one frame: its times count from the first frame's")
	}
	if err := clk.advance(0, true); err != nil {
		return nil, err
	}
	if err := ngw.Flush(); err != nil {
		return nil, err
	}
	if err := vw.Flush(); err != nil {
		return nil, err
	}
	res.Actions, res.Reasons = forwarder.Totals(w)
	return res, nil
}

func verdict(i int, r forwarder.Result, links *[2]forwarder.Link) Verdict {
	v := Verdict{Index: i, Action: r.Action.String(), Reason: r.Reason.String()}
	if r.Action == forwarder.Transmit || r.Action == forwarder.Reply {
		v.Egress = links[r.Link].Name
		v.Frags = int(r.Frags)
	}
	if d := r.Dest; d != nil {
		v.Dest = d.AddrPort().String()
		v.Method = r.Method.String()
		v.Conn = "existing"
		if r.New {
			v.Conn = "new"
		}
		v.Dir = "in"
		if r.Out {
			v.Dir = "out"
		}
		v.State = r.State.String()
		a, in := d.ActiveConns.Load(), d.InactConns.Load()
		v.Active, v.Inactive = &a, &in
	}
	return v
}

var ngOptions = pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Hardware: "any", OS: "linux", Application: "gvs-replay"}}

func ngIface(name string) pcapgo.NgInterface {
	return pcapgo.NgInterface{Name: name, OS: "linux", LinkType: layers.LinkTypeEthernet, TimestampResolution: 9}
}

// WriteSummary prints what the replay did and the services' counters in
// ipvsadm -Ln --stats and -Ln form.
func (r *Result) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "frames: %d\n", r.Frames)
	for _, a := range []string{"transmit", "reply", "drop", "pass", "control"} {
		if c := r.Actions[a]; c != 0 {
			fmt.Fprintf(w, "  %-10s %d\n", a, c)
		}
	}
	if len(r.Reasons) > 0 {
		fmt.Fprintln(w, "reasons:")
		for i := forwarder.Reason(1); i < forwarder.NumReasons; i++ {
			if c := r.Reasons[i.String()]; c != 0 {
				fmt.Fprintf(w, "  %-24s %d\n", i.String(), c)
			}
		}
	}
	svcs := r.Pipeline.Services().Services()
	ipvsadm.WriteList(w, svcs, ipvsadm.ListOptions{Numeric: true}, nil)
	ipvsadm.WriteList(w, svcs, ipvsadm.ListOptions{Numeric: true, Stats: true}, nil)
}
