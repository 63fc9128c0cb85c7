package erofs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Helpers shared by the reader tests: source trees covering every inode
// type, mkfs.erofs (the independent writer), loop mounts (the kernel as the
// judge) and an entry-by-entry comparison of an Image with a real tree.

func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (erofs-utils): %v", name, err)
	}
	return p
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (device nodes, owners, loop mounts)")
	}
}

func runCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mkfsErofs builds an image of src with Debian's mkfs.erofs and checks it
// with fsck.erofs, so every test image is one the reference tools accept.
func mkfsErofs(t testing.TB, src string, args ...string) string {
	t.Helper()
	needTool(t, "mkfs.erofs")
	img := filepath.Join(t.TempDir(), "test.erofs")
	runCmd(t, "mkfs.erofs", append(append([]string{"--quiet"}, args...), img, src)...)
	return img
}

// treeOpts selects what buildTree makes.
type treeOpts struct {
	bigDir int // entries of the big directory (0: none)
}

// buildTree makes a source tree with every inode type and the corner cases
// of the on-disk format; it needs root.
func buildTree(t testing.TB, dir string, o treeOpts) {
	t.Helper()
	needRoot(t)
	rng := rand.New(rand.NewPCG(1, 2))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(name string, b []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, b, mode))
		must(os.Chmod(p, mode))
	}
	mkdir := func(name string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		must(os.MkdirAll(p, 0o755))
		must(os.Chmod(p, mode))
	}
	xattr := func(name, key string, val []byte) {
		t.Helper()
		must(unix.Lsetxattr(filepath.Join(dir, name), key, val, 0))
	}
	file("empty", nil, 0o644)
	file("small", []byte("hello, erofs\n"), 0o644)
	file("block", data(4096), 0o644)
	file("block-plus-one", data(4097), 0o600)
	file("multi-tail", data(3*4096+1234), 0o644)
	file("big", data(1<<20+517), 0o644)
	file("tail-4095", data(4095), 0o644)
	file("setuid", []byte("#!/bin/sh\n"), 0o4755)
	must(os.Chmod(filepath.Join(dir, "setuid"), 0o4755|os.ModeSetuid))
	file("setgid-file", []byte("x"), 0o2755)
	must(os.Chmod(filepath.Join(dir, "setgid-file"), 0o755|os.ModeSetgid))
	mkdir("sticky", 0o777)
	must(os.Chmod(filepath.Join(dir, "sticky"), 0o777|os.ModeSticky))
	mkdir("setgid-dir", 0o755)
	must(os.Chmod(filepath.Join(dir, "setgid-dir"), 0o755|os.ModeSetgid))
	file("owned/bigids", []byte("ids > 65535 need extended inodes"), 0o640)
	must(os.Lchown(filepath.Join(dir, "owned/bigids"), 100000, 200000))
	file("owned/small", []byte("1000:1000"), 0o640)
	must(os.Lchown(filepath.Join(dir, "owned/small"), 1000, 1000))
	must(os.Symlink("small", filepath.Join(dir, "link-short")))
	must(os.Symlink(strings.Repeat("long/target/", 40)+"end", filepath.Join(dir, "link-long")))
	must(os.Symlink(strings.Repeat("x", 4000), filepath.Join(dir, "link-4000")))
	must(os.Lchown(filepath.Join(dir, "link-short"), 33, 44))
	must(unix.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(dir, "bigminor"), syscall.S_IFCHR|0o600, int(unix.Mkdev(259, 300000))))
	must(unix.Mknod(filepath.Join(dir, "blk"), syscall.S_IFBLK|0o660, int(unix.Mkdev(8, 1))))
	must(unix.Mknod(filepath.Join(dir, "whiteout"), syscall.S_IFCHR, 0))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(unix.Mknod(filepath.Join(dir, "sock"), syscall.S_IFSOCK|0o755, 0))
	// Hardlinks, in one directory and across directories.
	file("links/orig", data(5000), 0o644)
	must(os.Link(filepath.Join(dir, "links/orig"), filepath.Join(dir, "links/second")))
	must(os.Link(filepath.Join(dir, "links/orig"), filepath.Join(dir, "other-dir-link")))
	must(os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "links/small-link")))
	// Xattrs: every namespace, shared ones (the same pair on many inodes),
	// many on one inode, large values, and ACLs.
	file("xattrs/one", []byte("x"), 0o644)
	xattr("xattrs/one", "user.comment", []byte("hello"))
	xattr("xattrs/one", "trusted.overlay.opaque", []byte("y"))
	xattr("xattrs/one", "security.test", []byte{0, 1, 2, 3})
	file("xattrs/many", []byte("many"), 0o644)
	for i := range 40 {
		xattr("xattrs/many", fmt.Sprintf("user.attr%02d", i), []byte(strings.Repeat("v", i)))
	}
	file("xattrs/large", []byte("large"), 0o644)
	xattr("xattrs/large", "user.large", bytes.Repeat([]byte("L"), 3000))
	file("xattrs/large2", []byte("large2"), 0o644) // ext4 keeps one block of xattrs per inode
	xattr("xattrs/large2", "trusted.large", data(1500))
	for i := range 8 {
		n := fmt.Sprintf("xattrs/shared%d", i)
		file(n, []byte(n), 0o644)
		xattr(n, "user.shared", []byte("same value on every file"))
		xattr(n, "trusted.shared", []byte("also shared"))
		xattr(n, fmt.Sprintf("user.own%d", i), []byte("own"))
	}
	mkdir("xattrs/opaque", 0o755)
	xattr("xattrs/opaque", "trusted.overlay.opaque", []byte("y"))
	xattr("link-short", "trusted.on-symlink", []byte("sym"))
	file("acl/file", []byte("acl"), 0o640)
	mkdir("acl/dir", 0o750)
	runCmd(t, "setfacl", "-m", "u:1000:rwx,g:100:r-x", filepath.Join(dir, "acl/file"))
	runCmd(t, "setfacl", "-d", "-m", "u:1000:rwx", filepath.Join(dir, "acl/dir"))
	// Deep paths (longer than NAME_MAX in total) and a long name.
	deep := ""
	for i := range 40 {
		deep = filepath.Join(deep, fmt.Sprintf("level%02d-abcdefgh", i))
	}
	file(filepath.Join("deep", deep, "leaf"), []byte("deep"), 0o644)
	// 254: mkfs.erofs 1.5 fails ("Could not format the device: ENOENT") on 255-byte names.
	file(strings.Repeat("n", 254), []byte("long name"), 0o644)
	// A directory big enough for several directory blocks.
	mkdir("dir300", 0o755)
	for i := range 300 {
		file(fmt.Sprintf("dir300/entry-%04d", i), nil, 0o644)
	}
	if o.bigDir > 0 {
		mkdir("huge", 0o755)
		for i := range o.bigDir {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("huge/f%06d", i)))
			must(err)
			f.Close()
		}
	}
	// Distinct mtimes with nanoseconds, set last (children change dir mtimes).
	i := 0
	must(filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		i++
		ts := unix.NsecToTimespec(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano() + int64(i)*1_000_000_123)
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// cmpOpts says how the image is expected to differ from the reference tree.
type cmpOpts struct {
	// mtime checks one entry's mtime; nil means exact equality with the tree.
	mtime func(ref time.Time, got *Inode) error
	// inoIsNid: the tree is a kernel mount of the same image, whose st_ino
	// is the nid (64-bit hosts).
	inoIsNid bool
	// skipRootMeta: the root directory's own metadata is the writer's choice.
	skipRootMeta bool
}

// compareTree checks every entry of the image against the tree at root and
// the reverse (same set of names), entry by entry: type, permission bits,
// owner, size, mtime, nlink, rdev, xattrs, symlink target, content, and
// hardlink identity (same source inode ⇔ same nid). It returns the number
// of entries compared.
func compareTree(t *testing.T, im *Image, root string, o cmpOpts) int {
	t.Helper()
	var refNames, imgNames []string
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		refNames = append(refNames, rel)
		return nil
	}))
	nidOf := map[uint64]uint64{} // source inode -> nid
	inoOf := map[uint64]uint64{} // nid -> source inode
	must(im.Walk(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		imgNames = append(imgNames, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		got := fi.Sys().(*Inode)
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Errorf("%s: in image, not in reference: %v", p, err)
			return nil
		}
		if p == "." && o.skipRootMeta {
			return nil
		}
		if err := compareEntry(im, p, got, filepath.Join(root, p), &st, o); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if fi.Name() != filepath.Base(p) && p != "." {
			t.Errorf("%s: Name() = %q", p, fi.Name())
		}
		if d.Type() != fi.Mode().Type() {
			t.Errorf("%s: DirEntry.Type %v, Info mode %v", p, d.Type(), fi.Mode())
		}
		if o.inoIsNid && st.Ino != got.Nid {
			t.Errorf("%s: kernel ino %d, reader nid %d", p, st.Ino, got.Nid)
		}
		if !d.IsDir() {
			if nid, ok := nidOf[st.Ino]; ok && nid != got.Nid {
				t.Errorf("%s: hardlink of source inode %d has nid %d, its sibling nid %d", p, st.Ino, got.Nid, nid)
			}
			if ino, ok := inoOf[got.Nid]; ok && ino != st.Ino {
				t.Errorf("%s: nid %d shared by different source inodes %d and %d", p, got.Nid, ino, st.Ino)
			}
			nidOf[st.Ino], inoOf[got.Nid] = got.Nid, st.Ino
		}
		return nil
	}))
	slices.Sort(refNames)
	slices.Sort(imgNames)
	if !slices.Equal(refNames, imgNames) {
		t.Errorf("entry sets differ: %d in reference, %d in image; only in reference: %v; only in image: %v",
			len(refNames), len(imgNames), minus(refNames, imgNames), minus(imgNames, refNames))
	}
	return len(imgNames)
}

