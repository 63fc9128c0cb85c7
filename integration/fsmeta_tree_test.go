package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// fsmetaEntry is what the kernel shows of one path of a mounted tree: the
// facts every view of a layer stack must agree on. Directory sizes and link
// counts are left out: overlayfs reports nlink 1 for merged dirs and each
// filesystem sizes dirs its own way.
type fsmetaEntry struct {
	Type   string // d f l c b p s
	Perm   uint32 // permission bits incl. setuid/setgid/sticky
	UID    uint32
	GID    uint32
	Size   int64 // non-dirs
	Mtime  string
	Rdev   uint64
	Target string // symlinks
	Sum    string // sha256 of a regular file's data
	Xattrs string // sorted name=value list
	Nlink  uint64 // non-dirs
	Group  string // hardlink group: first path (sorted) sharing the inode
}

// fsmetaTree walks a mounted tree with lstat semantics.
func fsmetaTree(t testing.TB, root string) map[string]fsmetaEntry {
	t.Helper()
	out := map[string]fsmetaEntry{}
	inodes := map[[2]uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = "/" + filepath.ToSlash(rel)
		if rel == "/." {
			rel = "/"
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		e := fsmetaEntry{
			Perm:  st.Mode & 0o7777,
			UID:   st.Uid,
			GID:   st.Gid,
			Mtime: fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec),
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			e.Type = "d"
		case syscall.S_IFREG:
			e.Type = "f"
			sum, err := fsmetaSum(p)
			if err != nil {
				return err
			}
			e.Sum = sum
		case syscall.S_IFLNK:
			e.Type = "l"
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case syscall.S_IFCHR:
			e.Type, e.Rdev = "c", st.Rdev
		case syscall.S_IFBLK:
			e.Type, e.Rdev = "b", st.Rdev
		case syscall.S_IFIFO:
			e.Type = "p"
		case syscall.S_IFSOCK:
			e.Type = "s"
		}
		if e.Type != "d" {
			e.Size = st.Size
			e.Nlink = uint64(st.Nlink)
			if st.Nlink > 1 {
				k := [2]uint64{st.Dev, st.Ino}
				inodes[k] = append(inodes[k], rel)
			}
		}
		x, err := fsmetaXattrs(p)
		if err != nil {
			return err
		}
		e.Xattrs = x
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	for _, paths := range inodes {
		slices.Sort(paths)
		for _, p := range paths {
			e := out[p]
			e.Group = paths[0]
			out[p] = e
		}
	}
	return out
}

func fsmetaSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fsmetaXattrs(p string) (string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return "", err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return "", err
	}
	var names []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		vsz, err := unix.Lgetxattr(p, n, nil)
		if err != nil {
			return "", fmt.Errorf("getxattr %s %s: %w", p, n, err)
		}
		v := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = unix.Lgetxattr(p, n, v); err != nil {
				return "", err
			}
		}
		parts = append(parts, fmt.Sprintf("%s=%q", n, v[:vsz]))
	}
	return strings.Join(parts, ","), nil
}

// fsmetaDiffOpts relaxes a comparison where a view cannot know a fact.
type fsmetaDiffOpts struct {
	// noNlink: the overlay oracle reports a lower file's own link count,
	// which counts links deleted by upper layers; the merged image counts
	// only the links that survive.
	noNlink bool
}

// fsmetaDiff returns one line per difference, at most max of them.
func fsmetaDiff(aName string, a map[string]fsmetaEntry, bName string, b map[string]fsmetaEntry, o fsmetaDiffOpts) []string {
	const max = 40
	var diffs []string
	paths := make([]string, 0, len(a)+len(b))
	for p := range a {
		paths = append(paths, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		ea, oka := a[p]
		eb, okb := b[p]
		if o.noNlink {
			ea.Nlink, eb.Nlink = 0, 0
		}
		switch {
		case !oka:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s: %+v", p, bName, eb))
		case !okb:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s: %+v", p, aName, ea))
		case ea != eb:
			diffs = append(diffs, fmt.Sprintf("%s:\n  %s %+v\n  %s %+v", p, aName, ea, bName, eb))
		}
		if len(diffs) >= max {
			diffs = append(diffs, "...")
			break
		}
	}
	return diffs
}

// fsmetaSameTree fails t when the two trees differ.
func fsmetaSameTree(t testing.TB, aName string, a map[string]fsmetaEntry, bName string, b map[string]fsmetaEntry, o fsmetaDiffOpts) {
	t.Helper()
	if d := fsmetaDiff(aName, a, bName, b, o); len(d) > 0 {
		t.Fatalf("%s and %s differ (%d vs %d entries):\n%s", aName, bName, len(a), len(b), strings.Join(d, "\n"))
	}
}
