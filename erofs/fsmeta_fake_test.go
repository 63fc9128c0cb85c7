package erofs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"
)

// fakeLayer is an in-memory layerFS built from a compact description, so the
// merge rules can be tested on layers no mkfs would produce.
type fakeLayer struct {
	nodes map[string]*fakeNode // by fs.FS path, "." = root
}

type fakeNode struct {
	name string
	ino  *Inode
}

// newFakeLayer builds a layer from specs "path TYPE [arg]": TYPE is d (dir),
// o (opaque dir), f (file, arg = size), w (whiteout), l (symlink), h
// (hardlink to arg). Parents must come first; root exists.
func newFakeLayer(specs ...string) *fakeLayer {
	l := &fakeLayer{nodes: map[string]*fakeNode{}}
	nid := uint64(100)
	l.nodes["."] = &fakeNode{name: ".", ino: &Inode{Nid: nid, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}}
	for _, s := range specs {
		f := strings.Fields(s)
		p, typ := f[0], f[1]
		nid++
		n := &fakeNode{name: path.Base(p), ino: &Inode{Nid: nid, Nlink: 1}}
		switch typ {
		case "d":
			n.ino.Mode = syscall.S_IFDIR | 0o755
		case "o":
			n.ino.Mode = syscall.S_IFDIR | 0o700
			n.ino.Xattrs = []Xattr{{overlayOpaqueXattr, []byte("y")}, {"user.keep", []byte("1")}}
		case "f":
			n.ino.Mode = syscall.S_IFREG | 0o644
			if len(f) > 2 {
				var sz uint64
				for _, c := range f[2] {
					sz = sz*10 + uint64(c-'0')
				}
				n.ino.Size = sz
			}
		case "w":
			n.ino.Mode = syscall.S_IFCHR
		case "l":
			n.ino.Mode = syscall.S_IFLNK | 0o777
		case "h":
			t := l.nodes[f[2]]
			t.ino.Nlink++
			n.ino = t.ino
		}
		l.nodes[p] = n
	}
	return l
}

func (l *fakeLayer) Root() (*Inode, error) { return l.nodes["."].ino, nil }

func (l *fakeLayer) ReadDirInode(dir *Inode, p string) ([]fs.DirEntry, error) {
	if l.nodes[p] == nil || l.nodes[p].ino != dir {
		return nil, fmt.Errorf("fake: ReadDirInode(%q) with the inode of another path", p)
	}
	return l.ReadDir(p)
}

func (l *fakeLayer) ReadAt([]byte, int64) (int, error) { return 0, errors.ErrUnsupported }

func (l *fakeLayer) ReadDir(name string) ([]fs.DirEntry, error) {
	if n, ok := l.nodes[name]; !ok || n.ino.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	var out []fs.DirEntry
	for p, n := range l.nodes {
		if p != "." && path.Dir(p) == name {
			out = append(out, fs.FileInfoToDirEntry(fakeInfo{n}))
		}
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (l *fakeLayer) Lstat(name string) (fs.FileInfo, error) {
	n, ok := l.nodes[name]
	if !ok {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
	}
	return fakeInfo{n}, nil
}

func (l *fakeLayer) Extents(ino *Inode) ([]Extent, error) { return nil, nil }

type fakeInfo struct{ n *fakeNode }

func (i fakeInfo) Name() string       { return i.n.name }
func (i fakeInfo) Size() int64        { return int64(i.n.ino.Size) }
func (i fakeInfo) ModTime() time.Time { return time.Unix(i.n.ino.Mtime, 0) }
func (i fakeInfo) IsDir() bool        { return i.Mode().IsDir() }
func (i fakeInfo) Sys() any           { return i.n.ino }
func (i fakeInfo) Mode() fs.FileMode {
	m := fs.FileMode(i.n.ino.Mode & 0o777)
	switch i.n.ino.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	}
	return m
}
