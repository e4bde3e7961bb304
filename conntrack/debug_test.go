package conntrack

import "fmt"

func (t *Table) dump() {
	for i := range t.shards {
		s := &t.shards[i]
		for slot := uint32(0); slot < s.used; slot++ {
			e := s.at(slot)
			if e.flags&fUsed != 0 {
				fmt.Printf("shard %d slot %d flags %b state %s exp %d ctl %d prev %x next %x cur %d curMin %d\n", i, slot, e.flags, e.state, e.expires>>tickShift, e.ctl, e.prev, e.next, s.cur, s.curMin)
			}
		}
	}
}
