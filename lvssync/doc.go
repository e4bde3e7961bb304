// Package lvssync is IPVS's connection synchronisation protocol
// (net/netfilter/ipvs/ip_vs_sync.c): the wire format of the messages a
// master director multicasts to its backups (versions 1 and 0), the rule
// that decides when a connection is worth a record (ip_vs_sync_conn_needed),
// and a UDP multicast sender (master) and receiver (backup) that speak it
// with a Linux director as peer.
//
// # Wire format
//
// A message is one UDP datagram. Version 1 (sync_version=1, the default):
//
//	0      reserved = 0 (a version 0 receiver reads it as nr_conns and drops the message)
//	1      syncid
//	2..3   size, big endian: the whole message, header included
//	4      nr_conns
//	5      version = 1
//	6..7   spare = 0
//	8..    records, each starting on a 4-byte boundary
//
// A record (struct ip_vs_sync_v4 / ip_vs_sync_v6):
//
//	0      type: bit 0 set for IPv6 addresses
//	1      protocol
//	2..3   ver_size: version (0) << 12 | size of the record (options included, padding not)
//	4..7   flags (IP_VS_CONN_F_*)
//	8..9   state
//	10..15 cport, vport, dport
//	16..19 fwmark
//	20..23 timeout in seconds
//	24..   caddr, vaddr, daddr: 3 × 4 or 3 × 16 bytes
//	       options: type (1 byte), length (1 byte), data; SEQ_DATA (1) carries
//	       the in and out ip_vs_seq (3 × be32 each), PE_DATA (2) and PE_NAME (3)
//	       the persistence engine's data and name.
//
// Version 0 (sync_version=0) has a 4-byte header (nr_conns, syncid, size)
// and fixed 24-byte IPv4 records (reserved, protocol, cport, vport, dport,
// caddr, vaddr, daddr, flags (be16), state (be16)), each followed by the
// 24 bytes of struct ip_vs_sync_conn_options when the flags carry
// IP_VS_CONN_F_SEQ_MASK. It has no timeout and no fwmark.
//
// Decoding follows ip_vs_process_message: a message whose length differs
// from its size field is dropped; a version 1 record that breaks the framing
// drops the rest of the message; a record the backup cannot use (unknown
// protocol, state out of range, unknown mandatory option, PE data without a
// PE name) is skipped and the next one is read. Every drop is counted by
// reason (Reason, Counters); nothing panics on any input (FuzzDecode).
//
// # Flags
//
// The master sends its connection flags minus IP_VS_CONN_F_HASHED (all 32
// bits in version 1, the low 16 in version 0: MasterFlags). A version 1
// backup keeps only IP_VS_CONN_F_BACKUP_MASK (forwarding method, NOOUTPUT,
// INACTIVE, the SEQ bits, NO_CPORT, TEMPLATE) and adds IP_VS_CONN_F_SYNC; a
// version 0 backup keeps every received bit but HASHED and adds SYNC
// (BackupFlags). On an existing connection only INACTIVE and the SEQ bits
// (IP_VS_CONN_F_BACKUP_UPD_MASK) are updated (UpdateFlags).
//
// # Daemon
//
// Sender (the master) batches records taken from per-worker queues
// (Producer: bounded single-producer rings; a full ring drops the record and
// counts it, the data path never blocks) into messages of at most
// Config.SyncMaxlen bytes and 255 records, sends a message as soon as it is
// full and a partial one when its first record is FlushAfter old.
// Receiver (the backup) joins the group on its interface, filters on syncid
// (a backup with syncid 0 accepts every syncid, like the kernel), decodes,
// and hands each IPv4 record to a Handler. FormatDaemon prints the
// `ipvsadm -L --daemon` lines.
package lvssync
