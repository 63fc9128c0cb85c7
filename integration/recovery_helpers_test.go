package integration

// Helpers of the restart, crash, GC and CRI tests (recovery_*, crash_*,
// gc_*, cri_* files): an oracle of the image's merged tree computed from
// the layer tars alone, the same description read back through our EROFS
// reader or a kernel mount, and a check that the snapshotter's metastore
// and its files agree.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// rcEntry is what the recovery tests compare about one path of a tree.
type rcEntry struct {
	Type     byte   // 'd' dir, 'f' file, 'l' symlink, 'c' char, 'b' block, 'p' fifo
	Perm     uint32 // mode & 07777
	UID, GID uint32
	Size     int64  // files
	SHA      string // files: sha256 of the content
	Link     string // symlinks
	Major    uint32 // devices
	Minor    uint32
	Mtime    int64 // seconds; 0 for dirs (a merged dir's time is not what is tested here)
}

// rcTree maps slash paths relative to the root ("." is the root) to entries.
type rcTree map[string]rcEntry

// rcDiff lists the differences of got from want, at most 20 lines.
func rcDiff(want, got rcTree) []string {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, "missing "+p)
		case g != w:
			out = append(out, fmt.Sprintf("%s: got %+v, want %+v", p, g, w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			out = append(out, "extra "+p)
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... and %d more", len(out)-20))
	}
	return out
}

// rcOracle computes the merged trees of a stack of uncompressed layer tars,
// oldest first, from the tars alone (Go's archive/tar; none of this
// project's code): result[i] is what a container sees over layers 0..i.
// Whiteouts are applied the OCI way: ".wh.NAME" deletes NAME from the
// layers below, ".wh..wh..opq" empties its dir of what the layers below
// put there, a non-dir replaces a dir with its subtree, missing parents
// appear as 0755 root dirs.
func rcOracle(t testing.TB, tars []string) []rcTree {
	t.Helper()
	cur := rcTree{".": {Type: 'd', Perm: 0o755}}
	var out []rcTree
	for _, lt := range tars {
		type item struct {
			name string
			e    rcEntry
			link string // hardlink target
		}
		var items []item
		var whiteouts, opaques []string
		f, err := os.Open(lt)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				t.Fatalf("%s: %v", lt, err)
			}
			name := path.Clean(strings.TrimPrefix(h.Name, "/"))
			dir, base := path.Split(name)
			dir = path.Clean(dir)
			if dir == "" {
				dir = "."
			}
			if base == ".wh..wh..opq" {
				opaques = append(opaques, dir)
				continue
			}
			if wh, ok := strings.CutPrefix(base, ".wh."); ok {
				whiteouts = append(whiteouts, path.Join(dir, wh))
				continue
			}
			e := rcEntry{Perm: uint32(h.Mode) & 0o7777, UID: uint32(h.Uid), GID: uint32(h.Gid), Mtime: h.ModTime.Unix()}
			it := item{name: name}
			switch h.Typeflag {
			case tar.TypeDir:
				e.Type, e.Mtime = 'd', 0
			case tar.TypeReg, tar.TypeGNUSparse:
				n, sum, err := rcHash(tr)
				if err != nil {
					f.Close()
					t.Fatalf("%s: %s: %v", lt, h.Name, err)
				}
				e.Type, e.Size, e.SHA = 'f', n, sum
			case tar.TypeLink:
				it.link = path.Clean(strings.TrimPrefix(h.Linkname, "/"))
			case tar.TypeSymlink:
				e.Type, e.Link = 'l', h.Linkname
			case tar.TypeChar, tar.TypeBlock:
				e.Type, e.Major, e.Minor = 'c', uint32(h.Devmajor), uint32(h.Devminor)
				if h.Typeflag == tar.TypeBlock {
					e.Type = 'b'
				}
			case tar.TypeFifo:
				e.Type = 'p'
			default:
				continue
			}
			it.e = e
			items = append(items, it)
		}
		f.Close()

		next := make(rcTree, len(cur))
		for p, e := range cur {
			next[p] = e
		}
		removeTree := func(p string) {
			delete(next, p)
			for q := range next {
				if strings.HasPrefix(q, p+"/") || p == "." && q != "." {
					delete(next, q)
				}
			}
		}
		for _, p := range whiteouts {
			removeTree(p)
		}
		for _, d := range opaques {
			for q := range next {
				if d == "." && q != "." || strings.HasPrefix(q, d+"/") {
					delete(next, q)
				}
			}
		}
		for _, it := range items {
			e := it.e
			if it.link != "" {
				tgt, ok := next[it.link]
				if !ok {
					t.Fatalf("%s: hardlink %s to %s, which does not exist", lt, it.name, it.link)
				}
				e = tgt
			}
			if old, ok := next[it.name]; ok && (old.Type != 'd' || e.Type != 'd') {
				removeTree(it.name)
			}
			// Parents that the tar never named.
			for d := path.Dir(it.name); d != "."; d = path.Dir(d) {
				if _, ok := next[d]; !ok {
					next[d] = rcEntry{Type: 'd', Perm: 0o755}
				}
			}
			next[it.name] = e
		}
		out = append(out, next)
		cur = next
	}
	return out
}

