package control

import (
	"testing"

	"gvs/ipvs"
)

// run_estimation 0 suspends the estimator: the rates keep the last
// sample's values however much traffic passes; set to 1 again, the first
// sample folds everything since the last one in as one interval.
func TestRunEstimation(t *testing.T) {
	te, svc, d := rateSetup(t)
	te.Settings = ipvs.NewSettings()
	traffic(svc, d)
	te.TickEstimator()
	want := head0 + rateHead + oneTick
	if got := te.mustRun(t, "-Ln", "--rate"); got != want {
		t.Fatalf("first tick:\n%q\nwant:\n%q", got, want)
	}
	if err := te.Settings.Set(ipvs.SysRunEstimation, [2]int64{0}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		traffic(svc, d)
		te.TickEstimator()
	}
	if got := te.mustRun(t, "-Ln", "--rate"); got != want {
		t.Errorf("run_estimation 0, 5 ticks of traffic later:\n%q\nwant the same rates:\n%q", got, want)
	}
	if err := te.Settings.Set(ipvs.SysRunEstimation, [2]int64{1}); err != nil {
		t.Fatal(err)
	}
	te.TickEstimator()
	// avg = 1/4 rate; then avg += (5*rate - avg)/4 = 1/4 + 19/16 = 23/16 rate.
	const after = "TCP  198.51.100.10:80                    7      719      431    71875  1437500\n" +
		"  -> 198.18.2.11:80                      7      719      431    71875  1437500\n"
	if got := te.mustRun(t, "-Ln", "--rate"); got != head0+rateHead+after {
		t.Errorf("after run_estimation 1:\n%q\nwant:\n%q", got, head0+rateHead+after)
	}
}
