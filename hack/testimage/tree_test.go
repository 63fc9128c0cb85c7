package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
	"golang.org/x/sys/unix"
)

// node is everything about a path that a layer must reproduce.
type node struct {
	Type   string // dir, reg, symlink, char, block, fifo
	Mode   uint32 // permission and setuid/setgid/sticky bits
	UID    uint32
	GID    uint32
	Size   int64
	Data   string // sha256 of a regular file's content
	Link   string // symlink target
	Rdev   uint64
	Mtime  int64  // nanoseconds; regular files only (see snapshotTree)
	Xattrs string // sorted name=value list, overlay's own excluded
	LinkTo string // for a hardlinked file: first path of its inode group
}

// snapshotTree records root as a path → node map. Dir and symlink mtimes are
// left out: appliers set a dir's time after its children and overlayfs
// updates a merged parent when a child changes, so they are not a property
// of the layer.
func snapshotTree(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	groups := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Type = "dir"
		case unix.S_IFREG:
			n.Type, n.Size, n.Mtime = "reg", st.Size, st.Mtim.Nano()
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			n.Data = hex.EncodeToString(sum[:8])
			if st.Nlink > 1 {
				// WalkDir is lexical: the first path seen names the group.
				if first, ok := groups[st.Ino]; ok {
					n.LinkTo = first
				} else {
					groups[st.Ino] = rel
					n.LinkTo = rel
				}
			}
		case unix.S_IFLNK:
			n.Type = "symlink"
			n.Link, err = os.Readlink(p)
			if err != nil {
				return err
			}
		case unix.S_IFCHR:
			n.Type, n.Rdev = "char", uint64(st.Rdev)
		case unix.S_IFBLK:
			n.Type, n.Rdev = "block", uint64(st.Rdev)
		case unix.S_IFIFO:
			n.Type = "fifo"
		default:
			return fmt.Errorf("%s: unexpected type %#o", rel, st.Mode&unix.S_IFMT)
		}
		names, err := listXattrs(p)
		if err != nil {
			return err
		}
		var xs []string
		for _, name := range names {
			if strings.HasPrefix(name, overlayXattr) {
				continue
			}
			v, err := getXattr(p, name)
			if err != nil {
				return err
			}
			xs = append(xs, name+"="+hex.EncodeToString(v))
		}
		sort.Strings(xs)
		n.Xattrs = strings.Join(xs, " ")
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return out
}

// diffTrees reports every path where got and want disagree, sorted.
func diffTrees(got, want map[string]node) []string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %s (%+v)", p, w))
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s: got %+v, want %+v", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s (%+v)", p, g))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// applyLayer applies an OCI layer tar with containerd's own applier (the
// walking differ's counterpart): the reference meaning of a layer.
func applyLayer(t *testing.T, root string, layer []byte) {
	t.Helper()
	if _, err := archive.Apply(context.Background(), root, bytes.NewReader(layer)); err != nil {
		t.Fatalf("containerd archive.Apply to %s: %v", root, err)
	}
}

// layerBytes converts dir into an OCI layer tar in memory.
func layerBytes(t *testing.T, dir string, opts layerOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := writeLayer(&buf, dir, opts); err != nil {
		t.Fatalf("writeLayer %s: %v", dir, err)
	}
	return buf.Bytes()
}

// requireRoot skips tests that need mknod, trusted.* xattrs or mounts when
// not root; on the project's machines they run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod, trusted.overlay xattrs, overlay mounts)")
	}
}

// must fails the test naming what failed.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	must(t, "mkdir", os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, "write "+p, os.WriteFile(p, []byte(data), 0o644))
}
