package lvssync

import "testing"

// TestNeeded walks ip_vs_sync_conn_needed's branches (ip_vs_sync.c) with
// the verdicts worked out by hand from the kernel's code.
func TestNeeded(t *testing.T) {
	def := DefaultSyncSettings // threshold 3, period 50
	noPeriod := SyncSettings{Threshold: 3}
	persist := SyncSettings{Threshold: 3, Period: 50, PersistMode: true}
	const now, to = 1_000_000, 900_000 // ticks
	const end = (now + to) &^ 3
	tcp := func(state, old uint16) ConnFacts {
		return ConnFacts{Protocol: ProtoTCP, State: state, OldState: old, Timeout: to}
	}
	udp := ConnFacts{Protocol: ProtoUDP, Timeout: 300_000}
	tmpl := ConnFacts{Protocol: ProtoTCP, Flags: FlagTemplate, Timeout: 360_000}
	with := func(c ConnFacts, f func(*ConnFacts)) ConnFacts { f(&c); return c }
	sctp := func(state, old uint16) ConnFacts {
		return ConnFacts{Protocol: ProtoSCTP, State: state, OldState: old, Timeout: to}
	}
	yes := Verdict{Sync: true, Endtime: end}
	forced := Verdict{Sync: true, Force: true, Endtime: end}
	cases := []struct {
		name string
		s    SyncSettings
		c    ConnFacts
		pkts int
		want Verdict
	}{
		{"established, pkts = threshold", def, tcp(TCPEstablished, TCPEstablished), 3, yes},
		{"established, pkts 4", def, tcp(TCPEstablished, TCPEstablished), 4, Verdict{}},
		{"established, pkts threshold + period", def, tcp(TCPEstablished, TCPEstablished), 53, yes},
		{"established, pkts 50", def, tcp(TCPEstablished, TCPEstablished), 50, Verdict{}},
		{"syn_recv never", def, tcp(TCPSynRecv, TCPNone), 3, Verdict{}},
		{"syn_sent never", def, tcp(TCPSynSent, TCPNone), 3, Verdict{}},
		{"last_ack never", def, tcp(TCPLastAck, TCPCloseWait), 3, Verdict{}},
		{"change to fin_wait: at once", def, tcp(TCPFinWait, TCPEstablished), 7, forced},
		{"change to close_wait: at once", def, tcp(TCPCloseWait, TCPEstablished), 7, forced},
		{"change to time_wait: at once", def, tcp(TCPTimeWait, TCPFinWait), 8, forced},
		{"change to close: at once", def, tcp(TCPClose, TCPSynRecv), 9, forced},
		{"fin_wait again: packet rule", def, tcp(TCPFinWait, TCPFinWait), 7, Verdict{}},
		{"fin_wait again, pkts 3", def, tcp(TCPFinWait, TCPFinWait), 3, yes},
		{"change to established: still the packet rule", def, tcp(TCPEstablished, TCPSynRecv), 7, Verdict{}},
		{"change to established, pkts 3: forced", def, tcp(TCPEstablished, TCPSynRecv), 3, forced},
		{"udp pkts 3", def, udp, 3, Verdict{Sync: true, Endtime: (now + 300_000) &^ 3}},
		{"udp pkts 4", def, udp, 4, Verdict{}},
		{"udp pkts 103", def, udp, 103, Verdict{Sync: true, Endtime: (now + 300_000) &^ 3}},
		{"template: every time while period > 0", def, tmpl, 4, Verdict{Sync: true, Endtime: (now + 360_000) &^ 3}},
		{"template without period: pkts = threshold", noPeriod, tmpl, 4, Verdict{}},
		{"template without period, pkts 3", noPeriod, tmpl, 3, Verdict{Sync: true, Endtime: (now + 360_000) &^ 3}},
		{"no period: only pkts = threshold", noPeriod, tcp(TCPEstablished, TCPEstablished), 53, Verdict{}},
		{"no period, pkts 3", noPeriod, tcp(TCPEstablished, TCPEstablished), 3, yes},
		{"one-packet never", def, with(udp, func(c *ConnFacts) { c.Flags = FlagOnePacket }), 3, Verdict{}},
		{"one-packet template never", def, with(tmpl, func(c *ConnFacts) { c.Flags |= FlagOnePacket }), 3, Verdict{}},
		{"persist mode: persistent conn never", persist, with(tcp(TCPFinWait, TCPEstablished), func(c *ConnFacts) { c.InPersistence = true }), 3, Verdict{}},
		{"persist mode: its template", persist, with(tmpl, func(c *ConnFacts) { c.InPersistence = true }), 4, Verdict{Sync: true, Endtime: (now + 360_000) &^ 3}},
		{"persist mode: other conns", persist, tcp(TCPEstablished, TCPEstablished), 3, yes},
		{"no persist mode: persistent conn", def, with(tcp(TCPEstablished, TCPEstablished), func(c *ConnFacts) { c.InPersistence = true }), 3, yes},
		{"sctp established", def, sctp(SCTPEstablished, SCTPEstablished), 3, yes},
		{"sctp cookie_echoed never", def, sctp(7, 6), 3, Verdict{}},
		{"sctp change to shutdown_sent", def, sctp(SCTPShutdownSent, SCTPEstablished), 5, forced},
		{"sctp change to closed", def, sctp(SCTPClosed, SCTPShutdownAckSent), 5, forced},
		{"tcp state out of range", def, tcp(40, 1), 3, Verdict{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Needed(&tc.s, &tc.c, tc.pkts, now); got != tc.want {
				t.Errorf("Needed = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestNeededRefresh follows one connection through sync_refresh_period
// and sync_retries: no sync while the new end time is within
// min(refresh, max(timeout/2, 10 s)) of the last one, except up to
// sync_retries resends, each refresh/8 after the last sync's start, with
// the retry count in the end time's low 2 bits.
func TestNeededRefresh(t *testing.T) {
	s := SyncSettings{Threshold: 3, RefreshPeriod: 60 * HZ, Retries: 2}
	c := ConnFacts{Protocol: ProtoUDP, Timeout: 300 * HZ}
	steps := []struct {
		now  uint64
		want Verdict
	}{
		{1_000_000, Verdict{Sync: true, Endtime: 1_300_000}}, // first: far from 0
		{1_000_500, Verdict{}},                               // within 60 s, before 300000 - 300000 + 7500
		{1_007_400, Verdict{}},                               // still before last start + refresh/8
		{1_008_000, Verdict{Sync: true, Endtime: 1_308_001}}, // retry 1
		{1_009_000, Verdict{}},                               // before 1_308_001 - 300_000 + 7_500
		{1_016_000, Verdict{Sync: true, Endtime: 1_316_002}}, // retry 2
		{1_030_000, Verdict{}},                               // retries used up
		{1_075_999, Verdict{}},                               // diff 59_994 < 60 s
		{1_080_000, Verdict{Sync: true, Endtime: 1_380_000}}, // 60 s later: a new sync, retries reset
		{1_080_001, Verdict{}},                               // retries 0 < 2 but before start + refresh/8
		{1_090_000, Verdict{Sync: true, Endtime: 1_390_001}}, // a retry
		{1_200_000, Verdict{Sync: true, Endtime: 1_500_000}},
	}
	for i, st := range steps {
		// Any pkts: with a refresh period and no sync_period the packet
		// count is not looked at.
		got := Needed(&s, &c, 1000+i, st.now)
		if got != st.want {
			t.Fatalf("step %d (now %d, last end %d): %+v, want %+v", i, st.now, c.SyncEndtime, got, st.want)
		}
		if got.Sync {
			c.SyncEndtime = got.Endtime
		}
	}

	// A short timeout: the window is max(timeout/2, 10 s) = 10 s.
	s = SyncSettings{Threshold: 3, RefreshPeriod: 60 * HZ}
	c = ConnFacts{Protocol: ProtoUDP, Timeout: 4 * HZ}
	for i, st := range []struct {
		now  uint64
		want bool
	}{{0, false}, {20_000, true}, {25_000, false}, {30_003, true}, {30_004, false}} {
		// At 0 the end time (4000) is within 10 s of the initial 0.
		got := Needed(&s, &c, 3, st.now)
		if got.Sync != st.want {
			t.Fatalf("short timeout step %d (now %d): %+v, want sync %v", i, st.now, got, st.want)
		}
		if got.Sync {
			c.SyncEndtime = got.Endtime
		}
	}

	// With sync_period as well, both rules apply.
	s = SyncSettings{Threshold: 3, Period: 50, RefreshPeriod: 60 * HZ}
	c = ConnFacts{Protocol: ProtoUDP, Timeout: 300 * HZ}
	if v := Needed(&s, &c, 4, 1_000_000); v.Sync {
		t.Errorf("refresh passed but pkts 4: %+v", v)
	}
	if v := Needed(&s, &c, 53, 1_000_000); !v.Sync {
		t.Errorf("refresh passed and pkts 53: %+v", v)
	}
}

func BenchmarkNeeded(b *testing.B) {
	s := DefaultSyncSettings
	c := ConnFacts{Protocol: ProtoTCP, State: TCPEstablished, OldState: TCPEstablished, Timeout: 900 * HZ}
	n := 0
	for i := 0; b.Loop(); i++ {
		if Needed(&s, &c, i, uint64(i)).Sync {
			n++
		}
	}
	_ = n
}