// rcReaderTreeSampled reads an EROFS image (plus its extra devices) with
// our reader into an rcTree, hashing the files sample accepts (all when
// sample is nil); the others have no SHA. Metadata of every entry is read
// either way.
func rcReaderTreeSampled(sample func(p string) bool, image string, devices ...string) (rcTree, error) {
	im, err := erofs.Open(image, devices...)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	tree := rcTree{}
	err = im.Walk(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		ino, ok := fi.Sys().(*erofs.Inode)
		if !ok {
			return fmt.Errorf("%s: no inode", p)
		}
		e := rcEntry{Perm: ino.Mode & 0o7777, UID: ino.UID, GID: ino.GID, Mtime: ino.Mtime}
		switch ino.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type, e.Mtime = 'd', 0
		case unix.S_IFREG:
			e.Type, e.Size = 'f', fi.Size()
			if sample != nil && !sample(p) {
				break
			}
			f, err := im.Open(p)
			if err != nil {
				return err
			}
			n, sum, err := rcHash(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			e.Type, e.Size, e.SHA = 'f', n, sum
		case unix.S_IFLNK:
			if e.Link, err = im.ReadLink(p); err != nil {
				return err
			}
			e.Type = 'l'
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Type, e.Major, e.Minor = 'c', ino.DevMajor(), ino.DevMinor()
			if ino.Mode&unix.S_IFMT == unix.S_IFBLK {
				e.Type = 'b'
			}
		case unix.S_IFIFO:
			e.Type = 'p'
		default:
			return fmt.Errorf("%s: unexpected mode %#o", p, ino.Mode)
		}
		tree[p] = e
		return nil
	})
	return tree, err
}

// rcHostTree describes a mounted tree (the kernel's view) as an rcTree.
func rcHostTree(root string) (rcTree, error) {
	tree := rcTree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := rcEntry{Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type, e.Mtime = 'd', 0
		case unix.S_IFREG:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n, sum, err := rcHash(f)
			f.Close()
			if err != nil {
				return err
			}
			e.Type, e.Size, e.SHA = 'f', n, sum
		case unix.S_IFLNK:
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
			e.Type = 'l'
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Type, e.Major, e.Minor = 'c', unix.Major(st.Rdev), unix.Minor(st.Rdev)
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				e.Type = 'b'
			}
		case unix.S_IFIFO:
			e.Type = 'p'
		default:
			return fmt.Errorf("%s: unexpected mode %#o", p, st.Mode)
		}
		tree[filepath.ToSlash(rel)] = e
		return nil
	})
	return tree, err
}

// rcUnsample drops the SHA of the files of tree that sample rejects, to
// compare it with a sampled read.
func rcUnsample(tree rcTree, sample func(string) bool) rcTree {
	if sample == nil {
		return tree
	}
	out := make(rcTree, len(tree))
	for p, e := range tree {
		if e.Type == 'f' && !sample(p) {
			e.SHA = ""
		}
		out[p] = e
	}
	return out
}

