package conntrack

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cespare/xxhash/v2"

	"gvs/ipvs"
)

// Connections that differ only in their virtual side share a hash, and a
// NAT connection's in-key and reply key share one too (and one cell):
// every lookup must still find exactly its own entry in the shared index,
// a reply lookup never a DR connection, and removing entries must leave no
// cell behind.
func TestSharedHashCells(t *testing.T) {
	tb := New(Config{Shards: 1, Seed: 9})
	nat := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	dr := newDest(t, ipvs.Route, "198.19.0.12", 80)
	now := int64(t0)
	var keys []InKey
	for i := 0; i < 40; i++ {
		k := NewInKey(ipvs.ProtoTCP, netip.AddrPortFrom(client, 40000),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 80))
		d, port := nat, uint16(8080+i)
		if i%3 == 0 {
			d, port = dr, 80
		}
		var c Conn
		if err := tb.Create(k, d, port, TemplateRef{}, TCPSyn, now, &c); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	h := hashConn(tb.seed, ipvs.ProtoTCP, &keys[0].CAddr, 40000)
	for i, k := range keys {
		if hashConn(tb.seed, k.Proto, &k.CAddr, k.CPort) != h {
			t.Fatalf("key %d: the keys were meant to share a hash", i)
		}
	}
	for i, k := range keys {
		var c Conn
		if !tb.PeekIn(k, now, &c) || c.VAddr != addrOf(k.VAddr) {
			t.Fatalf("key %d: PeekIn found %v, want VIP %v", i, c.VAddr, addrOf(k.VAddr))
		}
		rk := NewReplyKey(ipvs.ProtoTCP, netip.AddrPortFrom(nat.Addr, uint16(8080+i)), netip.AddrPortFrom(client, 40000))
		found := tb.PeekOut(rk, now, &c)
		if want := i%3 != 0; found != want {
			t.Fatalf("key %d: PeekOut found=%v, want %v (NAT connections only)", i, found, want)
		}
		if found && c.VAddr != addrOf(k.VAddr) {
			t.Fatalf("key %d: PeekOut found the connection to %v", i, c.VAddr)
		}
	}
	// A DR connection shares the cell hash of a reply key from its real
	// server, but replies never pass the director: no reply lookup finds it.
	drReply := NewReplyKey(ipvs.ProtoTCP, netip.AddrPortFrom(dr.Addr, 80), netip.AddrPortFrom(client, 40000))
	var dc Conn
	if tb.PeekOut(drReply, now, &dc) {
		t.Fatalf("PeekOut found DR connection to %v by its real server's tuple", dc.VAddr)
	}
	s := &tb.shards[0]
	if want := uint32(40); s.ix.count != want { // one cell per connection, NAT or not
		t.Fatalf("index holds %d cells, want %d", s.ix.count, want)
	}
	for i := len(keys) - 1; i >= 0; i -= 2 { // out of creation order
		if !tb.Remove(keys[i]) {
			t.Fatalf("Remove %d: not found", i)
		}
	}
	for i := len(keys) - 2; i >= 0; i -= 2 {
		if !tb.Remove(keys[i]) {
			t.Fatalf("Remove %d: not found", i)
		}
	}
	if s.ix.count != 0 {
		t.Fatalf("index holds %d cells after removing every connection", s.ix.count)
	}
	for i, c := range s.ix.cells {
		if c != (cell{}) {
			t.Fatalf("cell %d left behind: %+v", i, c)
		}
	}
}

