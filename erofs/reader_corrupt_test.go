package erofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Corrupt images: each case damages one structure of a valid mkfs.erofs
// image and checks the reader reports it (wrapping ErrCorrupt, naming the
// problem) instead of panicking, looping or returning wrong data.

// smallImage builds a small image with a few of everything and returns its
// bytes.
func smallImage(t testing.TB, args ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(mkfsErofs(t, smallTree(t), append([]string{"-T", "1000"}, args...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// smallTree makes the source of smallImage.
func smallTree(t testing.TB) string {
	t.Helper()
	src := t.TempDir()
	w := func(name, data string) {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w("small", "hello")
	w("sub/a", strings.Repeat("a", 5000))
	w("sub/b", "b")
	w("xattr", "x")
	w("zlast", "z")
	if err := unix.Lsetxattr(filepath.Join(src, "xattr"), "user.k", []byte("value"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("small", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	return src
}

// walkAll reads everything in the image (entries, xattrs, links, data) and
// returns every error met.
func walkAll(im *Image) error {
	var errs []error
	err := im.Walk(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if _, err := im.Extents(fi.Sys().(*Inode)); err != nil {
			errs = append(errs, err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			_, err = im.ReadLink(p)
		case fi.Mode().IsRegular():
			var f fs.File
			if f, err = im.Open(p); err == nil {
				_, err = io.Copy(io.Discard, f)
			}
		case fi.IsDir():
			_, err = im.ReadDir(p)
		}
		if err != nil {
			errs = append(errs, err)
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// rdInodeAt returns the reader's view of the inode at name.
func rdInodeAt(t testing.TB, img []byte, name string) *imgInode {
	t.Helper()
	im, err := NewImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := im.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	in, err := im.inode(fi.Sys().(*Inode).Nid)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// rootDirStart returns the image offset of the root directory's first
// (here only) block, inline or not: dirent name offsets count from there.
func rootDirStart(t *testing.T, img []byte) int64 {
	t.Helper()
	im, err := NewImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	root, err := im.inode(uint64(im.sb.RootNid))
	if err != nil {
		t.Fatal(err)
	}
	e, err := im.mapAt(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	return int64(e.Physical)
}

// direntOffset returns the image offset of the dirent of name in the root
// directory.
func direntOffset(t *testing.T, img []byte, name string) int64 {
	t.Helper()
	im, err := NewImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	root, err := im.inode(uint64(im.sb.RootNid))
	if err != nil {
		t.Fatal(err)
	}
	ents, err := im.dirBlock(root, 0, make([]byte, BlockSize))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ents {
		if d.name == name {
			return rootDirStart(t, img) + int64(i)*DirentSize
		}
	}
	t.Fatalf("%s not in the root directory", name)
	return 0
}

func TestReaderCorrupt(t *testing.T) {
	needRoot(t)
	base := smallImage(t)
	for _, tc := range []struct {
		name  string
		edit  func(t *testing.T, b []byte) []byte
		check func(t *testing.T, im *Image, openErr error)
		want  string // in the error text
		isErr error  // errors.Is target (default ErrCorrupt)
		raw   bool   // keep the superblock checksum as the edit left it
	}{
		{name: "magic", want: "magic", raw: true, edit: func(t *testing.T, b []byte) []byte {
			b[SuperblockOffset] ^= 1
			return b
		}},
		{name: "checksum", want: "checksum", raw: true, edit: func(t *testing.T, b []byte) []byte {
			b[SuperblockOffset+64] ^= 1 // volume name
			return b
		}},
		{name: "root-nid", want: "nid 65535", edit: func(t *testing.T, b []byte) []byte {
			binary.LittleEndian.PutUint16(b[SuperblockOffset+14:], 0xffff)
			fixChecksum(b)
			return b
		}},
		{name: "truncated", want: "end of the device", edit: func(t *testing.T, b []byte) []byte {
			in := rdInodeAt(t, b, "sub/a")
			return b[:in.rawU*BlockSize+100] // cut inside sub/a's data
		}},
		{name: "dir-cycle", want: "reached twice", edit: func(t *testing.T, b []byte) []byte {
			off := direntOffset(t, b, "sub")
			var sb Superblock
			Unmarshal(b[SuperblockOffset:], &sb)
			binary.LittleEndian.PutUint64(b[off:], uint64(sb.RootNid))
			return b
		}, check: func(t *testing.T, im *Image, _ error) {
			if _, err := im.Lstat("sub/sub/small"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "cycle") {
				t.Errorf("Lstat through the cycle: %v", err)
			}
		}},
		{name: "bad-mode", want: "bogus mode", edit: func(t *testing.T, b []byte) []byte {
			in := rdInodeAt(t, b, "small")
			binary.LittleEndian.PutUint16(b[in.iloc+4:], 0o170644)
			return b
		}},
		{name: "ftype-mismatch", want: "dirent file type", edit: func(t *testing.T, b []byte) []byte {
			off := direntOffset(t, b, "small")
			b[off+10] = FTFifo
			return b
		}},
		{name: "name-order", want: "out of order", edit: func(t *testing.T, b []byte) []byte {
			// Rename the last entry "zlast" to "aaaaa": now last but smallest.
			off := direntOffset(t, b, "zlast")
			nameoff := binary.LittleEndian.Uint16(b[off+8:])
			copy(b[rootDirStart(t, b)+int64(nameoff):], "aaaaa")
			return b
		}},
		{name: "xattr-overrun", want: "overruns", edit: func(t *testing.T, b []byte) []byte {
			in := rdInodeAt(t, b, "xattr")
			entry := in.iloc + in.isize + XattrIbodyHeaderSize
			binary.LittleEndian.PutUint16(b[entry+2:], 60000) // e_value_size
			return b
		}},
		{name: "inline-cross-block", want: "crosses a block boundary", edit: func(t *testing.T, b []byte) []byte {
			in := rdInodeAt(t, b, "small")
			if in.Layout != LayoutFlatInline {
				t.Fatalf("small has layout %d", in.Layout)
			}
			binary.LittleEndian.PutUint32(b[in.iloc+8:], BlockSize-1) // i_size
			return b
		}},
		{name: "huge-dir-size", want: "past the end of the device", edit: func(t *testing.T, b []byte) []byte {
			// 4 GiB of "directory": the walk fails at the first bad block
			// instead of reading (or allocating for) the rest.
			in := rdInodeAt(t, b, "sub")
			binary.LittleEndian.PutUint32(b[in.iloc+8:], 0xfffffff0)
			return b
		}, check: func(t *testing.T, im *Image, _ error) {
			var before, after runtimeMem
			before.read()
			if _, err := im.ReadDir("sub"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("ReadDir: %v", err)
			}
			after.read()
			if grew := after.total - before.total; grew > 1<<20 {
				t.Errorf("ReadDir of a corrupt 4 GiB directory allocated %d bytes", grew)
			}
		}},
		{name: "huge-hole-file", edit: func(t *testing.T, b []byte) []byte {
			// A 4 GiB file of holes (FLAT_PLAIN at NULL_ADDR) is valid and
			// streams without buffering.
			in := rdInodeAt(t, b, "small")
			binary.LittleEndian.PutUint16(b[in.iloc:], InodeFormat(false, LayoutFlatPlain))
			binary.LittleEndian.PutUint32(b[in.iloc+8:], 0xfffffff0)
			binary.LittleEndian.PutUint32(b[in.iloc+16:], NullAddr)
			return b
		}, check: func(t *testing.T, im *Image, _ error) {
			f, err := im.Open("small")
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtimeMem
			before.read()
			n, err := io.CopyN(io.Discard, f, 64<<20)
			after.read()
			if err != nil || n != 64<<20 {
				t.Fatalf("read %d: %v", n, err)
			}
			if grew := after.total - before.total; grew > 1<<20 {
				t.Errorf("reading 64 MiB of holes allocated %d bytes", grew)
			}
			ext, err := im.Extents(f.(*imgFile).info.ino)
			if err != nil || len(ext) != 1 || !ext[0].Hole || ext[0].Length != 0xfffffff0 {
				t.Errorf("extents %+v %v", ext, err)
			}
		}},
		{name: "compressed", want: "compressed inode", isErr: errors.ErrUnsupported, edit: func(t *testing.T, b []byte) []byte {
			in := rdInodeAt(t, b, "small")
			binary.LittleEndian.PutUint16(b[in.iloc:], InodeFormat(false, LayoutCompressedFull))
			return b
		}, check: func(t *testing.T, im *Image, _ error) {
			if _, err := im.Lstat("small"); err != nil {
				t.Errorf("Lstat of a compressed file: %v", err)
			}
			_, err := im.Open("small")
			if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "at small") {
				t.Errorf("Open of a compressed file: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(t, bytes.Clone(base))
			if !tc.raw {
				// Inodes share block 0 with the superblock here, and its
				// checksum covers them: re-sign, as a malicious image would.
				fixChecksum(b)
			}
			im, err := NewImage(bytes.NewReader(b))
			if tc.want == "" {
				// A valid edit: only the check decides.
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, im, nil)
				return
			}
			if err == nil {
				err = walkAll(im)
			}
			target := tc.isErr
			if target == nil {
				target = ErrCorrupt
			}
			if !errors.Is(err, target) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %v mentioning %q", err, target, tc.want)
			}
			t.Log(err)
			if tc.check != nil {
				tc.check(t, im, err)
			}
		})
	}
}
