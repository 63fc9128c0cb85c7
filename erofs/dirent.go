package erofs

import (
	"encoding/binary"
	"syscall"
)

// Directory data: a sequence of blocks, each holding an array of 12-byte
// dirents followed by their names (not NUL-terminated; a name ends where the
// next one starts, at the end of the directory, or at the first NUL of a
// block's zero padding). The first dirent's nameoff / 12 is the block's
// dirent count. Names are sorted bytewise across the whole directory,
// "." and ".." included, because the kernel binary-searches blocks by their
// first name and then dirents within a block. A name never spans two blocks.

// dirBlocks calls fn with the range [start, end) of children (a whole
// directory, sorted) in each block, in order, and returns the directory
// size in bytes.
func dirBlocks(children []dirEntry, fn func(start, end int)) uint64 {
	var size uint64
	start, used := 0, 0
	for i, c := range children {
		need := DirentSize + len(c.name)
		if used+need > BlockSize {
			if fn != nil {
				fn(start, i)
			}
			size += BlockSize
			start, used = i, 0
		}
		used += need
	}
	if fn != nil {
		fn(start, len(children))
	}
	return size + uint64(used)
}

// appendDirBlock appends the dirents and names of children[start:end] to b
// (no padding: the caller pads a block that is not the directory's last).
func appendDirBlock(b []byte, children []dirEntry) []byte {
	base := len(b)
	nameoff := DirentSize * len(children)
	b = append(b, make([]byte, nameoff)...)
	for i, c := range children {
		de := b[base+i*DirentSize:]
		binary.LittleEndian.PutUint64(de[0:], uint64(c.node.nid))
		binary.LittleEndian.PutUint16(de[8:], uint16(nameoff))
		de[10] = fileType(c.node.Mode)
		nameoff += len(c.name)
	}
	for _, c := range children {
		b = append(b, c.name...)
	}
	return b
}

// fileType maps st_mode to an EROFS_FT_* dirent type: what the writer
// stores and what the reader checks a dirent against.
func fileType(mode uint32) uint8 {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return FTRegFile
	case syscall.S_IFDIR:
		return FTDir
	case syscall.S_IFCHR:
		return FTChrdev
	case syscall.S_IFBLK:
		return FTBlkdev
	case syscall.S_IFIFO:
		return FTFifo
	case syscall.S_IFSOCK:
		return FTSock
	case syscall.S_IFLNK:
		return FTSymlink
	}
	return FTUnknown
}
