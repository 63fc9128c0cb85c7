package erofs

import (
	"fmt"
	"testing"
)

func TestPlanChunks(t *testing.T) {
	const B = BlockSize
	for _, tc := range []struct {
		name     string
		size     uint64
		exts     []Extent
		copyAll  bool
		bits     uint8
		chunks   string // "dev:blk" per chunk, "-" for a hole, "T" for the tail
		tailOff  uint64
		tailSize uint64
	}{
		{name: "empty", size: 0, chunks: ""},
		{name: "one partial block", size: 100, exts: []Extent{{Length: 100, Physical: 7 * B}},
			bits: 0, chunks: "3:7"},
		{name: "contiguous file is one chunk", size: 10*B + 5, exts: []Extent{{Length: 10*B + 5, Physical: 40 * B}},
			bits: 4, chunks: "3:40"},
		{name: "exact power of two", size: 8 * B, exts: []Extent{{Length: 8 * B, Physical: 2 * B}},
			bits: 3, chunks: "3:2"},
		{name: "all inline is copied", size: 300, exts: []Extent{{Length: 300, Inline: true}}, copyAll: true},
		{name: "inline tail", size: 4*B + 10, exts: []Extent{{Length: 4 * B, Physical: 9 * B}, {Logical: 4 * B, Length: 10, Inline: true}},
			bits: 2, chunks: "3:9 T", tailOff: 4 * B, tailSize: 10},
		{name: "inline tail after 3 blocks", size: 3*B + 1, exts: []Extent{{Length: 3 * B, Physical: 9 * B}, {Logical: 3 * B, Length: 1, Inline: true}},
			bits: 0, chunks: "3:9 3:10 3:11 T", tailOff: 3 * B, tailSize: 1},
		{name: "hole in the middle", size: 12 * B, exts: []Extent{{Length: 4 * B, Physical: 100 * B}, {Logical: 4 * B, Length: 4 * B, Hole: true}, {Logical: 8 * B, Length: 4 * B, Physical: 104 * B}},
			bits: 2, chunks: "3:100 - 3:104"},
		{name: "unlisted gap is a hole", size: 12 * B, exts: []Extent{{Length: 4 * B, Physical: 100 * B}, {Logical: 8 * B, Length: 4 * B, Physical: 200 * B}},
			bits: 2, chunks: "3:100 - 3:200"},
		{name: "adjacent extents coalesce", size: 8 * B, exts: []Extent{{Length: 4 * B, Physical: 10 * B}, {Logical: 4 * B, Length: 4 * B, Physical: 14 * B}},
			bits: 3, chunks: "3:10"},
		{name: "trailing hole", size: 8 * B, exts: []Extent{{Length: 4 * B, Physical: 10 * B}},
			bits: 2, chunks: "3:10 -"},
		{name: "unaligned physical is copied", size: 2 * B, exts: []Extent{{Length: 2 * B, Physical: 10}}, copyAll: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planChunks(tc.exts, tc.size, 3)
			if err != nil {
				t.Fatal(err)
			}
			if p.copyAll != tc.copyAll {
				t.Fatalf("copyAll %v, want %v", p.copyAll, tc.copyAll)
			}
			if tc.copyAll {
				return
			}
			got := ""
			for i, c := range p.chunks {
				if i > 0 {
					got += " "
				}
				switch {
				case i == p.tailChunk:
					got += "T"
				case c.BlkAddr == NullAddr:
					got += "-"
				default:
					got += fmt.Sprintf("%d:%d", c.DeviceID, c.BlkAddr)
				}
			}
			if p.chunkBits != tc.bits || got != tc.chunks {
				t.Errorf("bits %d chunks %q, want bits %d chunks %q", p.chunkBits, got, tc.bits, tc.chunks)
			}
			if p.tailChunk >= 0 && (p.tailOff != tc.tailOff || p.tailLen != tc.tailSize) {
				t.Errorf("tail at %d+%d, want %d+%d", p.tailOff, p.tailLen, tc.tailOff, tc.tailSize)
			}
		})
	}
}

func TestPlanChunksRejectsMultiDeviceLayer(t *testing.T) {
	_, err := planChunks([]Extent{{Length: 10, Device: 1}}, 10, 1)
	if err == nil {
		t.Fatal("a layer with data on its own extra device was accepted")
	}
}
