package erofs

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"golang.org/x/sys/unix"
)

// wantEntry is what the kernel must show at one path of a mounted image.
type wantEntry struct {
	path     string
	mode     uint32 // S_IFMT bits and permissions; 0: absent
	data     string // regular files
	uid, gid uint32
	mtime    time.Time // zero: not checked
	opaque   bool      // trusted.overlay.opaque=y on a directory
}

// The three corner cases where a layer's image once differed from what
// containerd and the OCI layer spec give (issue 20). Each case is a tar in,
// the image mounted by the kernel, and every listed path checked against
// the spec's answer; our reader must give the same answer.
var (
	pre1970      = time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC) // -5364662400
	justBefore   = time.Unix(-1, 500000000)                    // 1969-12-31 23:59:59.5
	farPast      = time.Unix(-1<<40, 0)                        // beyond any 32-bit offset
	recent       = time.Unix(1700000000, 0)
	whiteoutMode = uint32(syscall.S_IFCHR)
)

func TestLayerSemantics(t *testing.T) {
	testmount.RequireRoot(t)
	oldTime := func(tm time.Time) func(*tar.Header) { return func(h *tar.Header) { h.ModTime = tm } }
	cases := []struct {
		name    string
		entries []tarEntry
		want    []wantEntry
		absent  []string
	}{
		{
			// Most entries before 1970: the superblock build time (the
			// compact inodes' base) is negative too.
			name: "times-before-1970",
			entries: []tarEntry{
				with(dirEnt("old/", 0o755), oldTime(pre1970)),
				with(reg("old/a", 0o644, "a"), oldTime(pre1970)),
				with(reg("old/b", 0o644, "b"), oldTime(pre1970)),
				with(reg("old/c", 0o644, "c"), oldTime(pre1970)),
				with(reg("old/half", 0o644, "h"), oldTime(justBefore)),
				with(reg("old/far", 0o644, "f"), oldTime(farPast)),
				with(reg("new", 0o644, "n"), oldTime(recent)),
			},
			want: []wantEntry{
				{path: "old", mode: syscall.S_IFDIR | 0o755, mtime: pre1970},
				{path: "old/a", mode: syscall.S_IFREG | 0o644, data: "a", mtime: pre1970},
				{path: "old/c", mode: syscall.S_IFREG | 0o644, data: "c", mtime: pre1970},
				{path: "old/half", mode: syscall.S_IFREG | 0o644, data: "h", mtime: justBefore},
				{path: "old/far", mode: syscall.S_IFREG | 0o644, data: "f", mtime: farPast},
				{path: "new", mode: syscall.S_IFREG | 0o644, data: "n", mtime: recent},
			},
		},
		{
			name:    "whiteout-after-own-file",
			entries: []tarEntry{dirEnt("d/", 0o755), reg("d/y", 0o644, "own"), reg("d/.wh.y", 0o644, "")},
			want:    []wantEntry{{path: "d/y", mode: syscall.S_IFREG | 0o644, data: "own"}},
		},
		{
			name:    "whiteout-before-own-file",
			entries: []tarEntry{dirEnt("d/", 0o755), reg("d/.wh.y", 0o644, ""), reg("d/y", 0o600, "own")},
			want:    []wantEntry{{path: "d/y", mode: syscall.S_IFREG | 0o600, data: "own"}},
		},
		{
			name: "whiteout-after-own-dir",
			entries: []tarEntry{
				dirEnt("e/", 0o750), reg("e/a", 0o644, "A"), dirEnt("e/sub/", 0o755), reg("e/sub/b", 0o644, "B"),
				reg(".wh.e", 0o644, ""),
			},
			want: []wantEntry{
				{path: "e", mode: syscall.S_IFDIR | 0o750, opaque: true},
				{path: "e/a", mode: syscall.S_IFREG | 0o644, data: "A"},
				{path: "e/sub/b", mode: syscall.S_IFREG | 0o644, data: "B"},
			},
		},
		{
			name:    "whiteout-before-own-dir",
			entries: []tarEntry{reg(".wh.e", 0o644, ""), dirEnt("e/", 0o750), reg("e/a", 0o644, "A")},
			want: []wantEntry{
				{path: "e", mode: syscall.S_IFDIR | 0o750, opaque: true},
				{path: "e/a", mode: syscall.S_IFREG | 0o644, data: "A"},
			},
		},
		{
			name:    "whiteout-before-implicit-dir",
			entries: []tarEntry{reg(".wh.e", 0o644, ""), reg("e/a", 0o644, "A")},
			want: []wantEntry{
				{path: "e", mode: syscall.S_IFDIR | 0o755, opaque: true},
				{path: "e/a", mode: syscall.S_IFREG | 0o644, data: "A"},
			},
		},
		{
			name:    "whiteout-of-lower-only",
			entries: []tarEntry{dirEnt("d/", 0o755), with(reg("d/.wh.gone", 0o644, ""), owner(3, 4))},
			want:    []wantEntry{{path: "d/gone", mode: whiteoutMode, uid: 3, gid: 4}},
		},
		{
			name: "owner-minus-one",
			entries: []tarEntry{
				with(reg("both", 0o644, "x"), owner(1<<32-1, 1<<32-1)),
				with(reg("uid-only", 0o644, "x"), owner(1<<32-1, 5)),
				with(dirEnt("dir/", 0o755), owner(7, 1<<32-1)),
				with(reg("max-valid", 0o644, "x"), owner(1<<32-2, 1<<32-2)),
			},
			want: []wantEntry{
				{path: "both", mode: syscall.S_IFREG | 0o644, data: "x", uid: 0, gid: 0},
				{path: "uid-only", mode: syscall.S_IFREG | 0o644, data: "x", uid: 0, gid: 5},
				{path: "dir", mode: syscall.S_IFDIR | 0o755, uid: 7, gid: 0},
				{path: "max-valid", mode: syscall.S_IFREG | 0o644, data: "x", uid: 1<<32 - 2, gid: 1<<32 - 2},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tarPath := filepath.Join(dir, "layer.tar")
			writeTar(t, tarPath, tar.FormatPAX, tc.entries)
			img, _ := convertFile(t, tarPath, dir)
			fsck(t, img)
			mnt := testmount.Erofs(t, img)
			im, err := Open(img)
			if err != nil {
				t.Fatalf("our reader: %v", err)
			}
			defer im.Close()
			for _, w := range tc.want {
				checkKernelEntry(t, mnt, w)
				checkReaderEntry(t, im, w)
			}
			for _, p := range []string{"d/.wh.y", ".wh.e", "d/.wh.gone"} {
				if _, err := os.Lstat(filepath.Join(mnt, p)); err == nil {
					t.Errorf("%s: a whiteout file made it into the image as a name", p)
				}
			}
		})
	}
}

