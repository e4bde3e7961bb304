// Package conntrack is the connection table of gvs, with IPVS semantics
// (docs/IPVS.md §3 and §4): per-connection TCP state machine with IPVS's
// transition tables and timeouts, UDP's single 300 s state, the NAT reply
// index, persistence templates with n_control, and the ActiveConn /
// InActConn / PersistConn counters of each destination.
//
// The package does no I/O and reads no clock: every call takes now, in
// nanoseconds of a monotonic clock the caller owns (the replay tool passes
// pcap timestamps). An entry is dead for every lookup as soon as
// now >= its expiry, whether or not Expire has reclaimed it yet.
//
// # Layout
//
// The table is split into a power-of-two number of shards, each with its own
// sync.Mutex; there is no table-wide lock. A connection lives in the shard
// chosen by the top bits of a keyed hash of (protocol, client address,
// client port). Both its in-key (client -> virtual) and its reply key (real
// server -> client) contain exactly those fields, so In and Out find it
// under one lock. Templates are placed by the hash of their whole key.
//
// Per shard, entries are 96-byte pointer-light records (one *ipvs.Dest) in a
// slab of fixed 512-entry (48 KiB) chunks with a free list; chunks never move, so
// slot numbers (uint32) stay valid. One open-addressing index of 8-byte
// cells (32 hash bits + slot reference) with linear probing and
// backward-shift deletion, at most 3/4 full, maps keys to slots: one cell
// per connection and per template. A NAT connection's reply key hashes like
// its in-key, so the one cell serves both lookups, which tell the keys apart
// by comparing the entry. No Go maps, no per-entry heap objects: 96 +
// 8/load bytes per connection (load between 3/8 and 3/4).
//
// # Expiry
//
// Each shard has a timing wheel of 4096 ticks of 2^28 ns (268 ms), one
// doubly linked list of slots per tick. Packets only move an entry's expiry
// forward (lazy re-arm); when the wheel reaches the tick it was filed under,
// an entry whose expiry has moved on is re-filed instead of freed. An expiry
// that moves earlier (a state with a shorter timeout) re-files the entry at
// once. The current tick's list keeps a lower bound of its expiries, so
// Expire(now) frees exactly the entries with expires <= now, and a per-shard
// atomic "next due" time lets Expire skip idle shards without locking them.
//
// # Locks
//
// Lock order: a goroutine holds at most one shard lock at a time. Creating a
// connection under a template locks the template's shard (to validate the
// reference, raise n_control and re-arm it), releases it, then locks the
// connection's shard. Lowering n_control when a controlled connection goes
// away is an atomic decrement done while holding only the connection's
// shard: a template is never freed while n_control > 0, and the chunk it
// lives in is reached through an atomically published chunk directory.
// Dest counters are atomics in package ipvs. Walk copies a shard under its
// lock and calls back after unlocking.
//
// Hot paths (In, Out, PeekIn, PeekOut, Create, Template, Expire) do not
// allocate in steady state; Create allocates only when a shard's slab or
// index grows.
package conntrack
