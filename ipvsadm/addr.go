package ipvsadm

import (
	"math"
	"math/bits"
	"net/netip"
	"strconv"

	"gvs/ipvs"
)

// serviceName is one /etc/services entry of the built-in table.
type serviceName struct {
	name    string
	port    uint16
	protos  string   // any of "t" (tcp), "u" (udp), "s" (sctp)
	aliases []string // accepted on input only
}

// serviceNames is a small copy of Debian netbase's /etc/services for the
// ports load balancers commonly serve. ipvsadm resolves port names with
// getservbyname/getservbyport; gvs uses this table instead (no NSS), both to
// read "host:http" and to print ports by name when -n is not given.
var serviceNames = []serviceName{
	{"ftp-data", 20, "t", nil},
	{"ftp", 21, "t", nil},
	{"ssh", 22, "t", nil},
	{"telnet", 23, "t", nil},
	{"smtp", 25, "t", []string{"mail"}},
	{"whois", 43, "t", []string{"nicname"}},
	{"domain", 53, "tu", nil},
	{"bootps", 67, "u", nil},
	{"bootpc", 68, "u", nil},
	{"tftp", 69, "u", nil},
	{"gopher", 70, "t", nil},
	{"finger", 79, "t", nil},
	{"http", 80, "t", []string{"www"}},
	{"kerberos", 88, "tu", []string{"kerberos5", "krb5", "kerberos-sec"}},
	{"pop3", 110, "t", []string{"pop-3"}},
	{"sunrpc", 111, "tu", []string{"portmapper"}},
	{"nntp", 119, "t", []string{"readnews", "untp"}},
	{"ntp", 123, "u", nil},
	{"netbios-ns", 137, "u", nil},
	{"imap2", 143, "t", []string{"imap"}},
	{"snmp", 161, "tu", nil},
	{"snmp-trap", 162, "tu", []string{"snmptrap"}},
	{"bgp", 179, "t", nil},
	{"ldap", 389, "tu", nil},
	{"https", 443, "tu", nil},
	{"microsoft-ds", 445, "t", nil},
	{"kpasswd", 464, "tu", nil},
	{"submissions", 465, "t", []string{"ssmtp", "smtps", "urd"}},
	{"isakmp", 500, "u", nil},
	{"shell", 514, "t", []string{"cmd"}},
	{"syslog", 514, "u", nil},
	{"rtsp", 554, "tu", nil},
	{"submission", 587, "t", nil},
	{"ipp", 631, "t", nil},
	{"ldaps", 636, "tu", nil},
	{"ldp", 646, "tu", nil},
	{"rsync", 873, "t", nil},
	{"imaps", 993, "t", nil},
	{"pop3s", 995, "t", nil},
	{"openvpn", 1194, "tu", nil},
	{"ms-sql-s", 1433, "t", nil},
	{"radius", 1812, "tu", nil},
	{"radius-acct", 1813, "tu", []string{"radacct"}},
	{"nfs", 2049, "tu", nil},
	{"mysql", 3306, "t", nil},
	{"sieve", 4190, "t", nil},
	{"ipsec-nat-t", 4500, "u", nil},
	{"sip", 5060, "tu", nil},
	{"sip-tls", 5061, "tu", nil},
	{"xmpp-client", 5222, "t", []string{"jabber-client"}},
	{"xmpp-server", 5269, "t", []string{"jabber-server"}},
	{"postgresql", 5432, "t", []string{"postgres"}},
	{"amqp", 5672, "ts", nil},
	{"redis", 6379, "t", nil},
	{"ircd", 6667, "t", nil},
	{"http-alt", 8080, "t", []string{"webcache"}},
	{"tproxy", 8081, "t", nil},
	{"git", 9418, "t", nil},
	{"zabbix-agent", 10050, "t", nil},
}

type protoPort struct {
	proto ipvs.Protocol
	port  uint16
}

type protoName struct {
	proto ipvs.Protocol
	name  string
}

var (
	portByName = map[protoName]uint16{}
	nameByPort = map[protoPort]string{}
)

func init() {
	for _, s := range serviceNames {
		for _, c := range s.protos {
			p := map[rune]ipvs.Protocol{'t': ipvs.ProtoTCP, 'u': ipvs.ProtoUDP, 's': ipvs.ProtoSCTP}[c]
			nameByPort[protoPort{p, s.port}] = s.name
			portByName[protoName{p, s.name}] = s.port
			for _, a := range s.aliases {
				portByName[protoName{p, a}] = s.port
			}
		}
	}
}

// serviceToPort is getservbyname for TCP, UDP and SCTP (-1 if unknown).
func serviceToPort(name string, proto ipvs.Protocol) int {
	if p, ok := portByName[protoName{proto, name}]; ok {
		return int(p)
	}
	return -1
}

// portToAnyName is ipvsadm's port_to_anyname: the service name, else the
// decimal port.
func portToAnyName(port uint16, proto ipvs.Protocol) string {
	if n, ok := nameByPort[protoPort{proto, port}]; ok {
		return n
	}
	return strconv.Itoa(int(port))
}

