//go:build linux

package kernel

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Ingress manages one nftables table of family netdev holding a base chain
// (hook ingress, one per interface) that drops the IPv4 traffic gvs forwards
// itself, so that the kernel neither answers it (RST, ICMP unreachable) nor
// forwards a second copy. AF_PACKET ETH_P_ALL sockets see frames before this
// hook, so the data path is unaffected.
//
// Matches are kept in sets (one per interface, direction and match shape),
// and every Sync rebuilds the whole table in one netlink batch, so the
// kernel switches from the old rule set to the new one atomically.
//
// Ingress works in the network namespace of the goroutine that created it.
type Ingress struct {
	log   *zap.Logger
	table *nftables.Table

	mu     sync.Mutex // serializes Sync, Ensure and Close; guards the fields below
	ns     netns.NsHandle
	closed bool
	synced bool                              // a Sync succeeded: the table should exist
	byIf   map[string]map[groupKey]*setGroup // what the last successful Sync installed
	nrules int
}

// NewIngress takes ownership of the netdev table named table (see
// TableName) in the calling goroutine's network namespace. A table of that
// name left behind by a crashed run is deleted.
func NewIngress(table string, log *zap.Logger) (*Ingress, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if table == "" {
		return nil, errors.New("ingress: empty table name")
	}
	ns, err := currentNS()
	if err != nil {
		return nil, fmt.Errorf("ingress: current network namespace: %w", err)
	}
	in := &Ingress{
		log:   log.With(zap.String("table", table)),
		table: &nftables.Table{Name: table, Family: nftables.TableFamilyNetdev},
		ns:    ns,
	}
	c, err := in.newConn()
	if err != nil {
		ns.Close()
		return nil, err
	}
	_, err = c.ListTableOfFamily(table, nftables.TableFamilyNetdev)
	switch {
	case errors.Is(err, unix.ENOENT): // no table: a clean start
	case err != nil:
		ns.Close()
		return nil, fmt.Errorf("ingress: looking for table %s: %w", table, err)
	default:
		in.log.Warn("deleting stale nftables table from an earlier run")
		c.DelTable(in.table)
		if err := c.Flush(); err != nil {
			ns.Close()
			return nil, fmt.Errorf("ingress: deleting stale table %s: %w", table, err)
		}
	}
	return in, nil
}

// newConn returns an nftables connection into the Ingress's namespace.
// Each batch gets its own: a batch that cannot be built is dropped with
// its connection instead of being half sent.
func (in *Ingress) newConn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if in.ns.IsOpen() { // else: this thread's namespace (currentNS)
		opts = append(opts, nftables.WithNetNSFd(int(in.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("ingress: opening nftables: %w", err)
	}
	return c, nil
}

// Table is the name of the managed table.
func (in *Ingress) Table() string { return in.table.Name }

// matchShape is what an ingress set matches besides the address.
type matchShape uint8

const (
	shapeAddr          matchShape = iota // ip daddr
	shapeAddrProto                       // ip daddr . meta l4proto
	shapeAddrProtoPort                   // ip daddr . meta l4proto . th dport
	// shapeAddrRange is "ip daddr @set meta l4proto P th dport LO-HI": a
	// set of addresses per (protocol, port range), the range compared in
	// the rule (works on any kernel, unlike concatenated interval sets).
	shapeAddrRange
	// shapeAddrProtoFrag is "ip daddr . meta l4proto @set ip frag-off &
	// 0x1fff != 0": non-first fragments, which carry no ports.
	shapeAddrProtoFrag
)

func shapeOf(r IngressRule) matchShape {
	switch {
	case r.Frags:
		return shapeAddrProtoFrag
	case r.PortMax != 0:
		return shapeAddrRange
	case r.Port != 0:
		return shapeAddrProtoPort
	case r.Proto != 0:
		return shapeAddrProto
	}
	return shapeAddr
}

var setSuffix = [...]string{shapeAddr: "", shapeAddrProto: "_proto", shapeAddrProtoPort: "_proto_port", shapeAddrRange: "_range",
	shapeAddrProtoFrag: "_proto_frag"}

// setKeyType is the nftables key type of a set of the given shape.
var setKeyType = [...]nftables.SetDatatype{
	shapeAddr:          nftables.TypeIPAddr,
	shapeAddrProto:     nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto),
	shapeAddrProtoPort: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
	shapeAddrRange:     nftables.TypeIPAddr,
	shapeAddrProtoFrag: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto),
}

