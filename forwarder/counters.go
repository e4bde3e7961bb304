// Counting: the Result of a frame, its action and reason counters, the
// services' and real servers' statistics, and Totals.

package forwarder

import (
	"sync/atomic"

	"gvs/ipvs"
)

// Counters are one worker's frame counters. Only the worker writes them;
// others may read them at any time.
type Counters struct {
	Actions [numActions]atomic.Uint64
	Reasons [NumReasons]atomic.Uint64
}

func (w *Worker) drop(r Reason) *Result { return w.result(Result{Action: Drop, Reason: r}) }

// result sets the worker's Result and counts it.
func (w *Worker) result(r Result) *Result {
	w.res = r
	return w.count(&w.res)
}

func (w *Worker) count(r *Result) *Result {
	w.Counters.Actions[r.Action].Add(1)
	if r.Reason != ReasonNone {
		w.Counters.Reasons[r.Reason].Add(1)
	}
	return r
}

func (w *Worker) countConn(d *ipvs.Dest) {
	d.Stats[w.id].Conns.Add(1)
	d.Svc.Stats[w.id].Conns.Add(1)
}

func (w *Worker) countIn(d *ipvs.Dest, bytes int) {
	ds, ss := &d.Stats[w.id], &d.Svc.Stats[w.id]
	ds.InPkts.Add(1)
	ds.InBytes.Add(uint64(bytes))
	ss.InPkts.Add(1)
	ss.InBytes.Add(uint64(bytes))
}

func (w *Worker) countOut(d *ipvs.Dest, bytes int) {
	ds, ss := &d.Stats[w.id], &d.Svc.Stats[w.id]
	ds.OutPkts.Add(1)
	ds.OutBytes.Add(uint64(bytes))
	ss.OutPkts.Add(1)
	ss.OutBytes.Add(uint64(bytes))
}

// Totals sums the counters of a set of workers by name: actions by
// Action.String ("transmit", "drop", ...), drop and reply reasons by
// counter name ("no_route", ...). Counters that are zero are left out. It
// allocates (two small maps) and is not for the data path.
func Totals(ws ...*Worker) (actions, reasons map[string]uint64) {
	actions, reasons = map[string]uint64{}, map[string]uint64{}
	for _, w := range ws {
		for i := range w.Counters.Actions {
			if n := w.Counters.Actions[i].Load(); n != 0 {
				actions[Action(i).String()] += n
			}
		}
		for i := range w.Counters.Reasons {
			if n := w.Counters.Reasons[i].Load(); n != 0 {
				reasons[Reason(i).String()] += n
			}
		}
	}
	return actions, reasons
}
