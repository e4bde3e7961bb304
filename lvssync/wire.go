package lvssync

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Connection flags (IP_VS_CONN_F_*, include/uapi/linux/ip_vs.h).
const (
	FlagFwdMask   uint32 = 0x0007 // forwarding method
	FlagMasq      uint32 = 0x0000 // NAT
	FlagLocalNode uint32 = 0x0001
	FlagTunnel    uint32 = 0x0002
	FlagDRoute    uint32 = 0x0003
	FlagBypass    uint32 = 0x0004
	FlagSync      uint32 = 0x0020 // created by sync
	FlagHashed    uint32 = 0x0040
	FlagNoOutput  uint32 = 0x0080
	FlagInactive  uint32 = 0x0100
	FlagOutSeq    uint32 = 0x0200
	FlagInSeq     uint32 = 0x0400
	FlagSeqMask   uint32 = 0x0600
	FlagNoCPort   uint32 = 0x0800
	FlagTemplate  uint32 = 0x1000
	FlagOnePacket uint32 = 0x2000

	// FlagBackupMask is IP_VS_CONN_F_BACKUP_MASK: the bits a version 1
	// backup keeps from a record.
	FlagBackupMask = FlagFwdMask | FlagNoOutput | FlagInactive | FlagSeqMask | FlagNoCPort | FlagTemplate
	// FlagBackupUpdMask is IP_VS_CONN_F_BACKUP_UPD_MASK: the bits a record
	// may change on a connection the backup already has.
	FlagBackupUpdMask = FlagInactive | FlagSeqMask
)

// IP protocol numbers the kernel has an IPVS protocol for (ip_vs_proto_get).
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
	ProtoAH   uint8 = 51
	ProtoESP  uint8 = 50
)

// Kernel state numbers (IP_VS_TCP_S_*; UDP, AH and ESP have the one state
// 0; templates use IP_VS_CTPL_S_NONE/ASSURED).
const (
	TCPNone uint16 = iota
	TCPEstablished
	TCPSynSent
	TCPSynRecv
	TCPFinWait
	TCPTimeWait
	TCPClose
	TCPCloseWait
	TCPLastAck
	TCPListen
	TCPSynAck
	tcpLast
)

// SCTP states used by the sync-needed rule (IP_VS_SCTP_S_*).
const (
	SCTPEstablished      uint16 = 8
	SCTPShutdownSent     uint16 = 9
	SCTPShutdownReceived uint16 = 10
	SCTPShutdownAckSent  uint16 = 11
	SCTPClosed           uint16 = 13
	sctpLast             uint16 = 14
)

// Template states (IP_VS_CTPL_S_*).
const (
	TemplateNone    uint16 = 0
	TemplateAssured uint16 = 1
)

// numStates is pp->num_states of the protocols the kernel knows, 0 for
// the others.
func numStates(proto uint8) uint16 {
	switch proto {
	case ProtoTCP:
		return tcpLast
	case ProtoUDP, ProtoAH, ProtoESP:
		return 1
	case ProtoSCTP:
		return sctpLast
	}
	return 0
}

// Wire constants.
const (
	// DefaultGroup and DefaultPort are IP_VS_SYNC_GROUP and IP_VS_SYNC_PORT.
	DefaultPort = 8848

	headerLenV1 = 8  // struct ip_vs_sync_mesg
	headerLenV0 = 4  // struct ip_vs_sync_mesg_v0
	recordLenV4 = 36 // struct ip_vs_sync_v4
	recordLenV6 = 72 // struct ip_vs_sync_v6
	connLenV0   = 24 // struct ip_vs_sync_conn_v0
	seqOptLen   = 24 // struct ip_vs_sync_conn_options

	typeIPv6   = 1 // STYPE_F_INET6
	sverShift  = 12
	sverMask   = 0x0fff
	optSeqData = 1 // IPVS_OPT_SEQ_DATA
	optPEData  = 2 // IPVS_OPT_PE_DATA
	optPEName  = 3 // IPVS_OPT_PE_NAME
	optFParam  = 64

	peNameMax = 16  // IP_VS_PENAME_MAXLEN
	peDataMax = 255 // IP_VS_PEDATA_MAXLEN

	// MaxConns is the most records one message carries: nr_conns is a byte.
	MaxConns = 255
)

// DefaultGroup is the sync daemon's multicast group, 224.0.0.81.
var DefaultGroup = netip.AddrFrom4([4]byte{224, 0, 0, 81})

// Seq is struct ip_vs_seq: the sequence-number adjustment of a NAT
// connection whose payload changed length (FTP helper).
type Seq struct {
	Init, Delta, PrevDelta uint32
}