// setKey encodes a rule as a set element key. Concatenated keys put each
// field in its own 32-bit register, zero-padded, as the kernel loads them.
func setKey(r IngressRule) []byte {
	a := r.Addr.Unmap().As4()
	switch shapeOf(r) {
	case shapeAddrProto, shapeAddrProtoFrag:
		return []byte{a[0], a[1], a[2], a[3], byte(r.Proto), 0, 0, 0}
	case shapeAddrProtoPort:
		return []byte{a[0], a[1], a[2], a[3], byte(r.Proto), 0, 0, 0, byte(r.Port >> 8), byte(r.Port), 0, 0}
	}
	return a[:]
}

// Registers as the kernel numbers them: NFT_REG_1 is the first 16-byte
// data register; NFT_REG32_01 and _02 are its second and third 32-bit words.
const (
	reg1    = unix.NFT_REG_1
	reg32_1 = unix.NFT_REG32_01
	reg32_2 = unix.NFT_REG32_02
)

// IPv4 header and transport header offsets.
const (
	ipv4SrcOff  = 12
	ipv4DstOff  = 16
	ipv4FragOff = 6
	l4SrcOff    = 0
	l4DstOff    = 2
)

// matchExprs builds "meta protocol ip, <key> @set, counter, drop". A
// source match (NAT replies from a real server) also requires "fib daddr
// type != local": a packet from the real server's address and port to an
// address of the director itself answers the director's own connection (a
// health check, an administrator's curl) and belongs to its stack, while the
// NAT replies gvs forwards are addressed to clients. Destination matches
// (VIP traffic) have no such exception: a VIP on lo is local too.
//
// A port range (shapeAddrRange) is compared after the set lookup: "meta
// l4proto P, th dport LO-HI".
func matchExprs(k groupKey, set *nftables.Set) []expr.Any {
	dir, shape := k.dir, k.shape
	addrOff, portOff := uint32(ipv4DstOff), uint32(l4DstOff)
	if dir == MatchSrc {
		addrOff, portOff = ipv4SrcOff, l4SrcOff
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0x08, 0x00}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: 4},
	}
	if shape >= shapeAddrProto {
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_1})
	}
	if shape == shapeAddrProtoPort {
		e = append(e, &expr.Payload{DestRegister: reg32_2, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2})
	}
	e = append(e, &expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID})
	if shape == shapeAddrRange {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{k.proto}},
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
			&expr.Range{Op: expr.CmpOpEq, Register: reg1,
				FromData: binaryutil.BigEndian.PutUint16(k.lo), ToData: binaryutil.BigEndian.PutUint16(k.hi)},
		)
	}
	if shape == shapeAddrProtoFrag {
		e = append(e,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv4FragOff, Len: 2},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: []byte{0x1f, 0xff}, Xor: []byte{0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0}},
		)
	}
	if dir == MatchSrc {
		e = append(e,
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		)
	}
	return append(e,
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// groupKey identifies one set (and its rule) of an interface's chain: the
// direction and match shape, and for shapeAddrRange the protocol and port
// range the rule compares.
type groupKey struct {
	dir    Direction
	shape  matchShape
	proto  uint8
	lo, hi uint16
}

func groupOf(r IngressRule) groupKey {
	k := groupKey{dir: r.Dir, shape: shapeOf(r)}
	if k.shape == shapeAddrRange {
		k.proto, k.lo, k.hi = uint8(r.Proto), r.Port, r.PortMax
	}
	return k
}

// setName names the set of group k on ifname, e.g. "eth0_daddr_proto_port"
// or "eth0_daddr_range_6_1024_65535".
func (k groupKey) setName(ifname string) string {
	n := fmt.Sprintf("%s_%v%s", ifname, k.dir, setSuffix[k.shape])
	if k.shape == shapeAddrRange {
		n += fmt.Sprintf("_%d_%d_%d", k.proto, k.lo, k.hi)
	}
	return n
}

// cmpGroup orders groups for installation: by direction, shape, protocol,
// range.
func cmpGroup(a, b groupKey) int {
	return cmp.Or(cmp.Compare(a.dir, b.dir), cmp.Compare(a.shape, b.shape),
		cmp.Compare(a.proto, b.proto), cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi))
}

// setGroup is one set of an interface's chain with its elements.
type setGroup struct {
	elems []nftables.SetElement
}

