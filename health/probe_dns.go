package health

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// DNS record types DNS_CHECK accepts by name (check_dns.c's table).
var dnsTypes = map[string]uint16{"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28,
	"RRSIG": 46, "DNSKEY": 48}

// DNSType maps a DNS_CHECK `type` name (case-insensitive) to its number; ok is false when
// keepalived would not know it.
func DNSType(name string) (uint16, bool) {
	t, ok := dnsTypes[strings.ToUpper(name)]
	return t, ok
}

// DNSProbe is DNS_CHECK: one query over UDP (recursion desired, class IN); success when a
// response with the query's ID, QR set and RCODE 0 arrives within connect_timeout. Answers are
// not required. Defaults: type SOA, name ".".
type DNSProbe struct {
	Conn ConnOpts
	Type uint16
	Name string
}

// Kind is DNS_CHECK.
func (*DNSProbe) Kind() Kind { return KindDNS }

// Steps is 1.
func (*DNSProbe) Steps() int { return 1 }

func dnsErr(msg string, err error) Result { return Result{Err: &ProbeError{Msg: msg, Err: err}} }

// Check sends the query and waits for its answer, ignoring short datagrams, other IDs and
// queries, as check_dns.c does.
func (p *DNSProbe) Check(ctx context.Context, _ int) Result {
	id := uint16(rand.Uint32())
	q, err := dnsQuery(id, p.Type, p.Name)
	if err != nil {
		return dnsErr("bad query", err)
	}
	c, err := p.Conn.dial(ctx, "udp")
	if err != nil {
		return dnsErr("connection error.", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.SetDeadline(time.Now().Add(p.Conn.timeout()))
	if n, err := c.Write(q); err != nil {
		return dnsErr("failed to write socket.", err)
	} else if n != len(q) {
		return dnsErr("failed to write all of the datagram.", nil)
	}
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if isTimeout(err) {
				return dnsErr("read timeout from socket", err)
			}
			return dnsErr("failed to read socket", err)
		}
		if n < 12 || binary.BigEndian.Uint16(buf) != id {
			continue
		}
		flags := binary.BigEndian.Uint16(buf[2:])
		if flags&0x8000 == 0 {
			continue
		}
		if rc := flags & 0xf; rc != 0 {
			return dnsErr(fmt.Sprintf("read error occurred. (rcode = %d)", rc), nil)
		}
		return Result{}
	}
}

// dnsQuery encodes the query as keepalived's dns_make_query does.
func dnsQuery(id, typ uint16, name string) ([]byte, error) {
	if typ == 0 {
		typ = 6 // SOA
	}
	if name == "" {
		name = "."
	}
	b := make([]byte, 12, 12+len(name)+6)
	binary.BigEndian.PutUint16(b, id)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(b[4:], 1)      // QDCOUNT
	if name != "." {
		for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
			if len(label) == 0 || len(label) > 63 {
				return nil, errors.New("invalid name " + name)
			}
			b = append(b, byte(len(label)))
			b = append(b, label...)
		}
	}
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, 1) // IN
	return b, nil
}
