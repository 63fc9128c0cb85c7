package erofs

import (
	"archive/tar"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestLayoutPolicy pins the layout decisions (read back with the project's
// reader): every regular file FLAT_PLAIN and block-addressable, whatever
// its size, because fsmeta's chunk indexes point at layer blocks; symlinks
// and directories inline when the tail fits in the inode's block, else
// FLAT_PLAIN; the root at nid 0.
func TestLayoutPolicy(t *testing.T) {
	p := filepath.Join(t.TempDir(), "l.tar")
	entries := []tarEntry{
		reg("tiny", 0o644, "x"), reg("page", 0o644, strings.Repeat("p", BlockSize)), reg("odd", 0o644, strings.Repeat("o", 10000)),
		reg("empty", 0o644, ""), symlink("short", "tiny"), symlink("max", strings.Repeat("m/", 2047)+"m"),
		dirEnt("small/", 0o755),
	}
	for i := range 400 {
		entries = append(entries, reg(fmt.Sprintf("big/entry-%04d-with-a-long-name", i), 0o644, ""))
	}
	writeTar(t, p, tar.FormatPAX, entries)
	img, _ := convertFile(t, p, t.TempDir())
	im, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for name, want := range map[string]uint8{
		"tiny": LayoutFlatPlain, "page": LayoutFlatPlain, "odd": LayoutFlatPlain, "empty": LayoutFlatPlain,
		"short": LayoutFlatInline, "max": LayoutFlatPlain, "small": LayoutFlatInline, ".": LayoutFlatInline,
	} {
		fi, err := im.Lstat(name)
		if err != nil {
			t.Fatal(err)
		}
		in := fi.Sys().(*Inode)
		if in.Layout != want {
			t.Errorf("%s: layout %d, want %d", name, in.Layout, want)
		}
		if name == "." && in.Nid != 0 {
			t.Errorf("root nid %d, want 0", in.Nid)
		}
		if in.Layout == LayoutFlatPlain && in.Size > 0 {
			ext, err := im.Extents(in)
			if err != nil || len(ext) != 1 || ext[0].Inline || ext[0].Hole || ext[0].Physical%BlockSize != 0 {
				t.Errorf("%s: extents %+v, %v; want one block-aligned extent", name, ext, err)
			}
		}
	}
	// A directory over a block: full blocks out of line, tail inline.
	fi, err := im.Lstat("big")
	if err != nil {
		t.Fatal(err)
	}
	if in := fi.Sys().(*Inode); in.Size <= BlockSize || in.Layout != LayoutFlatInline && in.Size%BlockSize != 0 {
		t.Errorf("big dir: size %d layout %d", in.Size, in.Layout)
	}
}
