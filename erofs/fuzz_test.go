package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzConvertTar feeds arbitrary bytes to ConvertTar: it must never panic
// or hang, must fail with an "erofs:" error or produce an image that is a
// whole number of blocks with a valid superblock, and, once the project's
// reader exists (erofs/reader.go), every file of an accepted image must be
// readable through it.
func FuzzConvertTar(f *testing.F) {
	dir := f.TempDir()
	for i, entries := range [][]tarEntry{
		{dirEnt("d/", 0o755), reg("d/f", 0o644, "data"), hardlink("d/h", "d/f"), symlink("s", "d")},
		{reg("a/.wh.b", 0o644, ""), reg("a/.wh..wh..opq", 0o644, ""), reg("x", 0o600, strings.Repeat("z", 5000))},
		{with(reg("x", 0o644, "v"), xattrsPAX("user.a", "b", "trusted.overlay.opaque", "y")), symlink("l", "x"), reg("l/../y", 0o644, "")},
		{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "c", Devmajor: 1, Devminor: 3}}, {hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p"}}},
		{reg(strings.Repeat("long/", 40)+"f", 0o644, "gnu"), dirEnt("./", 0o700), reg("f", 0o644, "1"), reg("f", 0o644, "2")},
		// The corner cases of TestLayerSemantics: times before 1970 (a
		// negative build time), whiteouts next to their own layer's
		// entries in both orders, owner (uid_t)-1.
		{with(reg("old", 0o644, "o"), func(h *tar.Header) { h.ModTime = time.Unix(-5364662400, 0) }),
			with(dirEnt("d/", 0o755), func(h *tar.Header) { h.ModTime = time.Unix(-1, 500000000) })},
		{reg("d/y", 0o644, "own"), reg("d/.wh.y", 0o644, ""), reg(".wh.e", 0o644, ""), reg("e/a", 0o644, "A"),
			dirEnt("g/", 0o755), reg(".wh.g", 0o644, "")},
		{with(reg("nobody", 0o644, "x"), owner(1<<32-1, 1<<32-1))},
	} {
		p := filepath.Join(dir, "seed.tar")
		format := tar.FormatPAX
		if i == 4 {
			format = tar.FormatGNU
		}
		writeTar(f, p, format, entries)
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// One image file per process, in tmpfs when there is one: a disk file
	// created and removed per input made syscalls the cost of fuzzing.
	// ConvertTar truncates it first.
	tmp := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		tmp = "/dev/shm"
	}
	img, err := os.CreateTemp(tmp, "fuzz-convert-*.erofs")
	if err != nil {
		f.Fatal(err)
	}
	os.Remove(img.Name()) // unlinked: nothing is left behind, even on a crash
	f.Cleanup(func() { img.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		stats, err := ConvertTar(context.Background(), img, bytes.NewReader(data), ConvertOptions{MaxImageSize: 64 << 20})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "erofs: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		fi, err := img.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != stats.ImageBytes || fi.Size()%BlockSize != 0 || fi.Size() < BlockSize {
			t.Fatalf("image of %d bytes, stats %d", fi.Size(), stats.ImageBytes)
		}
		var sb Superblock
		buf := make([]byte, SuperblockSize)
		if _, err := img.ReadAt(buf, SuperblockOffset); err != nil {
			t.Fatal(err)
		}
		if err := Unmarshal(buf, &sb); err != nil || sb.Magic != Magic || uint64(sb.Blocks)*BlockSize != uint64(fi.Size()) ||
			sb.MetaBlkAddr >= sb.Blocks || sb.Inos != uint64(stats.Inodes) {
			t.Fatalf("superblock %+v, %v", sb, err)
		}
		checkWithReader(t, img)
	})
}

// checkWithReader opens the image with the project's reader and reads every
// file; it does nothing while the reader is still a placeholder.
func checkWithReader(t *testing.T, img io.ReaderAt) {
	im, err := NewImage(img)
	if err != nil {
		if strings.Contains(err.Error(), "not implemented") {
			return
		}
		t.Fatalf("reader rejects the image: %v", err)
	}
	defer im.Close()
	err = fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !utf8.ValidString(p) {
			// io/fs paths must be UTF-8, so the reader's fs.FS cannot
			// name what lies below (the kernel and fsck.erofs read such
			// names fine: the corpus keeps an input that has one).
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			b, err := fs.ReadFile(im, p)
			if err != nil {
				return err
			}
			if fi, err := d.Info(); err != nil || int64(len(b)) != fi.Size() {
				return errors.New(p + ": size mismatch")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the image back: %v", err)
	}
}
