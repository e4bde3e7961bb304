package ipvsadm

import (
	"errors"
	"fmt"

	"gvs/ipvs"
)

// Apply executes one command that changes the table: -A -E -D -C -a -e -d
// -Z --set. Errors are *Error with libipvs's wording and ipvsadm's exit
// status; on error nothing changed.
func Apply(t *ipvs.Table, c *Command) error { return ApplyAll(t, []*Command{c}) }

// ApplyAll executes a batch of commands all or nothing, as one transaction
// (ipvs.Table.Update). An error names the failing command's rules-file line
// when Command.Line is set ("line 3: Service not defined").
func ApplyAll(t *ipvs.Table, cmds []*Command) error {
	return t.Update(func(tx *ipvs.Tx) error {
		for _, c := range cmds {
			if err := applyCommand(tx, c); err != nil {
				e := commandError(c.Kind, err)
				if c.Line > 0 {
					return e.atLine(c.Line)
				}
				return e
			}
		}
		return nil
	})
}

// applyCommand turns one command into the model's change.
func applyCommand(tx *ipvs.Tx, c *Command) error {
	switch c.Kind {
	case CmdClear:
		tx.Flush()
		return nil
	case CmdSet:
		tx.SetTimeouts(c.Timeouts)
		return nil
	case CmdZero:
		if !c.HasService() {
			tx.ZeroAll()
			return nil
		}
		return tx.Zero(c.Service.ServiceKey)
	case CmdAddService:
		return tx.AddService(c.Service)
	case CmdEditService:
		return tx.EditService(c.Service)
	case CmdDeleteService:
		return tx.DeleteService(c.Service.ServiceKey)
	case CmdAddServer:
		return tx.AddDest(c.Service.ServiceKey, c.Dest)
	case CmdEditServer:
		return tx.EditDest(c.Service.ServiceKey, c.Dest)
	case CmdDeleteServer:
		return tx.DeleteDest(c.Service.ServiceKey, c.Dest.AddrPort())
	case CmdStartDaemon, CmdStopDaemon:
		return opErr(ErrUnsupported, msgNoDaemon)
	}
	return opErr(ipvs.ErrInvalid, fmt.Sprintf(msgNotTableCmd, c.Kind))
}

// opMessages is libipvs's ipvs_strerror table for the errors gvs's model
// returns: the message depends on the operation and the errno.
var opMessages = []struct {
	kind CommandKind // CmdNone: any command
	err  error
	msg  string
}{
	{CmdAddService, ipvs.ErrServiceExists, msgServiceExists},
	{CmdAddService, ipvs.ErrNoScheduler, msgNotFound},
	{CmdAddService, ipvs.ErrNoPE, msgNotFound},
	{CmdEditService, ipvs.ErrNoService, msgNoService},
	{CmdEditService, ipvs.ErrNoScheduler, msgNotFound},
	{CmdEditService, ipvs.ErrNoPE, msgNotFound},
	{CmdDeleteService, ipvs.ErrNoService, msgNoService},
	{CmdZero, ipvs.ErrNoService, msgNoService},
	{CmdAddServer, ipvs.ErrNoService, msgNotDefined},
	{CmdAddServer, ipvs.ErrDestExists, msgDestExists},
	{CmdEditServer, ipvs.ErrNoService, msgNotDefined},
	{CmdEditServer, ipvs.ErrNoDest, msgNoDest},
	{CmdDeleteServer, ipvs.ErrNoService, msgNotDefined},
	{CmdDeleteServer, ipvs.ErrNoDest, msgNoDest},
	{CmdNone, ipvs.ErrInvalid, msgEINVAL},
	{CmdNone, ipvs.ErrRange, msgERANGE}, // not in the table: strerror(ERANGE)
}

// commandError is the ipvsadm error for a change the model refused while
// executing a command of this kind: libipvs's text, exit status 255, the
// model's error as Err.
func commandError(kind CommandKind, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	for _, m := range opMessages {
		if (m.kind == kind || m.kind == CmdNone) && errors.Is(err, m.err) {
			return opErr(m.err, m.msg)
		}
	}
	return &Error{Msg: err.Error(), Code: ExitFailure, Err: err}
}
