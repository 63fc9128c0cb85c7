package erofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// The reader against Debian's mkfs.erofs 1.5 and the kernel: every variant
// is built from the same source tree, then compared entry by entry with
// the source and with a loop mount of the same image.

func TestReaderMkfsVariants(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	buildTree(t, src, treeOpts{})
	exact := func(ref time.Time, got *Inode) error {
		if !got.ModTime().Equal(ref) {
			return fmt.Errorf("mtime %v, source %v", got.ModTime(), ref)
		}
		return nil
	}
	fixed := func(sec int64) func(time.Time, *Inode) error {
		return func(_ time.Time, got *Inode) error {
			if got.Mtime != sec || got.MtimeNsec != 0 {
				return fmt.Errorf("mtime %d.%09d, want the -T time %d", got.Mtime, got.MtimeNsec, sec)
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		// mtime vs the source; nil: exact
		mtime func(time.Time, *Inode) error
		// check is run on every regular file's inode and extents
		check    func(in *Inode, ext []Extent) error
		noBigIDs bool
	}{
		{name: "default", mtime: exact},
		{name: "fixed-time", args: []string{"-T", "1234567890"}, mtime: fixed(1234567890),
			check: func(in *Inode, _ []Extent) error {
				if in.Extended && in.UID <= 0xffff && in.GID <= 0xffff && in.Size <= 0xffffffff && in.Nlink <= 0xffff {
					return fmt.Errorf("extended inode although compact fits")
				}
				return nil
			}},
		{name: "noinline", args: []string{"-E", "noinline_data"}, mtime: exact,
			check: func(in *Inode, ext []Extent) error {
				for _, e := range ext {
					if e.Inline {
						return fmt.Errorf("inline extent with noinline_data: %+v", e)
					}
				}
				return nil
			}},
		// -x1: every xattr seen at least once goes to the shared area.
		{name: "xattr-shared-all", args: []string{"-x", "1"}, mtime: exact},
		{name: "chunk-4k", args: []string{"--chunksize=4096"}, mtime: exact,
			check: func(in *Inode, ext []Extent) error {
				if in.Size > 0 && in.Layout != LayoutChunkBased {
					return fmt.Errorf("layout %d, want chunk-based", in.Layout)
				}
				return nil
			}},
		{name: "chunk-64k", args: []string{"--chunksize=65536"}, mtime: exact,
			check: func(in *Inode, ext []Extent) error {
				if in.Size > 0 && in.Layout != LayoutChunkBased {
					return fmt.Errorf("layout %d, want chunk-based", in.Layout)
				}
				return nil
			}},
		// mkfs refuses force-inode-compact for owned/bigids (uid > 65535),
		// so this variant gets its own tree.
		{name: "force-compact", args: []string{"-E", "force-inode-compact", "-T", "1700000000"}, mtime: fixed(1700000000), noBigIDs: true,
			check: func(in *Inode, _ []Extent) error {
				if in.Extended {
					return fmt.Errorf("extended inode with force-inode-compact")
				}
				return nil
			}},
		{name: "force-extended", args: []string{"-E", "force-inode-extended"}, mtime: exact,
			check: func(in *Inode, _ []Extent) error {
				if !in.Extended {
					return fmt.Errorf("compact inode with force-inode-extended")
				}
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := src
			if tc.noBigIDs {
				src = t.TempDir()
				buildTree(t, src, treeOpts{})
				if err := os.Lchown(filepath.Join(src, "owned/bigids"), 1, 2); err != nil {
					t.Fatal(err)
				}
			}
			img := mkfsErofs(t, src, tc.args...)
			runCmd(t, "fsck.erofs", img)
			im, err := Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			n := compareTree(t, im, src, cmpOpts{mtime: tc.mtime, skipRootMeta: true})
			mnt := testmount.Erofs(t, img)
			compareTree(t, im, mnt, cmpOpts{inoIsNid: true})
			t.Logf("%d entries equal to the source and the kernel mount", n)
			if shared := sharedXattrInodes(t, im); shared == 0 {
				t.Error("no inode uses shared xattrs: the tree no longer exercises them")
			} else {
				t.Logf("%d inodes with shared xattrs", shared)
			}
			if tc.check != nil {
				checkRegular(t, im, tc.check)
			}
		})
	}
}

// sharedXattrInodes counts inodes whose xattrs include shared ones.
func sharedXattrInodes(t *testing.T, im *Image) int {
	t.Helper()
	n := 0
	err := im.Walk(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		nid, _ := EntryNid(d)
		if p == "." {
			nid = uint64(im.sb.RootNid)
		}
		in, err := im.inode(nid)
		if err != nil || in.xcount == 0 {
			return err
		}
		hdr := make([]byte, XattrIbodyHeaderSize)
		if err := im.cache.read(hdr, in.iloc+in.isize); err != nil {
			return err
		}
		if hdr[4] > 0 {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkRegular runs check on every regular file.
func checkRegular(t *testing.T, im *Image, check func(*Inode, []Extent) error) {
	t.Helper()
	err := im.Walk(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		in := fi.Sys().(*Inode)
		ext, err := im.Extents(in)
		if err != nil {
			return err
		}
		if err := check(in, ext); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReaderFSTest runs the standard library's fs.FS conformance checks.
func TestReaderFSTest(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	buildTree(t, src, treeOpts{})
	im, err := Open(mkfsErofs(t, src))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := fstest.TestFS(im, "small", "big", "links/orig", "deep", "link-short", "null"); err != nil {
		t.Fatal(err)
	}
}

// TestReaderBigDir: 100k entries in one directory (hundreds of directory
// blocks): listing is complete and sorted, and lookups binary-search to
// the right nid for every name (the kernel's st_ino is the nid).
func TestReaderBigDir(t *testing.T) {
	needRoot(t)
	if testing.Short() {
		t.Skip("100k files")
	}
	src := t.TempDir()
	const n = 100_000
	buildTree(t, src, treeOpts{bigDir: n})
	img := mkfsErofs(t, src, "-T", "1")
	im, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	ents, err := im.ReadDir("huge")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n {
		t.Fatalf("%d entries, want %d", len(ents), n)
	}
	mnt := testmount.Erofs(t, img)
	for i, e := range ents {
		want := fmt.Sprintf("f%06d", i)
		if e.Name() != want {
			t.Fatalf("entry %d is %q, want %q", i, e.Name(), want)
		}
		if i%997 != 0 {
			continue
		}
		fi, err := im.Lstat("huge/" + want)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(filepath.Join(mnt, "huge", want))
		if err != nil {
			t.Fatal(err)
		}
		if nid := fi.Sys().(*Inode).Nid; nid != st.Sys().(*syscall.Stat_t).Ino {
			t.Fatalf("%s: nid %d, kernel ino %d", want, nid, st.Sys().(*syscall.Stat_t).Ino)
		}
	}
	for _, miss := range []string{"f", "f0000000", "f099999x", "a", "zzz", "f050000.", "f0500000"} {
		if _, err := im.Lstat("huge/" + miss); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Lstat(huge/%s) = %v, want ErrNotExist", miss, err)
		}
	}
	compareTree(t, im, mnt, cmpOpts{inoIsNid: true})
}

// TestReaderFileAPI: fs.File of a regular file streams (Read, ReadAt,
// Seek) and never holds the file in memory.
func TestReaderFileAPI(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	content := bytes.Repeat([]byte("0123456789abcdef"), (64<<20)/16+7)
	if err := os.WriteFile(filepath.Join(src, "big"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--chunksize=8192"}} {
		im, err := Open(mkfsErofs(t, src, args...))
		if err != nil {
			t.Fatal(err)
		}
		f, err := im.Open("big")
		if err != nil {
			t.Fatal(err)
		}
		ra := f.(io.ReaderAt)
		buf := make([]byte, 10000)
		n, err := ra.ReadAt(buf, int64(len(content))-5000)
		if n != 5000 || err != io.EOF || !bytes.Equal(buf[:n], content[len(content)-5000:]) {
			t.Fatalf("ReadAt at the end: %d, %v", n, err)
		}
		sk := f.(io.Seeker)
		if off, err := sk.Seek(-100, io.SeekEnd); err != nil || off != int64(len(content))-100 {
			t.Fatalf("Seek: %d %v", off, err)
		}
		rest, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(rest, content[len(content)-100:]) {
			t.Fatalf("read after seek: %d bytes, %v", len(rest), err)
		}
		sk.Seek(0, io.SeekStart)
		var before, after runtimeMem
		before.read()
		h := &compareWriter{want: content}
		if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, make([]byte, 128<<10)); err != nil {
			t.Fatal(err)
		}
		after.read()
		if h.off != len(content) || h.bad {
			t.Fatalf("streamed %d bytes, mismatch %v", h.off, h.bad)
		}
		if grew := after.total - before.total; grew > 16<<20 {
			t.Fatalf("reading a %d MiB file allocated %d MiB", len(content)>>20, grew>>20)
		}
		f.Close()
		im.Close()
	}
}

// compareWriter checks streamed bytes against want without keeping them.
type compareWriter struct {
	want []byte
	off  int
	bad  bool
}

func (c *compareWriter) Write(p []byte) (int, error) {
	if c.off+len(p) > len(c.want) || !bytes.Equal(p, c.want[c.off:c.off+len(p)]) {
		c.bad = true
	}
	c.off += len(p)
	return len(p), nil
}

// TestReaderErrors: path errors are the fs ones, named after the path.
func TestReaderErrors(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	buildTree(t, src, treeOpts{})
	im, err := Open(mkfsErofs(t, src))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, tc := range []struct {
		op, name string
		want     error
	}{
		{"lstat", "nope", fs.ErrNotExist},
		{"lstat", "small/x", syscall.ENOTDIR},
		{"lstat", "/small", fs.ErrInvalid},
		{"lstat", "a/../small", fs.ErrInvalid},
		{"readdir", "small", syscall.ENOTDIR},
		{"readlink", "small", fs.ErrInvalid},
		{"open", "links/none", fs.ErrNotExist},
	} {
		var err error
		switch tc.op {
		case "lstat":
			_, err = im.Lstat(tc.name)
		case "readdir":
			_, err = im.ReadDir(tc.name)
		case "readlink":
			_, err = im.ReadLink(tc.name)
		case "open":
			_, err = im.Open(tc.name)
		}
		var pe *fs.PathError
		if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Path != tc.name {
			t.Errorf("%s(%q) = %v, want %v naming the path", tc.op, tc.name, err, tc.want)
		}
	}
	if _, err := Open(filepath.Join(src, "big")); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "magic") {
		t.Errorf("Open(not an image) = %v", err)
	}
}

// TestReaderCompactMtime: kernels ≥ 6.15 read a compact inode's mtime as
// the superblock build time plus the 32-bit offset stored where older
// formats had i_reserved; older writers leave it 0. A compact inode with a
// non-zero offset must read as the host kernel shows it.
func TestReaderCompactMtime(t *testing.T) {
	needRoot(t)
	img := smallImage(t, "-E", "force-inode-compact")
	in := rdInodeAt(t, img, "small")
	if in.Extended {
		t.Fatal("small is not a compact inode")
	}
	const offset = 86400*365 + 17
	binary.LittleEndian.PutUint32(img[in.iloc+12:], offset)
	fixChecksum(img)
	p := filepath.Join(t.TempDir(), "mtime.erofs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	fi, err := im.Lstat("small")
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Sys().(*Inode).Mtime; got != 1000+offset {
		t.Errorf("reader mtime %d, want build time 1000 + %d", got, offset)
	}
	st, err := os.Lstat(filepath.Join(testmount.Erofs(t, p), "small"))
	if err != nil {
		t.Fatal(err)
	}
	if !st.ModTime().Equal(fi.ModTime()) {
		t.Errorf("reader mtime %v, kernel %v", fi.ModTime(), st.ModTime())
	}
}
