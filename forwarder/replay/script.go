package replay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"gvs/conntrack"
	"gvs/control"
	"gvs/ipvs"
)

// A Script is a list of ipvsadm commands to run at given times of a replay
// (gvs-replay --script). Its text has one command per line:
//
//	SECONDS ARGS...
//
// SECONDS is a decimal number of seconds (digits, optionally a point and up
// to nine more digits) counted from the timestamp of the capture's first
// frame; ARGS are ipvsadm's arguments as gvsadm takes them ("-Lnc",
// "-d -t 198.51.100.10:80 -r 198.18.2.11:80", "--set 900 120 300"). The
// words are split at blanks: there is no quoting and no escaping. When the
// first word of ARGS is a program name (ipvsadm, gvsadm, ipvsadm-save,
// ipvsadm-restore) it is argv[0]; otherwise argv[0] is "ipvsadm". Blank
// lines and lines whose first non-blank character is '#' are ignored.
//
// Times must not decrease: a command earlier than the one before it is an
// error (the script is rejected, not sorted). Commands with equal times run
// in the order they are written.
type Script []Command

// Command is one line of a Script.
type Command struct {
	Line    int           // line number in the script, from 1
	Seconds string        // SECONDS as written
	At      time.Duration // SECONDS after the first frame
	Args    []string      // the words after SECONDS
	Argv    []string      // program name, then ipvsadm's arguments
}

// programs are the words accepted as argv[0] at the start of ARGS.
var programs = map[string]bool{"ipvsadm": true, "gvsadm": true, "ipvsadm-save": true, "ipvsadm-restore": true}

