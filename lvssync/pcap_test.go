package lvssync

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writePcap writes one Ethernet/IPv4/UDP frame per payload, from src to
// the sync group 224.0.0.81:8848, into a classic pcap file.
func writePcap(tb testing.TB, path string, payloads ...[]byte) {
	tb.Helper()
	b := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 1) // Ethernet
	for i, p := range payloads {
		f := []byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x51, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00}
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 1, 17, 0, 0, 198, 18, 9, 1, 224, 0, 0, 81}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(p)))
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		udp := []byte{0x9c, 0x40, 0x22, 0x90, 0, 0, 0, 0} // 40000 -> 8848, no checksum
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(p)))
		f = append(append(append(f, ip...), udp...), p...)
		b = binary.LittleEndian.AppendUint32(b, uint32(1700000000+i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// requireTshark finds tshark; without it the test is skipped, or fails
// under CI=true.
func requireTshark(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true and tshark is not installed (make deps installs it): %v", err)
		}
		tb.Skipf("tshark not installed: %v", err)
	}
	return p
}

// TestTshark has Wireshark's IPVS dissector ("ipvs", UDP port 8848)
// decode messages from our encoder. What the dissector of Wireshark 4.0
// knows, and so what is asserted: the version 1 header and each record's
// fixed part (it steps 36 or 72 bytes per record and ignores the size
// field, so it cannot read past a record that carries options: such a
// record is only tested last in its message); the version 0 header,
// records and sequence options (which it shows in network order: the
// kernel sends them in host order, see vecV0).
func TestTshark(t *testing.T) {
	tshark := requireTshark(t)
	tmpl := Conn{Protocol: ProtoTCP, Flags: FlagTemplate | FlagDRoute, State: TemplateAssured,
		VPort: 443, DPort: 443, Timeout: 360, CAddr: client, VAddr: vip, DAddr: rip}
	nat := Conn{Protocol: ProtoTCP, Flags: FlagMasq | FlagInactive, State: TCPSynRecv, CPort: 50001, VPort: 80, DPort: 8080,
		Timeout: 60, CAddr: netip.MustParseAddr("198.18.0.11"), VAddr: vip, DAddr: netip.MustParseAddr("198.18.2.12")}
	udp := Conn{Protocol: ProtoUDP, Flags: FlagTunnel, CPort: 5353, VPort: 53, DPort: 53, Fwmark: 42, Timeout: 300,
		CAddr: client, VAddr: vip, DAddr: rip}
	withPE := udp
	withPE.PEData, withPE.PEName = []byte("call-id"), []byte("sip")
	v0 := connsV0

	msgs := []struct {
		version, syncid uint8
		conns           []Conn
	}{
		{1, 0, []Conn{connV1TCP, tmpl, nat, udp}},
		{1, 200, []Conn{nat, withPE}},
		{1, 1, []Conn{connV1IPv6}},
		{0, 7, v0},
	}
	var payloads [][]byte
	for _, m := range msgs {
		payloads = append(payloads, encode(t, m.version, m.syncid, m.conns))
	}
	pcap := filepath.Join(t.TempDir(), "sync.pcap")
	writePcap(t, pcap, payloads...)

	fields := []string{"ipvs.syncid", "ipvs.conncount", "ipvs.size", "ipvs.version",
		"ipvs.type", "ipvs.proto", "ipvs.size.v1", "ipvs.cport", "ipvs.vport", "ipvs.dport",
		"ipvs.caddr", "ipvs.vaddr", "ipvs.daddr", "ipvs.caddr6", "ipvs.vaddr6", "ipvs.daddr6",
		"ipvs.flags.v1", "ipvs.flags", "ipvs.state", "ipvs.timeout", "ipvs.fwmark",
		"ipvs.in_seq.initial", "ipvs.in_seq.delta", "ipvs.out_seq.pdelta"}
	args := []string{"-r", pcap, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command(tshark, args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(msgs) {
		t.Fatalf("tshark printed %d lines, want %d:\n%s", len(lines), len(msgs), out)
	}
	for i, m := range msgs {
		got := map[string]string{}
		for j, v := range strings.Split(lines[i], "|") {
			got[fields[j]] = v
		}
		want := expectDissected(m.version, m.syncid, m.conns, len(payloads[i]))
		for _, f := range fields {
			if got[f] != want[f] {
				t.Errorf("message %d: %s = %q, want %q", i, f, got[f], want[f])
			}
		}
	}
}

// expectDissected is what the dissector shows for a message of conns,
// computed from the records (not from the encoder's bytes).
func expectDissected(version, syncid uint8, conns []Conn, size int) map[string]string {
	w := map[string]string{
		"ipvs.syncid":    fmt.Sprint(syncid),
		"ipvs.conncount": fmt.Sprint(len(conns)),
		"ipvs.size":      fmt.Sprint(size),
	}
	col := map[string][]string{}
	add := func(k, v string) { col[k] = append(col[k], v) }
	for _, c := range conns {
		add("ipvs.proto", fmt.Sprintf("0x%02x", c.Protocol))
		add("ipvs.cport", fmt.Sprint(c.CPort))
		add("ipvs.vport", fmt.Sprint(c.VPort))
		add("ipvs.dport", fmt.Sprint(c.DPort))
		add("ipvs.state", fmt.Sprintf("0x%04x", c.State))
		sfx := ""
		if c.IPv6() {
			sfx = "6"
		}
		add("ipvs.caddr"+sfx, c.CAddr.String())
		add("ipvs.vaddr"+sfx, c.VAddr.String())
		add("ipvs.daddr"+sfx, c.DAddr.String())
		if version == 0 {
			add("ipvs.flags", fmt.Sprintf("0x%04x", c.Flags))
			if c.Flags&FlagSeqMask != 0 {
				// shown as big endian, sent in host (little endian) order
				add("ipvs.in_seq.initial", fmt.Sprintf("0x%08x", bswap(c.InSeq.Init)))
				add("ipvs.in_seq.delta", fmt.Sprintf("0x%08x", bswap(c.InSeq.Delta)))
				add("ipvs.out_seq.pdelta", fmt.Sprintf("0x%08x", bswap(c.OutSeq.PrevDelta)))
			}
			continue
		}
		typ := "0"
		if c.IPv6() {
			typ = "1"
		}
		add("ipvs.type", typ)
		n, _ := RecordLen(&c)
		add("ipvs.size.v1", fmt.Sprint(n))
		add("ipvs.flags.v1", fmt.Sprintf("0x%08x", c.Flags))
		add("ipvs.timeout", fmt.Sprint(c.Timeout))
		add("ipvs.fwmark", fmt.Sprintf("0x%08x", c.Fwmark))
	}
	if version == 1 {
		w["ipvs.version"] = "1"
	}
	for k, v := range col {
		w[k] = strings.Join(v, ",")
	}
	return w
}

func bswap(v uint32) uint32 {
	return v>>24 | v>>8&0xff00 | v<<8&0xff0000 | v<<24
}
