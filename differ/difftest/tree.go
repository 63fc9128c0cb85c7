// Package difftest compares directory trees the way erofs-vm's differ
// tests need: names, types, permissions, owners, contents, symlink
// targets, device numbers, xattrs and hardlink groups. It is shared by the
// differ's unit tests and the integration tests; production code never
// imports it.
package difftest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Entry is what Tree records about one path.
type Entry struct {
	Type   string // "dir", "file", "symlink", "char", "block", "fifo", "socket"
	Perm   uint32 // st_mode & 07777
	UID    uint32
	GID    uint32
	Size   int64  // files only
	SHA256 string // files only
	Link   string // symlink target
	Rdev   uint64 // devices only
	Mtime  int64  // seconds; 0 when Options.NoMtime or for dirs
	Xattrs map[string]string
	// LinkGroup is the first path (lexically) of the names in the tree
	// that share this non-dir's inode, or "" when it has no other name.
	LinkGroup string
}

// Options selects what Tree ignores.
type Options struct {
	NoMtime bool
	// KeepXattr reports whether an xattr counts; nil keeps all except
	// trusted.overlay.* (overlayfs' private ones).
	KeepXattr func(name string) bool
}

// Tree walks root and returns its entries by slash path relative to root
// (root itself is ".").
func Tree(root string, opts Options) (map[string]Entry, error) {
	keep := opts.KeepXattr
	if keep == nil {
		keep = func(n string) bool { return !strings.HasPrefix(n, "trusted.overlay.") }
	}
	out := map[string]Entry{}
	type ino struct{ dev, ino uint64 }
	groups := map[ino][]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := Entry{Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
		if !opts.NoMtime {
			e.Mtime = st.Mtim.Sec
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type, e.Mtime = "dir", 0
		case unix.S_IFREG:
			e.Type, e.Size = "file", st.Size
			sum, err := fileSHA(p)
			if err != nil {
				return err
			}
			e.SHA256 = sum
		case unix.S_IFLNK:
			e.Type = "symlink"
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
			e.Perm = 0 // symlink permissions mean nothing on Linux
		case unix.S_IFCHR:
			e.Type, e.Rdev = "char", st.Rdev
		case unix.S_IFBLK:
			e.Type, e.Rdev = "block", st.Rdev
		case unix.S_IFIFO:
			e.Type = "fifo"
		case unix.S_IFSOCK:
			e.Type = "socket"
		}
		x, err := xattrs(p)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		for k, v := range x {
			if keep(k) {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[k] = v
			}
		}
		// Grouped by inode, not by st_nlink: overlayfs without index
		// reports nlink 1 for a lower file hardlinked after copy-up, though
		// both names are one upper inode.
		if e.Type != "dir" {
			k := ino{uint64(st.Dev), st.Ino}
			groups[k] = append(groups[k], rel)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, names := range groups {
		if len(names) < 2 {
			continue // other links are outside the tree
		}
		sort.Strings(names)
		for _, n := range names {
			e := out[n]
			e.LinkGroup = names[0]
			out[n] = e
		}
	}
	return out, nil
}

// Diff lists the differences between two trees, one line per path, sorted;
// empty means equal. The root's own metadata is ignored (appliers differ
// in what they do with it).
func Diff(a, b map[string]Entry) []string {
	var out []string
	for p, ea := range a {
		if p == "." {
			continue
		}
		eb, ok := b[p]
		if !ok {
			out = append(out, fmt.Sprintf("%s: only in first (%s)", p, ea.Type))
			continue
		}
		if d := ea.diff(eb); d != "" {
			out = append(out, p+": "+d)
		}
	}
	for p, eb := range b {
		if _, ok := a[p]; !ok && p != "." {
			out = append(out, fmt.Sprintf("%s: only in second (%s)", p, eb.Type))
		}
	}
	sort.Strings(out)
	return out
}

func (e Entry) diff(o Entry) string {
	var d []string
	add := func(what string, x, y any) { d = append(d, fmt.Sprintf("%s %v != %v", what, x, y)) }
	if e.Type != o.Type {
		add("type", e.Type, o.Type)
	}
	if e.Perm != o.Perm {
		add("perm", fmt.Sprintf("%#o", e.Perm), fmt.Sprintf("%#o", o.Perm))
	}
	if e.UID != o.UID || e.GID != o.GID {
		add("owner", fmt.Sprintf("%d:%d", e.UID, e.GID), fmt.Sprintf("%d:%d", o.UID, o.GID))
	}
	if e.Size != o.Size || e.SHA256 != o.SHA256 {
		add("content", fmt.Sprintf("%d/%.12s", e.Size, e.SHA256), fmt.Sprintf("%d/%.12s", o.Size, o.SHA256))
	}
	if e.Link != o.Link {
		add("link", e.Link, o.Link)
	}
	if e.Rdev != o.Rdev {
		add("rdev", e.Rdev, o.Rdev)
	}
	if e.Mtime != o.Mtime {
		add("mtime", e.Mtime, o.Mtime)
	}
	if fmt.Sprint(e.Xattrs) != fmt.Sprint(o.Xattrs) {
		add("xattrs", e.Xattrs, o.Xattrs)
	}
	if e.LinkGroup != o.LinkGroup {
		add("hardlink group", e.LinkGroup, o.LinkGroup)
	}
	return strings.Join(d, "; ")
}

func fileSHA(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := digest.Canonical.FromReader(f)
	if err != nil {
		return "", err
	}
	return d.Encoded(), nil
}

func xattrs(p string) (map[string]string, error) {
	// Size first, then list, is racy on overlayfs (the size counts its
	// private xattrs, the list hides them): list into a big buffer instead.
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		out[name] = string(v[:vn])
	}
	return out, nil
}

// LinkGroupsFrom sets the hardlink groups of tree (taken through an
// overlayfs mount) from its upper dir. overlayfs without index shows a
// name linked to a copied-up lower file with the lower's inode number and
// the new name with the upper's, so the merged view hides a hardlink that
// the upper, and any layer made from it, has.
func LinkGroupsFrom(tree map[string]Entry, upper string) error {
	up, err := Tree(upper, Options{NoMtime: true, KeepXattr: func(string) bool { return false }})
	if err != nil {
		return err
	}
	for name, e := range up {
		if e.LinkGroup == "" {
			continue
		}
		if te, ok := tree[name]; ok {
			te.LinkGroup = e.LinkGroup
			tree[name] = te
		}
	}
	return nil
}
