package ipvsadm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxRuleLine bounds one rules-file line.
const maxRuleLine = 1 << 20

// ParseRules reads an ipvsadm-save / ipvsadm -R file: one ipvsadm command
// per line, the same arguments as on the command line, optionally starting
// with the word "ipvsadm". Blank lines are skipped, and a word starting
// with '#' starts a comment that runs to the end of the line (so whole-line
// comments, which ipvsadm-restore filters out, work too). Only the commands
// that change the table are accepted: -A -E -D -C -a -e -d -Z --set.
//
// Errors are *Error whose message starts with the line number, then
// ipvsadm's own text: "line 3: illegal weight specified" (exit status as
// ipvsadm's for that message). Each returned Command has its Line set, so
// that ApplyAll reports a rejected command the same way
// ("line 7: Service not defined").
func ParseRules(r io.Reader) ([]*Command, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxRuleLine)
	var cmds []*Command
	line := 0
	for sc.Scan() {
		line++
		words := strings.FieldsFunc(sc.Text(), func(r rune) bool {
			return r == ' ' || r == '\t' || r == '\r' || r == '\n'
		})
		for i, w := range words {
			if strings.HasPrefix(w, "#") {
				words = words[:i]
				break
			}
		}
		if len(words) > 0 && words[0] == "ipvsadm" {
			words = words[1:]
		}
		if len(words) == 0 {
			continue
		}
		c, err := ParseArgs(words)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				return nil, e.atLine(line)
			}
			return nil, err
		}
		switch c.Kind {
		case CmdAddService, CmdEditService, CmdDeleteService, CmdClear,
			CmdAddServer, CmdEditServer, CmdDeleteServer, CmdZero, CmdSet:
		default:
			return nil, &Error{Msg: fmt.Sprintf(msgRulesLine, line, fmt.Sprintf(msgRulesCommand, c.Kind)),
				Code: ExitParse, Err: ErrSyntax}
		}
		c.Line = line
		cmds = append(cmds, c)
	}
	if err := sc.Err(); err != nil {
		msg := err.Error()
		if errors.Is(err, bufio.ErrTooLong) {
			msg = msgRulesLineTooBig
		}
		return nil, &Error{Msg: fmt.Sprintf(msgRulesLine, line+1, msg), Code: ExitParse, Err: ErrSyntax}
	}
	return cmds, nil
}
