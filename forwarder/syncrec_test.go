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

// opsRules is a persistent one-packet UDP service with two real servers.
const opsRules = "-A -u 198.51.100.10:53 -s rr -p 300 -o\n" +
	"-a -u 198.51.100.10:53 -r 198.18.2.11:53 -m -w 1\n" +
	"-a -u 198.51.100.10:53 -r 198.18.2.12:53 -m -w 1\n"

func dnsQuery(c netip.Addr, cport uint16) []byte {
	return frames.UDP(frames.L2{Src: frames.DerivedMAC(c), Dst: frames.DerivedMAC(netip.MustParseAddr("198.18.1.1"))},
		frames.IP{Src: c, Dst: vip}, frames.UDPDgram{SrcPort: cport, DstPort: 53, Payload: []byte("q")})
}

// TestSyncOnePacketMaster: a master (sync_version 1) running a persistent
// one-packet UDP service queues no record of the datagrams themselves but
// one of their template at each datagram the kernel's rule passes it
// (ip_vs_sync_conn: a ONE_PACKET connection goes straight to its
// controller): every datagram with the default sync_threshold 3 50, the
// third only with 3 0, none in sync_version 0. The records, through the
// wire format, give a backup the template, and the backup's first
// datagram from that client after a takeover goes to the master's real
// server, where its own scheduler would have picked the other.
func TestSyncOnePacketMaster(t *testing.T) {
	c := netip.MustParseAddr("198.18.0.60")
	type step struct {
		settings lvssync.SyncSettings
		version  int
		due      []bool // template record due at each datagram
	}
	steps := []step{
		{lvssync.DefaultSyncSettings, 1, []bool{true, true, true, true, true}},
		{lvssync.SyncSettings{Threshold: 3}, 1, []bool{false, false, true, false, false}},
		{lvssync.DefaultSyncSettings, 0, []bool{false, false, false, false}},
	}
	for si, st := range steps {
		h := newHarness(t, opsRules)
		q := lvssync.NewProducer(64)
		h.pl.SetSyncMaster([]*lvssync.Producer{q})
		h.conns.SetSync(&st.settings, st.version)
		// Another client first: rr moves on, c's template names the
		// other real server.
		first := h.send(dnsQuery(netip.MustParseAddr("198.18.0.61"), 1000), forwarder.VIPSide).Dest
		drainAll(q)
		var dest *ipvs.Dest
		var recs []lvssync.Conn
		for i, due := range st.due {
			h.now += int64(time.Second)
			r := h.send(dnsQuery(c, uint16(2000+i)), forwarder.VIPSide)
			if r.Action != forwarder.Transmit || !r.New || (dest != nil && r.Dest != dest) {
				t.Fatalf("step %d datagram %d: %v %v new %v dest %v", si, i+1, r.Action, r.Reason, r.New, r.Dest)
			}
			dest = r.Dest
			got := drainAll(q)
			if n := len(got); (due && n != 1) || (!due && n != 0) {
				t.Fatalf("step %d datagram %d: %d records queued, want due=%v: %+v", si, i+1, n, due, got)
			}
			recs = append(recs, got...)
		}
		if first == nil || dest.Addr == first.Addr {
			t.Fatalf("step %d: the client's real server %v, the first client's %v; want another", si, dest.Addr, first)
		}
		for _, r := range recs {
			if r.Flags&lvssync.FlagTemplate == 0 || r.Flags&lvssync.FlagOnePacket != 0 || r.Protocol != lvssync.ProtoUDP ||
				r.CAddr != c || r.CPort != 0 || r.VAddr != vip || r.VPort != 53 || r.DAddr != dest.Addr || r.DPort != 53 ||
				r.Timeout != 300 || r.State != lvssync.TemplateNone {
				t.Fatalf("step %d: record %+v", si, r)
			}
		}
		if len(recs) == 0 {
			continue
		}

		// The backup: the records through the wire, Synced as the backup
		// daemon applies them, then the takeover.
		b := newHarness(t, opsRules)
		var m lvssync.Message
		m.Reset(1, 0)
		for i := range recs {
			recs[i].Flags = lvssync.MasterFlags(recs[i].Flags)
			if err := m.Add(&recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		dec := lvssync.Decoder{Counters: &lvssync.Counters{}}
		dec.Decode(m.Bytes(), func(hd *lvssync.Header, rc *lvssync.Conn) {
			var bd *ipvs.Dest
			for _, d := range b.table.Services()[0].Dests() {
				if d.Addr == rc.DAddr && d.Port == rc.DPort {
					bd = d
				}
			}
			sc := conntrack.SyncedConn{Proto: ipvs.Protocol(rc.Protocol), CAddr: rc.CAddr, VAddr: rc.VAddr, DAddr: rc.DAddr,
				CPort: rc.CPort, VPort: rc.VPort, DPort: rc.DPort, Flags: lvssync.BackupFlags(hd.Version, rc.Flags),
				State: rc.State, Timeout: time.Duration(rc.Timeout) * time.Second, InPkts: 3}
			if _, err := b.conns.Synced(&sc, bd, b.now); err != nil {
				t.Fatal(err)
			}
		})
		if b.conns.Len() != 1 {
			t.Fatalf("step %d: backup holds %d entries, want the one template", si, b.conns.Len())
		}
		r := b.send(dnsQuery(c, 3000), forwarder.VIPSide)
		if r.Action != forwarder.Transmit || r.Dest.Addr != dest.Addr {
			t.Fatalf("step %d: backup's datagram: %v dest %v, want %v", si, r.Action, r.Dest, dest.Addr)
		}
		// The backup's scheduler had not moved: a new client gets the
		// real server the master's first client got.
		r = b.send(dnsQuery(netip.MustParseAddr("198.18.0.63"), 1000), forwarder.VIPSide)
		if r.Action != forwarder.Transmit || r.Dest.Addr != first.Addr {
			t.Fatalf("step %d: backup's new client: %v dest %v, want %v", si, r.Action, r.Dest, first.Addr)
		}
	}
}

// TestSyncOnePacketNoAllocs: a one-packet datagram whose template record
// is queued allocates nothing.
func TestSyncOnePacketNoAllocs(t *testing.T) {
	h := newHarness(t, opsRules)
	q := lvssync.NewProducer(1024)
	h.pl.SetSyncMaster([]*lvssync.Producer{q})
	h.conns.SetSync(&lvssync.DefaultSyncSettings, 1)
	c := netip.MustParseAddr("198.18.0.62")
	fs := make([][]byte, 64)
	for i := range fs {
		fs[i] = dnsQuery(c, uint16(4000+i))
	}
	h.send(fs[0], forwarder.VIPSide)
	drain := func(*lvssync.Conn) bool { return true }
	q.Drain(drain)
	i := 0
	if a := testing.AllocsPerRun(100, func() {
		if r := h.send(fs[i%len(fs)], forwarder.VIPSide); r.Action != forwarder.Transmit {
			t.Fatalf("%v %v", r.Action, r.Reason)
		}
		i++
		if q.Len() != 1 {
			t.Fatalf("%d records queued, want the template's", q.Len())
		}
		q.Drain(drain)
	}); a != 0 {
		t.Errorf("%.1f allocations per one-packet datagram with a template record, want 0", a)
	}
}
