package ring

import (
	"strings"
	"testing"
	"time"
)

func TestGeometry(t *testing.T) {
	const page = 4096
	tests := []struct {
		name                   string
		frame, block, count    int
		wantFrame, wantBlock   int
		wantBlocks, wantFrames int
		wantErr                string
	}{
		{name: "defaults", wantFrame: 2048, wantBlock: 64 << 10, wantBlocks: 64, wantFrames: 2048},
		{name: "4k frames", frame: 4096, count: 1000, wantFrame: 4096, wantBlock: 64 << 10, wantBlocks: 63, wantFrames: 1008},
		{name: "frame larger than default block", frame: 128 << 10, count: 3, wantFrame: 128 << 10, wantBlock: 128 << 10, wantBlocks: 3, wantFrames: 3},
		{name: "non-dividing frame", frame: 3072, block: 8192, count: 5, wantFrame: 3072, wantBlock: 8192, wantBlocks: 3, wantFrames: 6},
		{name: "unaligned frame", frame: 2040, wantErr: "multiple of 16"},
		{name: "tiny frame", frame: 64, wantErr: "at least 128"},
		{name: "block not page multiple", block: 5000, wantErr: "multiple of the page size"},
		{name: "block smaller than frame", frame: 8192, block: 4096, wantErr: "smaller than the frame size"},
		{name: "negative count", count: -1, wantErr: "negative"},
		{name: "too large", frame: 1 << 16, count: 1 << 15, wantErr: "ring limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := newGeometry(tt.frame, tt.block, tt.count, page)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.frameSize != tt.wantFrame || g.blockSize != tt.wantBlock || g.blockNr != tt.wantBlocks || g.frameNr != tt.wantFrames {
				t.Fatalf("geometry %+v, want frame %d block %d blocks %d frames %d", g, tt.wantFrame, tt.wantBlock, tt.wantBlocks, tt.wantFrames)
			}
			if g.totalBytes != g.blockNr*g.blockSize {
				t.Errorf("totalBytes %d != %d*%d", g.totalBytes, g.blockNr, g.blockSize)
			}
			// Slots never straddle a block and never overlap.
			prevEnd := 0
			for i := 0; i < g.frameNr; i++ {
				off := g.offset(i)
				if off < prevEnd || off/g.blockSize != (off+g.frameSize-1)/g.blockSize || off+g.frameSize > g.totalBytes {
					t.Fatalf("slot %d at %d (frame %d) overlaps or straddles", i, off, g.frameSize)
				}
				prevEnd = off + g.frameSize
			}
		})
	}
}

func TestMeta(t *testing.T) {
	tests := []struct {
		name                   string
		m                      Meta
		trunc, notReady, valid bool
		losing, vlan           bool
		tci, tpid              uint16
	}{
		{name: "plain", m: Meta{Status: StatusUser, Len: 60, Snap: 60}},
		{name: "truncated", m: Meta{Status: StatusUser, Len: 3000, Snap: 1982}, trunc: true},
		{name: "csum partial", m: Meta{Status: StatusUser | StatusCsumNotReady, Len: 60, Snap: 60}, notReady: true},
		{name: "csum valid losing", m: Meta{Status: StatusUser | StatusCsumValid | StatusLosing, Len: 60, Snap: 60}, valid: true, losing: true},
		{name: "vlan with tpid", m: Meta{Status: StatusUser | StatusVLANValid | StatusVLANTPIDValid, VLANTCI: 0x2064, VLANTPID: 0x8100}, vlan: true, tci: 0x2064, tpid: 0x8100},
		{name: "vlan without tpid", m: Meta{Status: StatusUser | StatusVLANValid, VLANTCI: 7, VLANTPID: 0x1234}, vlan: true, tci: 7},
		{name: "stale tci ignored", m: Meta{Status: StatusUser, VLANTCI: 7, VLANTPID: 0x8100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.m
			if m.Truncated() != tt.trunc || m.CsumNotReady() != tt.notReady || m.CsumValid() != tt.valid || m.Losing() != tt.losing {
				t.Errorf("Truncated/CsumNotReady/CsumValid/Losing = %v/%v/%v/%v, want %v/%v/%v/%v",
					m.Truncated(), m.CsumNotReady(), m.CsumValid(), m.Losing(), tt.trunc, tt.notReady, tt.valid, tt.losing)
			}
			tci, tpid, ok := m.VLAN()
			if ok != tt.vlan || tci != tt.tci || tpid != tt.tpid {
				t.Errorf("VLAN() = %#x, %#x, %v; want %#x, %#x, %v", tci, tpid, ok, tt.tci, tt.tpid, tt.vlan)
			}
		})
	}
	m := Meta{Sec: 1700000000, Nsec: 5}
	if got := m.Time(); !got.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("Time() = %v", got)
	}
}

func TestValidTXLen(t *testing.T) {
	untagged := buildFrame(frameSpec{src: client, dst: vip1, size: 1600})
	tagged := buildFrame(frameSpec{src: client, dst: vip1, size: 1600, vlanTCI: 3})
	tests := []struct {
		name   string
		frame  []byte
		off, n int
		want   bool
	}{
		{"min", untagged, 0, 14, true},
		{"runt", untagged, 0, 13, false},
		{"mtu", untagged, 0, 1514, true},
		{"over mtu", untagged, 0, 1515, false},
		{"tagged over mtu", tagged, 0, 1518, true},
		{"tagged too long", tagged, 0, 1519, false},
		{"negative offset", untagged, -1, 60, false},
		{"offset past capacity", untagged, 2000, 60, false},
		{"offset plus length past capacity", untagged, 600, 1500, false},
		{"offset ok", untagged, 500, 1500, true},
		{"nil frame over mtu", nil, 0, 1516, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := validTXLen(tt.frame, tt.off, tt.n, 2016, 1514); got != tt.want {
				t.Errorf("validTXLen(off %d, n %d) = %v, want %v", tt.off, tt.n, got, tt.want)
			}
		})
	}
}

func TestFanoutValue(t *testing.T) {
	tests := []struct {
		f    Fanout
		want int
	}{
		{Fanout{Group: 7}, 7 | 0x8000<<16},
		{Fanout{Group: 7, NoDefrag: true}, 7},
		{Fanout{Group: 0xffff, Mode: FanoutQM, Flags: FanoutFlagRollover}, 0xffff | (5|0x1000|0x8000)<<16},
		{Fanout{Group: 1, Mode: FanoutCPU, Flags: FanoutFlagIgnoreOutgoing, NoDefrag: true}, 1 | (2|0x4000)<<16},
	}
	for _, tt := range tests {
		if got := tt.f.sockoptValue(); got != tt.want {
			t.Errorf("%+v: %#x, want %#x", tt.f, got, tt.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	rx, tx := DefaultRXConfig(), DefaultTXConfig()
	if rx.FrameSize != 2048 || rx.BlockSize != 64<<10 || rx.FrameCount != 2048 || rx.KeepOutgoing || rx.Fanout != nil {
		t.Errorf("DefaultRXConfig() = %+v", rx)
	}
	if tx.FrameSize != 2048 || tx.FlushEvery != 64 || !tx.QdiscBypass {
		t.Errorf("DefaultTXConfig() = %+v", tx)
	}
	b := NewBatch(0)
	if len(b.Frames) != 1 || len(b.Metas) != 1 {
		t.Errorf("NewBatch(0) sizes %d/%d, want 1/1", len(b.Frames), len(b.Metas))
	}
}
