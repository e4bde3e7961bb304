package lvssync

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// The byte vectors below are written from the kernel's structs
// (ip_vs_sync.c: struct ip_vs_sync_mesg, ip_vs_sync_v4, ip_vs_sync_v6,
// ip_vs_sync_mesg_v0, ip_vs_sync_conn_v0, ip_vs_sync_conn_options), one
// field per group of hex digits, not produced by the encoder.

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	client = netip.MustParseAddr("198.18.0.10")
	vip    = netip.MustParseAddr("198.51.100.10")
	rip    = netip.MustParseAddr("198.18.2.11")
)

// v1 message, syncid 5, one IPv4 TCP connection (DR, NOOUTPUT,
// ESTABLISHED, 900 s).
const vecV1TCP = `
00 05 002c 01 01 0000
00 06 0024 00000083 0001 9c40 0050 1f90 00000000 00000384
c612000a c633640a c612020b`

var connV1TCP = Conn{
	Protocol: ProtoTCP, Flags: FlagDRoute | FlagNoOutput, State: TCPEstablished,
	CPort: 40000, VPort: 80, DPort: 8080, Timeout: 900,
	CAddr: client, VAddr: vip, DAddr: rip,
}

// v1 message, syncid 0, three records: a persistence template (cport 0,
// ASSURED, 360 s); a UDP connection with PE_DATA "abc" and PE_NAME "sip"
// (record size 46, so 2 bytes of padding follow); a NAT TCP connection
// with SEQ_DATA. Size 8 + 36 + 46 + 2 + 62 = 154.
const vecV1Mixed = `
00 00 009a 03 01 0000
00 06 0024 00001003 0001 0000 0050 1f90 00000000 00000168
c612000a c633640a c612020b
00 11 002e 00000000 0000 d431 0035 0035 00000007 0000012c
c612000a c633640a c612020b
02 03 616263
03 03 736970
0000
00 06 003e 00000600 0001 9c41 0050 1f90 00000000 00000384
c612000a c633640a c612020b
01 18 00000001 00000002 00000003 0000000a 0000000b 0000000c`

var connsV1Mixed = []Conn{
	{Protocol: ProtoTCP, Flags: FlagTemplate | FlagDRoute, State: TemplateAssured,
		VPort: 80, DPort: 8080, Timeout: 360, CAddr: client, VAddr: vip, DAddr: rip},
	{Protocol: ProtoUDP, CPort: 54321, VPort: 53, DPort: 53, Fwmark: 7, Timeout: 300,
		CAddr: client, VAddr: vip, DAddr: rip, PEData: []byte("abc"), PEName: []byte("sip")},
	{Protocol: ProtoTCP, Flags: FlagSeqMask, State: TCPEstablished, CPort: 40001, VPort: 80, DPort: 8080,
		Timeout: 900, CAddr: client, VAddr: vip, DAddr: rip,
		HasSeq: true, InSeq: Seq{1, 2, 3}, OutSeq: Seq{10, 11, 12}},
}

// v1 message with one IPv6 record (type bit 0), size 8 + 72.
const vecV1IPv6 = `
00 01 0050 01 01 0000
01 06 0048 00000003 0001 9c40 0050 0050 00000000 00000384
20010db8000000000000000000000001
20010db8000000000000000000000010
20010db8000100000000000000000011`

var connV1IPv6 = Conn{
	Protocol: ProtoTCP, Flags: FlagDRoute, State: TCPEstablished, CPort: 40000, VPort: 80, DPort: 80, Timeout: 900,
	CAddr: netip.MustParseAddr("2001:db8::1"), VAddr: netip.MustParseAddr("2001:db8::10"),
	DAddr: netip.MustParseAddr("2001:db8:1::11"),
}

// v0 message, syncid 7, two records: a plain TCP one and a UDP one with
// IN_SEQ, whose ip_vs_sync_conn_options follow in host (little endian)
// order. Size 4 + 24 + 48 = 76.
const vecV0 = `
02 07 004c
00 06 9c40 0050 1f90 c612000a c633640a c612020b 0083 0001
00 11 d431 0035 0035 c612000a c633640a c612020b 0400 0000
01000000 02000000 03000000 0a000000 0b000000 0c000000`