// checkKernelEntry compares one path of a kernel mount with w.
func checkKernelEntry(t *testing.T, mnt string, w wantEntry) {
	t.Helper()
	p := filepath.Join(mnt, w.path)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("kernel: %s: %v", w.path, err)
		return
	}
	if st.Mode != w.mode || st.Uid != w.uid || st.Gid != w.gid {
		t.Errorf("kernel: %s: mode %#o owner %d:%d, want %#o %d:%d", w.path, st.Mode, st.Uid, st.Gid, w.mode, w.uid, w.gid)
	}
	if w.mode&syscall.S_IFMT == syscall.S_IFCHR && st.Rdev != 0 {
		t.Errorf("kernel: %s: rdev %#x, want a 0:0 whiteout", w.path, st.Rdev)
	}
	if !w.mtime.IsZero() && (st.Mtim.Sec != w.mtime.Unix() || st.Mtim.Nsec != int64(w.mtime.Nanosecond())) {
		t.Errorf("kernel: %s: mtime %d.%09d, want %d.%09d", w.path, st.Mtim.Sec, st.Mtim.Nsec, w.mtime.Unix(), w.mtime.Nanosecond())
	}
	if w.data != "" {
		if b, err := os.ReadFile(p); err != nil || string(b) != w.data {
			t.Errorf("kernel: %s: content %q, %v; want %q", w.path, b, err, w.data)
		}
	}
	if w.mode&syscall.S_IFMT == syscall.S_IFDIR {
		v := make([]byte, 8)
		n, err := unix.Lgetxattr(p, OpaqueXattr, v)
		opaque := err == nil && string(v[:n]) == "y"
		if opaque != w.opaque {
			t.Errorf("kernel: %s: opaque %v (%v), want %v", w.path, opaque, err, w.opaque)
		}
	}
}

// checkReaderEntry compares one path as our reader sees it with w.
func checkReaderEntry(t *testing.T, im *Image, w wantEntry) {
	t.Helper()
	fi, err := im.Lstat(w.path)
	if err != nil {
		t.Errorf("reader: %s: %v", w.path, err)
		return
	}
	in := fi.Sys().(*Inode)
	if in.Mode != w.mode || in.UID != w.uid || in.GID != w.gid {
		t.Errorf("reader: %s: mode %#o owner %d:%d, want %#o %d:%d", w.path, in.Mode, in.UID, in.GID, w.mode, w.uid, w.gid)
	}
	if !w.mtime.IsZero() && !in.ModTime().Equal(w.mtime) {
		t.Errorf("reader: %s: mtime %v, want %v", w.path, in.ModTime(), w.mtime)
	}
	if _, opaque := in.Xattr(OpaqueXattr); w.mode&syscall.S_IFMT == syscall.S_IFDIR && opaque != w.opaque {
		t.Errorf("reader: %s: opaque %v, want %v", w.path, opaque, w.opaque)
	}
}

