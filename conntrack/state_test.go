package conntrack

import (
	"strings"
	"testing"
)

// The transition tables exactly as IPVS.md §3 prints them. The test parses
// this text instead of reusing the implementation's arrays.
const specNormal = `
            sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
INPUT  syn  sSR  sES  sES  sSR  sSR  sSR  sSR  sSR  sSR  sSR  sSR
       fin  sCL  sCW  sSS  sTW  sTW  sTW  sCL  sCW  sLA  sLI  sTW
       ack  sES  sES  sSS  sES  sFW  sTW  sCL  sCW  sCL  sLI  sES
       rst  sCL  sCL  sCL  sSR  sCL  sCL  sCL  sCL  sLA  sLI  sSR
OUTPUT syn  sSS  sES  sSS  sSR  sSS  sSS  sSS  sSS  sSS  sLI  sSR
       fin  sTW  sFW  sSS  sTW  sFW  sTW  sCL  sTW  sLA  sLI  sTW
       ack  sES  sES  sSS  sES  sFW  sTW  sCL  sCW  sLA  sES  sES
       rst  sCL  sCL  sSS  sCL  sCL  sTW  sCL  sCL  sCL  sCL  sCL
IN-ONLY syn sSR  sES  sES  sSR  sSR  sSR  sSR  sSR  sSR  sSR  sSR
       fin  sCL  sFW  sSS  sTW  sFW  sTW  sCL  sCW  sLA  sLI  sTW
       ack  sES  sES  sSS  sES  sFW  sTW  sCL  sCW  sCL  sLI  sES
       rst  sCL  sCL  sCL  sSR  sCL  sCL  sCL  sCL  sLA  sLI  sCL
`

const specSecure = `
            sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
INPUT  syn  sSR  sES  sES  sSR  sSR  sSR  sSR  sSR  sSR  sSR  sSA
       fin  sCL  sCW  sSS  sTW  sTW  sTW  sCL  sCW  sLA  sLI  sSA
       ack  sES  sES  sSS  sSR  sFW  sTW  sCL  sCW  sCL  sLI  sSA
       rst  sCL  sCL  sCL  sSR  sCL  sCL  sCL  sCL  sLA  sLI  sCL
OUTPUT syn  sSS  sES  sSS  sSA  sSS  sSS  sSS  sSS  sSS  sLI  sSA
       fin  sTW  sFW  sSS  sTW  sFW  sTW  sCL  sTW  sLA  sLI  sTW
       ack  sES  sES  sSS  sES  sFW  sTW  sCL  sCW  sLA  sES  sES
       rst  sCL  sCL  sSS  sCL  sCL  sTW  sCL  sCL  sCL  sCL  sCL
IN-ONLY syn sSA  sES  sES  sSR  sSA  sSA  sSA  sSA  sSA  sSA  sSA
       fin  sCL  sFW  sSS  sTW  sFW  sTW  sCL  sCW  sLA  sLI  sTW
       ack  sES  sES  sSS  sES  sFW  sTW  sCL  sCW  sCL  sLI  sES
       rst  sCL  sCL  sCL  sSR  sCL  sCL  sCL  sCL  sLA  sLI  sCL
`

// specNames maps the spec's abbreviations to the names ipvsadm prints.
var specNames = map[string]string{
	"sNO": "NONE", "sES": "ESTABLISHED", "sSS": "SYN_SENT", "sSR": "SYN_RECV",
	"sFW": "FIN_WAIT", "sTW": "TIME_WAIT", "sCL": "CLOSE", "sCW": "CLOSE_WAIT",
	"sLA": "LAST_ACK", "sLI": "LISTEN", "sSA": "SYNACK",
}

type specCell struct {
	dir       string // INPUT, OUTPUT, IN-ONLY
	flag      string // syn, fin, ack, rst
	cur, next string // ipvsadm names
}

func parseSpec(t *testing.T, text string) []specCell {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	cols := strings.Fields(lines[0])
	var cells []specCell
	dir := ""
	for _, ln := range lines[1:] {
		f := strings.Fields(ln)
		if len(f) == len(cols)+2 {
			dir, f = f[0], f[1:]
		}
		if len(f) != len(cols)+1 {
			t.Fatalf("bad spec line %q", ln)
		}
		for i, c := range cols {
			cells = append(cells, specCell{dir: dir, flag: f[0], cur: specNames[c], next: specNames[f[i+1]]})
		}
	}
	if len(cells) != 3*4*11 {
		t.Fatalf("parsed %d cells, want 132", len(cells))
	}
	return cells
}

