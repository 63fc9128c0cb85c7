package integration

import (
	"context"
	"os"
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
		must(t, err)
		out := filepath.Join(base, strings.TrimSuffix(name, ".tar")+".erofs")
		f, err := os.Create(out)
		must(t, err)
		_, err = erofs.ConvertTar(context.Background(), f, in, erofs.ConvertOptions{})
		in.Close()
		must(t, f.Close())
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
	if len(oracle) < 1000 {
		t.Fatalf("oracle shows only %d entries: not a Debian root", len(oracle))
	}
	checkFSMetaViews(t, base, layers, oracle)
}