// TestWhiteoutOwnLayerInStack stacks a layer whose whiteouts name entries
// of their own layer on a lower one, builds the fsmeta, and lets the kernel
// show the merged tree: the upper layer's own entries stay, and the
// whiteouts hide only the lower layer's (OCI layer.md).
func TestWhiteoutOwnLayerInStack(t *testing.T) {
	testmount.RequireRoot(t)
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower.tar")
	writeTar(t, lower, tar.FormatPAX, []tarEntry{
		dirEnt("d/", 0o755), reg("d/y", 0o644, "lower y"), reg("d/z", 0o644, "lower z"),
		dirEnt("e/", 0o755), reg("e/old", 0o644, "lower e/old"),
		reg("gone", 0o644, "lower gone"),
	})
	upper := filepath.Join(dir, "upper.tar")
	writeTar(t, upper, tar.FormatPAX, []tarEntry{
		dirEnt("d/", 0o755), reg("d/y", 0o644, "upper y"), reg("d/.wh.y", 0o644, ""),
		reg(".wh.e", 0o644, ""), dirEnt("e/", 0o755), reg("e/new", 0o644, "upper e/new"),
		reg(".wh.gone", 0o644, ""),
	})
	var layers []string
	for _, tp := range []string{lower, upper} {
		d := filepath.Join(dir, filepath.Base(tp)+".d")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		img, _ := convertFile(t, tp, d)
		layers = append(layers, img)
	}
	fsmeta := filepath.Join(dir, "fsmeta.erofs")
	buildTo(t, fsmeta, layers)
	mnt := testmount.Erofs(t, fsmeta, layers...)
	want := map[string]string{"d/y": "upper y", "d/z": "lower z", "e/new": "upper e/new"}
	for p, data := range want {
		if b, err := os.ReadFile(filepath.Join(mnt, p)); err != nil || string(b) != data {
			t.Errorf("%s: %q, %v; want %q", p, b, err, data)
		}
	}
	for _, p := range []string{"e/old", "gone"} {
		if _, err := os.Lstat(filepath.Join(mnt, p)); err == nil {
			t.Errorf("%s: visible in the merged tree, but the upper layer whited it out", p)
		}
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "e"))
	if err != nil || len(ents) != 1 {
		t.Errorf("e/ holds %v (%v), want only new", ents, err)
	}
}

// TestFSMetaPre1970 builds an fsmeta over layers whose times are before
// 1970 (a negative superblock build time in each), which the merge must
// read and the kernel must show unchanged.
func TestFSMetaPre1970(t *testing.T) {
	testmount.RequireRoot(t)
	dir := t.TempDir()
	var layers []string
	for i, name := range []string{"a", "b"} {
		tp := filepath.Join(dir, name+".tar")
		writeTar(t, tp, tar.FormatPAX, []tarEntry{
			with(dirEnt(name+"/", 0o755), func(h *tar.Header) { h.ModTime = pre1970 }),
			with(reg(name+"/f", 0o644, name), func(h *tar.Header) { h.ModTime = pre1970.Add(time.Duration(i) * time.Hour) }),
		})
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		img, _ := convertFile(t, tp, d)
		im, err := Open(img)
		if err != nil {
			t.Fatal(err)
		}
		if bt := int64(im.Superblock().BuildTime); bt >= 0 {
			t.Errorf("layer %s: build time %d, want the layer's negative common mtime", name, bt)
		}
		im.Close()
		layers = append(layers, img)
	}
	fsmeta := filepath.Join(dir, "fsmeta.erofs")
	f, err := os.Create(fsmeta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildFSMeta(context.Background(), f, layers); err != nil {
		t.Fatalf("BuildFSMeta over pre-1970 layers: %v", err)
	}
	f.Close()
	mnt := testmount.Erofs(t, fsmeta, layers...)
	for i, name := range []string{"a", "b"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, name, "f"), &st); err != nil {
			t.Fatal(err)
		}
		if want := pre1970.Add(time.Duration(i) * time.Hour).Unix(); st.Mtim.Sec != want {
			t.Errorf("%s/f: kernel mtime %d, want %d", name, st.Mtim.Sec, want)
		}
	}
}