// Sync replaces every rule of the table by rules, atomically. Rules are
// validated first; on a validation error nothing changes. An empty rules
// leaves an empty table. Older kernels reject an interface that does not
// exist (Sync returns the error and nothing changes); recent ones (seen on
// 6.18) accept it and attach the chain when the interface appears.
func (in *Ingress) Sync(rules []IngressRule) error {
	byIf := map[string]map[groupKey]*setGroup{}
	seen := map[IngressRule]bool{}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return err
		}
		r.Addr = r.Addr.Unmap()
		if seen[r] {
			continue
		}
		seen[r] = true
		groups := byIf[r.Interface]
		if groups == nil {
			groups = map[groupKey]*setGroup{}
			byIf[r.Interface] = groups
		}
		k := groupOf(r)
		g := groups[k]
		if g == nil {
			g = &setGroup{}
			groups[k] = g
		}
		g.elems = append(g.elems, nftables.SetElement{Key: setKey(r)})
	}

	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return errors.New("ingress: closed")
	}
	if err := in.install(byIf, len(seen)); err != nil {
		return err
	}
	in.synced, in.byIf, in.nrules = true, byIf, len(seen)
	in.log.Info("ingress drop rules installed", zap.Int("rules", len(seen)), zap.Int("interfaces", len(byIf)))
	return nil
}

// Ensure checks that the table and its chains are in place and, if
// someone removed them (`nft delete table`, `nft flush ruleset`, another
// program), installs the rules of the last Sync again. It reports whether
// it restored anything. Before the first Sync and after Close it does
// nothing. It costs two netlink dumps: cheap enough for once a second.
func (in *Ingress) Ensure() (restored bool, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || !in.synced {
		return false, nil
	}
	ok, err := in.present()
	if err != nil || ok {
		return false, err
	}
	if err := in.install(in.byIf, in.nrules); err != nil {
		return false, err
	}
	return true, nil
}

// present reports whether the table exists with one chain per interface
// of the last Sync.
func (in *Ingress) present() (bool, error) {
	c, err := in.newConn()
	if err != nil {
		return false, err
	}
	_, err = c.ListTableOfFamily(in.table.Name, nftables.TableFamilyNetdev)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ingress: looking for table %s: %w", in.table.Name, err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyNetdev)
	if err != nil {
		return false, fmt.Errorf("ingress: listing chains: %w", err)
	}
	want := map[string]bool{}
	for ifname := range in.byIf {
		want[ChainName(ifname)] = true
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == in.table.Name {
			delete(want, ch.Name)
		}
	}
	return len(want) == 0, nil
}

// install replaces the table by one holding byIf's sets and rules, in one
// batch. in.mu is held.
func (in *Ingress) install(byIf map[string]map[groupKey]*setGroup, nrules int) error {
	c, err := in.newConn()
	if err != nil {
		return err
	}
	// "add; delete; add" makes the batch independent of whether the table
	// exists (a first run, or a stale table from a crash) and replaces all
	// of it in the same transaction.
	c.AddTable(in.table)
	c.DelTable(in.table)
	c.AddTable(in.table)
	for _, ifname := range slices.Sorted(maps.Keys(byIf)) {
		chain := c.AddChain(&nftables.Chain{
			Name:     ChainName(ifname),
			Table:    in.table,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookIngress,
			Priority: nftables.ChainPriorityRef(IngressPriority),
			Device:   ifname,
		})
		groups := byIf[ifname]
		for _, k := range slices.SortedFunc(maps.Keys(groups), cmpGroup) {
			g := groups[k]
			set := &nftables.Set{
				Table:         in.table,
				Name:          k.setName(ifname),
				KeyType:       setKeyType[k.shape],
				Concatenation: k.shape == shapeAddrProto || k.shape == shapeAddrProtoPort,
			}
			if err := c.AddSet(set, g.elems); err != nil {
				return fmt.Errorf("ingress: set %s: %w", set.Name, err)
			}
			c.AddRule(&nftables.Rule{Table: in.table, Chain: chain, Exprs: matchExprs(k, set)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("ingress: installing %d rules: %w", nrules, err)
	}
	return nil
}

// Close deletes the table and closes the connection. It is idempotent and
// does not fail if the table is already gone.
func (in *Ingress) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil
	}
	in.closed = true
	defer in.ns.Close()
	c, err := in.newConn()
	if err != nil {
		return err
	}
	c.AddTable(in.table) // so that the delete cannot fail with ENOENT
	c.DelTable(in.table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("ingress: deleting table %s: %w", in.table.Name, err)
	}
	in.log.Info("ingress drop rules removed")
	return nil
}
