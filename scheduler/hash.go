package scheduler

import (
	"sync/atomic"

	"gvs/ipvs"
)

// hashTabBits is IP_VS_DH_TAB_BITS / IP_VS_SH_TAB_BITS (the kernel default
// CONFIG_IP_VS_SH_TAB_BITS = 8): 256 buckets.
const (
	hashTabBits = 8
	hashTabSize = 1 << hashTabBits
	hashTabMask = hashTabSize - 1
)

// hashTable is an immutable dh or sh bucket table.
type hashTable [hashTabSize]*ipvs.Dest

// dh is destination hashing (ip_vs_dh.c): 256 buckets filled round-robin
// over the destinations in list order, ignoring weights; bucket =
// hash_32(daddr, 8). An unusable destination gives nil; there is no
// fallback.
type dh struct {
	table atomic.Pointer[hashTable]
}

func (*dh) Name() string { return "dh" }

func (s *dh) Update(svc *ipvs.Service) {
	ds := svc.Dests()
	t := new(hashTable)
	if len(ds) > 0 {
		for i := range t {
			t[i] = ds[i%len(ds)]
		}
	}
	s.table.Store(t)
}

func (s *dh) Schedule(_ *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	d := t[hash32(fold(f.DstAddr), hashTabBits)]
	if d == nil || !live(d) {
		return nil
	}
	return d
}

// sh is source hashing (ip_vs_sh.c). The table is filled by walking the
// destination list: each destination takes weight consecutive buckets (a
// weight-0 destination still takes one), wrapping around the list until
// the 256 buckets are full. The bucket of a packet is
// hash_32(port + saddr, 8), port being the source port with sh-port
// (ipvs.SvcSched2) and 0 otherwise.
//
// An unusable destination gives nil, unless sh-fallback (ipvs.SvcSched1):
// then, as the kernel does, probes rehash with offsets roffset = ihash,
// ihash+1, ... and bucket (roffset + ihash) & 255, returning the first
// usable destination.
type sh struct {
	flags ipvs.SvcFlags
	table atomic.Pointer[hashTable]
}

func (*sh) Name() string { return "sh" }

func (s *sh) Update(svc *ipvs.Service) {
	ds := svc.Dests()
	t := new(hashTable)
	if len(ds) > 0 {
		j, count := 0, 0
		for i := range t {
			d := ds[j]
			t[i] = d
			if count++; count >= d.Weight() {
				j = (j + 1) % len(ds)
				count = 0
			}
		}
	}
	s.table.Store(t)
}

func (s *sh) Schedule(_ *ipvs.Service, f *ipvs.Flow) *ipvs.Dest {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	var port uint16
	if s.flags&ipvs.SvcSched2 != 0 {
		port = flowPort(f)
	}
	ihash := hash32(uint32(port)+fold(f.SrcAddr), hashTabBits)
	d := t[ihash]
	if d == nil {
		return nil
	}
	if live(d) {
		return d
	}
	if s.flags&ipvs.SvcSched1 == 0 {
		return nil
	}
	for off := uint32(0); off < hashTabSize; off++ {
		roffset := (off + ihash) & hashTabMask
		d := t[(roffset+ihash)&hashTabMask]
		if d == nil {
			return nil
		}
		if live(d) {
			return d
		}
	}
	return nil
}
