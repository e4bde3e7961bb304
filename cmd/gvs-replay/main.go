// Command gvs-replay runs gvs's forwarding pipeline over a capture file.
//
//	gvs-replay --rules FILE --in IN.pcap[ng] --out OUT.pcapng [--verdicts FILE] [--facts FILE]
//	           [--script FILE [--script-out FILE]]
//
// Every frame of IN goes through exactly the code the daemon runs on its
// rings, with the capture's timestamps as the clock, so connection timeouts
// replay deterministically. OUT receives what the director would transmit
// (pcapng, one interface per director link: vip0, dip0 by default, each frame
// recorded on its egress interface); VERDICTS gets one JSON line per input
// frame. The director's facts (links, addresses, MACs, MTU, neighbours) come
// from --facts or the flags below; see staticenv.Facts for the defaults.
//
// --script FILE runs ipvsadm commands at given capture times, through the
// daemon's own ipvsadm engine, one "SECONDS ARGS..." per line (seconds
// after the first frame); each command's output, after a line
// "== SECONDS ARGS...", goes to --script-out or else to stdout (before the
// summary). See replay.Script and the README ("Replaying a capture").
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"gvs/forwarder/replay"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "gvs-replay:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "gvs-replay:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gvs-replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o replay.Options
	fs.StringVar(&o.Rules, "rules", "", "rules file in ipvsadm-save format (required)")
	fs.StringVar(&o.In, "in", "", "input capture, pcap or pcapng (required)")
	fs.StringVar(&o.Out, "out", "", "output pcapng of transmitted frames (required)")
	fs.StringVar(&o.Verdicts, "verdicts", "", "write one JSON verdict per input frame to this file")
	fs.StringVar(&o.FactsFile, "facts", "", "director facts file (JSON); flags below override it")
	fs.StringVar(&o.VIPIf, "vip-if", "", "VIP-side interface as name,mac,addr/len[,mtu] (default vip0,02:00:c6:12:01:01,198.18.1.1/24,1500)")
	fs.StringVar(&o.DIPIf, "dip-if", "", "DIP-side interface as name,mac,addr/len[,mtu] (default dip0,02:00:c6:12:02:01,198.18.2.1/24,1500)")
	fs.Var(&o.Neighbors, "neigh", "neighbour IP=MAC (repeatable); others get 02:00:<IPv4 bytes>")
	fs.StringVar(&o.Gateway, "gateway", "", "next hop on the VIP side for addresses outside both links")
	fs.IntVar(&o.ConnCapacity, "conn-capacity", 0, "connection table capacity (default: the daemon's)")
	fs.StringVar(&o.Script, "script", "", "run the ipvsadm commands of this file at their capture times (\"SECONDS ARGS...\" per line)")
	fs.StringVar(&o.ScriptOut, "script-out", "", "write the script's output to this file (default: stdout)")
	fs.BoolVar(&o.Summary, "summary", true, "print a summary and ipvsadm -Ln style counters at the end")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gvs-replay --rules FILE --in IN.pcap --out OUT.pcapng [--verdicts FILE] [--facts FILE] [--script FILE [--script-out FILE]]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if o.Rules == "" || o.In == "" || o.Out == "" {
		fs.Usage()
		return usageError{errors.New("--rules, --in and --out are required")}
	}
	if o.ScriptOut != "" && o.Script == "" {
		return usageError{errors.New("--script-out needs --script")}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	res, err := replay.Run(o)
	if err != nil {
		return err
	}
	if o.Script != "" && o.ScriptOut == "" {
		if _, err := stdout.Write(res.ScriptOutput); err != nil {
			return err
		}
	}
	if o.Summary {
		res.WriteSummary(stdout)
	}
	return nil
}