// The connection hash is keyed (another seed, other hashes), depends on
// every field it covers, and spreads sequential IPv4 clients evenly over
// the shards.
func TestHashConn(t *testing.T) {
	k1, k2 := uint64(1), uint64(2)
	a := Mapped4([4]byte{198, 18, 0, 1})
	b := Mapped4([4]byte{198, 18, 0, 2})
	base := hashConn(k1, ipvs.ProtoTCP, &a, 1000)
	for name, h := range map[string]uint64{
		"seed":  hashConn(k2, ipvs.ProtoTCP, &a, 1000),
		"proto": hashConn(k1, ipvs.ProtoUDP, &a, 1000),
		"addr":  hashConn(k1, ipvs.ProtoTCP, &b, 1000),
		"port":  hashConn(k1, ipvs.ProtoTCP, &a, 1001),
	} {
		if h == base {
			t.Errorf("changing the %s does not change the hash", name)
		}
	}
	if hashConn(k1, ipvs.ProtoTCP, &a, 1000) != base {
		t.Fatal("hash is not deterministic")
	}
	tk := TemplateKey{Proto: ipvs.ProtoTCP, CNet: a, VAddr: b, VPort: 80}
	tk2 := tk
	tk2.VPort = 81
	if hashTemplate(k1, &tk) == hashTemplate(k1, &tk2) || hashTemplate(k1, &tk) == hashTemplate(k2, &tk) {
		t.Error("template hash ignores the port or the seed")
	}

	const shards, n = 64, 1 << 16
	var per [shards]int
	for i := 0; i < n; i++ {
		c := Mapped4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		per[hashConn(k1, ipvs.ProtoTCP, &c, 40000)>>58]++
	}
	for i, got := range per {
		if got < n/shards*3/4 || got > n/shards*5/4 {
			t.Fatalf("shard %d got %d of %d sequential clients, want about %d", i, got, n, n/shards)
		}
	}
}

// fill assigns every field of Conn: a Conn that held another entry before
// comes out the same as a fresh one.
func TestFillOverwritesEverything(t *testing.T) {
	tb := New(Config{Shards: 1, Seed: 3})
	d := newDest(t, ipvs.Masq, "198.19.0.11", 8080)
	var fresh Conn
	if err := tb.Create(inKey(ipvs.ProtoTCP, 1), d, 8080, TemplateRef{}, TCPSyn, t0, &fresh); err != nil {
		t.Fatal(err)
	}
	old := Conn{Proto: ipvs.ProtoUDP, CAddr: vip, CPort: 9, VAddr: client, VPort: 9, DAddr: vip, DPort: 9,
		Dest: newDest(t, ipvs.Route, "198.19.0.12", 80), Method: ipvs.Route, State: StateTimeWait,
		Flags: FlagTemplate | FlagNoOutput, Expires: 1, InPkts: 99, NControl: 7}
	if !tb.PeekIn(inKey(ipvs.ProtoTCP, 1), t0, &old) {
		t.Fatal("connection not found")
	}
	if old != fresh {
		t.Fatalf("fill left something of the previous connection:\n got %+v\nwant %+v", old, fresh)
	}
}

// TestHashIsSeededXXHash pins the register-only hashes to the library's
// XXH64 over the packed keys they stand for.
func TestHashIsSeededXXHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		seed := rng.Uint64()
		var a, v [16]byte
		for j := range a {
			a[j], v[j] = byte(rng.Uint32()), byte(rng.Uint32())
		}
		if i%2 == 0 {
			a = Mapped4([4]byte(a[:4]))
		}
		port, vport := uint16(rng.Uint32()), uint16(rng.Uint32())
		proto := ipvs.Protocol(rng.Uint32())

		var b [28]byte
		binary.LittleEndian.PutUint64(b[0:8], seed)
		copy(b[8:24], a[:])
		binary.LittleEndian.PutUint16(b[24:26], port)
		b[26], b[27] = byte(proto), kindConn
		if got, want := hashConn(seed, proto, &a, port), xxhash.Sum64(b[:]); got != want {
			t.Fatalf("hashConn = %#x, xxhash.Sum64 = %#x", got, want)
		}

		tk := TemplateKey{Proto: proto, CNet: a, VAddr: v, VPort: vport}
		var tb [44]byte
		binary.LittleEndian.PutUint64(tb[0:8], seed)
		copy(tb[8:24], a[:])
		copy(tb[24:40], v[:])
		binary.LittleEndian.PutUint16(tb[40:42], vport)
		tb[42], tb[43] = byte(proto), kindTemplate
		if got, want := hashTemplate(seed, &tk), xxhash.Sum64(tb[:]); got != want {
			t.Fatalf("hashTemplate = %#x, xxhash.Sum64 = %#x", got, want)
		}
	}
}
