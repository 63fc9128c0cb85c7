package erofs

import (
	"fmt"
	"math/bits"
)

// How a merged regular file finds its data. A file of a layer is normally
// a run of whole blocks in that layer image; fsmeta describes it with a
// chunk-based inode whose 8-byte chunk indexes name (device, blkaddr), the
// device being the layer's slot in the device table. Bytes a layer keeps
// inline in its metadata area (the tail of a FLAT_INLINE file) have no block
// address to point at, so fsmeta carries its own copy of them:
//
//   - a file with nothing block-addressable (all inline) is copied whole;
//   - a file whose last block is an inline tail gets chunks for its blocks
//     in the layer and one chunk on device 0 (fsmeta itself) holding a copy
//     of the tail block.
//
// The chunk size is the largest power of two that keeps every change of
// mapping (layer extent boundary, hole, tail) on a chunk boundary, capped at
// the file size, so a contiguous file needs one chunk index.

// maxChunkBits is the largest chunk size, in log2 blocks, a chunk format
// can encode (EROFS_CHUNK_FORMAT_BLKBITS_MASK).
const maxChunkBits = chunkFormatBlkbitsMask

// chunkPlan is the data mapping of one merged regular file.
type chunkPlan struct {
	// copyAll: the file has no block-addressable data; its bytes are
	// copied into fsmeta (inline when they fit).
	copyAll bool
	// chunkBits is log2 of the chunk size in blocks.
	chunkBits uint8
	// chunks are the indexes, DeviceID = the layer's device (1-based) or 0
	// for the tail chunk, whose BlkAddr the layout fills in.
	chunks []ChunkIndex
	// tailChunk is the index in chunks of the tail copy, or -1.
	tailChunk int
	// tailOff and tailLen locate the tail bytes in the file.
	tailOff, tailLen uint64
}

// segment is a maximal run of the file with one kind of mapping.
type segment struct {
	start, end uint64 // logical blocks [start, end)
	kind       segKind
	phys       uint64 // first physical block, for segMapped
}

type segKind uint8

const (
	segHole segKind = iota
	segMapped
	segTail
)

// planChunks maps a file of size bytes, whose data extents in its layer are
// exts, to chunk indexes on device dev. It fails only for layers this
// builder cannot reference (multi-device layers); data it cannot address
// (unaligned, inline) it asks to copy.
func planChunks(exts []Extent, size uint64, dev uint16) (*chunkPlan, error) {
	if size == 0 {
		return &chunkPlan{tailChunk: -1}, nil
	}
	nblocks := (size + BlockSize - 1) / BlockSize
	var segs []segment
	add := func(s segment) {
		if n := len(segs); n > 0 {
			p := &segs[n-1]
			if p.end == s.start && p.kind == s.kind &&
				(s.kind == segHole || (s.kind == segMapped && p.phys+(p.end-p.start) == s.phys)) {
				p.end = s.end
				return
			}
		}
		segs = append(segs, s)
	}
	var pos uint64 // next logical byte expected
	tail := false
	for _, e := range exts {
		if e.Length == 0 {
			continue
		}
		if e.Logical < pos || e.Logical+e.Length > size || tail {
			return nil, fmt.Errorf("erofs: extents overlap or run past the file size %d: %w", size, ErrCorrupt)
		}
		if e.Logical > pos { // unlisted gap: reads as zeros
			if pos%BlockSize != 0 || e.Logical%BlockSize != 0 {
				return &chunkPlan{copyAll: true, tailChunk: -1}, nil
			}
			add(segment{pos / BlockSize, e.Logical / BlockSize, segHole, 0})
		}
		end := e.Logical + e.Length
		if e.Logical%BlockSize != 0 || (end%BlockSize != 0 && end != size) {
			return &chunkPlan{copyAll: true, tailChunk: -1}, nil
		}
		sb, eb := e.Logical/BlockSize, (end+BlockSize-1)/BlockSize
		switch {
		case e.Hole:
			add(segment{sb, eb, segHole, 0})
		case e.Inline:
			if end != size {
				return nil, fmt.Errorf("erofs: inline data before the end of the file: %w", ErrCorrupt)
			}
			if sb == 0 {
				return &chunkPlan{copyAll: true, tailChunk: -1}, nil
			}
			add(segment{sb, eb, segTail, 0})
			tail = true
		default:
			if e.Device != 0 {
				return nil, fmt.Errorf("erofs: layer data on extra device %d: multi-device layers are not supported", e.Device)
			}
			if e.Physical%BlockSize != 0 {
				return &chunkPlan{copyAll: true, tailChunk: -1}, nil
			}
			add(segment{sb, eb, segMapped, e.Physical / BlockSize})
		}
		pos = end
	}
	if pos < size {
		if pos%BlockSize != 0 {
			return &chunkPlan{copyAll: true, tailChunk: -1}, nil
		}
		add(segment{pos / BlockSize, nblocks, segHole, 0})
	}

	cb := chunkBitsFor(segs, nblocks)
	csize := uint64(1) << cb
	plan := &chunkPlan{chunkBits: cb, tailChunk: -1}
	nchunks := (nblocks + csize - 1) / csize
	plan.chunks = make([]ChunkIndex, nchunks)
	si := 0
	for k := range nchunks {
		lb := k * csize
		for segs[si].end <= lb {
			si++
		}
		s := segs[si]
		switch s.kind {
		case segHole:
			plan.chunks[k] = ChunkIndex{BlkAddr: NullAddr}
		case segMapped:
			pb := s.phys + (lb - s.start)
			if pb >= NullAddr {
				return nil, fmt.Errorf("erofs: block address %d beyond 32 bits", pb)
			}
			plan.chunks[k] = ChunkIndex{DeviceID: dev, BlkAddr: uint32(pb)}
		case segTail:
			plan.tailChunk = int(k)
			plan.tailOff = lb * BlockSize
			plan.tailLen = size - plan.tailOff
			plan.chunks[k] = ChunkIndex{DeviceID: 0, BlkAddr: NullAddr} // filled in by the layout
		}
	}
	return plan, nil
}

// chunkBitsFor returns the largest chunk size (log2 blocks) that puts every
// segment start on a chunk boundary, no larger than the file needs.
func chunkBitsFor(segs []segment, nblocks uint64) uint8 {
	cb := uint8(0)
	if nblocks > 1 {
		cb = uint8(bits.Len64(nblocks - 1)) // ceil(log2(nblocks))
	}
	if cb > maxChunkBits {
		cb = maxChunkBits
	}
	for _, s := range segs[1:] {
		if tz := uint8(bits.TrailingZeros64(s.start)); tz < cb {
			cb = tz
		}
	}
	return cb
}
