package erofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"syscall"
	"time"
)

// Inode is the full metadata of one inode.
type Inode struct {
	Nid       uint64 // hardlinks share a nid
	Mode      uint32 // st_mode: S_IFMT type bits | permission bits incl. setuid/setgid/sticky
	UID, GID  uint32
	Size      uint64
	Mtime     int64
	MtimeNsec uint32
	Nlink     uint32
	Rdev      uint32 // Linux new_encode_dev() value, as stored on disk
	Xattrs    []Xattr
	Layout    uint8 // Layout* constant
	Extended  bool  // stored as a 64-byte extended inode
}

// Xattr is one extended attribute, full name (with prefix).
type Xattr struct {
	Name  string
	Value []byte
}

// FileMode returns the mode as an fs.FileMode (type, permission and
// setuid/setgid/sticky bits).
func (in *Inode) FileMode() fs.FileMode { return unixToFileMode(in.Mode) }

// ModTime returns the modification time.
func (in *Inode) ModTime() time.Time { return time.Unix(in.Mtime, int64(in.MtimeNsec)) }

// DevMajor returns the major number of a device inode's Rdev.
func (in *Inode) DevMajor() uint32 { ma, _ := DecodeDev(in.Rdev); return ma }

// DevMinor returns the minor number of a device inode's Rdev.
func (in *Inode) DevMinor() uint32 { _, mi := DecodeDev(in.Rdev); return mi }

