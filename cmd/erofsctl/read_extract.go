package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// extract writes an image's tree into a directory with full fidelity (it
// needs root for owners, device nodes and trusted.* xattrs): every type,
// permission bits incl. setuid/setgid/sticky, owners, mtimes, xattrs and
// hardlinks. Overlay whiteouts (0:0 char devices) and opaque xattrs are
// extracted as they are. Names come from the reader, which rejects '/',
// "." and ".." and duplicates, and every node is created exclusively
// without following links, so nothing lands outside DIR.

func runExtract(args []string, stdout, stderr io.Writer) error {
	im, rest, err := openFlags("extract", args, stderr, nil, 2, 2)
	if err != nil {
		return err
	}
	defer im.Close()
	return extractImage(im, rest[0])
}

// extractImage extracts im into dir, which must be absent or empty. On
// failure it removes what it created.
func extractImage(im *erofs.Image, dir string) (err error) {
	created := false
	switch ents, rerr := os.ReadDir(dir); {
	case errors.Is(rerr, fs.ErrNotExist):
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		created = true
	case rerr != nil:
		return rerr
	case len(ents) > 0:
		return fmt.Errorf("%s: %w", dir, errNotEmpty)
	}
	defer func() {
		if err == nil {
			return
		}
		if created {
			os.RemoveAll(dir)
			return
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}()
	x := &extractor{im: im, root: dir, links: map[uint64]string{}, buf: make([]byte, copyBufSize)}
	if err := im.Walk(".", x.entry); err != nil {
		return err
	}
	// Directory metadata last, deepest first: creating children changes a
	// directory's mtime, and a read-only directory would refuse them.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if err := setMeta(d.path, d.ino, false); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}

type extractor struct {
	im    *erofs.Image
	root  string
	links map[uint64]string // nid -> first extracted path (hardlinks)
	dirs  []extractedDir
	buf   []byte // one copy buffer for every file
}

// copyBufSize is the read size for file data: large reads mean one pread
// per contiguous MiB instead of per 32 KiB.
const copyBufSize = 1 << 20

type extractedDir struct {
	name, path string
	ino        *erofs.Inode
}

func (x *extractor) entry(name string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	fi, err := d.Info()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := x.create(name, fi); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (x *extractor) create(name string, fi fs.FileInfo) error {
	ino := fi.Sys().(*erofs.Inode)
	target := filepath.Join(x.root, filepath.FromSlash(name))
	typ := ino.Mode & syscall.S_IFMT
	if typ == syscall.S_IFDIR {
		if name != "." {
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		}
		x.dirs = append(x.dirs, extractedDir{name: name, path: target, ino: ino})
		return nil
	}
	if first, ok := x.links[ino.Nid]; ok {
		return os.Link(first, target)
	}
	if ino.Nlink > 1 {
		x.links[ino.Nid] = target
	}
	switch typ {
	case syscall.S_IFREG:
		return x.file(name, target, ino)
	case syscall.S_IFLNK:
		link, err := x.im.ReadLink(name)
		if err != nil {
			return err
		}
		if err := os.Symlink(link, target); err != nil {
			return err
		}
		return setMeta(target, ino, true)
	default: // char, block, fifo, socket
		if err := unix.Mknod(target, ino.Mode&^0o7777|0o600, int(unix.Mkdev(ino.DevMajor(), ino.DevMinor()))); err != nil {
			return err
		}
		return setMeta(target, ino, false)
	}
}

func (x *extractor) file(name, target string, ino *erofs.Inode) error {
	src, err := x.im.Open(name)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	// struct{io.Writer} hides os.File's ReaderFrom, which would ignore buf.
	if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, src, x.buf); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return setMeta(target, ino, false)
}

// setMeta applies owner, mode, xattrs and mtime, in the order that keeps
// them: chown clears setuid/setgid and security.capability, so it goes
// first; the mtime last.
func setMeta(p string, ino *erofs.Inode, symlink bool) error {
	if err := os.Lchown(p, int(ino.UID), int(ino.GID)); err != nil {
		return err
	}
	if !symlink {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, ino.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for _, xa := range ino.Xattrs {
		if err := unix.Lsetxattr(p, xa.Name, xa.Value, 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", xa.Name, err)
		}
	}
	ts := unix.Timespec{Sec: ino.Mtime, Nsec: int64(ino.MtimeNsec)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("utimes: %w", err)
	}
	return nil
}
