package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzBuildFSMeta feeds BuildFSMeta two layers made from fuzzed bytes:
// each is either a tar converted by ConvertTar (the inputs the snapshotter
// really sees) or, when its bit in raw is set, the bytes themselves as a
// layer image (a corrupt or hostile layer file). The layers are stacked as
// [a], [a, b] or [b, a] (bits 2-3 of raw). BuildFSMeta must never panic or
// hang, and must either fail with an "erofs:" error or write an image the
// reader walks fully, reading every file, link and xattr, with the layers
// as devices and as the flat concatenation alike. When the stack is one
// converted tar, the merged tree must also equal that layer's tree.
func FuzzBuildFSMeta(f *testing.F) {
	tmp := f.TempDir()
	seedTar := func(entries ...tarEntry) []byte {
		p := filepath.Join(tmp, "seed.tar")
		writeTar(f, p, tar.FormatPAX, entries)
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	base := seedTar(dirEnt("d/", 0o755), reg("d/f", 0o644, "data"), reg("d/g", 0o600, strings.Repeat("g", 5000)),
		hardlink("d/h", "d/f"), symlink("s", "d"), dirEnt("o/", 0o755), reg("o/keep", 0o644, "k"),
		with(reg("x", 0o644, "x"), xattrsPAX("user.a", "b")))
	upper := seedTar(reg("d/.wh.f", 0o644, ""), reg("o/.wh..wh..opq", 0o644, ""), reg("o/new", 0o644, "n"),
		reg("d/g", 0o644, strings.Repeat("h", 9000)), dirEnt("x/", 0o700), reg("x/y", 0o644, ""))
	f.Add(base, upper, uint8(0<<2))
	f.Add(base, upper, uint8(1<<2))
	f.Add(base, upper, uint8(2<<2))
	// Real mkfs.erofs images (the FuzzReader seeds) as raw layers.
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzReader", "seed-*"))
	for i, s := range seeds {
		img, err := readCorpusBytes(s)
		if err != nil {
			continue // another corpus format: that target's business
		}
		f.Add(img, upper, uint8(1|uint8(i%3)<<2))
	}

	// One scratch dir per process, in tmpfs when there is one.
	root := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		root = "/dev/shm"
	}
	dir, err := os.MkdirTemp(root, "fuzz-fsmeta-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })

	f.Fuzz(func(t *testing.T, a, b []byte, raw uint8) {
		var layers []string
		for i, in := range [][]byte{a, b} {
			p := filepath.Join(dir, fmt.Sprintf("layer%d.erofs", i))
			if !fuzzLayer(t, p, in, raw&(1<<i) != 0) {
				return // the tar was rejected: FuzzConvertTar covers that
			}
			layers = append(layers, p)
		}
		switch raw >> 2 & 3 {
		case 0:
			layers = layers[:1]
		case 2:
			layers[0], layers[1] = layers[1], layers[0]
		}
		out := filepath.Join(dir, "fsmeta.erofs")
		dst, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		if _, err := BuildFSMeta(context.Background(), dst, layers); err != nil {
			if !strings.HasPrefix(err.Error(), "erofs: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		im, err := Open(out, layers...)
		if err != nil {
			t.Fatalf("reader rejects the fsmeta BuildFSMeta wrote: %v", err)
		}
		viaDevices := walkManifest(t, im, false)
		im.Close()

		flat := filepath.Join(dir, "flat.erofs")
		if err := concatFiles(flat, append([]string{out}, layers...)); err != nil {
			t.Fatal(err)
		}
		fim, err := Open(flat)
		if err != nil {
			t.Fatalf("reader rejects the flat concatenation: %v", err)
		}
		viaFlat := walkManifest(t, fim, false)
		fim.Close()
		if !slices.Equal(viaDevices, viaFlat) {
			t.Fatalf("devices and flat views differ:\n%s\n---\n%s", strings.Join(viaDevices, "\n"), strings.Join(viaFlat, "\n"))
		}

		if len(layers) == 1 && raw&1 == 0 {
			lim, err := Open(layers[0])
			if err != nil {
				t.Fatalf("reader rejects the converted layer: %v", err)
			}
			want := walkManifest(t, lim, true)
			lim.Close()
			if !slices.Equal(want, viaDevices) {
				t.Fatalf("one-layer fsmeta differs from its layer:\n%s\n---\n%s", strings.Join(want, "\n"), strings.Join(viaDevices, "\n"))
			}
		}
	})
}

// fuzzLayer writes the layer image for one fuzz input to p: the bytes
// themselves when raw, else the ConvertTar image of them. It reports false
// when ConvertTar rejects the tar.
func fuzzLayer(t *testing.T, p string, in []byte, raw bool) bool {
	if raw {
		if err := os.WriteFile(p, in, 0o644); err != nil {
			t.Fatal(err)
		}
		return true
	}
	img, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, err = ConvertTar(context.Background(), img, bytes.NewReader(in), ConvertOptions{MaxImageSize: 16 << 20})
	return err == nil
}

// walkManifest walks the whole image and returns one line per entry: path,
// mode, owner, size, nlink-independent content (a hash of the data, the
// link target) and xattrs. Any error reading an image BuildFSMeta accepted
// fails the test. Hardlinks are not compared by nid: fsmeta may renumber.
// With whiteouts, overlay whiteouts (0:0 char devices) are left out, as
// the merged view of a one-layer stack has none.
func walkManifest(t *testing.T, im *Image, whiteouts bool) []string {
	var lines []string
	const maxEntries = 5000
	err := im.Walk(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if len(lines) > maxEntries {
			return fs.SkipAll
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		in := fi.Sys().(*Inode)
		if whiteouts && in.Mode&0o170000 == 0o020000 && in.Rdev == 0 {
			return nil
		}
		content := ""
		switch {
		case fi.Mode().IsRegular():
			f, err := im.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, io.LimitReader(f, 32<<20))
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if uint64(n) != min(in.Size, 32<<20) {
				return fmt.Errorf("%s: read %d of %d bytes", p, n, in.Size)
			}
			content = fmt.Sprintf("%x", h.Sum(nil)[:8])
		case fi.Mode()&fs.ModeSymlink != 0:
			if content, err = im.ReadLink(p); err != nil {
				return err
			}
		}
		xs := make([]string, 0, len(in.Xattrs))
		for _, x := range in.Xattrs {
			if !strings.HasPrefix(x.Name, overlayXattrPrefix) { // fsmeta applies and drops overlay xattrs
				xs = append(xs, fmt.Sprintf("%s=%q", x.Name, x.Value))
			}
		}
		slices.Sort(xs)
		size := in.Size
		if fi.IsDir() {
			size = 0 // a directory's size depends on its dirent packing, and whiteouts drop names
		}
		lines = append(lines, fmt.Sprintf("%q %o %d:%d %d rdev=%d %s %s", p, in.Mode, in.UID, in.GID, size, in.Rdev, content, strings.Join(xs, ",")))
		return nil
	})
	if err != nil {
		t.Fatalf("walking an image BuildFSMeta accepted: %v", err)
	}
	return lines
}

func concatFiles(dst string, srcs []string) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	for _, s := range srcs {
		in, err := os.Open(s)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		in.Close()
		if err != nil {
			return err
		}
	}
	return out.Close()
}

// readCorpusBytes decodes a one-[]byte "go test fuzz v1" corpus file.
func readCorpusBytes(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	body, ok := strings.CutPrefix(string(b), "go test fuzz v1\n[]byte(")
	if !ok {
		return nil, fmt.Errorf("%s: not a []byte corpus file", p)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimSpace(body), ")"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return []byte(s), nil
}
