package daemon

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// DefenseInterval is the period of IPVS's defense_work_handler
// (DEFENSE_TIMER_PERIOD, 1 s): update_defense_level, then the drop_entry
// scan when it is on.
const DefenseInterval = time.Second

// defend runs the connection table's defenses every DefenseInterval (see
// conntrack.Defense); their counters are in conntrack.Stats.
func (d *Daemon) defend(ctx context.Context) {
	if d.defense == nil {
		return
	}
	tick := time.NewTicker(DefenseInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n := d.defense.Tick(d.Clock()); n > 0 {
				d.log.Debug("drop_entry scan", zap.Int("dropped", n))
			}
		}
	}
}
