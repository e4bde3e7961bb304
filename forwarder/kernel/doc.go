// Package kernel holds what gvsd needs to share interfaces with the host
// kernel (DESIGN.md "Kernel coexistence", "Neighbours and routes";
// PACKET-IO.md §5). None of it is on the per-packet path except the
// Resolver's lookups.
//
//   - Ingress: an nftables table of family netdev with one ingress base
//     chain per interface that drops the IPv4 traffic gvs forwards itself
//     (packets to VIP services, NAT replies from real servers), so the
//     kernel neither answers it with RST / ICMP unreachable nor forwards a
//     second copy. AF_PACKET ETH_P_ALL sockets see frames before that hook.
//     Sync replaces the whole rule set in one netlink transaction; Close
//     removes the table; a table left by a crashed run is replaced.
//   - DisableGRO: switches off GRO, LRO and hardware GRO with ethtool so
//     AF_PACKET never receives super-frames larger than the MTU.
//   - ARPResponder: answers ARP requests for VIPs that are not configured
//     on the host and sends gratuitous ARP for them (AF_PACKET ETH_P_ARP via
//     github.com/mdlayher/packet, frames built and parsed with gopacket's
//     layers.ARP).
//   - Resolver: egress interface, next hop, next-hop MAC, source address and
//     MTU per destination, from the kernel's routing and neighbour tables
//     over netlink, cached in an immutable snapshot behind an atomic pointer
//     (lock-free, allocation-free lookups), kept current by netlink
//     notifications and a periodic refresh. Missing MACs make the kernel
//     resolve (RTM_NEWNEIGH with NTF_USE) and are reported as misses: gvs
//     drops rather than send with a wrong MAC.
//
// Every type works in the network namespace of the goroutine that creates
// it (the daemon runs inside one): sockets are opened there at
// construction, and the Resolver keeps a handle on that namespace for its
// background goroutine.
//
// Linux only; on other systems constructors return ErrUnsupported.
package kernel
