package daemon

import "gvs/forwarder"

// WorkerCounters returns every worker's counters, in worker order: the
// pipeline's (verdicts and reasons) and the worker loop's own. The workers
// keep writing them; readers load the atomics (package metrics does, at
// scrape time).
func (d *Daemon) WorkerCounters() (pipeline []*forwarder.Counters, loop []*WorkerCounters) {
	for _, w := range d.workers {
		pipeline = append(pipeline, &w.fw.Counters)
		loop = append(loop, &w.c)
	}
	return pipeline, loop
}
