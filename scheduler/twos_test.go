package scheduler

import (
	"testing"
)

func TestTwos(t *testing.T) {
	f := flow("198.51.100.1", "192.0.2.1", 1000)
	tests := []struct {
		desc  string
		dests []spec
		draws []uint32 // r1, r2
		span  uint32   // expected n passed to the random source: total+1
		want  string
	}{
		// A(3) B(1): r1=0 -> A, r2=4 -> B (4-3=1, 1-1=0). B less loaded.
		{"choice2 less loaded", []spec{{name: "A", w: 3, act: 1}, {name: "B", w: 1}}, []uint32{0, 4}, 5, "B"},
		// weight2*oh1 = 1*256 > weight1*oh2 = 3*1000? no -> A.
		{"choice1 kept", []spec{{name: "A", w: 3, act: 1}, {name: "B", w: 1, inact: 1000}}, []uint32{0, 4}, 5, "A"},
		// Equal load: choice1.
		{"tie keeps choice1", []spec{{name: "A", w: 1}, {name: "B", w: 1}}, []uint32{2, 0}, 3, "B"},
		// r1=3 -> A (3-3=0); r2=3 -> A.
		{"same dest twice", []spec{{name: "A", w: 3}, {name: "B", w: 1}}, []uint32{3, 3}, 5, "A"},
		// Weight-0 and overloaded destinations are not counted or drawn.
		{"skips unusable", []spec{{name: "A", w: 0}, {name: "B", w: 5, over: true}, {name: "C", w: 2, act: 3}, {name: "D", w: 2}}, []uint32{1, 3}, 5, "D"},
		{"none", []spec{{name: "A", w: 0}, {name: "B", w: 5, over: true}}, nil, 0, "-"},
		// C overhead 512, D overhead 300, equal weights: 2*512 > 2*300 -> D.
		{"weighted", []spec{{name: "C", w: 2, act: 2}, {name: "D", w: 2, act: 1, inact: 44}}, []uint32{0, 4}, 5, "D"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			svc, m := build(t, tt.dests...)
			s := newTwos()
			k := 0
			s.rnd = func(n uint32) uint32 {
				if n != tt.span {
					t.Errorf("random span %d, want %d", n, tt.span)
				}
				v := tt.draws[k]
				k++
				return v
			}
			s.Update(svc)
			if got := nameOf(m, s.Schedule(svc, f)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
