package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// nftIngress is an nftables netdev table with one ingress chain on dev
// holding rules (one statement each).
func nftIngress(table, dev string, rules []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n\tchain in {\n\t\ttype filter hook ingress device %q priority 0; policy accept;\n", table, dev)
	for _, r := range rules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// nftDNAT is what a user without IPVS runs: kernel DNAT with conntrack,
// round robin over reals with numgen. Only a connection's first packet
// reaches the nat chain; conntrack translates the rest and the replies.
// Ports are kept (VIP:p -> real:p).
func nftDNAT(table string, vip netip.Addr, reals []netip.Addr) string {
	var m []string
	for i, r := range reals {
		m = append(m, fmt.Sprintf("%d : %s", i, r))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n\tchain pre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n", table)
	fmt.Fprintf(&b, "\t\tip daddr %s dnat to numgen inc mod %d map { %s }\n", vip, len(reals), strings.Join(m, ", "))
	b.WriteString("\t}\n}\n")
	return b.String()
}

// nftApply loads ruleset into the nftables of namespace ns.
func nftApply(ctx context.Context, ns, ruleset string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %w: %s\n%s", ns, err, strings.TrimSpace(string(out)), ruleset)
	}
	return nil
}

// nftDelete removes a table (family netdev, ip, ...) from ns, ignoring a
// missing one.
func nftDelete(ctx context.Context, ns, family, table string) {
	_ = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "delete", "table", family, table).Run()
}
