package erofs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// imageLayer is a layer image as the fsmeta builder reads it: the reader
// for its tree, and the raw file for bytes fsmeta must copy (symlink
// targets and inline data), read at the offsets Extents reports.
type imageLayer struct {
	*Image
	raw *os.File
}

func (l *imageLayer) root() (*Inode, error) {
	fi, err := l.Lstat(".")
	if err != nil {
		return nil, err
	}
	return inodeOf(fi, 0, ".")
}

// readDir lists a directory by its nid. This is the one place the builder
// reaches into the reader's internals (inode, readDirAll, dirEntries): the
// public ReadDir takes a path and walks it from the root every time.
func (l *imageLayer) readDir(dir *Inode, p string) ([]fs.DirEntry, error) {
	in, err := l.inode(dir.Nid)
	if err != nil {
		return nil, err
	}
	if !in.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: syscall.ENOTDIR}
	}
	ents, err := l.readDirAll(in, p)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: err}
	}
	return l.dirEntries(ents), nil
}

func (l *imageLayer) ReadAt(b []byte, off int64) (int, error) { return l.raw.ReadAt(b, off) }

func (l *imageLayer) Close() error {
	err := l.Image.Close()
	if cerr := l.raw.Close(); err == nil {
		err = cerr
	}
	return err
}

// readExtents fills buf with the file bytes from off, given the file's
// extents in layer l (a single-device image: every extent is on device 0).
func readExtents(l layerFS, exts []Extent, buf []byte, off uint64) error {
	end := off + uint64(len(buf))
	for _, e := range exts {
		s, t := max(off, e.Logical), min(end, e.Logical+e.Length)
		if s >= t {
			continue
		}
		dst := buf[s-off : t-off]
		if e.Hole {
			clear(dst)
			continue
		}
		if e.Device != 0 {
			return fmt.Errorf("data on extra device %d: multi-device layers are not supported", e.Device)
		}
		n, err := l.ReadAt(dst, int64(e.Physical+(s-e.Logical)))
		if n < len(dst) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read %d bytes at %d: %w", len(dst), e.Physical+(s-e.Logical), err)
		}
	}
	return nil
}
