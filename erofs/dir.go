package erofs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The directory front end: converts a container's overlayfs upper dir when
// it is committed into a layer. The tree is already in the form the image
// stores (whiteouts are 0:0 char devices, opaque dirs carry
// trusted.overlay.opaque), so it is copied as is: type, mode, owner, mtime
// (with nanoseconds), every xattr, devices, fifos, symlinks, and hardlinks
// by inode identity. Sockets cannot be stored in a layer meaningfully
// (containerd's walking differ skips them too): they are skipped and listed
// in ConvertStats.Skipped. Names are visited sorted, so the same tree
// always gives the same image.

// ConvertDir converts a directory tree already in overlayfs upper form
// (whiteouts are 0:0 char devices, opaque dirs carry trusted.overlay.opaque)
// into an EROFS image written to dst. On error dst is truncated to 0 and
// the error names the offending file.
func ConvertDir(ctx context.Context, dst *os.File, dir string, opts ConvertOptions) (*ConvertStats, error) {
	stats, err := convertDir(ctx, dst, dir, opts)
	if err != nil {
		_ = dst.Truncate(0)
		return nil, err
	}
	return stats, nil
}

type devIno struct{ dev, ino uint64 }

type dirWalker struct {
	*builder
	ctx   context.Context
	links map[devIno]*Node // inodes with nlink > 1 seen so far
}

func convertDir(ctx context.Context, dst *os.File, dir string, opts ConvertOptions) (*ConvertStats, error) {
	c, err := newBuilder(ctx, dst, opts)
	if err != nil {
		return nil, err
	}
	defer c.data.close()
	w := &dirWalker{builder: c, ctx: ctx, links: make(map[devIno]*Node)}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("erofs: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("erofs: %w", &os.PathError{Op: "fstat", Path: dir, Err: err})
	}
	root := c.tree.Root()
	if err := fillFromStat(root, &st, dir, fdXattrs(fd)); err != nil {
		return nil, err
	}
	root.Implicit = false
	if err := w.walk(fd, dir, root); err != nil {
		return nil, err
	}
	return c.finish(dst, opts)
}

// The walk never resolves a path from the top again: each directory is
// opened relative to its parent's descriptor without following a symlink
// and checked to be the inode its lstat saw, and each entry is looked at
// relative to its directory's descriptor. The tree may be one a container
// can still change (an overlay upper): a name swapped for a symlink at
// any depth fails the walk instead of leading it out of the tree.

// fillFromStat sets n's metadata (not data) from st and the xattrs of xs; path
// names the file in errors.
func fillFromStat(n *Node, st *unix.Stat_t, path string, xs xattrSource) error {
	n.Mode = st.Mode
	n.UID, n.GID = st.Uid, st.Gid
	n.Mtime, n.MtimeNsec = st.Mtim.Sec, uint32(st.Mtim.Nsec)
	if t := st.Mode & syscall.S_IFMT; t == syscall.S_IFCHR || t == syscall.S_IFBLK {
		n.Rdev = Mkdev(unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	x, err := readXattrs(xs)
	if err != nil {
		return fmt.Errorf("erofs: %s: %w", path, err)
	}
	if _, err := xattrIbodySize(x); err != nil {
		return fmt.Errorf("erofs: %s: %w", path, err)
	}
	n.Xattrs = x
	return nil
}

// walk adds the entries of the directory open as dirfd (at path, for
// errors) under dir, sorted by name, and recurses into subdirectories.
func (w *dirWalker) walk(dirfd int, path string, dir *Node) error {
	names, err := readDirNames(dirfd, path)
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		w.stats.Entries++
		full := filepath.Join(path, name)
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("erofs: %w", &os.PathError{Op: "lstat", Path: full, Err: err})
		}
		kind := st.Mode & syscall.S_IFMT
		if kind == syscall.S_IFSOCK {
			w.stats.skip("%s: socket", full)
			continue
		}
		n := &Node{}
		if err := fillFromStat(n, &st, full, atXattrs(dirfd, name)); err != nil {
			return err
		}
		if kind != syscall.S_IFDIR && st.Nlink > 1 {
			key := devIno{st.Dev, st.Ino}
			if first, ok := w.links[key]; ok {
				if err := w.tree.Link(dir, name, first); err != nil {
					return fmt.Errorf("erofs: %s: %w", full, err)
				}
				continue
			}
			w.links[key] = n
		}
		switch kind {
		case syscall.S_IFREG:
			if err := w.copyData(dirfd, name, full, n, &st); err != nil {
				return err
			}
		case syscall.S_IFLNK:
			target, err := readlinkAt(dirfd, name, st.Size)
			if err != nil {
				return fmt.Errorf("erofs: %w", &os.PathError{Op: "readlink", Path: full, Err: err})
			}
			n.Data = Data{Kind: DataBytes, Bytes: target}
		}
		if err := w.tree.Link(dir, name, n); err != nil {
			return fmt.Errorf("erofs: %s: %w", full, err)
		}
		if kind == syscall.S_IFDIR {
			if err := w.walkSub(dirfd, name, full, n, &st); err != nil {
				return err
			}
		}
	}
	return nil
}

