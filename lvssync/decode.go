package lvssync

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
)

// Reason says why a message or a record was not used. The names follow the
// kernel's messages in ip_vs_process_message and ip_vs_proc_sync_conn.
type Reason uint8

// Reasons. Those up to ReasonPEOption drop the message (or its rest), those
// from ReasonMandatoryOption on skip one record.
const (
	ReasonOK Reason = iota
	// ReasonShort: shorter than the 4-byte version 0 header ("message
	// header too short").
	ReasonShort
	// ReasonSize: the datagram's length is not the header's size ("bogus
	// message size"; also a datagram longer than the receive buffer).
	ReasonSize
	// ReasonSyncID: another syncid than the backup's (which is not 0).
	ReasonSyncID
	// ReasonTruncated: a record starts too close to the end for its fixed
	// part ("Dropping buffer, too small"; version 0: "bogus conn", also
	// for options past the end).
	ReasonTruncated
	// ReasonOverrun: a record's size runs past the message ("msg > buffer").
	ReasonOverrun
	// ReasonRecordVersion: a record's version bits are not 0.
	ReasonRecordVersion
	// ReasonType: a record's type is neither 0 nor has the IPv6 bit (-10).
	ReasonType
	// ReasonRecordShort: a record's size is below its fixed part (-20).
	ReasonRecordShort
	// ReasonOption: an option header is cut, has length 0 or runs past the
	// record (-30, -40).
	ReasonOption
	// ReasonSeqOption: SEQ_DATA of the wrong length, or twice (-50).
	ReasonSeqOption
	// ReasonPEOption: PE_DATA or PE_NAME too long, or twice (-60, -70).
	ReasonPEOption
	// ReasonMandatoryOption: an unknown option without the optional bit
	// (64); the record is skipped.
	ReasonMandatoryOption
	// ReasonProtocol: a connection of a protocol IPVS does not balance.
	ReasonProtocol
	// ReasonState: a state number beyond the protocol's states.
	ReasonState
	// ReasonPE: PE data without a PE name.
	ReasonPE
	// ReasonIPv6: an IPv6 record, decoded but not handed on (the Receiver
	// skips them until gvs forwards IPv6).
	ReasonIPv6
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonOK:              "ok",
	ReasonShort:           "short",
	ReasonSize:            "bad_size",
	ReasonSyncID:          "syncid",
	ReasonTruncated:       "truncated",
	ReasonOverrun:         "overrun",
	ReasonRecordVersion:   "record_version",
	ReasonType:            "record_type",
	ReasonRecordShort:     "record_short",
	ReasonOption:          "bad_option",
	ReasonSeqOption:       "bad_seq_option",
	ReasonPEOption:        "bad_pe_option",
	ReasonMandatoryOption: "unknown_mandatory_option",
	ReasonProtocol:        "protocol",
	ReasonState:           "state",
	ReasonPE:              "pe",
	ReasonIPv6:            "ipv6",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Counters counts messages and records by outcome. It is safe to read while
// a decoder writes it.
type Counters struct {
	Messages atomic.Uint64 // datagrams given to Decode
	Records  atomic.Uint64 // records handed on
	reasons  [numReasons]atomic.Uint64
}

// Count is how many messages or records were dropped for reason r.
func (c *Counters) Count(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return c.reasons[r].Load()
}

// Reasons returns the non-zero counts by reason name.
func (c *Counters) Reasons() map[string]uint64 {
	m := make(map[string]uint64)
	for r := Reason(1); r < numReasons; r++ {
		if v := c.reasons[r].Load(); v > 0 {
			m[r.String()] = v
		}
	}
	return m
}

func (c *Counters) add(r Reason) {
	if c != nil {
		c.reasons[r].Add(1)
	}
}

// Header is a message's header.
type Header struct {
	Version uint8 // 0 or 1
	SyncID  uint8
	Size    uint16
	Conns   uint8 // nr_conns
}

// Decoder decodes sync messages as a backup does.
type Decoder struct {
	// SyncID filters messages: 0 accepts every syncid, another value only
	// messages with that syncid.
	SyncID   uint8
	Counters *Counters // may be nil

	h Header // scratch: what fn sees, kept here so that nothing escapes
	c Conn
}

// Decode decodes one datagram and calls fn for every record the backup
// would use (IPv6 records included), with c reused between calls: fn must
// copy what it keeps (PEData and PEName alias msg). It returns the header
// and ReasonOK, or the reason the message, or its rest, was dropped. Every
// drop and skip is counted. Decode allocates nothing.
func (d *Decoder) Decode(msg []byte, fn func(h *Header, c *Conn)) (Header, Reason) {
	d.h = Header{}
	h := &d.h
	if d.Counters != nil {
		d.Counters.Messages.Add(1)
	}
	if len(msg) < headerLenV0 {
		d.Counters.add(ReasonShort)
		return *h, ReasonShort
	}
	h.SyncID = msg[1]
	h.Size = binary.BigEndian.Uint16(msg[2:])
	if len(msg) != int(h.Size) {
		d.Counters.add(ReasonSize)
		return *h, ReasonSize
	}
	if d.SyncID != 0 && h.SyncID != d.SyncID {
		d.Counters.add(ReasonSyncID)
		return *h, ReasonSyncID
	}
	// ip_vs_process_message reads the version 1 fields even from a
	// 4-byte datagram; we read them only when they are there.
	if len(msg) >= headerLenV1 && msg[0] == 0 && msg[5] == 1 && msg[6] == 0 && msg[7] == 0 {
		h.Version = 1
		h.Conns = msg[4]
		r := d.decodeV1(h, msg, fn)
		return *h, r
	}
	h.Conns = msg[0]
	r := d.decodeV0(h, msg, fn)
	return *h, r
}

func (d *Decoder) decodeV1(h *Header, msg []byte, fn func(*Header, *Conn)) Reason {
	c := &d.c
	off := headerLenV1
	for i := 0; i < int(h.Conns); i++ {
		if off+recordLenV4 > len(msg) {
			d.Counters.add(ReasonTruncated)
			return ReasonTruncated
		}
		vs := binary.BigEndian.Uint16(msg[off+2:])
		size := int(vs & sverMask)
		end := off + size
		if end > len(msg) {
			d.Counters.add(ReasonOverrun)
			return ReasonOverrun
		}
		if vs>>sverShift != 0 {
			d.Counters.add(ReasonRecordVersion)
			return ReasonRecordVersion
		}
		r := parseV1(msg[off:], size, c)
		switch {
		case r == ReasonOK:
			d.deliver(h, c, fn)
		case r <= ReasonPEOption:
			d.Counters.add(r)
			return r
		default:
			d.Counters.add(r)
		}
		off += (size + 3) &^ 3
	}
	return ReasonOK
}

// parseV1 parses the version 1 record of the given size at the start of
// b, which holds at least the fixed part of an IPv4 record and size bytes.
func parseV1(b []byte, size int, c *Conn) Reason {
	*c = Conn{}
	// Like the kernel, read the type even when the size is below it.
	typ := b[0]
	fixed := recordLenV4
	switch {
	case typ&typeIPv6 != 0:
		fixed = recordLenV6
	case typ != 0:
		return ReasonType
	}
	if size < fixed {
		return ReasonRecordShort
	}
	rec := b[:size]
	c.Protocol = rec[1]
	c.Flags = binary.BigEndian.Uint32(rec[4:])
	c.State = binary.BigEndian.Uint16(rec[8:])
	c.CPort = binary.BigEndian.Uint16(rec[10:])
	c.VPort = binary.BigEndian.Uint16(rec[12:])
	c.DPort = binary.BigEndian.Uint16(rec[14:])
	c.Fwmark = binary.BigEndian.Uint32(rec[16:])
	c.Timeout = binary.BigEndian.Uint32(rec[20:])
	if fixed == recordLenV6 {
		c.CAddr = netip.AddrFrom16([16]byte(rec[24:40]))
		c.VAddr = netip.AddrFrom16([16]byte(rec[40:56]))
		c.DAddr = netip.AddrFrom16([16]byte(rec[56:72]))
	} else {
		c.CAddr = netip.AddrFrom4([4]byte(rec[24:28]))
		c.VAddr = netip.AddrFrom4([4]byte(rec[28:32]))
		c.DAddr = netip.AddrFrom4([4]byte(rec[32:36]))
	}
	var havePEData, havePEName bool
	p := fixed
	for p < len(rec) {
		if p+2 > len(rec) {
			return ReasonOption
		}
		ptype, plen := rec[p], int(rec[p+1])
		p += 2
		if plen == 0 || p+plen > len(rec) {
			return ReasonOption
		}
		data := rec[p : p+plen]
		switch ptype &^ optFParam {
		case optSeqData:
			if plen != seqOptLen || c.HasSeq {
				return ReasonSeqOption
			}
			c.HasSeq = true
			c.InSeq = seqAt(data[0:12])
			c.OutSeq = seqAt(data[12:24])
		case optPEData:
			if plen > peDataMax || havePEData {
				return ReasonPEOption
			}
			havePEData = true
			c.PEData = data
		case optPEName:
			if plen > peNameMax || havePEName {
				return ReasonPEOption
			}
			havePEName = true
			c.PEName = data
		default:
			if ptype&optFParam == 0 {
				// The kernel stops at the first unknown mandatory
				// option and skips the record; the options after it
				// are not checked.
				return ReasonMandatoryOption
			}
		}
		p += plen
	}
	if r := checkConn(c); r != ReasonOK {
		return r
	}
	if len(c.PEData) > 0 && len(c.PEName) == 0 {
		return ReasonPE
	}
	return ReasonOK
}

// checkConn is the protocol and state check both versions make on
// connections (not on templates).
func checkConn(c *Conn) Reason {
	if c.Flags&FlagTemplate != 0 {
		return ReasonOK // the kernel only logs a template state out of range
	}
	n := numStates(c.Protocol)
	if n == 0 {
		return ReasonProtocol
	}
	if c.State >= n {
		return ReasonState
	}
	return ReasonOK
}

func seqAt(b []byte) Seq {
	return Seq{
		Init:      binary.BigEndian.Uint32(b[0:]),
		Delta:     binary.BigEndian.Uint32(b[4:]),
		PrevDelta: binary.BigEndian.Uint32(b[8:]),
	}
}

func seqAtLE(b []byte) Seq {
	return Seq{
		Init:      binary.LittleEndian.Uint32(b[0:]),
		Delta:     binary.LittleEndian.Uint32(b[4:]),
		PrevDelta: binary.LittleEndian.Uint32(b[8:]),
	}
}

func (d *Decoder) decodeV0(h *Header, msg []byte, fn func(*Header, *Conn)) Reason {
	c := &d.c
	off := headerLenV0
	for i := 0; i < int(h.Conns); i++ {
		if off+connLenV0 > len(msg) {
			d.Counters.add(ReasonTruncated)
			return ReasonTruncated
		}
		s := msg[off:]
		*c = Conn{
			Protocol: s[1],
			CPort:    binary.BigEndian.Uint16(s[2:]),
			VPort:    binary.BigEndian.Uint16(s[4:]),
			DPort:    binary.BigEndian.Uint16(s[6:]),
			CAddr:    netip.AddrFrom4([4]byte(s[8:12])),
			VAddr:    netip.AddrFrom4([4]byte(s[12:16])),
			DAddr:    netip.AddrFrom4([4]byte(s[16:20])),
			Flags:    uint32(binary.BigEndian.Uint16(s[20:])),
			State:    binary.BigEndian.Uint16(s[22:]),
		}
		if c.Flags&FlagSeqMask != 0 {
			if off+connLenV0+seqOptLen > len(msg) {
				d.Counters.add(ReasonTruncated)
				return ReasonTruncated
			}
			c.HasSeq = true
			c.InSeq = seqAtLE(s[24:36])
			c.OutSeq = seqAtLE(s[36:48])
			off += connLenV0 + seqOptLen
		} else {
			off += connLenV0
		}
		if r := checkConn(c); r != ReasonOK {
			d.Counters.add(r)
			continue
		}
		d.deliver(h, c, fn)
	}
	return ReasonOK
}

func (d *Decoder) deliver(h *Header, c *Conn, fn func(*Header, *Conn)) {
	if d.Counters != nil {
		d.Counters.Records.Add(1)
	}
	if fn != nil {
		fn(h, c)
	}
}
