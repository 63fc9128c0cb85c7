package erofs

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// dumpMerged renders a merged tree as sorted "path type layer [nlink]" lines.
func dumpMerged(n *mergedNode, p string, out *[]string) {
	for _, k := range n.kids {
		kp := path.Join(p, k.name)
		typ := "f"
		switch k.ino.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			typ = "d"
		case syscall.S_IFLNK:
			typ = "l"
		case syscall.S_IFCHR:
			typ = "c"
		}
		line := fmt.Sprintf("%s %s L%d", kp, typ, k.layer)
		if k.link != nil {
			line += " ->" + k.link.name
		} else if k.nlink > 1 {
			line += fmt.Sprintf(" n%d", k.nlink)
		}
		if slices.ContainsFunc(k.ino.Xattrs, isOverlayXattr) {
			line += " LEAKED-OVERLAY-XATTR"
		}
		*out = append(*out, line)
		dumpMerged(k, kp, out)
	}
}

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
			for _, specs := range tc.layers {
				layers = append(layers, newFakeLayer(specs...))
			}
			root, _, err := mergeLayers(context.Background(), layers)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			dumpMerged(root, "", &got)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("merged tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if root.layer != len(layers)-1 {
				t.Errorf("root from layer %d, want the top one", root.layer)
			}
		})
	}
}

func TestMergeLayersOpaqueXattrDropped(t *testing.T) {
	root, _, err := mergeLayers(context.Background(), []layerFS{newFakeLayer("d o")})
	if err != nil {
		t.Fatal(err)
	}
	x := root.kids[0].ino.Xattrs
	if len(x) != 1 || x[0].Name != "user.keep" {
		t.Errorf("xattrs %v, want only user.keep", x)
	}
}