// walkSub opens the subdirectory name of dirfd, checks it is the one
// Fstatat saw, and walks it.
func (w *dirWalker) walkSub(dirfd int, name, full string, n *Node, st *unix.Stat_t) error {
	fd, err := openSame(dirfd, name, full, st, unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return w.walk(fd, full, n)
}

// openSame opens name in dirfd read-only without following a symlink or
// blocking on a fifo, and fails unless it is the inode st describes.
func openSame(dirfd int, name, full string, st *unix.Stat_t, flags int) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		return -1, fmt.Errorf("erofs: %w", &os.PathError{Op: "open", Path: full, Err: err})
	}
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("erofs: %w", &os.PathError{Op: "fstat", Path: full, Err: err})
	}
	if fst.Dev != st.Dev || fst.Ino != st.Ino || fst.Mode&syscall.S_IFMT != st.Mode&syscall.S_IFMT {
		unix.Close(fd)
		return -1, fmt.Errorf("erofs: %s: replaced while converting", full)
	}
	return fd, nil
}

// readDirNames lists the directory open as dirfd. It reads through a
// duplicate, so closing the os.File leaves dirfd open.
func readDirNames(dirfd int, path string) ([]string, error) {
	dup, err := unix.FcntlInt(uintptr(dirfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("erofs: %w", &os.PathError{Op: "dup", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(dup), path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("erofs: %w", err)
	}
	return names, nil
}

// readlinkAt reads the target of symlink name in dirfd; size is its lstat
// size, a hint (a target may change between the calls).
func readlinkAt(dirfd int, name string, size int64) ([]byte, error) {
	n := int(min(max(size, 0), maxSymlinkLen)) + 1
	for {
		buf := make([]byte, n)
		got, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return nil, err
		}
		if got < len(buf) {
			return buf[:got], nil
		}
		if n > maxSymlinkLen {
			return nil, syscall.ENAMETOOLONG
		}
		n = maxSymlinkLen + 1
	}
}

// copyData streams the regular file name of dirfd (full, for errors),
// which Fstatat described as st, into the image. The open neither follows
// a symlink nor blocks on a fifo swapped in since, and the opened file
// must be the inode that was stat'ed, so the layer never takes in a file
// from outside the tree.
func (w *dirWalker) copyData(dirfd int, name, full string, n *Node, st *unix.Stat_t) error {
	fd, err := openSame(dirfd, name, full, st, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), full)
	defer f.Close()
	blk, err := w.data.writeFile(f, st.Size)
	if err != nil {
		return fmt.Errorf("erofs: %s: %w", full, err)
	}
	n.Data = Data{Kind: DataBlocks, BlkAddr: blk, Size: uint64(st.Size)}
	return nil
}

// xattrSource lists and reads the xattrs of one file.
type xattrSource struct {
	list func(dest []byte) (int, error)
	get  func(name string, dest []byte) (int, error)
}

// fdXattrs reads the xattrs of the file open as fd.
func fdXattrs(fd int) xattrSource {
	return xattrSource{
		list: func(d []byte) (int, error) { return unix.Flistxattr(fd, d) },
		get:  func(name string, d []byte) (int, error) { return unix.Fgetxattr(fd, name, d) },
	}
}

// atXattrs reads the xattrs of name in the directory open as dirfd, not
// following name if it is a symlink. There is no *xattrat syscall before
// Linux 6.13: the path goes through the descriptor's /proc/self/fd link,
// which pins the directory, and the l* calls leave the last component alone.
func atXattrs(dirfd int, name string) xattrSource {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
	return xattrSource{
		list: func(d []byte) (int, error) { return unix.Llistxattr(p, d) },
		get:  func(n string, d []byte) (int, error) { return unix.Lgetxattr(p, n, d) },
	}
}

// readXattrs returns every xattr xs lists.
func readXattrs(xs xattrSource) ([]Xattr, error) {
	for {
		size, err := xs.list(nil)
		if err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				return nil, nil
			}
			return nil, fmt.Errorf("listxattr: %w", err)
		}
		if size == 0 {
			return nil, nil
		}
		buf := make([]byte, size)
		size, err = xs.list(buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, fmt.Errorf("listxattr: %w", err)
		}
		var out []Xattr
		for name := range bytes.SplitSeq(buf[:size], []byte{0}) {
			if len(name) == 0 {
				continue
			}
			v, err := getxattr(xs, string(name))
			if err != nil {
				return nil, err
			}
			out = append(out, Xattr{Name: string(name), Value: v})
		}
		return out, nil
	}
}

func getxattr(xs xattrSource, name string) ([]byte, error) {
	for {
		size, err := xs.get(name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		buf := make([]byte, size)
		n, err := xs.get(name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		return buf[:n], nil
	}
}
