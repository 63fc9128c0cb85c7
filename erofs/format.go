package erofs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// On-disk records of EROFS, one Go type per record of the kernel's
// fs/erofs/erofs_fs.h, with the same field names and order. All multi-byte
// fields are little-endian. Sizes and offsets are pinned by format_test.go.

const (
	// SuperblockOffset is the byte offset of the superblock in the image.
	SuperblockOffset = 1024
	// SuperblockSize is the size of the base superblock (no extension slots).
	SuperblockSize = 128
	// Magic is the EROFS superblock magic (EROFS_SUPER_MAGIC_V1).
	Magic = 0xE0F5E1E2

	// BlockSizeBits is log2 of the only block size this project writes.
	BlockSizeBits = 12
	// BlockSize is 4 KiB: the page size on every host and guest we target.
	BlockSize = 1 << BlockSizeBits

	// SlotSize is the unit of nids: an inode starts on a 32-byte boundary
	// of the metadata area, at meta_blkaddr*BlockSize + nid*SlotSize.
	SlotSize = 32
	// InodeCompactSize is the size of erofs_inode_compact.
	InodeCompactSize = 32
	// InodeExtendedSize is the size of erofs_inode_extended.
	InodeExtendedSize = 64
	// DirentSize is the size of erofs_dirent.
	DirentSize = 12
	// DeviceSlotSize is the size of erofs_deviceslot.
	DeviceSlotSize = 128
	// XattrIbodyHeaderSize is the size of erofs_xattr_ibody_header.
	XattrIbodyHeaderSize = 12
	// XattrEntrySize is the size of erofs_xattr_entry (name and value follow).
	XattrEntrySize = 4
	// ChunkIndexSize is the size of erofs_inode_chunk_index.
	ChunkIndexSize = 8
	// BlockMapEntrySize is the size of one entry of the 4-byte chunk block map
	// (chunk-based inodes without EROFS_CHUNK_FORMAT_INDEXES).
	BlockMapEntrySize = 4

	// NullAddr marks a hole in a chunk index or block map (EROFS_NULL_ADDR).
	NullAddr = 0xFFFFFFFF
	// NameLen is the longest file name EROFS stores (EROFS_NAME_LEN).
	NameLen = 255
)

// Feature bits of the superblock.
const (
	FeatureCompatSbChksum      = 0x00000001 // crc32c of the superblock block
	FeatureCompatMtime         = 0x00000002 // compact inodes carry an mtime offset
	FeatureCompatXattrFilter   = 0x00000004 // bloom filter in xattr ibody header
	FeatureIncompatZeroPadding = 0x00000001 // LZ4_0PADDING; also set by mkfs on plain images
	FeatureIncompatChunkedFile = 0x00000004 // CHUNK_BASED inodes present
	FeatureIncompatDeviceTable = 0x00000008 // extra devices in a device table
)

// Inode data layouts (bits 1..3 of i_format).
const (
	LayoutFlatPlain         = 0
	LayoutCompressedFull    = 1
	LayoutFlatInline        = 2
	LayoutCompressedCompact = 3
	LayoutChunkBased        = 4
	inodeVersionExtended    = 1
	inodeLayoutShift        = 1
	inodeLayoutMask         = 0x7
	inodeFormatAllowedBits  = 0xF // version bit + 3 layout bits
	chunkFormatBlkbitsMask  = 0x001F
	ChunkFormatIndexes      = 0x0020
	chunkFormatAll          = chunkFormatBlkbitsMask | ChunkFormatIndexes
)

// File types of a dirent (EROFS_FT_*).
const (
	FTUnknown = 0
	FTRegFile = 1
	FTDir     = 2
	FTChrdev  = 3
	FTBlkdev  = 4
	FTFifo    = 5
	FTSock    = 6
	FTSymlink = 7
)

// Xattr name indexes (EROFS_XATTR_INDEX_*): the prefix is not stored.
const (
	XattrIndexUser            = 1
	XattrIndexPosixACLAccess  = 2
	XattrIndexPosixACLDefault = 3
	XattrIndexTrusted         = 4
	XattrIndexLustre          = 5
	XattrIndexSecurity        = 6
)

// xattrPrefixes is erofs_xattr_prefix(): the prefix each short name index
// stands for. The two ACL indexes name the whole attribute (their stored
// suffix is empty). Lustre is read, never written: no Linux file system but
// Lustre stores it. A fixed array, not an exported slice, so nothing
// outside this file can change what an index means.
var xattrPrefixes = [...]string{
	XattrIndexUser:            "user.",
	XattrIndexPosixACLAccess:  "system.posix_acl_access",
	XattrIndexPosixACLDefault: "system.posix_acl_default",
	XattrIndexTrusted:         "trusted.",
	XattrIndexLustre:          "lustre.",
	XattrIndexSecurity:        "security.",
}

// xattrPrefix returns the prefix of a short name index.
func xattrPrefix(index uint8) (string, bool) {
	if int(index) >= len(xattrPrefixes) || xattrPrefixes[index] == "" {
		return "", false
	}
	return xattrPrefixes[index], true
}

// Superblock is struct erofs_super_block.
type Superblock struct {
	Magic            uint32
	Checksum         uint32
	FeatureCompat    uint32
	BlkSzBits        uint8
	SbExtSlots       uint8
	RootNid          uint16
	Inos             uint64
	BuildTime        uint64
	BuildTimeNsec    uint32
	Blocks           uint32
	MetaBlkAddr      uint32
	XattrBlkAddr     uint32
	UUID             [16]byte
	VolumeName       [16]byte
	FeatureIncompat  uint32
	U1               uint16 // available_compr_algs / lz4_max_distance
	ExtraDevices     uint16
	DevtSlotOff      uint16 // device table at DevtSlotOff*DeviceSlotSize
	DirBlkBits       uint8
	XattrPrefixCount uint8
	XattrPrefixStart uint32
	PackedNid        uint64
	XattrFilterRes   uint8
	Reserved2        [23]byte
}