// Conn is one connection record. Addresses are all IPv4 or all IPv6.
type Conn struct {
	Protocol            uint8
	Flags               uint32
	State               uint16
	CPort, VPort, DPort uint16
	Fwmark              uint32 // version 1 only
	Timeout             uint32 // seconds; version 1 only (0: the backup uses the state's timeout)
	CAddr, VAddr, DAddr netip.Addr
	// HasSeq says the record carries InSeq/OutSeq (the SEQ_DATA option in
	// version 1; in version 0 the options follow exactly when Flags has
	// FlagSeqMask bits).
	HasSeq        bool
	InSeq, OutSeq Seq
	// PEData and PEName are the persistence engine's options (version 1).
	// A decoded record's slices alias the message buffer.
	PEData, PEName []byte
}

// IPv6 reports whether the record carries IPv6 addresses.
func (c *Conn) IPv6() bool { return c.CAddr.Is6() }

// MasterFlags is what the master puts on the wire for a connection with
// flags f: everything but IP_VS_CONN_F_HASHED (version 0 carries the low 16
// bits).
func MasterFlags(f uint32) uint32 { return f &^ FlagHashed }

// BackupFlags is the flags a backup gives a connection it creates from a
// record with wire flags f of the given message version (ip_vs_proc_sync_conn
// / ip_vs_process_message_v0): version 1 keeps IP_VS_CONN_F_BACKUP_MASK,
// version 0 keeps every bit but HASHED; both add IP_VS_CONN_F_SYNC.
func BackupFlags(version uint8, f uint32) uint32 {
	if version == 0 {
		return (f | FlagSync) &^ FlagHashed
	}
	return f&FlagBackupMask | FlagSync
}

// UpdateFlags is the flags of a connection the backup already has (cur)
// after a record whose backup flags (BackupFlags) are recv: only
// IP_VS_CONN_F_BACKUP_UPD_MASK comes from the record (ip_vs_proc_conn).
func UpdateFlags(cur, recv uint32) uint32 {
	return recv&FlagBackupUpdMask | cur&^FlagBackupUpdMask
}

// Errors of the encoder.
var (
	ErrMixedFamily = errors.New("lvssync: record addresses are not all IPv4 or all IPv6")
	ErrV0IPv6      = errors.New("lvssync: version 0 carries IPv4 records only")
	ErrV0Options   = errors.New("lvssync: version 0 carries no PE data")
	ErrOptionLen   = errors.New("lvssync: PE data or name too long")
	ErrRecordLen   = errors.New("lvssync: record longer than 4095 bytes")
)

// RecordLen is the length of c's version 1 record, options included and
// padding excluded; the error says why c cannot be encoded.
func RecordLen(c *Conn) (int, error) {
	n := recordLenV4
	switch {
	case c.CAddr.Is4() && c.VAddr.Is4() && c.DAddr.Is4():
	case c.CAddr.Is6() && c.VAddr.Is6() && c.DAddr.Is6():
		n = recordLenV6
	default:
		return 0, ErrMixedFamily
	}
	if c.HasSeq {
		n += 2 + seqOptLen
	}
	if len(c.PEData) > peDataMax || len(c.PEName) > peNameMax {
		return 0, ErrOptionLen
	}
	// The kernel sends PE_NAME only together with PE_DATA.
	if len(c.PEData) > 0 {
		n += 2 + len(c.PEData)
		if len(c.PEName) > 0 {
			n += 2 + len(c.PEName)
		}
	}
	return n, nil
}

// recordLenV0 is c's version 0 record length.
func recordLenV0(c *Conn) (int, error) {
	if !c.CAddr.Is4() || !c.VAddr.Is4() || !c.DAddr.Is4() {
		if c.CAddr.Is6() || c.VAddr.Is6() || c.DAddr.Is6() {
			return 0, ErrV0IPv6
		}
		return 0, ErrMixedFamily
	}
	if len(c.PEData) > 0 || len(c.PEName) > 0 {
		return 0, ErrV0Options
	}
	if c.Flags&FlagSeqMask != 0 {
		return connLenV0 + seqOptLen, nil
	}
	return connLenV0, nil
}

// Message builds one sync message in place. The zero value is unusable;
// use Reset. Building allocates nothing once the buffer has grown to the
// largest message.
type Message struct {
	buf     []byte
	version uint8
	n       int // records
}

// Reset starts an empty message of the given version (0 or 1) and syncid.
func (m *Message) Reset(version uint8, syncid uint8) {
	m.version = version
	m.n = 0
	if version == 0 {
		m.buf = append(m.buf[:0], 0, syncid, 0, headerLenV0)
		return
	}
	m.buf = append(m.buf[:0], 0, syncid, 0, headerLenV1, 0, 1, 0, 0)
}

// Len is the message's current length in bytes.
func (m *Message) Len() int { return len(m.buf) }

// Conns is the number of records in the message.
func (m *Message) Conns() int { return m.n }

// Bytes is the encoded message; it aliases the builder's buffer.
func (m *Message) Bytes() []byte { return m.buf }

