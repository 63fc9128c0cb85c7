package integration

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// debianLayerTars are the three layers of the test image, oldest first
// (hack/build-test-image.sh).
var debianLayerTars = []string{"1-rootfs.tar", "2-packages.tar", "3-changes.tar"}

// convertDebianLayers converts the Debian test image's layer tars with our
// converter into base and returns the images, oldest first.
func convertDebianLayers(t *testing.T, base string) []string {
	t.Helper()
	var layers []string
	for _, name := range debianLayerTars {
		src := fsmetaAsset(t, filepath.Join("images", "layers", name), "test-image")
		in, err := os.Open(src)
		fsmetaMust(t, err)
		out := filepath.Join(base, strings.TrimSuffix(name, ".tar")+".erofs")
		f, err := os.Create(out)
		fsmetaMust(t, err)
		_, err = erofs.ConvertTar(context.Background(), f, in, erofs.ConvertOptions{})
		in.Close()
		fsmetaMust(t, f.Close())
		if err != nil {
			t.Fatalf("ConvertTar %s: %v", name, err)
		}
		layers = append(layers, out)
	}
	return layers
}

// TestFSMetaDebian3Layer checks the real image: its layers delete, replace
// and add files across a Debian root, and every view must show the same
// tree with the same file contents as overlayfs does.
func TestFSMetaDebian3Layer(t *testing.T) {
	fsmetaRequireHost(t, "fsck.erofs", "losetup", "mount", "qemu-img")
	base := t.TempDir()
	layers := convertDebianLayers(t, base)
	oracle := oracleTree(t, base, layers)
	if len(oracle.entries) < 1000 {
		t.Fatalf("oracle shows only %d entries: not a Debian root", len(oracle.entries))
	}
	// The stack must really exercise deletion: every whiteout of the top
	// layer names a path that lower layers have and the merged view lacks.
	wh := topLayerWhiteouts(t, fsmetaAsset(t, filepath.Join("images", "layers", debianLayerTars[2]), "test-image"))
	if len(wh) == 0 {
		t.Fatal("the top layer has no whiteouts: the test image no longer tests deletion")
	}
	for _, p := range wh {
		if _, ok := oracle.entries[strings.TrimPrefix(p, "/")]; ok {
			t.Errorf("%s is whited out by the top layer but the overlay shows it", p)
		}
	}
	checkFSMetaViews(t, base, layers, oracle)
}

// topLayerWhiteouts lists the paths a layer tar deletes (.wh.NAME entries).
func topLayerWhiteouts(t *testing.T, tarPath string) []string {
	t.Helper()
	f, err := os.Open(tarPath)
	fsmetaMust(t, err)
	defer f.Close()
	var out []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		fsmetaMust(t, err)
		dir, base := path.Split(path.Clean("/" + h.Name))
		if strings.HasPrefix(base, ".wh.") && base != ".wh..wh..opq" {
			out = append(out, path.Join(dir, strings.TrimPrefix(base, ".wh.")))
		}
	}
}
