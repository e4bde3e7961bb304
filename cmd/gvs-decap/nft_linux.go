package main

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"gvs/rewrite"
)

// ipipDrop is an nftables table with one rule, `ip protocol 4 drop` in an
// input-hook chain, owned by this process.
//
// Why: this kernel has no ipip module, so an IPIP packet addressed to the
// server reaches ip_local_deliver with no protocol handler and the kernel
// answers the director with ICMP "protocol unreachable". The input hook runs
// before that step, so dropping there keeps the kernel quiet, while the
// AF_PACKET socket (which sees the frame at device receive, long before the
// input hook) still gets its copy.
type ipipDrop struct {
	table *nftables.Table
}

// installIPIPDrop adds the table "gvs_decap_<tun>" (family ip) to the current
// network namespace. An existing table of the same name (left by a killed
// run) is replaced.
func installIPIPDrop(tun string) (*ipipDrop, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: "gvs_decap_" + tun, Family: nftables.TableFamilyIPv4}
	// Adding then deleting then adding in one batch makes the install
	// idempotent: the first add makes the delete valid whether or not the
	// table existed.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name:     "input",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &policy,
	})
	c.AddRule(&nftables.Rule{
		Table: t,
		Chain: ch,
		Exprs: []expr.Any{
			// ip protocol (network header byte 9) == 4
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offProtocol, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{rewrite.ProtoIPIP}},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		},
	})
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("installing nftables drop for ip protocol 4: %w", err)
	}
	return &ipipDrop{table: t}, nil
}

// Remove deletes the table.
func (d *ipipDrop) Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	c.DelTable(d.table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing nftables table %s: %w", d.table.Name, err)
	}
	return nil
}