func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if _, ok := slices.BinarySearch(b, s); !ok {
			out = append(out, s)
			if len(out) == 10 {
				break
			}
		}
	}
	return out
}

func compareEntry(im *Image, p string, got *Inode, ref string, st *unix.Stat_t, o cmpOpts) error {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if got.Mode != st.Mode {
		bad("mode %#o, reference %#o", got.Mode, st.Mode)
	}
	if got.UID != st.Uid || got.GID != st.Gid {
		bad("owner %d:%d, reference %d:%d", got.UID, got.GID, st.Uid, st.Gid)
	}
	isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if !isDir && got.Size != uint64(st.Size) {
		bad("size %d, reference %d", got.Size, st.Size)
	}
	if got.Nlink != uint32(st.Nlink) {
		bad("nlink %d, reference %d", got.Nlink, st.Nlink)
	}
	if typ := st.Mode & syscall.S_IFMT; typ == syscall.S_IFCHR || typ == syscall.S_IFBLK {
		if got.DevMajor() != unix.Major(st.Rdev) || got.DevMinor() != unix.Minor(st.Rdev) {
			bad("rdev %d:%d, reference %d:%d", got.DevMajor(), got.DevMinor(), unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	}
	refTime := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	if o.mtime != nil {
		if err := o.mtime(refTime, got); err != nil {
			bad("%v", err)
		}
	} else if !got.ModTime().Equal(refTime) {
		bad("mtime %v, reference %v", got.ModTime(), refTime)
	}
	refX, err := listXattrs(ref)
	if err != nil {
		return err
	}
	gotX := map[string]string{}
	for _, x := range got.Xattrs {
		if _, dup := gotX[x.Name]; dup {
			bad("xattr %s twice", x.Name)
		}
		gotX[x.Name] = string(x.Value)
	}
	if !mapsEqual(gotX, refX) {
		bad("xattrs %q, reference %q", gotX, refX)
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFLNK:
		want, err := os.Readlink(ref)
		if err != nil {
			return err
		}
		if tgt, err := im.ReadLink(p); err != nil || tgt != want {
			bad("link target %q (%v), reference %q", tgt, err, want)
		}
	case syscall.S_IFREG:
		gotSum, err := fsFileSum(im, p)
		if err != nil {
			bad("read: %v", err)
			break
		}
		wantSum, err := fileSum(ref)
		if err != nil {
			return err
		}
		if gotSum != wantSum {
			bad("content sha256 %.12s, reference %.12s", gotSum, wantSum)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func listXattrs(p string) (map[string]string, error) {
	out := map[string]string{}
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return out, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", p, name, err)
		}
		v := make([]byte, n)
		if n, err = unix.Lgetxattr(p, name, v); err != nil {
			return nil, err
		}
		out[name] = string(v[:n])
	}
	return out, nil
}

// fsFileSum is the hex sha256 of file p of fsys (an *Image, go-erofs'
// reader, or a directory).
func fsFileSum(fsys fs.FS, p string) (string, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return readerSum(f)
}

// fileSum is the hex sha256 of the host file p.
func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return readerSum(f)
}

func readerSum(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
