package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestReaderNonUTF8Names: a layer keeps names that are not UTF-8 byte for
// byte, and path lookups must reach them. Before, Lstat refused them as
// invalid paths, so Compare took such a lower file for absent and dropped
// the whiteout of its deletion: the deleted file came back in the commit.
func TestReaderNonUTF8Names(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "dir\xfe/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "dir\xfe/bad\xff", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3},
		{Name: "ok", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, "abc"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "layer.erofs")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ConvertTar(context.Background(), f, &buf, ConvertOptions{}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	im, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()

	for _, tc := range []struct {
		name    string
		wantErr bool
	}{
		{"ok", false},
		{"dir\xfe", false},
		{"dir\xfe/bad\xff", false},
		{"dir\xfe/missing\xff", true},
		{"dir\xfe/../ok", true}, // shape rules still apply
		{"/dir\xfe", true},
	} {
		fi, err := im.Lstat(tc.name)
		if (err != nil) != tc.wantErr {
			t.Errorf("Lstat(%q): %v, want error %v", tc.name, err, tc.wantErr)
			continue
		}
		if err == nil && fi.Name() == "" {
			t.Errorf("Lstat(%q): empty name", tc.name)
		}
	}
	b, err := im.Open("dir\xfe/bad\xff")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, _ := io.ReadAll(b); string(got) != "abc" {
		t.Errorf("content %q", got)
	}
}
