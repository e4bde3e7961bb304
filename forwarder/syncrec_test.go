package forwarder_test

import (
	"net/netip"
	"testing"
	"time"

	"gvs/conntrack"
	"gvs/forwarder"
	"gvs/internal/frames"
	"gvs/ipvs"
	"gvs/lvssync"
)

func drainAll(p *lvssync.Producer) []lvssync.Conn {
	var out []lvssync.Conn
	p.Drain(func(c *lvssync.Conn) bool { out = append(out, *c); return true })
	return out
}

// TestSyncMasterRecords: with a master sync daemon, the worker queues a
// record of a connection at its third input packet the table sees
// (sync_threshold 3), with the connection's real server, state and
// timeout; a persistent service's template follows each packet.
func TestSyncMasterRecords(t *testing.T) {
	h := newHarness(t, twoNAT+"-A -t 198.51.100.10:81 -s rr -p 600\n-a -t 198.51.100.10:81 -r 198.18.2.11:81 -g\n")
	q := lvssync.NewProducer(64)
	h.pl.SetSyncMaster([]*lvssync.Producer{q})
	h.conns.SetSync(&lvssync.DefaultSyncSettings, 1)
	c := netip.MustParseAddr("198.18.0.50")
	steps := [][]byte{syn(c, 4000), ack(c, 4000), ack(c, 4000)}
	for i, f := range steps {
		h.now += int64(2 * time.Second) // past the flow cache: the table sees every packet
		if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Transmit {
			t.Fatalf("packet %d: %v %v", i, r.Action, r.Reason)
		}
		if n := q.Len(); (i < 2 && n != 0) || (i == 2 && n != 1) {
			t.Fatalf("after packet %d: %d records queued", i+1, n)
		}
	}
	recs := drainAll(q)
	r := recs[0]
	if r.Protocol != lvssync.ProtoTCP || r.CAddr != c || r.CPort != 4000 || r.VAddr != vip || r.VPort != 80 ||
		(r.DAddr != netip.MustParseAddr("198.18.2.11") && r.DAddr != netip.MustParseAddr("198.18.2.12")) || r.DPort != 8080 ||
		r.State != lvssync.TCPEstablished || r.Timeout != 900 || r.Flags&lvssync.FlagFwdMask != lvssync.FlagMasq {
		t.Fatalf("record %+v", r)
	}

	// Persistent DR service: the template is due at every input packet.
	mk := func(s frames.TCPSeg) []byte {
		s.SrcPort, s.DstPort = 4001, 81
		return frames.TCP(frames.L2{Src: frames.DerivedMAC(c), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
			frames.IP{Src: c, Dst: vip}, s)
	}
	h.now += int64(2 * time.Second)
	h.send(mk(frames.TCPSeg{SYN: true}), forwarder.VIPSide)
	recs = drainAll(q)
	if len(recs) != 1 || recs[0].Flags&lvssync.FlagTemplate == 0 || recs[0].Timeout != 600 || recs[0].CPort != 0 ||
		recs[0].Flags&lvssync.FlagFwdMask != lvssync.FlagDRoute {
		t.Fatalf("after SYN to a persistent service: %+v", recs)
	}

	// Without a master, nothing is queued.
	h.pl.SetSyncMaster(nil)
	h.conns.SetSync(nil, 1)
	h.now += int64(2 * time.Second)
	h.send(mk(frames.TCPSeg{ACK: true}), forwarder.VIPSide)
	if q.Len() != 0 {
		t.Fatal("record queued without a master")
	}
}

// TestSyncQueueFull: a full producer queue drops the record and counts it;
// the packet is forwarded all the same.
func TestSyncQueueFull(t *testing.T) {
	h := newHarness(t, "-A -t 198.51.100.10:81 -s rr -p 600\n-a -t 198.51.100.10:81 -r 198.18.2.11:81 -g\n")
	q := lvssync.NewProducer(2)
	h.pl.SetSyncMaster([]*lvssync.Producer{q})
	h.conns.SetSync(&lvssync.DefaultSyncSettings, 1)
	c := netip.MustParseAddr("198.18.0.51")
	for i := range 5 {
		f := frames.TCP(frames.L2{Src: frames.DerivedMAC(c), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
			frames.IP{Src: c, Dst: vip}, frames.TCPSeg{SrcPort: uint16(5000 + i), DstPort: 81, SYN: true})
		if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Transmit {
			t.Fatalf("SYN %d: %v %v", i, r.Action, r.Reason)
		}
	}
	if q.Len() != 2 || q.Dropped() != 3 {
		t.Fatalf("queue %d records, %d dropped; want 2 and 3", q.Len(), q.Dropped())
	}
}

// TestSyncNoAllocs: queuing records (connection and template) allocates
// nothing per packet.
func TestSyncNoAllocs(t *testing.T) {
	h := newHarness(t, "-A -u 198.51.100.10:53 -s sh -p 300\n-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m\n")
	q := lvssync.NewProducer(1024)
	h.pl.SetSyncMaster([]*lvssync.Producer{q})
	h.conns.SetSync(&lvssync.SyncSettings{Threshold: 0, Period: 1}, 1) // every packet
	c := netip.MustParseAddr("198.18.0.52")
	f := frames.UDP(frames.L2{Src: frames.DerivedMAC(c), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: c, Dst: vip}, frames.UDPDgram{SrcPort: 7000, DstPort: 53, Payload: []byte("q")})
	h.send(f, forwarder.VIPSide)
	drain := func(*lvssync.Conn) bool { return true }
	q.Drain(drain)
	if a := testing.AllocsPerRun(100, func() {
		h.now += int64(2 * time.Second) // past the flow cache
		if r := h.send(f, forwarder.VIPSide); r.Action != forwarder.Transmit {
			t.Fatalf("%v %v", r.Action, r.Reason)
		}
		if q.Len() != 2 {
			t.Fatalf("%d records queued, want connection + template", q.Len())
		}
		q.Drain(drain)
	}); a != 0 {
		t.Errorf("%.1f allocations per packet with sync records, want 0", a)
	}
}

// TestStandby: backup_only with the backup daemon running passes every
// frame to the kernel untouched and creates nothing; the director works
// again when it leaves standby. A synced connection takes over at its
// first packet.
func TestStandby(t *testing.T) {
	h := newHarness(t, twoNAT)
	h.pl.SetStandby(true)
	c := netip.MustParseAddr("198.18.0.53")
	if r := h.send(syn(c, 4000), forwarder.VIPSide); r.Action != forwarder.Pass {
		t.Fatalf("standby: %v, want Pass", r.Action)
	}
	if h.conns.Len() != 0 {
		t.Fatal("standby created a connection")
	}
	// The backup learns a connection meanwhile.
	var dest *ipvs.Dest
	for _, d := range h.table.Services()[0].Dests() {
		if d.Addr == netip.MustParseAddr("198.18.2.12") {
			dest = d
		}
	}
	sc := conntrack.SyncedConn{Proto: ipvs.ProtoTCP, CAddr: c, CPort: 4001, VAddr: vip, VPort: 80, DAddr: dest.Addr, DPort: 8080,
		Flags: lvssync.FlagSync, State: lvssync.TCPEstablished, Timeout: 900 * time.Second, InPkts: 3}
	if _, err := h.conns.Synced(&sc, dest, h.now); err != nil {
		t.Fatal(err)
	}
	if r := h.send(ack(c, 4001), forwarder.VIPSide); r.Action != forwarder.Pass {
		t.Fatalf("standby, synced connection: %v, want Pass", r.Action)
	}
	h.pl.SetStandby(false)
	r := h.send(ack(c, 4001), forwarder.VIPSide)
	if r.Action != forwarder.Transmit || r.Dest != dest || r.New {
		t.Fatalf("takeover: %v dest %v new %v", r.Action, r.Dest, r.New)
	}
	if r := h.send(syn(c, 4000), forwarder.VIPSide); r.Action != forwarder.Transmit {
		t.Fatalf("after standby: %v", r.Action)
	}
}