var connsV0 = []Conn{
	{Protocol: ProtoTCP, Flags: FlagDRoute | FlagNoOutput, State: TCPEstablished, CPort: 40000, VPort: 80, DPort: 8080,
		CAddr: client, VAddr: vip, DAddr: rip},
	{Protocol: ProtoUDP, Flags: FlagInSeq, CPort: 54321, VPort: 53, DPort: 53,
		CAddr: client, VAddr: vip, DAddr: rip, HasSeq: true, InSeq: Seq{1, 2, 3}, OutSeq: Seq{10, 11, 12}},
}

func decodeAll(t testing.TB, d *Decoder, b []byte) (Header, Reason, []Conn) {
	t.Helper()
	var got []Conn
	h, r := d.Decode(b, func(_ *Header, c *Conn) {
		cc := *c
		cc.PEData = bytes.Clone(c.PEData)
		cc.PEName = bytes.Clone(c.PEName)
		got = append(got, cc)
	})
	return h, r, got
}

func encode(t testing.TB, version, syncid uint8, conns []Conn) []byte {
	t.Helper()
	var m Message
	m.Reset(version, syncid)
	for i := range conns {
		if err := m.Add(&conns[i]); err != nil {
			t.Fatalf("Add(%+v): %v", conns[i], err)
		}
	}
	return bytes.Clone(m.Bytes())
}

func TestVectors(t *testing.T) {
	cases := []struct {
		name    string
		vec     string
		version uint8
		syncid  uint8
		conns   []Conn
	}{
		{"v1 tcp", vecV1TCP, 1, 5, []Conn{connV1TCP}},
		{"v1 template, pe options, seq option", vecV1Mixed, 1, 0, connsV1Mixed},
		{"v1 ipv6", vecV1IPv6, 1, 1, []Conn{connV1IPv6}},
		{"v0", vecV0, 0, 7, connsV0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.vec)
			var cnt Counters
			d := Decoder{Counters: &cnt}
			h, r, got := decodeAll(t, &d, want)
			if r != ReasonOK {
				t.Fatalf("Decode: %v", r)
			}
			if h.Version != tc.version || h.SyncID != tc.syncid || int(h.Conns) != len(tc.conns) || int(h.Size) != len(want) {
				t.Errorf("header %+v, want version %d syncid %d conns %d size %d", h, tc.version, tc.syncid, len(tc.conns), len(want))
			}
			if !equalConns(got, tc.conns) {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, tc.conns)
			}
			if enc := encode(t, tc.version, tc.syncid, tc.conns); !bytes.Equal(enc, want) {
				t.Errorf("encoded\n%x\nwant\n%x", enc, want)
			}
			if n := cnt.Records.Load(); n != uint64(len(tc.conns)) {
				t.Errorf("Records = %d", n)
			}
		})
	}
}

func equalConns(a, b []Conn) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if !bytes.Equal(x.PEData, y.PEData) || !bytes.Equal(x.PEName, y.PEName) {
			return false
		}
		x.PEData, x.PEName, y.PEData, y.PEName = nil, nil, nil, nil
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

// TestRoundTrip: decode(encode(x)) == x for records of every shape, in
// messages of many records (padding between records of every length).
func TestRoundTrip(t *testing.T) {
	var conns []Conn
	for i := range 40 {
		c := connV1TCP
		c.CPort = uint16(1000 + i)
		c.Fwmark = uint32(i)
		c.Timeout = uint32(i * 7)
		if i%3 == 0 {
			c.HasSeq, c.InSeq, c.OutSeq = true, Seq{uint32(i), 2, 3}, Seq{4, 5, uint32(i)}
		}
		if i%4 == 1 {
			c.PEData = bytes.Repeat([]byte{byte(i)}, i%7+1)
			c.PEName = []byte("sip"[:i%3+1])
		}
		if i%5 == 2 {
			c = connV1IPv6
			c.CPort = uint16(i)
		}
		conns = append(conns, c)
	}
	b := encode(t, 1, 3, conns)
	_, r, got := decodeAll(t, &Decoder{}, b)
	if r != ReasonOK || !equalConns(got, conns) {
		t.Fatalf("v1 round trip: %v\n%+v\nwant\n%+v", r, got, conns)
	}

	var v0 []Conn
	for i := range 30 {
		c := connsV0[i%2]
		c.CPort = uint16(i)
		v0 = append(v0, c)
	}
	b = encode(t, 0, 9, v0)
	_, r, got = decodeAll(t, &Decoder{}, b)
	if r != ReasonOK || !equalConns(got, v0) {
		t.Fatalf("v0 round trip: %v", r)
	}
}