// Xattr returns the value of the named extended attribute.
func (in *Inode) Xattr(name string) ([]byte, bool) {
	for _, x := range in.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// DecodeDev splits a Linux new_encode_dev() value (what EROFS stores) into
// major and minor numbers, as the kernel's new_decode_dev does.
func DecodeDev(rdev uint32) (major, minor uint32) {
	return (rdev & 0xfff00) >> 8, (rdev & 0xff) | ((rdev >> 12) & 0xfff00)
}

// unixToFileMode maps st_mode to fs.FileMode.
func unixToFileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFDIR:
		mode |= fs.ModeDir
	case syscall.S_IFLNK:
		mode |= fs.ModeSymlink
	case syscall.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		mode |= fs.ModeDevice
	case syscall.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&syscall.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// readerInodeFormatKnownBit: i_format bits this reader decodes. Newer
// kernels add nlink-1 and dot-omitted bits for 48-bit images; those are
// refused as unsupported rather than misread.
const readerInodeFormatKnownBit = inodeFormatAllowedBits

// imgInode is an inode as the reader needs it: the exported metadata
// (without xattrs, parsed on demand) and where its parts are.
type imgInode struct {
	Inode
	format   uint16
	iloc     int64  // byte offset of the inode on the primary device
	isize    int64  // 32 or 64
	xsize    int64  // bytes of the inline xattr area
	xcount   uint16 // i_xattr_icount
	rawU     uint32 // i_u: raw_blkaddr, rdev or chunk format
	chunkFmt uint16
}

func (in *imgInode) isDir() bool     { return in.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (in *imgInode) isReg() bool     { return in.Mode&syscall.S_IFMT == syscall.S_IFREG }
func (in *imgInode) isSymlink() bool { return in.Mode&syscall.S_IFMT == syscall.S_IFLNK }
func (in *imgInode) hasData() bool   { return in.isDir() || in.isReg() || in.isSymlink() }
func (in *imgInode) compressed() bool {
	return in.Layout == LayoutCompressedFull || in.Layout == LayoutCompressedCompact
}

// tailStart is where inline data or chunk indexes begin: right after the
// inode and its inline xattrs.
func (in *imgInode) tailStart() int64 { return in.iloc + in.isize + in.xsize }

// inodeLoc returns the byte offset of nid, checked against the device.
func (im *Image) inodeLoc(nid uint64) (int64, error) {
	base := uint64(im.sb.MetaBlkAddr) << im.blkBits
	if nid > (maxOffset-base)/SlotSize {
		return 0, corruptf("nid %d out of range", nid)
	}
	loc := base + nid*SlotSize
	if im.dev0Size >= 0 && loc+InodeCompactSize > uint64(im.dev0Size) {
		return 0, corruptf("nid %d at offset %d beyond the image end (%d bytes)", nid, loc, im.dev0Size)
	}
	return int64(loc), nil
}

// inode reads and checks the inode at nid (xattrs not included).
func (im *Image) inode(nid uint64) (*imgInode, error) {
	loc, err := im.inodeLoc(nid)
	if err != nil {
		return nil, err
	}
	var b [InodeExtendedSize]byte
	if err := im.cache.read(b[:InodeCompactSize], loc); err != nil {
		return nil, fmt.Errorf("inode nid %d: %w", nid, err)
	}
	format := binary.LittleEndian.Uint16(b[:])
	in := &imgInode{format: format, iloc: loc}
	in.Nid = nid
	if format&^readerInodeFormatKnownBit != 0 {
		return nil, fmt.Errorf("erofs: unsupported: i_format %#x of nid %d: %w", format, nid, errors.ErrUnsupported)
	}
	in.Layout = InodeFormatLayout(format)
	if in.Layout > LayoutChunkBased {
		return nil, corruptf("nid %d: unknown data layout %d", nid, in.Layout)
	}
	if InodeFormatExtended(format) {
		if err := im.cache.read(b[InodeCompactSize:], loc+InodeCompactSize); err != nil {
			return nil, fmt.Errorf("extended inode nid %d: %w", nid, err)
		}
		var di InodeExtended
		di.decode(b[:])
		in.Extended = true
		in.isize = InodeExtendedSize
		in.xcount = di.XattrCount
		in.Mode = uint32(di.Mode)
		in.UID, in.GID = di.UID, di.GID
		in.Size = di.Size
		// The kernel stores i_mtime into a signed time64_t: a value with
		// the top bit set is a time before 1970, not a corrupt one.
		in.Mtime = int64(di.Mtime)
		in.MtimeNsec = di.MtimeNsec
		in.Nlink = di.Nlink
		in.rawU = di.U
		if di.Size > math.MaxInt64 {
			return nil, corruptf("nid %d: size %d out of range", nid, di.Size)
		}
	} else {
		var dc InodeCompact
		dc.decode(b[:InodeCompactSize])
		in.isize = InodeCompactSize
		in.xcount = dc.XattrCount
		in.Mode = uint32(dc.Mode)
		in.UID, in.GID = uint32(dc.UID), uint32(dc.GID)
		in.Size = uint64(dc.Size)
		// Compact inodes have no own timestamp: the superblock's build time,
		// plus (kernel ≥ 6.15, FEATURE_COMPAT_MTIME) a 32-bit offset in what
		// was i_reserved. Older writers leave it 0, so adding it is always
		// what the kernel shows. The kernel reads the build time (its
		// "epoch") as signed, like an extended inode's mtime: a layer whose
		// most common mtime is before 1970 has a negative one.
		epoch := int64(im.sb.BuildTime)
		if epoch > math.MaxInt64-math.MaxUint32 {
			return nil, corruptf("superblock build time %d out of range", epoch)
		}
		in.Mtime = epoch + int64(dc.Reserved)
		in.MtimeNsec = im.sb.BuildTimeNsec
		in.Nlink = uint32(dc.Nlink)
		in.rawU = dc.U
	}
	in.xsize = int64(XattrIbodySize(in.xcount))
	switch in.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK:
	case syscall.S_IFCHR, syscall.S_IFBLK:
		in.Rdev = in.rawU
	case syscall.S_IFIFO, syscall.S_IFSOCK:
	default:
		return nil, corruptf("nid %d: bogus mode %#o", nid, in.Mode)
	}
	if in.MtimeNsec >= 1e9 {
		return nil, corruptf("nid %d: mtime nanoseconds %d", nid, in.MtimeNsec)
	}
	if in.Layout == LayoutChunkBased {
		in.chunkFmt = uint16(in.rawU)
		if in.chunkFmt&^chunkFormatAll != 0 {
			return nil, fmt.Errorf("erofs: unsupported: chunk format %#x of nid %d: %w", in.chunkFmt, nid, errors.ErrUnsupported)
		}
		if im.blkBits+uint(in.chunkFmt&chunkFormatBlkbitsMask) > 48 {
			return nil, corruptf("nid %d: chunk size 2^%d", nid, im.blkBits+uint(in.chunkFmt&chunkFormatBlkbitsMask))
		}
	}
	if im.dev0Size >= 0 && in.tailStart() > im.dev0Size {
		return nil, corruptf("nid %d: inode and xattrs (%d bytes) run past the image end", nid, in.isize+in.xsize)
	}
	return in, nil
}

// fullInode returns the inode with its xattrs, as fs.FileInfo.Sys() does.
func (im *Image) fullInode(in *imgInode) (*Inode, error) {
	out := in.Inode
	xs, err := im.xattrs(in)
	if err != nil {
		return nil, err
	}
	out.Xattrs = xs
	return &out, nil
}

// imgInfo is the fs.FileInfo of an entry.
type imgInfo struct {
	name string
	ino  *Inode
}

func (fi *imgInfo) Name() string       { return fi.name }
func (fi *imgInfo) Size() int64        { return int64(fi.ino.Size) }
func (fi *imgInfo) Mode() fs.FileMode  { return fi.ino.FileMode() }
func (fi *imgInfo) ModTime() time.Time { return fi.ino.ModTime() }
func (fi *imgInfo) IsDir() bool        { return fi.ino.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (fi *imgInfo) Sys() any           { return fi.ino }
