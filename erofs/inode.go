package erofs

import (
	"fmt"
	"math"
	"syscall"
)

// An inode record in the metadata area: the compact (32 B) or extended
// (64 B) header, the inline xattrs, then, by layout, the inline data tail
// (FLAT_INLINE) or the 8-byte-aligned chunk indexes (CHUNK_BASED).

// buildStamp is the superblock build time. Compact inodes have no mtime of
// their own: they carry this one.
type buildStamp struct {
	sec  int64
	nsec uint32
}

// plan decides the layout of n and returns the size of its record. It
// needs n.nlink and, for directories, their sorted children.
func (n *Node) plan(bt buildStamp, children []dirEntry) (int, error) {
	xsize, err := xattrIbodySize(n.Xattrs)
	if err != nil {
		return 0, err
	}
	var tail int
	switch {
	case n.IsDir():
		n.Data.Size = dirBlocks(children, nil)
		tail = int(n.Data.Size % BlockSize)
	case n.Data.Kind == DataBytes:
		n.Data.Size = uint64(len(n.Data.Bytes))
		tail = int(n.Data.Size % BlockSize)
	case n.Data.Kind == DataChunks:
		if n.Data.ChunkBits < BlockSizeBits || n.Data.ChunkBits > BlockSizeBits+chunkFormatBlkbitsMask {
			return 0, fmt.Errorf("chunk bits %d out of range [%d, %d]", n.Data.ChunkBits, BlockSizeBits, BlockSizeBits+chunkFormatBlkbitsMask)
		}
		if want := chunkCount(n.Data.Size, n.Data.ChunkBits); uint64(len(n.Data.Chunks)) != want {
			return 0, fmt.Errorf("%d chunk indexes for %d bytes in chunks of 2^%d: want %d", len(n.Data.Chunks), n.Data.Size, n.Data.ChunkBits, want)
		}
	case n.Data.Kind == DataBlocks:
		if n.Data.Size > 0 && uint64(n.Data.BlkAddr)+blocksFor(n.Data.Size) > math.MaxUint32+1 {
			return 0, fmt.Errorf("data at block %d of %d bytes beyond 2^32 blocks", n.Data.BlkAddr, n.Data.Size)
		}
	}
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK:
	case syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
		if n.Data.Size != 0 {
			return 0, fmt.Errorf("special file with %d bytes of data", n.Data.Size)
		}
	default:
		return 0, fmt.Errorf("unknown file type in mode %#o", n.Mode)
	}
	if t := n.Mode & syscall.S_IFMT; t != syscall.S_IFREG && t != syscall.S_IFLNK && n.Data.Kind != DataNone {
		return 0, fmt.Errorf("data on a file of mode %#o", n.Mode)
	}

	n.ext = n.UID > math.MaxUint16 || n.GID > math.MaxUint16 || n.nlink > math.MaxUint16 ||
		n.Data.Size > math.MaxUint32 || n.Mtime != bt.sec || n.MtimeNsec != bt.nsec
	head := InodeCompactSize
	if n.ext {
		head = InodeExtendedSize
	}
	head += xsize

	n.layout = LayoutFlatPlain
	switch {
	case n.Data.Kind == DataChunks:
		n.layout = LayoutChunkBased
		head = align(head, ChunkIndexSize) + ChunkIndexSize*len(n.Data.Chunks)
	case (n.IsDir() || n.Data.Kind == DataBytes) && tail > 0 && head+tail <= BlockSize:
		n.layout = LayoutFlatInline
		head += tail
	}
	return head, nil
}

// outOfLineBlocks is how many blocks after the metadata area n's data needs
// (directories and DataBytes only).
func (n *Node) outOfLineBlocks() uint64 {
	if !n.IsDir() && n.Data.Kind != DataBytes {
		return 0
	}
	if n.layout == LayoutFlatInline {
		return n.Data.Size / BlockSize
	}
	return blocksFor(n.Data.Size)
}

// appendInode appends n's record (header, xattrs; not the inline tail or
// chunk indexes) to b.
func (n *Node) appendInode(b []byte, ino uint32) []byte {
	xsize, _ := xattrIbodySize(n.Xattrs)
	var u uint32
	switch {
	case n.layout == LayoutChunkBased:
		u = ChunkFormatIndexes | uint32(n.Data.ChunkBits-BlockSizeBits)
	case n.Mode&syscall.S_IFMT == syscall.S_IFCHR || n.Mode&syscall.S_IFMT == syscall.S_IFBLK:
		u = n.Rdev
	case n.IsDir() || n.Data.Kind == DataBytes || n.Data.Kind == DataBlocks && n.Data.Size > 0:
		u = n.Data.BlkAddr // set by WriteImage for the first two
	}
	format := InodeFormat(n.ext, n.layout)
	icount := XattrIcount(xsize)
	if n.ext {
		rec := InodeExtended{
			Format: format, XattrCount: icount, Mode: uint16(n.Mode), Size: n.Data.Size,
			U: u, Ino: ino, UID: n.UID, GID: n.GID,
			Mtime: uint64(n.Mtime), MtimeNsec: n.MtimeNsec, Nlink: n.nlink,
		}
		b = rec.AppendTo(b)
	} else {
		rec := InodeCompact{
			Format: format, XattrCount: icount, Mode: uint16(n.Mode), Nlink: uint16(n.nlink),
			Size: uint32(n.Data.Size), U: u, Ino: ino, UID: uint16(n.UID), GID: uint16(n.GID),
		}
		b = rec.AppendTo(b)
	}
	return appendXattrIbody(b, n.Xattrs)
}

func blocksFor(size uint64) uint64 { return (size + BlockSize - 1) / BlockSize }
