package erofs

import (
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
)

// The fs.FS face of an Image. Paths are fs.ValidPath-shaped names relative
// to the root, except that names need not be UTF-8; symlinks are never
// followed (Lstat semantics throughout).

var (
	_ fs.FS         = (*Image)(nil)
	_ fs.ReadDirFS  = (*Image)(nil)
	_ fs.ReadLinkFS = (*Image)(nil)
	_ fs.StatFS     = (*Image)(nil)
)

// maxSymlinkSize is PATH_MAX less its NUL: no Linux symlink is longer.
const maxSymlinkSize = 4095

// resolve walks name from the root. A directory met twice on the way is a
// cycle (EROFS has no directory hard links), reported as corruption.
func (im *Image) resolve(op, name string) (*imgInode, error) {
	// fs.ValidPath also demands UTF-8, but layers keep names byte for byte
	// (Linux names are bytes, and docs/design.md §6 keeps them as they are):
	// check only the shape of the path (no empty, "." or ".." elements, no
	// leading or trailing slash). Replacing invalid bytes cannot add a "/"
	// or a dot, so the shape check is the same as on the real name.
	if !fs.ValidPath(strings.ToValidUTF8(name, "x")) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	in, err := im.inode(uint64(im.sb.RootNid))
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	if name == "." {
		return in, nil
	}
	seen := map[uint64]bool{in.Nid: true}
	rest := name
	for rest != "" {
		elem, tail, _ := strings.Cut(rest, "/")
		rest = tail
		if !in.isDir() {
			return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		e, ok, err := im.lookup(in, elem)
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		if in, err = im.childInode(e); err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		if in.isDir() {
			if seen[in.Nid] {
				return nil, &fs.PathError{Op: op, Path: name, Err: corruptf("directory cycle at nid %d", in.Nid)}
			}
			seen[in.Nid] = true
		}
	}
	return in, nil
}

func (im *Image) info(op, name string, in *imgInode) (*imgInfo, error) {
	full, err := im.fullInode(in)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return &imgInfo{name: path.Base(name), ino: full}, nil
}

// Open implements fs.FS. A symlink opens as itself: reading it yields its
// target. Directories implement fs.ReadDirFile; other files io.ReaderAt and
// io.Seeker, reading data on demand. Compressed files fail here with
// errors.ErrUnsupported.
func (im *Image) Open(name string) (fs.File, error) {
	in, err := im.resolve("open", name)
	if err != nil {
		return nil, err
	}
	if in.compressed() && in.hasData() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errCompressed(in, name)}
	}
	info, err := im.info("open", name, in)
	if err != nil {
		return nil, err
	}
	if in.isDir() {
		return &imgDirFile{im: im, in: in, info: info, name: name}, nil
	}
	return &imgFile{im: im, in: in, info: info, path: name}, nil
}

// ReadDir implements fs.ReadDirFS: the entries of the directory name,
// sorted by name, without "." and "..".
func (im *Image) ReadDir(name string) ([]fs.DirEntry, error) {
	in, err := im.resolve("readdir", name)
	if err != nil {
		return nil, err
	}
	if !in.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	ents, err := im.readDirAll(in, name)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return im.dirEntries(ents), nil
}

// Lstat implements fs.ReadLinkFS; Sys() of the result is *Inode.
func (im *Image) Lstat(name string) (fs.FileInfo, error) {
	in, err := im.resolve("lstat", name)
	if err != nil {
		return nil, err
	}
	return im.info("lstat", name, in)
}

// Stat implements fs.StatFS with Lstat semantics (symlinks not followed).
func (im *Image) Stat(name string) (fs.FileInfo, error) { return im.Lstat(name) }

// ReadLink implements fs.ReadLinkFS.
func (im *Image) ReadLink(name string) (string, error) {
	in, err := im.resolve("readlink", name)
	if err != nil {
		return "", err
	}
	if !in.isSymlink() {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	t, err := im.symlinkTarget(in, name)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return t, nil
}

func (im *Image) symlinkTarget(in *imgInode, name string) (string, error) {
	if in.Size == 0 || in.Size > maxSymlinkSize {
		return "", corruptf("symlink nid %d: target of %d bytes", in.Nid, in.Size)
	}
	if in.compressed() {
		return "", errCompressed(in, name)
	}
	b := make([]byte, in.Size)
	if err := im.readData(in, name, b, 0); err != nil {
		return "", err
	}
	return string(b), nil
}

// Walk is fs.WalkDir over the image, made safe for untrusted images: a
// directory reached twice (a cycle, or a directory hard link, which EROFS
// does not have) is reported to fn as corruption instead of being walked
// again, so a walk visits each directory once and always ends. Entries are
// visited in lexical order; fn sees errors as with fs.WalkDir: an entry
// whose inode cannot be read is reported with a nil-Info DirEntry and err.
func (im *Image) Walk(root string, fn fs.WalkDirFunc) error {
	in, err := im.resolve("walk", root)
	if err != nil {
		err = fn(root, nil, err)
	} else {
		d := &imgDirEntry{im: im, e: imgDirent{name: path.Base(root), nid: in.Nid, ftype: fileType(in.Mode)}}
		err = im.walk(root, in, d, fn, map[uint64]bool{})
	}
	if err == fs.SkipDir || err == fs.SkipAll {
		return nil
	}
	return err
}

func (im *Image) walk(p string, in *imgInode, d fs.DirEntry, fn fs.WalkDirFunc, seen map[uint64]bool) error {
	if err := fn(p, d, nil); err != nil || !in.isDir() {
		if err == fs.SkipDir && in.isDir() {
			err = nil
		}
		return err
	}
	var ents []imgDirent
	var err error
	if seen[in.Nid] {
		err = &fs.PathError{Op: "walk", Path: p, Err: corruptf("directory nid %d reached twice", in.Nid)}
	} else {
		seen[in.Nid] = true
		if ents, err = im.readDirAll(in, p); err != nil {
			err = &fs.PathError{Op: "readdir", Path: p, Err: err}
		}
	}
	if err != nil {
		if err = fn(p, d, err); err == fs.SkipDir {
			err = nil
		}
		return err
	}
	for _, e := range ents {
		cp := path.Join(p, e.name)
		de := &imgDirEntry{im: im, e: e}
		child, err := im.childInode(e)
		if err != nil {
			if err = fn(cp, de, &fs.PathError{Op: "walk", Path: cp, Err: err}); err != nil {
				if err == fs.SkipDir {
					continue
				}
				return err
			}
			continue
		}
		if err := im.walk(cp, child, de, fn, seen); err != nil {
			if err == fs.SkipDir {
				break // as fs.WalkDir: SkipDir on a file skips the rest of its directory
			}
			return err
		}
	}
	return nil
}

// imgDirFile is an open directory.
type imgDirFile struct {
	im     *Image
	in     *imgInode
	info   *imgInfo
	name   string
	ents   []fs.DirEntry
	loaded bool
	pos    int
}

func (f *imgDirFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *imgDirFile) Close() error               { return nil }
func (f *imgDirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EISDIR}
}

// ReadDir implements fs.ReadDirFile.
func (f *imgDirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if !f.loaded {
		ents, err := f.im.readDirAll(f.in, f.name)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: f.name, Err: err}
		}
		f.ents, f.loaded = f.im.dirEntries(ents), true
	}
	rest := f.ents[f.pos:]
	if n <= 0 {
		f.pos = len(f.ents)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	f.pos += n
	return rest[:n], nil
}
