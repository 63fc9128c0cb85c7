package erofs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	root := c.tree.Root()
	if _, err := w.stat(dir, root); err != nil {
		return nil, err
	}
	if !root.IsDir() {
		return nil, fmt.Errorf("erofs: %s: not a directory", dir)
	}
	root.Implicit = false
	if err := w.walk(dir, root); err != nil {
		return nil, err
	}
	return c.finish(dst, opts)
}

// stat fills n's metadata (not data) from path.
func (w *dirWalker) stat(path string, n *Node) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil, fmt.Errorf("erofs: %w", &os.PathError{Op: "lstat", Path: path, Err: err})
	}
	n.Mode = st.Mode
	n.UID, n.GID = st.Uid, st.Gid
	n.Mtime, n.MtimeNsec = st.Mtim.Sec, uint32(st.Mtim.Nsec)
	if t := st.Mode & syscall.S_IFMT; t == syscall.S_IFCHR || t == syscall.S_IFBLK {
		n.Rdev = Mkdev(unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	xs, err := readXattrs(path)
	if err != nil {
		return nil, fmt.Errorf("erofs: %s: %w", path, err)
	}
	if _, err := xattrIbodySize(xs); err != nil {
		return nil, fmt.Errorf("erofs: %s: %w", path, err)
	}
	n.Xattrs = xs
	return &st, nil
}

func (w *dirWalker) walk(path string, dir *Node) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("erofs: %w", err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("erofs: %w", err)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		w.stats.Entries++
		full := filepath.Join(path, name)
		n := &Node{}
		st, err := w.stat(full, n)
		if err != nil {
			return err
		}
		kind := st.Mode & syscall.S_IFMT
		if kind == syscall.S_IFSOCK {
			w.stats.Skipped = append(w.stats.Skipped, full+": socket")
			continue
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
			if err := w.copyData(full, n, st); err != nil {
				return err
			}
		case syscall.S_IFLNK:
			target, err := os.Readlink(full)
			if err != nil {
				return fmt.Errorf("erofs: %w", err)
			}
			n.Data = Data{Kind: DataBytes, Bytes: []byte(target)}
		}
		if err := w.tree.Link(dir, name, n); err != nil {
			return fmt.Errorf("erofs: %s: %w", full, err)
		}
		if kind == syscall.S_IFDIR {
			if err := w.walk(full, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyData streams the regular file at path, which lstat described as st,
// into the image. The tree may be one a container can still change (an
// overlay upper): the open neither follows a symlink nor blocks on a fifo
// swapped in since the lstat, and the opened file must be the inode that
// was stat'ed, so the layer never takes in a file from outside the tree.
func (w *dirWalker) copyData(path string, n *Node, st *unix.Stat_t) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("erofs: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return fmt.Errorf("erofs: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	if fst.Dev != st.Dev || fst.Ino != st.Ino || fst.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fmt.Errorf("erofs: %s: replaced while converting", path)
	}
	size := st.Size
	blk, err := w.data.writeFile(f, size)
	if err != nil {
		return fmt.Errorf("erofs: %s: %w", path, err)
	}
	n.Data = Data{Kind: DataBlocks, BlkAddr: blk, Size: uint64(size)}
	return nil
}

// readXattrs returns every xattr of path (not following symlinks).
func readXattrs(path string) ([]Xattr, error) {
	size, err := unix.Llistxattr(path, nil)
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
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var xs []Xattr
	for name := range bytes.SplitSeq(buf[:size], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		v, err := getxattr(path, string(name))
		if err != nil {
			return nil, err
		}
		xs = append(xs, Xattr{Name: string(name), Value: v})
	}
	return xs, nil
}

func getxattr(path, name string) ([]byte, error) {
	for {
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		return buf[:n], nil
	}
}