// rcSnap is one snapshot of the snapshotter's own metastore: backing
// names ("<namespace>/<n>/<key>", as containerd's metadata layer names
// them) and the directory id.
type rcSnap struct {
	ID     string
	Name   string
	Parent string
	Kind   snapshots.Kind
	Labels map[string]string
}

// rcReadStore reads the erofs-vm snapshotter's metadata.db. The daemon
// holds the bolt file locked while it runs, so the file is copied first;
// the copy is taken twice until two agree, so a write transaction running
// meanwhile cannot hand us a torn file. Call it when nothing writes.
func rcReadStore(snRoot string) (map[string]rcSnap, error) {
	src := filepath.Join(snRoot, "metadata.db")
	tmp, err := os.MkdirTemp("", "rcstore-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var b []byte
	for try := 0; ; try++ {
		b1, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		b2, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		if string(b1) == string(b2) {
			b = b1
			break
		}
		if try == 20 {
			return nil, fmt.Errorf("%s keeps changing", src)
		}
	}
	db := filepath.Join(tmp, "metadata.db")
	if err := os.WriteFile(db, b, 0o600); err != nil {
		return nil, err
	}
	ms, err := storage.NewMetaStore(db)
	if err != nil {
		return nil, err
	}
	defer ms.Close()
	out := map[string]rcSnap{}
	err = ms.WithTransaction(context.Background(), false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			out[info.Name] = rcSnap{ID: id, Name: info.Name, Parent: info.Parent, Kind: info.Kind, Labels: info.Labels}
			return nil
		})
	})
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return nil, err
	}
	return out, nil
}

// rcCheckStore checks that the snapshotter's metastore and its files
// agree (docs/design.md §3): every snapshot has its dir and the files its kind
// needs; every dir under snapshots/ belongs to a snapshot; no temp file,
// new-* dir or conversion mount is left; nothing under the root is
// mounted or attached to a loop device. It returns the store and a list of violations.
func rcCheckStore(snRoot string) (map[string]rcSnap, []string) {
	store, err := rcReadStore(snRoot)
	if err != nil {
		return nil, []string{fmt.Sprintf("read metastore: %v", err)}
	}
	var bad []string
	ids := map[string]rcSnap{}
	for _, s := range store {
		ids[s.ID] = s
		dir := filepath.Join(snRoot, "snapshots", s.ID)
		need := func(f string, nonEmpty bool) {
			st, err := os.Stat(filepath.Join(dir, f))
			switch {
			case err != nil:
				bad = append(bad, fmt.Sprintf("%s snapshot %q (id %s): %v", s.Kind, s.Name, s.ID, err))
			case nonEmpty && st.Size() == 0:
				bad = append(bad, fmt.Sprintf("%s snapshot %q (id %s): %s is empty", s.Kind, s.Name, s.ID, f))
			}
		}
		if _, err := os.Stat(dir); err != nil {
			bad = append(bad, fmt.Sprintf("%s snapshot %q (id %s) has no dir: %v", s.Kind, s.Name, s.ID, err))
			continue
		}
		switch s.Kind {
		case snapshots.KindCommitted:
			need(layout.LayerFile, true)
			if im, err := erofs.Open(filepath.Join(dir, layout.LayerFile)); err != nil {
				bad = append(bad, fmt.Sprintf("committed %q: layer: %v", s.Name, err))
			} else {
				im.Close()
			}
			// The merged disk is built at the first use as a parent, fsmeta
			// first, the VMDK last (docs/design.md §4): a VMDK means a whole
			// fsmeta beside it; an fsmeta alone is a build a kill cut short,
			// which the next use redoes.
			if _, err := os.Lstat(filepath.Join(dir, layout.VMDKFile)); err == nil {
				if s.Parent == "" {
					bad = append(bad, fmt.Sprintf("committed %q has no parent but a %s", s.Name, layout.VMDKFile))
				}
				need(layout.FSMetaFile, true)
				need(layout.VMDKFile, true)
			}
			if _, err := os.Lstat(filepath.Join(dir, layout.RWLayerFile)); err == nil {
				bad = append(bad, fmt.Sprintf("committed %q still has %s after startup", s.Name, layout.RWLayerFile))
			}
		case snapshots.KindActive:
			if s.Labels[snapshotter.LabelExtract] == "true" {
				need(layout.MarkerFile, false)
			} else {
				need(layout.RWLayerFile, true)
			}
		case snapshots.KindView:
			if s.Parent == "" {
				need(layout.LayerFile, true)
			}
		}
	}
	ents, err := os.ReadDir(filepath.Join(snRoot, "snapshots"))
	if err != nil {
		bad = append(bad, err.Error())
	}
	for _, e := range ents {
		if _, ok := ids[e.Name()]; !ok {
			bad = append(bad, fmt.Sprintf("dir snapshots/%s has no metastore entry", e.Name()))
		}
		sub, _ := os.ReadDir(filepath.Join(snRoot, "snapshots", e.Name()))
		for _, f := range sub {
			if n := f.Name(); strings.Contains(n, ".tmp-") || strings.HasPrefix(n, ".commit-mnt-") || strings.HasPrefix(n, ".empty-") {
				bad = append(bad, fmt.Sprintf("leftover snapshots/%s/%s", e.Name(), n))
			}
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], snRoot+"/") {
				bad = append(bad, "still mounted: "+f[4])
			}
		}
	}
	// A conversion's loop device (autoclear) goes with its mount; one
	// left attached to a file of the root is a leak.
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, b := range backing {
		if f, err := os.ReadFile(b); err == nil && strings.HasPrefix(strings.TrimSpace(string(f)), snRoot+"/") {
			bad = append(bad, fmt.Sprintf("%s still attached to %s", strings.Split(b, "/")[3], strings.TrimSpace(string(f))))
		}
	}
	return store, bad
}