// Cost is how many bytes adding c would add to the message (padding of the
// previous record included), or an error when c cannot be encoded in this
// message's version.
func (m *Message) Cost(c *Conn) (int, error) {
	if m.version == 0 {
		return recordLenV0(c)
	}
	n, err := RecordLen(c)
	if err != nil {
		return 0, err
	}
	if n > sverMask {
		return 0, ErrRecordLen
	}
	return n + pad4(len(m.buf)), nil
}

// Full reports whether the message holds MaxConns records.
func (m *Message) Full() bool { return m.n >= MaxConns }

// Add appends c's record; the caller checks Cost against its size limit
// and Full first.
func (m *Message) Add(c *Conn) error {
	if m.n >= MaxConns {
		return errors.New("lvssync: message holds 255 records")
	}
	var err error
	if m.version == 0 {
		err = m.addV0(c)
	} else {
		err = m.addV1(c)
	}
	if err != nil {
		return err
	}
	m.n++
	if m.version == 0 {
		m.buf[0] = byte(m.n)
	} else {
		m.buf[4] = byte(m.n)
	}
	binary.BigEndian.PutUint16(m.buf[2:], uint16(len(m.buf)))
	return nil
}

func pad4(n int) int { return -n & 3 }

func (m *Message) addV1(c *Conn) error {
	n, err := RecordLen(c)
	if err != nil {
		return err
	}
	if n > sverMask {
		return ErrRecordLen
	}
	if len(m.buf)+pad4(len(m.buf))+n > 0xffff {
		return errors.New("lvssync: message longer than 65535 bytes")
	}
	for p := pad4(len(m.buf)); p > 0; p-- {
		m.buf = append(m.buf, 0)
	}
	var typ byte
	if c.CAddr.Is6() {
		typ = typeIPv6
	}
	b := m.buf
	b = append(b, typ, c.Protocol)
	b = binary.BigEndian.AppendUint16(b, uint16(n)) // version 0 in the top bits
	b = binary.BigEndian.AppendUint32(b, c.Flags)
	b = binary.BigEndian.AppendUint16(b, c.State)
	b = binary.BigEndian.AppendUint16(b, c.CPort)
	b = binary.BigEndian.AppendUint16(b, c.VPort)
	b = binary.BigEndian.AppendUint16(b, c.DPort)
	b = binary.BigEndian.AppendUint32(b, c.Fwmark)
	b = binary.BigEndian.AppendUint32(b, c.Timeout)
	b = appendAddr(b, c.CAddr)
	b = appendAddr(b, c.VAddr)
	b = appendAddr(b, c.DAddr)
	if c.HasSeq {
		b = append(b, optSeqData, seqOptLen)
		b = appendSeq(b, c.InSeq)
		b = appendSeq(b, c.OutSeq)
	}
	if len(c.PEData) > 0 {
		b = append(b, optPEData, byte(len(c.PEData)))
		b = append(b, c.PEData...)
		if len(c.PEName) > 0 {
			b = append(b, optPEName, byte(len(c.PEName)))
			b = append(b, c.PEName...)
		}
	}
	m.buf = b
	return nil
}

func (m *Message) addV0(c *Conn) error {
	if _, err := recordLenV0(c); err != nil {
		return err
	}
	b := m.buf
	b = append(b, 0, c.Protocol)
	b = binary.BigEndian.AppendUint16(b, c.CPort)
	b = binary.BigEndian.AppendUint16(b, c.VPort)
	b = binary.BigEndian.AppendUint16(b, c.DPort)
	b = appendAddr(b, c.CAddr)
	b = appendAddr(b, c.VAddr)
	b = appendAddr(b, c.DAddr)
	b = binary.BigEndian.AppendUint16(b, uint16(c.Flags))
	b = binary.BigEndian.AppendUint16(b, c.State)
	if c.Flags&FlagSeqMask != 0 {
		// Version 0 copies struct ip_vs_seq as it is in memory: host
		// byte order, little endian on the x86 and arm64 peers.
		b = appendSeqLE(b, c.InSeq)
		b = appendSeqLE(b, c.OutSeq)
	}
	m.buf = b
	return nil
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return append(b, v[:]...)
	}
	v := a.As16()
	return append(b, v[:]...)
}

func appendSeq(b []byte, s Seq) []byte {
	b = binary.BigEndian.AppendUint32(b, s.Init)
	b = binary.BigEndian.AppendUint32(b, s.Delta)
	return binary.BigEndian.AppendUint32(b, s.PrevDelta)
}

func appendSeqLE(b []byte, s Seq) []byte {
	b = binary.LittleEndian.AppendUint32(b, s.Init)
	b = binary.LittleEndian.AppendUint32(b, s.Delta)
	return binary.LittleEndian.AppendUint32(b, s.PrevDelta)
}
