package lvssync

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// State is the role of a sync daemon (IP_VS_STATE_MASTER/BACKUP).
type State uint8

// Sync daemon roles.
const (
	Master State = 1
	Backup State = 2
)

func (s State) String() string {
	switch s {
	case Master:
		return "master"
	case Backup:
		return "backup"
	}
	return "none"
}

// Config is one sync daemon's configuration: ipvsadm's --start-daemon
// options.
type Config struct {
	State      State      // --start-daemon master|backup
	McastIfn   string     // --mcast-interface
	SyncID     uint8      // --syncid
	SyncMaxlen int        // --sync-maxlen; 0: from the MTU (WithDefaults)
	McastGroup netip.Addr // --mcast-group; invalid: 224.0.0.81
	McastPort  int        // --mcast-port; 0: 8848
	McastTTL   int        // --mcast-ttl; 0: 1
}

// ErrConfig is wrapped by WithDefaults' errors.
var ErrConfig = errors.New("lvssync: bad daemon configuration")

// WithDefaults fills the defaults as start_sync_thread does, given the
// MTU of the multicast interface. The maximum message length (UDP
// payload) is, without --sync-maxlen, 1500 minus the IP and UDP headers
// for a master (whatever the MTU: 1472 over IPv4) and the MTU (clamped to
// 1500..65535) minus the headers for a backup; a given --sync-maxlen is
// clamped to 1 (master) or 1024 (backup) .. 65535 minus the headers.
func (c Config) WithDefaults(mtu int) (Config, error) {
	if c.State != Master && c.State != Backup {
		return c, fmt.Errorf("%w: state %d", ErrConfig, c.State)
	}
	if c.McastIfn == "" {
		return c, fmt.Errorf("%w: no multicast interface", ErrConfig)
	}
	if !c.McastGroup.IsValid() {
		c.McastGroup = DefaultGroup
	}
	if !c.McastGroup.IsMulticast() {
		return c, fmt.Errorf("%w: %s is not a multicast group", ErrConfig, c.McastGroup)
	}
	if c.McastPort == 0 {
		c.McastPort = DefaultPort
	}
	if c.McastPort < 0 || c.McastPort > 0xffff {
		return c, fmt.Errorf("%w: port %d", ErrConfig, c.McastPort)
	}
	if c.McastTTL == 0 {
		c.McastTTL = 1
	}
	if c.McastTTL < 0 || c.McastTTL > 255 {
		return c, fmt.Errorf("%w: ttl %d", ErrConfig, c.McastTTL)
	}
	hlen := 20 + 8
	if c.McastGroup.Is6() {
		hlen = 40 + 8
	}
	m, minLen := 1500, 1
	if c.State == Backup {
		m, minLen = min(max(mtu, 1500), 65535), 1024
	}
	if c.SyncMaxlen != 0 {
		c.SyncMaxlen = min(max(c.SyncMaxlen, minLen), 65535-hlen)
	} else {
		c.SyncMaxlen = m - hlen
	}
	return c, nil
}

// FormatDaemon prints what `ipvsadm -L --daemon` (1.31) prints for the
// running daemons (nil: not running): the master's line, then the
// backup's, e.g.
//
//	master sync daemon (mcast=eth0, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)
//
// The configurations should have their defaults filled (WithDefaults), as
// the kernel reports them; zero fields are left out as ipvsadm does.
func FormatDaemon(master, backup *Config) string {
	var b strings.Builder
	for i, c := range [2]*Config{master, backup} {
		if c == nil {
			continue
		}
		name := "master"
		if i == 1 {
			name = "backup"
		}
		fmt.Fprintf(&b, "%s sync daemon (mcast=%s, syncid=%d", name, c.McastIfn, c.SyncID)
		if c.SyncMaxlen != 0 {
			fmt.Fprintf(&b, ", maxlen=%d", c.SyncMaxlen)
		}
		if c.McastGroup.IsValid() {
			fmt.Fprintf(&b, ", group=%s", c.McastGroup)
		}
		if c.McastPort != 0 {
			fmt.Fprintf(&b, ", port=%d", c.McastPort)
		}
		if c.McastTTL != 0 {
			fmt.Fprintf(&b, ", ttl=%d", c.McastTTL)
		}
		b.WriteString(")\n")
	}
	return b.String()
}
