package erofs

// PLACEHOLDER owned by the reader work (issue 4): replace this file with the
// real reader in reader.go & co. The signatures below are the contract the
// fsmeta builder, differ, snapshotter and erofsctl code against; keep them
// (add methods freely).

import (
	"errors"
	"io"
	"io/fs"
)

// Image is an open EROFS image, plus its extra devices. It implements
// fs.FS, fs.ReadDirFS and fs.ReadLinkFS with Lstat semantics (symlinks are
// never followed). fs.FileInfo.Sys() of every entry returns *Inode.
type Image struct{}

// Inode is the full metadata of one inode.
type Inode struct {
	Nid       uint64
	Mode      uint32 // st_mode: S_IFMT type bits | permission bits incl. setuid/setgid/sticky
	UID, GID  uint32
	Size      uint64
	Mtime     int64
	MtimeNsec uint32
	Nlink     uint32
	Rdev      uint32 // Linux new_encode_dev() value, as stored on disk
	Xattrs    []Xattr
	Layout    uint8 // Layout* constant
}

// Xattr is one extended attribute, full name (with prefix).
type Xattr struct {
	Name  string
	Value []byte
}

// Extent maps a byte range of a file's data to where it is stored.
type Extent struct {
	Logical  uint64 // byte offset in the file
	Length   uint64 // bytes
	Device   uint16 // 0 = the image itself, i = extra device i (device table order, 1-based)
	Physical uint64 // byte offset on that device (meaningless for Hole and Inline)
	Hole     bool   // reads as zeros
	Inline   bool   // tail stored in the metadata area, not block-addressable
}

// Open opens the image at path; devices are the extra devices' files in
// device-table order (as `mount -o device=` would name them).
func Open(path string, devices ...string) (*Image, error) {
	return nil, errors.New("erofs: Open not implemented yet")
}

// NewImage opens an image from readers (for tests and fuzzing).
func NewImage(r io.ReaderAt, devices ...io.ReaderAt) (*Image, error) {
	return nil, errors.New("erofs: NewImage not implemented yet")
}

// Close releases the files Open opened.
func (im *Image) Close() error { return nil }

// Open implements fs.FS.
func (im *Image) Open(name string) (fs.File, error) { return nil, errors.New("not implemented") }

// ReadDir implements fs.ReadDirFS.
func (im *Image) ReadDir(name string) ([]fs.DirEntry, error) {
	return nil, errors.New("not implemented")
}

// Lstat implements fs.ReadLinkFS.
func (im *Image) Lstat(name string) (fs.FileInfo, error) { return nil, errors.New("not implemented") }

// ReadLink implements fs.ReadLinkFS.
func (im *Image) ReadLink(name string) (string, error) { return "", errors.New("not implemented") }

// Extents returns where the data of a regular file or symlink is stored.
func (im *Image) Extents(ino *Inode) ([]Extent, error) { return nil, errors.New("not implemented") }

// Superblock returns the decoded superblock.
func (im *Image) Superblock() Superblock { return Superblock{} }