func TestEncodeErrors(t *testing.T) {
	var m Message
	m.Reset(0, 0)
	c := connV1IPv6
	if err := m.Add(&c); err != ErrV0IPv6 {
		t.Errorf("v0 IPv6: %v", err)
	}
	c = connV1TCP
	c.PEData = []byte{1}
	if err := m.Add(&c); err != ErrV0Options {
		t.Errorf("v0 PE data: %v", err)
	}
	m.Reset(1, 0)
	c = connV1TCP
	c.DAddr = connV1IPv6.DAddr
	if err := m.Add(&c); err != ErrMixedFamily {
		t.Errorf("mixed: %v", err)
	}
	c = connV1TCP
	c.PEName = bytes.Repeat([]byte("x"), 17)
	if err := m.Add(&c); err != ErrOptionLen {
		t.Errorf("long PE name: %v", err)
	}
	if m.Conns() != 0 || m.Len() != headerLenV1 {
		t.Errorf("a refused record changed the message: %d records, %d bytes", m.Conns(), m.Len())
	}
	c = connV1TCP
	for range MaxConns {
		if err := m.Add(&c); err != nil {
			t.Fatal(err)
		}
	}
	if !m.Full() || m.Add(&c) == nil {
		t.Error("a message took more than 255 records")
	}
}

func TestFlagMasks(t *testing.T) {
	// What the master sends: everything but HASHED.
	if got := MasterFlags(FlagHashed | FlagDRoute | FlagOnePacket | 1<<16); got != FlagDRoute|FlagOnePacket|1<<16 {
		t.Errorf("MasterFlags = %#x", got)
	}
	all := uint32(0xffffffff)
	// v1 backup: BACKUP_MASK | SYNC = 0x1f87 | 0x20.
	if got := BackupFlags(1, all); got != 0x1fa7 {
		t.Errorf("BackupFlags(v1) = %#x, want 0x1fa7", got)
	}
	// v0 backup: every bit but HASHED, plus SYNC.
	if got := BackupFlags(0, 0xffff); got != 0xffbf {
		t.Errorf("BackupFlags(v0) = %#x, want 0xffbf", got)
	}
	if got := BackupFlags(1, FlagOnePacket|FlagMasq); got != FlagSync {
		t.Errorf("BackupFlags(v1, ONE_PACKET) = %#x", got)
	}
	// Update: only INACTIVE and the SEQ bits change.
	cur := FlagSync | FlagDRoute | FlagInactive
	if got := UpdateFlags(cur, FlagSync|FlagTunnel|FlagInSeq); got != FlagSync|FlagDRoute|FlagInSeq {
		t.Errorf("UpdateFlags = %#x", got)
	}
}