// isCSpace is C isspace in the "C" locale.
func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// strtol parses like C strtol(s, &end, 10): leading white space, an
// optional sign, decimal digits. n is the number of bytes consumed (0 when
// there were no digits); overflow saturates and reports rangeErr.
func strtol(s string) (v int64, n int, rangeErr bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var u uint64
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		d := uint64(s[i] - '0')
		if u > (math.MaxUint64-d)/10 {
			rangeErr = true
			u = math.MaxUint64
		} else if !rangeErr {
			u = u*10 + d
		}
		i++
	}
	if i == start {
		return 0, 0, false
	}
	switch {
	case !neg && u > math.MaxInt64:
		return math.MaxInt64, i, true
	case neg && u > 1<<63:
		return math.MinInt64, i, true
	case neg:
		return -int64(u), i, rangeErr
	}
	return int64(u), i, rangeErr
}

// stringToNumber is ipvsadm's string_to_number: the whole string must be a
// decimal number within [min, max]; otherwise -1.
func stringToNumber(s string, min, max int64) int64 {
	v, n, rangeErr := strtol(s)
	if n == 0 || n != len(s) || rangeErr || v < min || v > max {
		return -1
	}
	return v
}

// atoi is C atoi (strtol truncated to a 32-bit int).
func atoi(s string) int32 {
	v, _, _ := strtol(s)
	return int32(v)
}

// strIsDigit is ipvsadm's str_is_digit: true for "" and all-digit strings.
func strIsDigit(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// inetAton parses an IPv4 address the way glibc inet_aton does: one to four
// parts separated by dots, each decimal, octal (leading 0) or hex (0x); the
// last part fills the remaining bytes; trailing white space ends the
// address. It does not resolve host names.
func inetAton(s string) (netip.Addr, bool) {
	var parts [4]uint32
	np := 0
	i := 0
	var val uint32
	for {
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return netip.Addr{}, false
		}
		base := uint64(10)
		digit := false
		if s[i] == '0' {
			i++
			if i < len(s) && (s[i] == 'x' || s[i] == 'X') {
				base = 16
				i++
			} else {
				base = 8
				digit = true
			}
		}
		var v uint64
		for i < len(s) {
			c := s[i]
			var d uint64
			switch {
			case c >= '0' && c <= '9':
				if base == 8 && c >= '8' {
					return netip.Addr{}, false
				}
				d = uint64(c - '0')
			case base == 16 && c >= 'a' && c <= 'f':
				d = uint64(c-'a') + 10
			case base == 16 && c >= 'A' && c <= 'F':
				d = uint64(c-'A') + 10
			default:
				goto endPart
			}
			v = v*base + d
			if v > math.MaxUint32 {
				return netip.Addr{}, false
			}
			digit = true
			i++
		}
	endPart:
		if !digit {
			return netip.Addr{}, false
		}
		val = uint32(v)
		if i < len(s) && s[i] == '.' {
			if np > 2 || val > 0xff {
				return netip.Addr{}, false
			}
			parts[np] = val
			np++
			i++
			continue
		}
		break
	}
	if i < len(s) && !isCSpace(s[i]) {
		return netip.Addr{}, false
	}
	limits := [4]uint32{0xffffffff, 0xffffff, 0xffff, 0xff}
	if val > limits[np] {
		return netip.Addr{}, false
	}
	for k := 0; k < np; k++ {
		val |= parts[k] << (24 - 8*k)
	}
	return netip.AddrFrom4([4]byte{byte(val >> 24), byte(val >> 16), byte(val >> 8), byte(val)}), true
}

// inetPton6 is inet_pton(AF_INET6, ...): a textual IPv6 address without a
// zone.
func inetPton6(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// maskToPrefix converts a dotted IPv4 mask to its prefix length; ok is
// false for a non-contiguous mask.
func maskToPrefix(m uint32) (int, bool) {
	ones := bits.LeadingZeros32(^m)
	if m<<ones != 0 {
		return 0, false
	}
	return ones, true
}

// prefixToMask is the dotted IPv4 mask of a prefix length.
func prefixToMask(plen int) netip.Addr {
	var m uint32
	if plen > 0 {
		m = ^uint32(0) << (32 - min(plen, 32))
	}
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
}

// isV6 reports whether a is an IPv6 address (an IPv4-mapped address
// written as IPv6 counts as IPv6, as for the kernel).
func isV6(a netip.Addr) bool { return a.Is6() }

// addrPortString is ipvsadm's addrport_to_anyname: "a.b.c.d:port" or
// "[v6]:port", the port by name unless numeric. Addresses are never
// resolved to host names (gvs does no DNS).
func addrPortString(a netip.Addr, port uint16, proto ipvs.Protocol, numeric bool) string {
	p := strconv.Itoa(int(port))
	if !numeric {
		p = portToAnyName(port, proto)
	}
	if isV6(a) {
		return "[" + a.String() + "]:" + p
	}
	return a.String() + ":" + p
}
