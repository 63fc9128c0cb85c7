package erofs

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// dumpMerged writes a merged tree out and reads it back with the reader,
// rendering it as "path type layer [links]" lines in walk order; fake
// layers stamp each inode's Mtime with the layer index.
func dumpMerged(t *testing.T, tree *Tree) (lines []string, root *Inode) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "merged.erofs"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := tree.WriteImage(f, ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(info.Blocks) * BlockSize); err != nil {
		t.Fatal(err)
	}
	im, err := NewImage(f)
	if err != nil {
		t.Fatal(err)
	}
	first := map[uint64]string{}
	err = fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		ino := fi.Sys().(*Inode)
		if p == "." {
			root = ino
			return nil
		}
		typ := "f"
		switch ino.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			typ = "d"
		case syscall.S_IFLNK:
			typ = "l"
		case syscall.S_IFCHR:
			typ = "c"
		}
		line := fmt.Sprintf("%s %s L%d", p, typ, ino.Mtime)
		if f, ok := first[ino.Nid]; ok && typ != "d" {
			line += " ->" + f
		} else {
			first[ino.Nid] = p
			if typ != "d" && ino.Nlink > 1 {
				line += fmt.Sprintf(" n%d", ino.Nlink)
			}
		}
		if slices.ContainsFunc(ino.Xattrs, isOverlayXattr) {
			line += " LEAKED-OVERLAY-XATTR"
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lines, root
}

func byPath(t *Tree, p string) *Node {
	n := t.Root()
	for _, c := range strings.Split(p, "/") {
		n = t.Lookup(n, c)
	}
	return n
}

func noData(int, string, *Inode) (Data, error) { return Data{}, nil }

func TestMergeLayers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layers [][]string // oldest first
		want   []string
	}{
		{
			name:   "upper file wins",
			layers: [][]string{{"a f", "b f"}, {"a f"}},
			want:   []string{"a f L1", "b f L0"},
		},
		{
			name:   "whiteout deletes file and dir",
			layers: [][]string{{"a f", "d d", "d/x f"}, {"a w", "d w"}},
			want:   nil,
		},
		{
			name:   "re-create after delete",
			layers: [][]string{{"d d", "d/old f"}, {"d w"}, {"d d", "d/new f"}},
			want:   []string{"d d L2", "d/new f L2"},
		},
		{
			name:   "dirs merge, metadata from top",
			layers: [][]string{{"d d", "d/a f"}, {"d d", "d/b f"}},
			want:   []string{"d d L1", "d/a f L0", "d/b f L1"},
		},
		{
			name:   "opaque dir hides lower contents",
			layers: [][]string{{"d d", "d/a f"}, {"d d", "d/b f"}, {"d o", "d/c f"}},
			want:   []string{"d d L2", "d/c f L2"},
		},
		{
			name:   "opaque in the middle still merges above it",
			layers: [][]string{{"d d", "d/a f"}, {"d o", "d/b f"}, {"d d", "d/c f"}},
			want:   []string{"d d L2", "d/b f L1", "d/c f L2"},
		},
		{
			name:   "file over dir hides the dir",
			layers: [][]string{{"p d", "p/x f"}, {"p f"}},
			want:   []string{"p f L1"},
		},
		{
			name:   "file then dir then symlink",
			layers: [][]string{{"p f"}, {"p d", "p/x f"}, {"p l target"}},
			want:   []string{"p l L2"},
		},
		{
			name:   "dir over file does not merge the file",
			layers: [][]string{{"p f", "q d", "q/z f"}, {"p d", "p/x f"}},
			want:   []string{"p d L1", "p/x f L1", "q d L0", "q/z f L0"},
		},
		{
			name:   "lower whiteout under upper dir stops the stack",
			layers: [][]string{{"d d", "d/a f"}, {"d w"}, {"d d", "d/b f"}},
			want:   []string{"d d L2", "d/b f L2"},
		},
		{
			name:   "whiteout of a name absent below",
			layers: [][]string{{"a f"}, {"zz w"}},
			want:   []string{"a f L0"},
		},
		{
			name:   "hardlinks stay grouped, count survivors",
			layers: [][]string{{"a f", "b h a", "c h a"}, {"c w"}},
			want:   []string{"a f L0 n2", "b f L0 ->a"},
		},
		{
			name:   "overlay xattrs consumed on opaque top",
			layers: [][]string{{"d o"}},
			want:   []string{"d d L0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var layers []layerFS
			for i, specs := range tc.layers {
				l := newFakeLayer(specs...)
				for _, n := range l.nodes {
					n.ino.Mtime = int64(i)
				}
				layers = append(layers, l)
			}
			tree, _, err := mergeLayers(context.Background(), layers, noData)
			if err != nil {
				t.Fatal(err)
			}
			got, root := dumpMerged(t, tree)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("merged tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if root.Mtime != int64(len(layers)-1) {
				t.Errorf("root from layer %d, want the top one", root.Mtime)
			}
		})
	}
}

func TestMergeLayersOpaqueXattrDropped(t *testing.T) {
	tree, _, err := mergeLayers(context.Background(), []layerFS{newFakeLayer("d o")}, noData)
	if err != nil {
		t.Fatal(err)
	}
	x := byPath(tree, "d").Xattrs
	if len(x) != 1 || x[0].Name != "user.keep" {
		t.Errorf("xattrs %v, want only user.keep", x)
	}
}
