package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// Tests that need a fresh process (peak RSS, a different environment)
// re-exec the test binary into TestConvertChild with EROFS_CONVERT_CHILD set.

const childEnv = "EROFS_CONVERT_CHILD"

// runChild runs TestConvertChild in a new process with mode and extra env,
// and returns its "RESULT ..." line.
func runChild(t *testing.T, mode string, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestConvertChild$", "-test.v")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			return r
		}
	}
	t.Fatalf("child %s printed no result:\n%s", mode, out)
	return ""
}

// TestConvertChild is the child side; it does nothing in a normal run.
func TestConvertChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("only runs re-executed by another test")
	}
	kind, arg, _ := strings.Cut(mode, ":")
	switch kind {
	case "hash": // convert the tar at arg, print the image's sha256
		src, err := os.Open(arg)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst, err := os.CreateTemp(t.TempDir(), "img")
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		if _, err := ConvertTar(context.Background(), dst, src, ConvertOptions{}); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("RESULT %s\n", fileSHA(t, dst.Name()))
	case "memory": // convert a generated layer streamed through a pipe, print peak RSS
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(generateLayer(pw)) }()
		dst, err := os.CreateTemp(t.TempDir(), "img")
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		stats, err := ConvertTar(context.Background(), dst, pr, ConvertOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("RESULT %d %d %d\n", peakRSS(t), stats.DataBytes, stats.Entries)
	default:
		t.Fatalf("unknown child mode %q", mode)
	}
}

// generateLayer writes a ~4 GiB layer: three 1.2 GiB files and 100k small
// ones spread over 4 directories. Big files are zero but for a stamp per
// MiB, so the image stays mostly holes on disk while every byte still goes
// through the converter.
func generateLayer(w io.Writer) error {
	tw := tar.NewWriter(w)
	mt := time.Unix(1700000000, 0)
	big := make([]byte, 1<<20)
	for i := range 3 {
		size := int64(1200) << 20
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("big/%d", i), Mode: 0o644, Size: size, ModTime: mt}); err != nil {
			return err
		}
		for off := int64(0); off < size; off += int64(len(big)) {
			copy(big, fmt.Sprintf("file %d offset %d", i, off))
			if _, err := tw.Write(big); err != nil {
				return err
			}
		}
	}
	small := bytes.Repeat([]byte("small file content "), 200) // 3.8 KB
	for i := range 100_000 {
		name := fmt.Sprintf("d%d/some/nested/file-%06d.txt", i%4, i)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(small)), ModTime: mt}); err != nil {
			return err
		}
		if _, err := tw.Write(small); err != nil {
			return err
		}
	}
	return tw.Close()
}

// peakRSS returns this process's peak resident set in bytes (VmHWM).
func peakRSS(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

func fileSHA(t testing.TB, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestConvertMemory: converting a generated 4 GiB layer with 100k files,
// streamed through a pipe, keeps the converter's peak RSS under 64 MiB.
func TestConvertMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 4 GiB through the converter")
	}
	var rss, data, entries int64
	if _, err := fmt.Sscan(runChild(t, "memory"), &rss, &data, &entries); err != nil {
		t.Fatal(err)
	}
	t.Logf("peak RSS %.1f MiB converting %d entries, %.2f GiB of data", float64(rss)/(1<<20), entries, float64(data)/(1<<30))
	if data < 3<<30+700<<20 || entries != 100_003 {
		t.Fatalf("converted %d bytes in %d entries: generator broken", data, entries)
	}
	if rss > 64<<20 {
		t.Errorf("peak RSS %d MiB, want < 64 MiB", rss>>20)
	}
}

