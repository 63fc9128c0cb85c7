package erofs

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildTo runs BuildFSMeta into a new file and returns its bytes.
func buildTo(t *testing.T, out string, layers []string) (*FSMeta, []byte) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta, err := BuildFSMeta(context.Background(), f, layers)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != int(meta.Blocks)*BlockSize {
		t.Fatalf("fsmeta is %d bytes, Blocks says %d", len(b), meta.Blocks)
	}
	return meta, b
}

// TestBuildFSMetaDeterministic: the same stack gives the same bytes, and a
// pre-existing longer dst does not leak into the output.
func TestBuildFSMetaDeterministic(t *testing.T) {
	dir := t.TempDir()
	layers, err := genLayers(dir, 3, 3000)
	if err != nil {
		t.Fatal(err)
	}
	_, a := buildTo(t, filepath.Join(dir, "a"), layers)
	junk := filepath.Join(dir, "b")
	if err := os.WriteFile(junk, bytes.Repeat([]byte{0xAA}, len(a)*2), 0o644); err != nil {
		t.Fatal(err)
	}
	_, b := buildTo(t, junk, layers)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same stack differ")
	}
}

// TestBuildFSMetaReadBack reads the merged image with our reader, both
// with the layers as devices and as the flat concatenation, and checks
// block-mapped files, inline copies, rewrites and whiteouts.
func TestBuildFSMetaReadBack(t *testing.T) {
	dir := t.TempDir()
	layers, err := genLayers(dir, 2, 400)
	if err != nil {
		t.Fatal(err)
	}
	fsmeta := filepath.Join(dir, "fsmeta.erofs")
	meta, b := buildTo(t, fsmeta, layers)
	if meta.CopiedBytes == 0 {
		t.Error("no inline data copied: the generated layers should have some")
	}
	flat := filepath.Join(dir, "flat")
	for _, l := range layers {
		lb, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, lb...)
	}
	if err := os.WriteFile(flat, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// genLayers: file k%100 == 0 has a data block, 1..4 are inline; layer
	// 1's files 0..2 rewrite layer 0's 10..12; it whites out layer 0's 20.
	want := map[string]string{
		"d0000/f0000_0000000": "layer 0 file 0",
		"d0000/f0000_0000001": "inline 0/1",
		"d0000/f0000_0000010": "layer 1 file 0",
		"d0000/f0000_0000011": "inline 1/1",
		"d0000/f0001_0000100": "layer 1 file 100",
	}
	for name, im := range map[string]func() (*Image, error){
		"devices": func() (*Image, error) { return Open(fsmeta, layers...) },
		"flat":    func() (*Image, error) { return Open(flat) },
	} {
		t.Run(name, func(t *testing.T) {
			im, err := im()
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			for p, w := range want {
				got, err := fs.ReadFile(im, p)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(string(got), w) {
					t.Errorf("%s = %.40q, want prefix %q", p, got, w)
				}
			}
			if _, err := im.Lstat("d0000/f0000_0000020"); err == nil {
				t.Error("whited-out file is present")
			}
		})
	}
}

func TestBuildFSMetaRejects(t *testing.T) {
	dir := t.TempDir()
	layers, err := genLayers(dir, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	ragged := filepath.Join(dir, "ragged.erofs")
	b, _ := os.ReadFile(layers[0])
	if err := os.WriteFile(ragged, append(b, 1, 2, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	notEROFS := filepath.Join(dir, "zeros.erofs")
	if err := os.WriteFile(notEROFS, make([]byte, 2*BlockSize), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		layers []string
		want   string
	}{
		{"no layers", nil, "no layers"},
		{"missing", []string{filepath.Join(dir, "nope")}, "nope"},
		{"not a multiple of 4096", []string{layers[0], ragged}, "ragged.erofs"},
		{"not erofs", []string{notEROFS}, "zeros.erofs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(dir, "out"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = BuildFSMeta(context.Background(), f, tc.layers)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestBuildFSMetaCancelled(t *testing.T) {
	dir := t.TempDir()
	layers, err := genLayers(dir, 2, 100)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := BuildFSMeta(ctx, f, layers); err != context.Canceled {
		t.Errorf("error %v, want context.Canceled", err)
	}
}
