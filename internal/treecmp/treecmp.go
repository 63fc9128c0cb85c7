// Package treecmp compares two directory trees the way a test needs to
// judge an image against an independent extraction: file type, mode
// (including setuid/setgid/sticky), owner, size, content (sha256), mtime
// (seconds), every xattr, symlink target, device number, and hardlink
// identity (which names share an inode). It reads both trees with Lstat and
// never follows symlinks. It is test support: it returns readable diffs and
// never modifies either tree.
package treecmp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Options relaxes the comparison where the two sides legitimately differ.
type Options struct {
	// IgnoreMtime reports paths (slash-separated, relative, "." for the
	// root) whose mtime is not compared, e.g. directories an extractor
	// made up with the current time.
	IgnoreMtime func(path string) bool
	// IgnoreXattr reports xattr names that are not compared on any path.
	IgnoreXattr func(name string) bool
	// IgnoreHardlinks skips comparing which names share an inode.
	IgnoreHardlinks bool
	// ModeMask, when non-zero, selects the st_mode bits compared (e.g.
	// ^0o6000 for an extractor that drops setuid/setgid).
	ModeMask uint32
	// IgnoreRoot skips comparing the root directory's own metadata.
	IgnoreRoot bool
	// MaxDiffs caps the diffs reported (default 50).
	MaxDiffs int
}

// Entry is what is compared of one name.
type Entry struct {
	Path   string
	Mode   uint32 // st_mode, type and permission bits
	UID    uint32
	GID    uint32
	Size   int64 // regular files only
	SHA256 [32]byte
	Mtime  int64
	Rdev   uint64
	Target string // symlink target
	Xattrs map[string]string
	Links  string // the sorted names sharing this inode (non-directories with nlink > 1)
}

// Scan reads the tree at root into entries keyed by relative path.
func Scan(root string) (map[string]*Entry, error) {
	out := make(map[string]*Entry)
	inodes := make(map[[2]uint64][]string)
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		e := &Entry{Path: rel, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Size = st.Size
			sum, err := hashFile(p)
			if err != nil {
				return err
			}
			e.SHA256 = sum
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.Target = t
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Rdev = st.Rdev
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			k := [2]uint64{st.Dev, st.Ino}
			inodes[k] = append(inodes[k], rel)
		}
		xs, err := xattrs(p)
		if err != nil {
			return err
		}
		e.Xattrs = xs
		out[rel] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, names := range inodes {
		slices.Sort(names)
		group := strings.Join(names, " = ")
		for _, n := range names {
			out[n].Links = group
		}
	}
	return out, nil
}

// Diff compares the trees at want and got and returns one line per
// difference, sorted by path.
func Diff(want, got string, opts Options) ([]string, error) {
	w, err := Scan(want)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", want, err)
	}
	g, err := Scan(got)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", got, err)
	}
	return DiffEntries(w, g, opts), nil
}

// DiffEntries compares two scans (see Diff).
func DiffEntries(w, g map[string]*Entry, opts Options) []string {
	var paths []string
	for p := range w {
		paths = append(paths, p)
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var diffs []string
	add := func(p, format string, args ...any) {
		diffs = append(diffs, fmt.Sprintf("%s: ", p)+fmt.Sprintf(format, args...))
	}
	for _, p := range paths {
		a, b := w[p], g[p]
		switch {
		case b == nil:
			add(p, "missing (want %s)", describe(a))
			continue
		case a == nil:
			add(p, "unexpected %s", describe(b))
			continue
		}
		if p == "." && opts.IgnoreRoot {
			continue
		}
		mask := opts.ModeMask
		if mask == 0 {
			mask = ^uint32(0)
		}
		if a.Mode&mask != b.Mode&mask {
			add(p, "mode %s, want %s", modeString(b.Mode), modeString(a.Mode))
			continue
		}
		if a.UID != b.UID || a.GID != b.GID {
			add(p, "owner %d:%d, want %d:%d", b.UID, b.GID, a.UID, a.GID)
		}
		if a.Size != b.Size {
			add(p, "size %d, want %d", b.Size, a.Size)
		} else if a.SHA256 != b.SHA256 {
			add(p, "content sha256 %x, want %x", b.SHA256[:8], a.SHA256[:8])
		}
		if a.Target != b.Target {
			add(p, "symlink target %q, want %q", b.Target, a.Target)
		}
		if a.Rdev != b.Rdev {
			add(p, "rdev %d:%d, want %d:%d", unix.Major(b.Rdev), unix.Minor(b.Rdev), unix.Major(a.Rdev), unix.Minor(a.Rdev))
		}
		if a.Mtime != b.Mtime && (opts.IgnoreMtime == nil || !opts.IgnoreMtime(p)) {
			add(p, "mtime %d, want %d", b.Mtime, a.Mtime)
		}
		if a.Links != b.Links && !opts.IgnoreHardlinks {
			add(p, "hardlinks [%s], want [%s]", b.Links, a.Links)
		}
		for _, name := range xattrNames(a.Xattrs, b.Xattrs) {
			if opts.IgnoreXattr != nil && opts.IgnoreXattr(name) {
				continue
			}
			va, oka := a.Xattrs[name]
			vb, okb := b.Xattrs[name]
			switch {
			case !okb:
				add(p, "xattr %s missing (want %q)", name, va)
			case !oka:
				add(p, "unexpected xattr %s=%q", name, vb)
			case va != vb:
				add(p, "xattr %s=%q, want %q", name, vb, va)
			}
		}
	}
	return diffs
}

// Compare fails t with the differences between the trees at want and got.
func Compare(t testing.TB, want, got string, opts Options) {
	t.Helper()
	diffs, err := Diff(want, got, opts)
	if err != nil {
		t.Fatal(err)
	}
	limit := opts.MaxDiffs
	if limit <= 0 {
		limit = 50
	}
	for i, d := range diffs {
		if i == limit {
			t.Errorf("... and %d more differences", len(diffs)-limit)
			break
		}
		t.Errorf("tree %s vs %s: %s", want, got, d)
	}
}

func describe(e *Entry) string {
	s := modeString(e.Mode)
	if e.Target != "" {
		s += " -> " + e.Target
	}
	return s
}

func modeString(m uint32) string {
	t := map[uint32]string{
		unix.S_IFREG: "file", unix.S_IFDIR: "dir", unix.S_IFLNK: "symlink", unix.S_IFCHR: "chardev",
		unix.S_IFBLK: "blockdev", unix.S_IFIFO: "fifo", unix.S_IFSOCK: "socket",
	}[m&unix.S_IFMT]
	return fmt.Sprintf("%s %04o", t, m&0o7777)
}

func xattrNames(a, b map[string]string) []string {
	var names []string
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

func hashFile(p string) ([32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, fmt.Errorf("read %s: %w", p, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func xattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	out := make(map[string]string)
	for name := range bytes.SplitSeq(buf[:size], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		vs, err := unix.Lgetxattr(p, string(name), nil)
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + string(name), Path: p, Err: err}
		}
		v := make([]byte, vs)
		n, err := unix.Lgetxattr(p, string(name), v)
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + string(name), Path: p, Err: err}
		}
		out[string(name)] = string(v[:n])
	}
	return out, nil
}
