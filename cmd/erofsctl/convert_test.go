package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// layerTar returns a small layer tar.
func layerTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "etc/hostname", Mode: 0o644, Size: 5},
		{Typeflag: tar.TypeReg, Name: "etc/.wh.gone", Mode: 0o644},
	} {
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("host\n"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zst(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// checkImage asserts path is an EROFS image with the test layer's inode count.
func checkImage(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sb erofs.Superblock
	if len(b) < erofs.BlockSize || len(b)%erofs.BlockSize != 0 {
		t.Fatalf("image of %d bytes", len(b))
	}
	if err := erofs.Unmarshal(b[erofs.SuperblockOffset:], &sb); err != nil || sb.Magic != erofs.Magic || sb.Inos != 4 {
		t.Fatalf("superblock %+v, %v", sb, err)
	}
	if got := binary.LittleEndian.Uint32(b[erofs.SuperblockOffset:]); got != erofs.Magic {
		t.Fatalf("magic %#x", got)
	}
}

// dirNames lists a directory, to catch leftover temp files.
func dirNames(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestConvertCommand(t *testing.T) {
	raw := layerTar(t)
	for _, tc := range []struct {
		name  string
		input []byte
	}{{"plain", raw}, {"gzip", gz(t, raw)}, {"zstd", zst(t, raw)}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "layer.tar")
			if err := os.WriteFile(in, tc.input, 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"convert", in}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if stdout.Len()+stderr.Len() != 0 {
				t.Errorf("output on success without -v: %q %q", stdout.String(), stderr.String())
			}
			checkImage(t, filepath.Join(dir, "layer.erofs")) // default output name
			if got := strings.Join(dirNames(t, dir), " "); got != "layer.erofs layer.tar" {
				t.Errorf("dir holds %s", got)
			}
		})
	}

	t.Run("stdin-verbose", func(t *testing.T) {
		dir := t.TempDir()
		f, err := os.CreateTemp(dir, "in")
		if err != nil {
			t.Fatal(err)
		}
		f.Write(gz(t, raw))
		f.Seek(0, 0)
		old := stdin
		stdin = f
		defer func() { stdin = old }()
		out := filepath.Join(dir, "out.img")
		var stdout, stderr bytes.Buffer
		if code := run([]string{"convert", "-v", "-o", out, "-"}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		checkImage(t, out)
		if !strings.Contains(stdout.String(), "4 inodes") || !strings.Contains(stdout.String(), "gz") {
			t.Errorf("-v printed %q", stdout.String())
		}
	})

	t.Run("errors", func(t *testing.T) {
		dir := t.TempDir()
		bad := filepath.Join(dir, "bad.tar")
		trunc := raw[:512+3] // header of etc/ then a torn header
		var escape bytes.Buffer
		tw := tar.NewWriter(&escape)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "../../etc/shadow", Mode: 0o644})
		tw.Close()
		for _, c := range []struct {
			name   string
			args   []string
			input  []byte
			stderr []string
		}{
			{"escape", []string{"-o", filepath.Join(dir, "x.erofs"), bad}, escape.Bytes(), []string{"../../etc/shadow", "escapes"}},
			{"truncated", []string{"-o", filepath.Join(dir, "x.erofs"), bad}, trunc, []string{"erofsctl convert:", "etc/"}},
			{"missing-input", []string{"-o", filepath.Join(dir, "x.erofs"), filepath.Join(dir, "nope.tar")}, nil, []string{"nope.tar", "no such file"}},
			{"stdin-needs-o", []string{"-"}, nil, []string{"-o is required"}},
			{"two-inputs", []string{bad, bad}, nil, []string{"at most one input"}},
			{"bad-output-dir", []string{"-o", filepath.Join(dir, "no/such/dir/x.erofs"), bad}, raw, []string{"no such file"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				if c.input != nil {
					if err := os.WriteFile(bad, c.input, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				var stdout, stderr bytes.Buffer
				if code := run(append([]string{"convert"}, c.args...), &stdout, &stderr); code != 1 {
					t.Fatalf("exit %d, want 1; stderr %q", code, stderr.String())
				}
				for _, w := range c.stderr {
					if !strings.Contains(stderr.String(), w) {
						t.Errorf("stderr %q lacks %q", stderr.String(), w)
					}
				}
				for _, n := range dirNames(t, dir) {
					if n != "bad.tar" {
						t.Errorf("left behind: %s", n)
					}
				}
			})
		}
	})
}
