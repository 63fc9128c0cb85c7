package main

import (
	"archive/tar"
	"bytes"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// smallLayers writes two layer tars (a base and a change with a whiteout)
// and returns their paths.
func smallLayers(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, files := range []map[string]string{
		{"etc/os-release": "ID=test\n", "bin/tool": strings.Repeat("x", 100000)},
		{"etc/.wh.os-release": "", "data/new": "new\n"},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, name := range slices.Sorted(maps.Keys(files)) {
			must(t, "tar header", tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}))
			_, err := tw.Write([]byte(files[name]))
			must(t, "tar data", err)
		}
		must(t, "tar close", tw.Close())
		p := filepath.Join(dir, string(rune('1'+i))+".tar")
		must(t, "write layer", os.WriteFile(p, buf.Bytes(), 0o644))
		paths = append(paths, p)
	}
	return paths
}

func buildArchive(t *testing.T, layers []string, compression, out string) {
	t.Helper()
	args := []string{"-o", out, "-name", "docker.io/library/erofs-test:unit", "-compression", compression}
	for i, l := range layers {
		args = append(args, "-layer", l, "-history", "layer "+string(rune('1'+i)))
	}
	must(t, "oci "+compression, ociCmd(args))
}

func TestImageArchiveRoundTrip(t *testing.T) {
	layers := smallLayers(t)
	for _, tc := range []struct{ compression, mediaType string }{
		{"gzip", ocispec.MediaTypeImageLayerGzip},
		{"zstd", ocispec.MediaTypeImageLayerZstd},
	} {
		t.Run(tc.compression, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
			buildArchive(t, layers, tc.compression, a)
			buildArchive(t, layers, tc.compression, b)
			da, _ := os.ReadFile(a)
			db, _ := os.ReadFile(b)
			if !bytes.Equal(da, db) {
				t.Fatal("two builds of the same archive differ")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 2 {
				t.Fatalf("temp files left next to the archive: %v", ents)
			}
			rep, err := verifyArchive(a, layers)
			must(t, "verify", err)
			if rep.Name != "docker.io/library/erofs-test:unit" || len(rep.Layers) != 2 {
				t.Fatalf("report %+v", rep)
			}
			for i, l := range rep.Layers {
				fi, _ := os.Stat(layers[i])
				if l.MediaType != tc.mediaType || l.TarSize != fi.Size() || l.Entries != 2 {
					t.Errorf("layer %d: %+v (tar %d bytes)", i+1, l, fi.Size())
				}
			}
			if rep.Config.History[1].CreatedBy != "layer 2" || rep.Config.Created == nil {
				t.Errorf("config history/created: %+v", rep.Config)
			}
		})
	}
}

// rewriteArchive copies the archive at src to a new file, letting edit
// change or drop (nil) each entry's data, or append entries at the end.
func rewriteArchive(t *testing.T, src string, edit func(name string, data []byte) []byte, extra map[string][]byte) string {
	t.Helper()
	f, err := os.Open(src)
	must(t, "open", err)
	defer f.Close()
	out := filepath.Join(t.TempDir(), "edited.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, "read", err)
		data, err := io.ReadAll(tr)
		must(t, "read", err)
		if h.Typeflag == tar.TypeReg {
			if data = edit(h.Name, data); data == nil {
				continue
			}
			h.Size = int64(len(data))
		}
		must(t, "write", tw.WriteHeader(h))
		_, err = tw.Write(data)
		must(t, "write", err)
	}
	for name, data := range extra {
		must(t, "write", tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}))
		_, err := tw.Write(data)
		must(t, "write", err)
	}
	must(t, "close", tw.Close())
	must(t, "write", os.WriteFile(out, buf.Bytes(), 0o644))
	return out
}

func TestVerifyArchiveRejects(t *testing.T) {
	layers := smallLayers(t)
	good := filepath.Join(t.TempDir(), "good.tar")
	buildArchive(t, layers, "gzip", good)
	rep, err := verifyArchive(good, layers)
	must(t, "verify good", err)
	layer1 := "blobs/sha256/" + rep.Layers[0].Blob.Encoded()

	same := func(_ string, d []byte) []byte { return d }
	tests := []struct {
		name    string
		edit    func(name string, data []byte) []byte
		extra   map[string][]byte
		layers  []string
		wantErr string
	}{
		{"corrupt layer blob", func(n string, d []byte) []byte {
			if n == layer1 {
				d = append([]byte(nil), d...)
				d[len(d)/2] ^= 0xff
			}
			return d
		}, nil, nil, "does not match its digest"},
		{"missing index", func(n string, d []byte) []byte {
			if n == "index.json" {
				return nil
			}
			return d
		}, nil, nil, "no entry index.json"},
		{"wrong layout version", func(n string, d []byte) []byte {
			if n == "oci-layout" {
				return []byte(`{"imageLayoutVersion":"2.0.0"}`)
			}
			return d
		}, nil, nil, "oci-layout version"},
		{"unreferenced blob", same, map[string][]byte{"blobs/sha256/" + strings.Repeat("ab", 32): []byte("junk")}, nil, "unreferenced blob"},
		{"other layers expected", same, nil, []string{layers[1], layers[0]}, "layer 1 is"},
		{"layer count", same, nil, layers[:1], "2 layers, expected 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := rewriteArchive(t, good, tc.edit, tc.extra)
			want := layers
			if tc.layers != nil {
				want = tc.layers
			}
			_, err := verifyArchive(p, want)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestOCICmdErrors(t *testing.T) {
	layers := smallLayers(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "x.tar")
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"-o", out, "-name", "a:b", "-compression", "lz4", "-layer", layers[0], "-history", "h"}, "unknown compression"},
		{[]string{"-o", out, "-name", "a:b", "-layer", layers[0]}, "1 -layer but 0 -history"},
		{[]string{"-o", out, "-name", "a:b", "-layer", filepath.Join(dir, "nope.tar"), "-history", "h"}, "nope.tar"},
	} {
		err := ociCmd(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind %v", ents)
	}
}

func TestRefTag(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/erofs-test:3layer": "3layer",
		"localhost:5000/x":                    "latest",
		"localhost:5000/x:v1":                 "v1",
	} {
		if got := refTag(in); got != want {
			t.Errorf("refTag(%q) = %q, want %q", in, got, want)
		}
	}
}
