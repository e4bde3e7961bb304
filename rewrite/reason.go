package rewrite

// Verdict is what Decode made of a frame.
type Verdict uint8

const (
	// Malformed: the frame claims to be IPv4 but breaks a rule; drop it and
	// count Parsed.Reason.
	Malformed Verdict = iota
	// NotIP: neither IPv4 nor ARP (IPv6, LLDP, 802.3 frames, a second VLAN
	// tag...). Not a drop: leave the frame to the kernel.
	NotIP
	// ARP: an ARP frame, for the control path; Parsed.L3 is the offset of
	// the ARP packet, which Decode does not inspect.
	ARP
	// IP: a well-formed IPv4 packet; the fields of Parsed describe it.
	IP
)

// String returns the verdict's name.
func (v Verdict) String() string {
	switch v {
	case Malformed:
		return "malformed"
	case NotIP:
		return "not_ip"
	case ARP:
		return "arp"
	case IP:
		return "ip"
	}
	return "unknown"
}

// Reason says why Decode rejected a frame. Its String is a stable snake_case
// name meant as a counter name; counters can be an array of NumReasons.
type Reason uint8

// Reasons Decode reports. The forwarder defines its own drop reasons (TTL
// exceeded, no destination, table full...) after NumReasons.
const (
	ReasonNone            Reason = iota // no problem found
	TruncatedEthernet                   // shorter than an Ethernet header
	TruncatedVLAN                       // 802.1Q tag cut short
	TruncatedIP                         // fewer than 20 bytes of IPv4 header
	BadIPVersion                        // EtherType IPv4 but version != 4
	BadIHL                              // IHL < 5 or header longer than the total length
	BadTotalLength                      // total length < 20 or beyond the frame
	BadIPChecksum                       // IPv4 header checksum wrong
	TruncatedTCP                        // fewer than 20 bytes of TCP header
	BadTCPOffset                        // data offset < 5 or beyond the packet
	TruncatedUDP                        // fewer than 8 bytes of UDP header
	BadUDPLength                        // UDP length < 8 or beyond the packet
	TruncatedICMP                       // fewer than 8 bytes of ICMP header
	BadICMPChecksum                     // ICMP error with a wrong checksum
	TruncatedICMPEmbedded               // ICMP error quoting less than an IPv4 header (+ 8 bytes for TCP/UDP)
	BadICMPEmbedded                     // ICMP error quoting something that is not IPv4
	BadIPOptions                        // IPv4 options ip_options_compile rejects
	SourceRoute                         // a source route option (accept_source_route is 0)

	// NumReasons is the number of Reason values, for counter arrays.
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonNone:            "none",
	TruncatedEthernet:     "truncated_ethernet",
	TruncatedVLAN:         "truncated_vlan",
	TruncatedIP:           "truncated_ip",
	BadIPVersion:          "bad_ip_version",
	BadIHL:                "bad_ihl",
	BadTotalLength:        "bad_total_length",
	BadIPChecksum:         "bad_ip_checksum",
	TruncatedTCP:          "truncated_tcp",
	BadTCPOffset:          "bad_tcp_offset",
	TruncatedUDP:          "truncated_udp",
	BadUDPLength:          "bad_udp_length",
	TruncatedICMP:         "truncated_icmp",
	BadICMPChecksum:       "bad_icmp_checksum",
	TruncatedICMPEmbedded: "truncated_icmp_embedded",
	BadICMPEmbedded:       "bad_icmp_embedded",
	BadIPOptions:          "bad_ip_options",
	SourceRoute:           "source_route",
}

// String returns the reason's counter name, e.g. "bad_ip_checksum".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}
