package vmdk

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// fileSpec describes a test file: its size and where random data goes; the
// rest is a hole, so multi-GiB files cost nothing.
type fileSpec struct {
	size   int64
	chunks []int64 // offsets of 64 KiB random chunks
}

const chunk = 64 << 10

// TestQemuReadsDescriptor proves the descriptors are what qemu's vmdk driver
// expects: qemu-img info reads the format and the summed virtual size, and
// qemu-img convert -O raw yields exactly the concatenation of the files,
// including files split into several extents at the 2 GiB limit.
func TestQemuReadsDescriptor(t *testing.T) {
	qemuImg := lookTool(t, "qemu-img")
	for _, tc := range []struct {
		name  string
		files []fileSpec
	}{
		{"one sector", []fileSpec{{size: 512, chunks: []int64{-1}}}},
		{"small files", []fileSpec{
			{size: 4096, chunks: []int64{-1}},
			{size: 512 * 3, chunks: []int64{-1}},
			{size: 1 << 20, chunks: []int64{0, 1<<20 - chunk}},
		}},
		{"split over 2GiB", []fileSpec{
			{size: 8192, chunks: []int64{-1}},
			// Data on both sides of the 2 GiB extent boundary and at the end.
			{size: 2*gib + 8<<20, chunks: []int64{0, 2*gib - chunk/2, 2*gib + 4<<20, 2*gib + 8<<20 - chunk}},
			{size: 4096, chunks: []int64{-1}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var paths []string
			var total int64
			for i, fs := range tc.files {
				p := filepath.Join(dir, fmt.Sprintf("file %d.img", i)) // a space in the path too
				makeFile(t, p, fs)
				paths = append(paths, p)
				total += fs.size
			}
			files, err := FilesFromPaths(paths...)
			if err != nil {
				t.Fatal(err)
			}
			desc := filepath.Join(dir, "merged.vmdk")
			if err := WriteFile(desc, files); err != nil {
				t.Fatal(err)
			}

			out, err := exec.Command(qemuImg, "info", "--output=json", desc).CombinedOutput()
			if err != nil {
				t.Fatalf("qemu-img info: %v\n%s", err, out)
			}
			var info struct {
				Format      string `json:"format"`
				VirtualSize int64  `json:"virtual-size"`
			}
			if err := json.Unmarshal(out, &info); err != nil {
				t.Fatalf("qemu-img info output: %v\n%s", err, out)
			}
			if info.Format != "vmdk" || info.VirtualSize != total {
				t.Errorf("qemu-img info: format %q size %d, want vmdk %d", info.Format, info.VirtualSize, total)
			}

			raw := filepath.Join(dir, "out.raw")
			if out, err := exec.Command(qemuImg, "convert", "-f", "vmdk", "-O", "raw", desc, raw).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v\n%s", err, out)
			}
			compareConcat(t, raw, paths)
		})
	}
}

func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install qemu-utils): %v", name, err)
	}
	return p
}

// makeFile creates a sparse file of fs.size with random chunks at
// fs.chunks; offset -1 means "fill the whole file".
func makeFile(t *testing.T, path string, fs fileSpec) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(fs.size); err != nil {
		t.Fatal(err)
	}
	for _, off := range fs.chunks {
		n := int64(chunk)
		if off < 0 {
			off, n = 0, fs.size
		}
		buf := make([]byte, n)
		rand.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// span is a byte range [off, end) of the virtual disk.
type span struct{ off, end int64 }

// compareConcat checks that raw equals the concatenation of paths, reading
// only the regions where either side holds data (SEEK_DATA/SEEK_HOLE):
// outside them both read as zeros, so a 2 GiB sparse file costs a few reads.
func compareConcat(t *testing.T, raw string, paths []string) {
	t.Helper()
	var readers []io.ReaderAt
	var sizes []int64
	var spans []span
	var base int64
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		fi, _ := f.Stat()
		for _, s := range dataSpans(t, f, fi.Size()) {
			spans = append(spans, span{base + s.off, base + s.end})
		}
		readers = append(readers, f)
		sizes = append(sizes, fi.Size())
		base += fi.Size()
	}
	out, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	fi, _ := out.Stat()
	if fi.Size() != base {
		t.Fatalf("raw image is %d bytes, files total %d", fi.Size(), base)
	}
	spans = append(spans, dataSpans(t, out, fi.Size())...)
	concat := &concatReaderAt{readers, sizes}

	var compared int64
	want, got := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, s := range mergeSpans(spans) {
		for off := s.off; off < s.end; {
			n := min(int64(len(want)), s.end-off)
			if _, err := concat.ReadAt(want[:n], off); err != nil {
				t.Fatalf("read files at %d: %v", off, err)
			}
			if _, err := out.ReadAt(got[:n], off); err != nil {
				t.Fatalf("read raw at %d: %v", off, err)
			}
			if i := mismatch(want[:n], got[:n]); i >= 0 {
				t.Fatalf("raw image differs from the files at byte %d", off+int64(i))
			}
			off += n
			compared += n
		}
	}
	t.Logf("compared %d data bytes of a %d-byte disk", compared, base)
}

func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// dataSpans lists the data regions of f with SEEK_DATA/SEEK_HOLE.
func dataSpans(t *testing.T, f *os.File, size int64) []span {
	t.Helper()
	var spans []span
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %s: %v", f.Name(), err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE %s: %v", f.Name(), err)
		}
		spans = append(spans, span{d, h})
		off = h
	}
	return spans
}

func mergeSpans(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int { return int(min(max(a.off-b.off, -1), 1)) })
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && s.off <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, s.end)
			continue
		}
		out = append(out, s)
	}
	return out
}

// concatReaderAt reads across the concatenation of readers.
type concatReaderAt struct {
	r     []io.ReaderAt
	sizes []int64
}

func (c *concatReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for i, r := range c.r {
		if len(p) == 0 {
			break
		}
		if off >= c.sizes[i] {
			off -= c.sizes[i]
			continue
		}
		k := min(int64(len(p)), c.sizes[i]-off)
		if _, err := r.ReadAt(p[:k], off); err != nil {
			return n, err
		}
		n += int(k)
		p = p[k:]
		off = 0
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}