// LoadScript reads a script file.
func LoadScript(path string) (Script, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	s, err := ParseScript(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseScript reads a script (see Script for the format).
func ParseScript(r io.Reader) (Script, error) {
	var s Script
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		words := strings.Fields(sc.Text())
		if len(words) == 0 || strings.HasPrefix(words[0], "#") {
			continue
		}
		at, err := parseSeconds(words[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if k := len(s); k > 0 && at < s[k-1].At {
			return nil, fmt.Errorf("line %d: time %s is before the previous command's %s (times must not decrease)",
				n, words[0], s[k-1].Seconds)
		}
		args := words[1:]
		argv := args
		if len(argv) == 0 || !programs[argv[0]] {
			argv = append([]string{"ipvsadm"}, args...)
		}
		s = append(s, Command{Line: n, Seconds: words[0], At: at, Args: args, Argv: argv})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// parseSeconds reads SECONDS exactly (no floating point): digits, and
// optionally a point followed by 1 to 9 digits.
func parseSeconds(w string) (time.Duration, error) {
	bad := fmt.Errorf("bad time %q: want decimal seconds such as 2 or 1.5", w)
	whole, frac, hasFrac := strings.Cut(w, ".")
	if whole == "" || !allDigits(whole) || (hasFrac && (frac == "" || len(frac) > 9 || !allDigits(frac))) {
		return 0, bad
	}
	sec, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || sec > math.MaxInt64/int64(time.Second)-1 {
		return 0, fmt.Errorf("bad time %q: too large", w)
	}
	ns := int64(0)
	if hasFrac {
		f, _ := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		ns = f
	}
	return time.Duration(sec)*time.Second + time.Duration(ns), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// rootCred is the identity scripted commands run with.
var rootCred = control.Cred{UID: 0, GID: 0}

// HousekeepingInterval is how often the daemon's housekeeping expires the
// connection table (daemon.housekeeping); a replay does it on the capture
// clock at the same pace.
const HousekeepingInterval = 100 * time.Millisecond

// DefenseInterval is the period of the connection table's defenses
// (conntrack.Defense.Tick, the daemon's defend): a replay runs them on the
// capture clock every DefenseInterval from the first frame's time, after
// the housekeeping step of the same time.
const DefenseInterval = time.Second

// maxHousekeeping bounds the housekeeping steps run in one gap between two
// frames or commands (about 28 hours): a longer gap runs the first ones
// and jumps to the end.
const maxHousekeeping = 1_000_000

// clock drives a replay's timers on the capture clock, in time order: the
// connection table's expiry every HousekeepingInterval from the first
// frame's time, as the daemon's housekeeping does (the replay also expires
// the table right before each frame), and with a script its commands and
// the rate estimator. The commands run through the same control.Engine as
// the daemon's control socket, with the engine's clock at the command's
// time. The estimator samples the counters at the first frame's time (the
// baseline: the counters are zero, as when IPVS starts a service's
// estimator) and every control.EstimatorInterval after it. At equal times:
// housekeeping, then the estimator, then commands, then the frame.
type clock struct {
	conns   *conntrack.Table
	started bool
	t0      int64 // the first frame's time (ns since the epoch)
	hkNext  int64 // the next housekeeping step

	defense *conntrack.Defense // nil: none
	defNext int64              // its next tick

	// With a script:
	cmds    Script
	next    int // index of the next command to run
	eng     *control.Engine
	now     int64 // the engine's clock
	estNext int64 // the estimator's next sample
	out     *bufio.Writer
}

// newClock makes the clock of a replay; s may be empty.
func newClock(conns *conntrack.Table, table *ipvs.Table, settings *ipvs.Settings, s Script, out io.Writer) *clock {
	c := &clock{conns: conns}
	if len(s) > 0 {
		c.cmds, c.out = s, bufio.NewWriter(out)
		c.eng = control.NewEngine(table, conns, func() int64 { return c.now })
		c.eng.Settings = settings
	}
	return c
}

// start fixes the time origin at the first frame's time.
func (c *clock) start(t0 int64) {
	c.t0, c.started = t0, true
	c.hkNext = t0 + int64(HousekeepingInterval)
	c.defNext = t0 + int64(DefenseInterval)
	c.estNext = t0
}

// pending reports whether commands are left.
func (c *clock) pending() bool { return c.next < len(c.cmds) }

func (c *clock) cmdAt() int64 { return c.t0 + int64(c.cmds[c.next].At) }

// advance runs, in time order, every timer and command due at or before
// now. With last, now is ignored and advance runs every command left, with
// the timers due before each.
func (c *clock) advance(now int64, last bool) error {
	for {
		limit := now
		if last {
			if !c.pending() {
				return nil
			}
			limit = c.cmdAt()
		}
		var at int64
		cmd := false
		switch {
		case c.eng != nil && c.estNext <= limit && (!c.pending() || c.estNext <= c.cmdAt()):
			at = c.estNext
		case c.pending() && c.cmdAt() <= limit:
			at, cmd = c.cmdAt(), true
		default:
			c.housekeep(limit)
			return nil
		}
		c.housekeep(at)
		if !cmd {
			c.now = at
			c.eng.TickEstimator()
			c.estNext += int64(control.EstimatorInterval)
			continue
		}
		if err := c.run(at, &c.cmds[c.next]); err != nil {
			return err
		}
		c.next++
	}
}

// housekeep runs the housekeeping steps due at or before t.
func (c *clock) housekeep(t int64) {
	iv := int64(HousekeepingInterval)
	for n := 0; c.hkNext <= t; n++ {
		if n == maxHousekeeping {
			c.hkNext += (t - c.hkNext) / iv * iv
		}
		c.conns.Expire(c.hkNext)
		if c.defense != nil && c.defNext <= c.hkNext {
			// DefenseInterval is a multiple of HousekeepingInterval: the
			// tick falls on a housekeeping step (after a jump, on the
			// first one at or after it).
			c.defense.Tick(c.hkNext)
			dv := int64(DefenseInterval)
			c.defNext += ((c.hkNext-c.defNext)/dv + 1) * dv
		}
		c.hkNext += iv
	}
}

// run executes one command at capture time at and writes its output: a
// header line "== SECONDS ARGS...", what the command printed on stdout,
// then what it printed on stderr (each ending in a newline), then
// "exit N" if its exit status N is not 0.
func (c *clock) run(at int64, cmd *Command) error {
	c.now = at
	c.conns.Expire(at) // as before a frame
	var stdout, stderr bytes.Buffer
	code := c.eng.Run(cmd.Argv, bytes.NewReader(nil), rootCred, &stdout, &stderr)
	fmt.Fprintf(c.out, "== %s", cmd.Seconds)
	for _, a := range cmd.Args {
		fmt.Fprintf(c.out, " %s", a)
	}
	c.out.WriteByte('\n')
	for _, b := range [][]byte{stdout.Bytes(), stderr.Bytes()} {
		if len(b) == 0 {
			continue
		}
		c.out.Write(b)
		if b[len(b)-1] != '\n' {
			c.out.WriteByte('\n')
		}
	}
	if code != 0 {
		fmt.Fprintf(c.out, "exit %d\n", code)
	}
	return c.out.Flush()
}
