package conntrack

// State is a connection's protocol state. The TCP values and their order are
// IPVS's (IP_VS_TCP_S_*), so they index the transition and timeout tables
// directly; StateUDP is the single state of UDP (and any non-TCP) entries.
// Persistence templates are always StateNone.
type State uint8

// Connection states.
const (
	StateNone        State = iota // NONE: new connection, or a template
	StateEstablished              // ESTABLISHED
	StateSynSent                  // SYN_SENT
	StateSynRecv                  // SYN_RECV
	StateFinWait                  // FIN_WAIT
	StateTimeWait                 // TIME_WAIT
	StateClose                    // CLOSE
	StateCloseWait                // CLOSE_WAIT
	StateLastAck                  // LAST_ACK
	StateListen                   // LISTEN
	StateSynAck                   // SYNACK
	StateUDP                      // UDP: the one state of UDP entries
)

// NumTCPStates is the number of TCP states (NONE through SYNACK).
const NumTCPStates = int(StateSynAck) + 1

var stateNames = [...]string{
	StateNone:        "NONE",
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait:     "FIN_WAIT",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateSynAck:      "SYNACK",
	StateUDP:         "UDP",
}

// String gives the name ipvsadm -Lnc prints in its state column.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "ERR!"
}

// Active reports whether a connection in this state counts in its
// destination's ActiveConn (tcp_state_active_table): ESTABLISHED, SYN_SENT,
// SYN_RECV and SYNACK. Every other state, and UDP, counts as InActConn.
func (s State) Active() bool {
	switch s {
	case StateEstablished, StateSynSent, StateSynRecv, StateSynAck:
		return true
	}
	return false
}

// TCP header flag bits, as they appear in byte 13 of the TCP header. The
// tcpFlags argument of In, Out and Create takes this byte unchanged.
const (
	TCPFin uint8 = 0x01
	TCPSyn uint8 = 0x02
	TCPRst uint8 = 0x04
	TCPAck uint8 = 0x10
)

// Direction selects the TCP transition table.
type Direction uint8

const (
	// DirInput is client -> director.
	DirInput Direction = iota
	// DirOutput is real server -> client through the director (NAT replies).
	DirOutput
	// DirInputOnly is used for input packets while the connection carries
	// NOOUTPUT (DR and TUN, where replies bypass the director).
	DirInputOnly
)

// flag rows of the transition tables (tcp_state_idx): SYN, FIN, ACK, RST.
const (
	rowSyn = iota
	rowFin
	rowAck
	rowRst
	noRow = -1
)

// flagRow picks the table row for a segment, with IPVS's precedence
// RST > SYN > FIN > ACK; noRow when none of them is set.
func flagRow(f uint8) int {
	switch {
	case f&TCPRst != 0:
		return rowRst
	case f&TCPSyn != 0:
		return rowSyn
	case f&TCPFin != 0:
		return rowFin
	case f&TCPAck != 0:
		return rowAck
	}
	return noRow
}

// Short names to keep the tables below readable.
const (
	sNO = StateNone
	sES = StateEstablished
	sSS = StateSynSent
	sSR = StateSynRecv
	sFW = StateFinWait
	sTW = StateTimeWait
	sCL = StateClose
	sCW = StateCloseWait
	sLA = StateLastAck
	sLI = StateListen
	sSA = StateSynAck
)

type stateTable [3][4][NumTCPStates]State

// tcpStates is IPVS's normal table (tcp_states[]), IPVS.md §3: next state by
// [direction][flag row][current state].
var tcpStates = stateTable{
	DirInput: {
		//       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
		rowSyn: {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
		rowFin: {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW},
		rowAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
		rowRst: {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR},
	},
	DirOutput: {
		rowSyn: {sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR},
		rowFin: {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
		rowAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
		rowRst: {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
	},
	DirInputOnly: {
		rowSyn: {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
		rowFin: {sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW},
		rowAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
		rowRst: {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
	},
}

// tcpStatesSecure is the secure_tcp table (tcp_states_dos[]), IPVS.md §3.
var tcpStatesSecure = stateTable{
	DirInput: {
		//       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
		rowSyn: {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSA},
		rowFin: {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sSA},
		rowAck: {sES, sES, sSS, sSR, sFW, sTW, sCL, sCW, sCL, sLI, sSA},
		rowRst: {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
	},
	DirOutput: {
		rowSyn: {sSS, sES, sSS, sSA, sSS, sSS, sSS, sSS, sSS, sLI, sSA},
		rowFin: {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
		rowAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
		rowRst: {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
	},
	DirInputOnly: {
		rowSyn: {sSA, sES, sES, sSR, sSA, sSA, sSA, sSA, sSA, sSA, sSA},
		rowFin: {sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW},
		rowAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
		rowRst: {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
	},
}

// NextTCPState is the pure IPVS transition (set_tcp_state without the
// NOOUTPUT bookkeeping): the state a TCP connection in cur moves to on a
// segment with the given flags in direction dir. A segment with none of
// RST, SYN, FIN, ACK moves to CLOSE. secure selects the secure_tcp table.
// Out-of-range inputs return CLOSE.
func NextTCPState(cur State, dir Direction, tcpFlags uint8, secure bool) State {
	row := flagRow(tcpFlags)
	if row == noRow || int(cur) >= NumTCPStates || dir > DirInputOnly {
		return StateClose
	}
	if secure {
		return tcpStatesSecure[dir][row][cur]
	}
	return tcpStates[dir][row][cur]
}