// rcSnapshotReaderTree reads committed snapshot s of store the way a View
// of it mounts: its own layer alone, or its fsmeta over every layer of the
// chain oldest first. sample is as for rcReaderTreeSampled.
func rcSnapshotReaderTree(snRoot string, store map[string]rcSnap, s rcSnap, sample func(string) bool) (rcTree, error) {
	layer := func(id string) string { return filepath.Join(snRoot, "snapshots", id, layout.LayerFile) }
	if s.Parent == "" {
		return rcReaderTreeSampled(sample, layer(s.ID))
	}
	var chain []string // oldest first
	for p := s; ; {
		chain = append([]string{layer(p.ID)}, chain...)
		if p.Parent == "" {
			break
		}
		next, ok := store[p.Parent]
		if !ok {
			return nil, fmt.Errorf("%q: parent %q not in the store", p.Name, p.Parent)
		}
		p = next
	}
	dir := filepath.Join(snRoot, "snapshots", s.ID)
	if _, err := os.Lstat(filepath.Join(dir, layout.VMDKFile)); err == nil {
		return rcReaderTreeSampled(sample, filepath.Join(dir, layout.FSMetaFile), chain...)
	}
	// No merged disk yet (it is built at the first use as a parent): merge
	// the chain into a scratch fsmeta, which is what that use will build.
	tmp, err := os.CreateTemp("", "rc-fsmeta-*.erofs")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := erofs.BuildFSMeta(context.Background(), tmp, chain); err != nil {
		return nil, fmt.Errorf("%q: merge its chain: %w", s.Name, err)
	}
	return rcReaderTreeSampled(sample, tmp.Name(), chain...)
}

// rcBackingKey returns the key part of a backing snapshot name
// "<namespace>/<n>/<key>" and its namespace.
func rcBackingKey(name string) (ns, key string) {
	parts := strings.SplitN(name, "/", 3)
	if len(parts) != 3 {
		return "", name
	}
	return parts[0], parts[2]
}

// rcHash reads r to its end and returns how many bytes it held and their
// sha256, hex-encoded (rcEntry.SHA).
func rcHash(r io.Reader) (int64, string, error) {
	d := digest.Canonical.Digester()
	n, err := io.Copy(d.Hash(), r)
	return n, d.Digest().Encoded(), err
}
