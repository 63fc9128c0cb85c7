package integration

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/treecmp"
)

// fsmetaView is what the kernel shows of a mounted tree: treecmp's entries
// (type, mode, owner, size, sha256, mtime seconds, xattrs, symlink target,
// rdev, hardlink groups), plus two facts treecmp leaves out that fsmeta
// must get right: the mtime's nanoseconds and the link count of
// non-directories. Keys are treecmp's: relative slash paths, "." = root.
type fsmetaView struct {
	entries map[string]*treecmp.Entry
	extra   map[string]fsmetaExtra
}

type fsmetaExtra struct {
	nsec  int64
	nlink uint64 // non-directories; overlayfs reports 1 for merged dirs
}

// fsmetaTree scans a mounted tree.
func fsmetaTree(t testing.TB, root string) fsmetaView {
	t.Helper()
	entries, err := treecmp.Scan(root)
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	extra := make(map[string]fsmetaExtra, len(entries))
	err = filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		x := fsmetaExtra{nsec: st.Mtim.Nsec}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			x.nlink = uint64(st.Nlink)
		}
		extra[filepath.ToSlash(rel)] = x
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return fsmetaView{entries, extra}
}

// fsmetaDiffOpts relaxes a comparison where a view cannot know a fact.
type fsmetaDiffOpts struct {
	// noNlink: the overlay oracle reports a lower file's own link count,
	// which counts links deleted by upper layers; the merged image counts
	// only the links that survive.
	noNlink bool
	// noMtime: one side was written by the test in one go (the expected
	// tree), so its mtimes and its root mean nothing.
	noMtime bool
}

// fsmetaSameTree fails t when the two views differ.
func fsmetaSameTree(t testing.TB, aName string, a fsmetaView, bName string, b fsmetaView, o fsmetaDiffOpts) {
	t.Helper()
	opts := treecmp.Options{MaxDiffs: 40}
	if o.noMtime {
		opts.IgnoreMtime = func(string) bool { return true }
		opts.IgnoreRoot = true
	}
	diffs := treecmp.DiffEntries(a.entries, b.entries, opts)
	if len(diffs) == 0 {
		paths := make([]string, 0, len(a.extra))
		for p := range a.extra {
			paths = append(paths, p)
		}
		slices.Sort(paths)
		for _, p := range paths {
			xa, xb := a.extra[p], b.extra[p]
			if !o.noMtime && xa.nsec != xb.nsec {
				diffs = append(diffs, fmt.Sprintf("%s: mtime nsec %d, want %d", p, xb.nsec, xa.nsec))
			}
			if !o.noNlink && xa.nlink != xb.nlink {
				diffs = append(diffs, fmt.Sprintf("%s: nlink %d, want %d", p, xb.nlink, xa.nlink))
			}
		}
	}
	if len(diffs) > 0 {
		if len(diffs) > 40 {
			diffs = append(diffs[:40], "...")
		}
		t.Fatalf("%s (got) and %s (want) differ (%d vs %d entries):\n%s",
			bName, aName, len(b.entries), len(a.entries), strings.Join(diffs, "\n"))
	}
}