// TestMalformed: every framing error drops the message (or its rest) with
// its reason; every unusable record is skipped and the next one is read.
func TestMalformed(t *testing.T) {
	tcp := strings.Join(strings.Fields(vecV1TCP), "")[16:] // the record without the header
	rec := func(mod func(b []byte) []byte) string {
		b := unhex(t, tcp)
		return hex.EncodeToString(mod(b))
	}
	msg := func(n int, recs ...string) []byte {
		body := unhex(t, strings.Join(recs, ""))
		h := []byte{0, 0, 0, 0, byte(n), 1, 0, 0}
		size := len(h) + len(body)
		h[2], h[3] = byte(size>>8), byte(size)
		return append(h, body...)
	}
	setSize := func(n int) func(b []byte) []byte {
		return func(b []byte) []byte { b[2], b[3] = byte(n>>8), byte(n); return b }
	}
	withOpt := func(opt string) func(b []byte) []byte {
		return func(b []byte) []byte {
			b = append(b, unhex(t, opt)...)
			return setSize(len(b))(b)
		}
	}
	ok := rec(func(b []byte) []byte { return b })
	cases := []struct {
		name   string
		msg    []byte
		syncid uint8
		reason Reason // returned
		skip   Reason // counted once besides
		n      int    // records delivered
	}{
		{"empty", nil, 0, ReasonShort, 0, 0},
		{"3 bytes", []byte{0, 0, 0}, 0, ReasonShort, 0, 0},
		{"size larger than datagram", unhex(t, "00 00 0030 01 01 0000"+ok), 0, ReasonSize, 0, 0},
		{"size smaller than datagram", unhex(t, "00 00 0008 01 01 0000"+ok), 0, ReasonSize, 0, 0},
		{"other syncid", unhex(t, vecV1TCP), 9, ReasonSyncID, 0, 0},
		{"same syncid", unhex(t, vecV1TCP), 5, ReasonOK, 0, 1},
		{"backup syncid 0 takes any", unhex(t, vecV1TCP), 0, ReasonOK, 0, 1},
		{"second record missing", msg(2, ok), 0, ReasonTruncated, 0, 1},
		{"record size past the end", msg(1, rec(setSize(40))), 0, ReasonOverrun, 0, 0},
		{"record version 1", msg(1, rec(func(b []byte) []byte { b[2] |= 0x10; return b })), 0, ReasonRecordVersion, 0, 0},
		{"record type 2", msg(1, rec(func(b []byte) []byte { b[0] = 2; return b })), 0, ReasonType, 0, 0},
		{"ipv6 type, v4 size", msg(1, rec(func(b []byte) []byte { b[0] = 1; return b })), 0, ReasonRecordShort, 0, 0},
		{"record size below fixed part", msg(1, rec(setSize(20))), 0, ReasonRecordShort, 0, 0},
		{"record size 0", msg(1, rec(setSize(0))), 0, ReasonRecordShort, 0, 0},
		{"option header cut", msg(1, rec(withOpt("02"))), 0, ReasonOption, 0, 0},
		{"option length 0", msg(1, rec(withOpt("0200"))), 0, ReasonOption, 0, 0},
		{"option past the record", msg(1, rec(withOpt("0205 61"))), 0, ReasonOption, 0, 0},
		{"seq option of 4 bytes", msg(1, rec(withOpt("0104 00000000"))), 0, ReasonSeqOption, 0, 0},
		{"seq option twice", msg(1, rec(withOpt("0118"+strings.Repeat("00", 24)+"0118"+strings.Repeat("00", 24)))), 0, ReasonSeqOption, 0, 0},
		{"pe data twice", msg(1, rec(withOpt("020161 020161 030161"))), 0, ReasonPEOption, 0, 0},
		{"pe data of 17", msg(1, rec(withOpt("0211"+strings.Repeat("61", 17)+"0303736970"))), 0, ReasonOK, 0, 1},
		{"pe name too long", msg(1, rec(withOpt("020161 0311"+strings.Repeat("61", 17)))), 0, ReasonPEOption, 0, 0},
		{"unknown mandatory option skips the record", msg(2, rec(withOpt("050161"))+"00", ok), 0, ReasonOK, ReasonMandatoryOption, 1},
		{"unknown optional option", msg(1, rec(withOpt("450161"))), 0, ReasonOK, 0, 1},
		{"pe data without name", msg(2, rec(withOpt("020161"))+"00", ok), 0, ReasonOK, ReasonPE, 1},
		{"icmp connection", msg(2, rec(func(b []byte) []byte { b[1] = 1; return b }), ok), 0, ReasonOK, ReasonProtocol, 1},
		{"icmp template", msg(1, rec(func(b []byte) []byte { b[1] = 1; b[6] = 0x10; return b })), 0, ReasonOK, 0, 1},
		{"tcp state 11", msg(2, rec(func(b []byte) []byte { b[9] = 11; return b }), ok), 0, ReasonOK, ReasonState, 1},
		{"tcp state 10", msg(1, rec(func(b []byte) []byte { b[9] = 10; return b })), 0, ReasonOK, 0, 1},
		{"udp state 1", msg(1, rec(func(b []byte) []byte { b[1] = 17; b[9] = 1; return b })), 0, ReasonOK, ReasonState, 0},
		{"template state 7", msg(1, rec(func(b []byte) []byte { b[6] = 0x10; b[9] = 7; return b })), 0, ReasonOK, 0, 1},
		{"trailing bytes ignored", append(msg(1, ok+"00000000"), []byte{}...), 0, ReasonOK, 0, 1},
		{"v0 second record cut", unhex(t, "02 00 001c 00 06 9c40 0050 1f90 c612000a c633640a c612020b 0083 0001"), 0, ReasonTruncated, 0, 1},
		{"v0 options cut", unhex(t, "01 00 001c 00 06 9c40 0050 1f90 c612000a c633640a c612020b 0200 0001"), 0, ReasonTruncated, 0, 0},
		{"v0 bad protocol", unhex(t, "01 00 001c 00 01 9c40 0050 1f90 c612000a c633640a c612020b 0083 0001"), 0, ReasonOK, ReasonProtocol, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cnt Counters
			d := Decoder{SyncID: tc.syncid, Counters: &cnt}
			_, r, got := decodeAll(t, &d, tc.msg)
			if r != tc.reason {
				t.Errorf("reason %v, want %v", r, tc.reason)
			}
			if len(got) != tc.n {
				t.Errorf("%d records delivered, want %d", len(got), tc.n)
			}
			if tc.reason != ReasonOK && cnt.Count(tc.reason) != 1 {
				t.Errorf("count(%v) = %d", tc.reason, cnt.Count(tc.reason))
			}
			if tc.skip != 0 && cnt.Count(tc.skip) != 1 {
				t.Errorf("count(%v) = %d, counters %v", tc.skip, cnt.Count(tc.skip), cnt.Reasons())
			}
		})
	}
}