// InodeCompact is struct erofs_inode_compact. Its mtime is the superblock's
// build time; uid/gid and nlink are 16-bit and size is 32-bit.
type InodeCompact struct {
	Format     uint16
	XattrCount uint16
	Mode       uint16
	Nlink      uint16
	Size       uint32
	Reserved   uint32
	U          uint32 // raw_blkaddr, rdev or chunk_info (format | reserved<<16)
	Ino        uint32
	UID        uint16
	GID        uint16
	Reserved2  uint32
}

// InodeExtended is struct erofs_inode_extended.
type InodeExtended struct {
	Format     uint16
	XattrCount uint16
	Mode       uint16
	Reserved   uint16
	Size       uint64
	U          uint32
	Ino        uint32
	UID        uint32
	GID        uint32
	Mtime      uint64
	MtimeNsec  uint32
	Nlink      uint32
	Reserved2  [16]byte
}

// Dirent is struct erofs_dirent. A directory block holds the dirents, then
// the names; NameOff of the first dirent / DirentSize is the dirent count.
type Dirent struct {
	Nid      uint64
	NameOff  uint16
	FileType uint8
	Reserved uint8
}

// DeviceSlot is struct erofs_deviceslot: one extra device of a multi-device
// image. MappedBlkAddr places the device in the flat (concatenated) address
// space used when the image is mounted as one device.
type DeviceSlot struct {
	Tag           [64]byte
	Blocks        uint32
	MappedBlkAddr uint32
	Reserved      [56]byte
}

// XattrIbodyHeader is struct erofs_xattr_ibody_header; h_shared_xattrs[]
// (SharedCount uint32 ids) follows it.
type XattrIbodyHeader struct {
	NameFilter  uint32
	SharedCount uint8
	Reserved2   [7]byte
}

// XattrEntry is struct erofs_xattr_entry; NameLen name bytes then ValueSize
// value bytes follow, and the whole entry is padded to 4 bytes.
type XattrEntry struct {
	NameLen   uint8
	NameIndex uint8
	ValueSize uint16
}

// ChunkIndex is struct erofs_inode_chunk_index.
type ChunkIndex struct {
	Advise   uint16 // startblk_hi in newer kernels; always 0 here
	DeviceID uint16
	BlkAddr  uint32
}

// InodeFormat packs an i_format value.
func InodeFormat(extended bool, layout uint8) uint16 {
	f := uint16(layout&inodeLayoutMask) << inodeLayoutShift
	if extended {
		f |= inodeVersionExtended
	}
	return f
}

// InodeFormatLayout unpacks the data layout of an i_format value.
func InodeFormatLayout(format uint16) uint8 {
	return uint8(format>>inodeLayoutShift) & inodeLayoutMask
}

// InodeFormatExtended reports whether an i_format value names an extended inode.
func InodeFormatExtended(format uint16) bool { return format&inodeVersionExtended != 0 }

// XattrIbodySize returns the bytes of the inline xattr area for an
// i_xattr_icount value (erofs_xattr_ibody_size).
func XattrIbodySize(icount uint16) int {
	if icount == 0 {
		return 0
	}
	return XattrIbodyHeaderSize + (int(icount)-1)*4
}

// XattrIcount returns the i_xattr_icount for an inline xattr area of size
// bytes (a multiple of 4, at least XattrIbodyHeaderSize).
func XattrIcount(size int) uint16 {
	if size == 0 {
		return 0
	}
	return uint16((size-XattrIbodyHeaderSize)/4 + 1)
}

// Marshal returns the 128 on-disk bytes of the superblock.
func (sb *Superblock) Marshal() []byte { return marshal(sb, SuperblockSize) }

// Marshal returns the 32 on-disk bytes of the inode.
func (in *InodeCompact) Marshal() []byte { return in.AppendTo(make([]byte, 0, InodeCompactSize)) }

// Marshal returns the 64 on-disk bytes of the inode.
func (in *InodeExtended) Marshal() []byte { return in.AppendTo(make([]byte, 0, InodeExtendedSize)) }

// Marshal returns the 12 on-disk bytes of the dirent.
func (d *Dirent) Marshal() []byte { return marshal(d, DirentSize) }

// Marshal returns the 128 on-disk bytes of the device slot.
func (d *DeviceSlot) Marshal() []byte { return marshal(d, DeviceSlotSize) }

// Marshal returns the 8 on-disk bytes of the chunk index.
func (c *ChunkIndex) Marshal() []byte { return marshal(c, ChunkIndexSize) }

// Unmarshal decodes a record of type T from the start of b.
func Unmarshal[T any](b []byte, v *T) error {
	n := binary.Size(v)
	if len(b) < n {
		return fmt.Errorf("erofs: short %T record: %d of %d bytes: %w", v, len(b), n, ErrCorrupt)
	}
	_, err := binary.Decode(b[:n], binary.LittleEndian, v)
	return err
}

func marshal(v any, size int) []byte {
	b := make([]byte, 0, size)
	b, err := binary.Append(b, binary.LittleEndian, v)
	if err != nil || len(b) != size {
		// Only reachable if a record type above is edited wrongly;
		// format_test.go pins every size.
		panic(fmt.Sprintf("erofs: marshal %T: %d bytes, %v", v, len(b), err))
	}
	return b
}

// ErrCorrupt is wrapped by every error about an image that breaks the format.
var ErrCorrupt = errors.New("corrupt EROFS image")
