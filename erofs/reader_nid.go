package erofs

import (
	"io"
	"io/fs"
	"strconv"
	"syscall"
)

// Inode-addressed access, for callers that walk an image themselves (the
// fsmeta merge) and should not pay a path lookup from the root per entry.

// Root returns the root directory's inode.
func (im *Image) Root() (*Inode, error) { return im.InodeByNid(uint64(im.sb.RootNid)) }

// InodeByNid returns the inode at nid with its xattrs.
func (im *Image) InodeByNid(nid uint64) (*Inode, error) {
	in, err := im.inode(nid)
	if err != nil {
		return nil, err
	}
	return im.fullInode(in)
}

// ReadDirInode lists directory dir like ReadDir (sorted, without "." and
// ".."); p names it in errors. Info() of each entry loads its inode.
func (im *Image) ReadDirInode(dir *Inode, p string) ([]fs.DirEntry, error) {
	in, err := im.inode(dir.Nid)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: err}
	}
	if !in.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: syscall.ENOTDIR}
	}
	ents, err := im.readDirAll(in, p)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: err}
	}
	return im.dirEntries(ents), nil
}

// EntryNid returns the nid a DirEntry from this reader names, without
// reading its inode.
func EntryNid(d fs.DirEntry) (uint64, bool) {
	e, ok := d.(*imgDirEntry)
	if !ok {
		return 0, false
	}
	return e.e.nid, true
}

// ReadLinkInode returns the target of symlink ino.
func (im *Image) ReadLinkInode(ino *Inode) (string, error) {
	in, err := im.inode(ino.Nid)
	if err != nil {
		return "", err
	}
	if !in.isSymlink() {
		return "", &fs.PathError{Op: "readlink", Path: "nid " + strconv.FormatUint(ino.Nid, 10), Err: fs.ErrInvalid}
	}
	return im.symlinkTarget(in, "")
}

// OpenInode returns a reader of the data of regular file or symlink ino
// (io.ReaderAt + io.Seeker behind io.ReadSeeker); data is read on demand.
func (im *Image) OpenInode(ino *Inode) (io.ReadSeeker, error) {
	in, err := im.inode(ino.Nid)
	if err != nil {
		return nil, err
	}
	if in.compressed() && in.hasData() {
		return nil, errCompressed(in, "")
	}
	name := "nid " + strconv.FormatUint(ino.Nid, 10)
	full := in.Inode
	return &imgFile{im: im, in: in, info: &imgInfo{name: name, ino: &full}, path: name}, nil
}

// ReadAt reads raw bytes of the primary device (the image file itself),
// e.g. to copy an inline tail whose Extent is Inline.
func (im *Image) ReadAt(p []byte, off int64) (int, error) { return im.dev0.ReadAt(p, off) }