func TestDecodeNoAllocs(t *testing.T) {
	b := unhex(t, vecV1Mixed)
	var cnt Counters
	d := Decoder{Counters: &cnt}
	n := 0
	fn := func(_ *Header, c *Conn) { n += int(c.CPort) }
	if a := testing.AllocsPerRun(100, func() { d.Decode(b, fn) }); a != 0 {
		t.Errorf("Decode allocates %v times", a)
	}
	var m Message
	m.Reset(1, 0)
	if a := testing.AllocsPerRun(100, func() {
		m.Reset(1, 0)
		for i := range connsV1Mixed {
			_ = m.Add(&connsV1Mixed[i])
		}
	}); a != 0 {
		t.Errorf("Message.Add allocates %v times", a)
	}
}

func FuzzDecode(f *testing.F) {
	for _, v := range []string{vecV1TCP, vecV1Mixed, vecV1IPv6, vecV0} {
		f.Add(unhex(f, v), uint8(0))
	}
	f.Add([]byte{0, 0, 0, 8, 1, 1, 0, 0}, uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, syncid uint8) {
		var cnt Counters
		d := Decoder{SyncID: syncid, Counters: &cnt}
		var got []Conn
		_, r := d.Decode(b, func(h *Header, c *Conn) {
			if h.Version == 0 && c.IPv6() {
				t.Fatal("IPv6 record in a version 0 message")
			}
			got = append(got, *c)
		})
		if r == ReasonOK && len(b) >= headerLenV1 && b[0] == 0 && b[5] == 1 && b[6] == 0 && b[7] == 0 {
			// A clean version 1 message re-encodes to a message
			// that decodes to the same records.
			var m Message
			m.Reset(1, b[1])
			for i := range got {
				if len(got[i].PEData) == 0 {
					got[i].PEName = nil // the kernel sends a PE name only with PE data
				}
				if m.Full() {
					return
				}
				if err := m.Add(&got[i]); err != nil {
					return // e.g. a PE name without PE data is not re-sent
				}
			}
			_, r2, again := decodeAll(t, &Decoder{}, m.Bytes())
			if r2 != ReasonOK || !equalConns(again, got) {
				t.Fatalf("re-encoded message decodes to %v %+v, want %+v", r2, again, got)
			}
		}
	})
}