func TestTCPTransitionTables(t *testing.T) {
	dirs := map[string]Direction{"INPUT": DirInput, "OUTPUT": DirOutput, "IN-ONLY": DirInputOnly}
	flags := map[string]uint8{"syn": TCPSyn, "fin": TCPFin, "ack": TCPAck, "rst": TCPRst}
	byName := map[string]State{}
	for s := StateNone; s <= StateSynAck; s++ {
		byName[s.String()] = s
	}
	for _, tc := range []struct {
		name   string
		text   string
		secure bool
	}{{"normal", specNormal, false}, {"secure_tcp", specSecure, true}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range parseSpec(t, tc.text) {
				cur, ok := byName[c.cur]
				if !ok {
					t.Fatalf("unknown state %q", c.cur)
				}
				got := NextTCPState(cur, dirs[c.dir], flags[c.flag], tc.secure)
				if got.String() != c.next {
					t.Errorf("%s %s from %s: got %s, want %s", c.dir, c.flag, c.cur, got, c.next)
				}
			}
		})
	}
}

func TestFlagPrecedence(t *testing.T) {
	// From ESTABLISHED in INPUT: syn->ES, fin->CW, ack->ES, rst->CL; from
	// SYN_RECV: syn->SR, fin->TW, ack->ES, rst->SR. Combinations must pick
	// RST > SYN > FIN > ACK; no known flag -> CLOSE.
	cases := []struct {
		cur   State
		flags uint8
		want  State
	}{
		{StateEstablished, TCPFin | TCPAck, StateCloseWait},
		{StateEstablished, TCPSyn | TCPFin, StateEstablished},
		{StateEstablished, TCPRst | TCPAck, StateClose},
		{StateSynRecv, TCPSyn | TCPAck, StateSynRecv},
		{StateSynRecv, TCPFin | TCPAck, StateTimeWait},
		{StateSynRecv, TCPRst | TCPSyn | TCPFin | TCPAck, StateSynRecv},
		{StateSynRecv, TCPAck, StateEstablished},
		{StateEstablished, 0, StateClose},
		{StateEstablished, 0x08 /* PSH */, StateClose},
		{StateListen, 0x20 /* URG */, StateClose},
	}
	for _, c := range cases {
		if got := NextTCPState(c.cur, DirInput, c.flags, false); got != c.want {
			t.Errorf("%s + %#x: got %s, want %s", c.cur, c.flags, got, c.want)
		}
	}
	if got := NextTCPState(State(200), DirInput, TCPAck, false); got != StateClose {
		t.Errorf("out-of-range state: got %s", got)
	}
	if got := NextTCPState(StateNone, Direction(9), TCPAck, false); got != StateClose {
		t.Errorf("out-of-range direction: got %s", got)
	}
}

func TestStateNamesAndActivity(t *testing.T) {
	want := []string{"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
		"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK", "UDP"}
	for i, w := range want {
		if got := State(i).String(); got != w {
			t.Errorf("State(%d) = %q, want %q", i, got, w)
		}
	}
	if got := State(99).String(); got != "ERR!" {
		t.Errorf("State(99) = %q", got)
	}
	active := map[State]bool{StateEstablished: true, StateSynSent: true, StateSynRecv: true, StateSynAck: true}
	for s := StateNone; s <= StateUDP; s++ {
		if s.Active() != active[s] {
			t.Errorf("%s.Active() = %v", s, s.Active())
		}
	}
}

func TestDefaultTimeouts(t *testing.T) {
	want := map[string]int{"NONE": 2, "ESTABLISHED": 900, "SYN_SENT": 120, "SYN_RECV": 60, "FIN_WAIT": 120,
		"TIME_WAIT": 120, "CLOSE": 10, "CLOSE_WAIT": 60, "LAST_ACK": 30, "LISTEN": 120, "SYNACK": 120}
	d := DefaultTimeouts()
	for s := StateNone; s <= StateSynAck; s++ {
		if got := int(d.TCP[s].Seconds()); got != want[s.String()] {
			t.Errorf("%s: %d s, want %d", s, got, want[s.String()])
		}
	}
	if d.UDP.Seconds() != 300 {
		t.Errorf("UDP: %v", d.UDP)
	}
}