// TestConvertDeterministic: the same tar gives byte-identical images, in
// this process and in children with another time zone, locale and GC
// setting (nothing may depend on the wall clock, environment or map order).
func TestConvertDeterministic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "l.tar")
	var entries []tarEntry
	entries = append(entries, dirEnt("./", 0o755))
	for i := range 300 {
		name := fmt.Sprintf("d%d/f%d", i%7, i)
		e := reg(name, 0o644, strings.Repeat("x", i*37))
		e.hdr.ModTime = time.Unix(1700000000+int64(i%5), int64(i))
		e = with(e, xattrsPAX(fmt.Sprintf("user.k%d", i%3), "v", "user.z", "w", "trusted.a", "b"))
		entries = append(entries, e, hardlink(name+".hl", name), symlink(name+".sl", "f0"))
	}
	entries = append(entries, reg("d0/.wh.gone", 0o644, ""), reg("d1/.wh..wh..opq", 0o644, ""))
	// Several data buffers' worth, so flushes happen mid-conversion.
	entries = append(entries, reg("big", 0o644, strings.Repeat("0123456789abcdef", 5<<16)))
	writeTar(t, p, tar.FormatPAX, entries)

	want := runChild(t, "hash:"+p)
	for i, env := range [][]string{
		{"TZ=Pacific/Chatham", "LANG=C"},
		{"TZ=UTC", "LC_ALL=de_DE.UTF-8", "GOGC=1", "GOMAXPROCS=1"},
	} {
		if got := runChild(t, "hash:"+p, env...); got != want {
			t.Errorf("run %d with %v: image sha256 %s, first run %s", i+1, env, got, want)
		}
	}
	// and in this process, twice
	for range 2 {
		img, _ := convertFile(t, p, t.TempDir())
		if got := fileSHA(t, img); got != want {
			t.Errorf("in-process image sha256 %s, child %s", got, want)
		}
	}
	// StartWriteback changes when the bytes reach the disk, never which.
	src, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	img := filepath.Join(t.TempDir(), "wb.erofs")
	dst, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	stats, err := ConvertTar(context.Background(), dst, src, ConvertOptions{StartWriteback: true})
	if err != nil {
		t.Fatal(err)
	}
	if stats.DataBytes < 2*dataBufSize {
		t.Fatalf("only %d bytes of data: the writer flushed no full buffer", stats.DataBytes)
	}
	if got := fileSHA(t, img); got != want {
		t.Errorf("image with StartWriteback: sha256 %s, without %s", got, want)
	}
}

// TestConvertTarHugeFile: a regular file over 4 GiB (extended inode, 64-bit
// size, data past block 2^20) streamed through a pipe reads back right
// through the kernel at its start, across the 4 GiB boundary and at its end.
func TestConvertTarHugeFile(t *testing.T) {
	testmount.RequireRoot(t)
	if testing.Short() {
		t.Skip("streams 4.5 GiB through the converter")
	}
	const size = int64(4)<<30 + 512<<20 + 123
	stamp := func(off int64) []byte { return []byte(fmt.Sprintf("<stamp at %d>", off)) }
	stamps := []int64{0, 1<<32 - 10, 1<<32 + 100, size - 64} // the second crosses 4 GiB
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "huge", Mode: 0o644, Size: size, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX})
		buf := make([]byte, 1<<20)
		for off := int64(0); off < size && err == nil; off += int64(len(buf)) {
			chunk := buf[:min(int64(len(buf)), size-off)]
			clear(chunk)
			for _, s := range stamps { // the part of each stamp inside this chunk
				st := stamp(s)
				for i := max(s, off); i < min(s+int64(len(st)), off+int64(len(chunk))); i++ {
					chunk[i-off] = st[i-s]
				}
			}
			_, err = tw.Write(chunk)
		}
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "after", Mode: 0o644, Size: 5, ModTime: time.Unix(1700000000, 0)})
		}
		if err == nil {
			_, err = tw.Write([]byte("after"))
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	img := filepath.Join(t.TempDir(), "huge.erofs")
	dst, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := ConvertTar(context.Background(), dst, pr, ConvertOptions{}); err != nil {
		t.Fatal(err)
	}
	mnt := testmount.Erofs(t, img)
	f, err := os.Open(filepath.Join(mnt, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Size() != size {
		t.Fatalf("size %d, want %d", fi.Size(), size)
	}
	for _, s := range stamps {
		want := stamp(s)
		got := make([]byte, len(want))
		if _, err := f.ReadAt(got, s); err != nil && err != io.EOF || !bytes.Equal(got, want) {
			t.Errorf("at %d: %q, %v", s, got, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "after")); err != nil || string(b) != "after" {
		t.Errorf("file after the huge one: %q, %v", b, err)
	}
}

// TestWriterHasNoClock backs the determinism test statically: Go programs
// ignore libfaketime, so instead no writer source may import a clock or a
// random source (nids, build time and uuid all come from the input).
func TestWriterHasNoClock(t *testing.T) {
	fset := token.NewFileSet()
	for _, name := range []string{"build.go", "chunk.go", "convert.go", "dir.go", "dirent.go", "inode.go", "meta.go", "path.go", "tar.go", "tree.go", "writer.go", "xattr.go"} {
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			switch p := strings.Trim(imp.Path.Value, `"`); p {
			case "time", "math/rand", "math/rand/v2", "crypto/rand":
				t.Errorf("%s imports %s: the image would depend on more than its input", name, p)
			}
		}
	}
}
