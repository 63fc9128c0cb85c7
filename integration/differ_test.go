package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/differ/difftest"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// differImageLayers are the uncompressed layer tars the test image was
// built from, oldest first.
var differImageLayers = []string{"layers/1-rootfs.tar", "layers/2-packages.tar", "layers/3-changes.tar"}

// imageLayers returns the blob descriptors and diff IDs of an image in the
// daemon's content store.
func imageLayers(t *testing.T, ctx context.Context, c *client.Client, name string) ([]ocispec.Descriptor, []digest.Digest) {
	t.Helper()
	img, err := c.ImageService().Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := images.Manifest(ctx, c.ContentStore(), img.Target, platforms.Default())
	if err != nil {
		t.Fatal(err)
	}
	diffIDs, err := images.RootFS(ctx, c.ContentStore(), mf.Config)
	if err != nil {
		t.Fatal(err)
	}
	return mf.Layers, diffIDs
}

// snapshotsByName walks the erofs-vm snapshotter of the daemon.
func snapshotsByName(t *testing.T, ctx context.Context, c *client.Client) map[string]snapshots.Info {
	t.Helper()
	out := map[string]snapshots.Info{}
	err := c.SnapshotService("erofs-vm").Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		out[i.Name] = i
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshotDirLeftovers lists the snapshot dirs on disk and any temp file
// anywhere under the snapshotter root.
func snapshotDirLeftovers(t *testing.T, root string) (dirs, temps []string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		dirs = append(dirs, e.Name())
	}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp") {
			temps = append(temps, p)
		}
		return nil
	})
	return dirs, temps
}

// TestDifferImport: `ctr images import --snapshotter erofs-vm` of the
// 3-layer Debian image, gzip and zstd, through the transfer service and
// with --local (client-side unpack through the diff service), gives one
// committed snapshot per layer whose layer.erofs mounts (kernel) to the
// same tree as a direct conversion of the layer tar, with the §5 labels.
func TestDifferImport(t *testing.T) {
	differRequireRoot(t)
	tests := []struct {
		name    string
		archive string
		image   string
		local   bool
	}{
		{"gzip transfer", "debian-3layer.oci.tar", "docker.io/library/erofs-test:3layer", false},
		{"zstd transfer", "debian-3layer-zstd.oci.tar", "docker.io/library/erofs-test:3layer-zstd", false},
		{"gzip local", "debian-3layer.oci.tar", "docker.io/library/erofs-test:3layer", true},
		{"zstd local", "debian-3layer-zstd.oci.tar", "docker.io/library/erofs-test:3layer-zstd", true},
	}
	// Direct conversions of the layers, shared by the subtests.
	var refTrees []map[string]difftest.Entry
	for _, l := range differImageLayers {
		ref := differReferenceLayer(t, differAsset(t, l))
		refTrees = append(refTrees, differTree(t, testmount.Erofs(t, ref), allXattrs))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			archive := differAsset(t, tc.archive)
			d := StartDaemon(t, DaemonOptions{})
			args := []string{"images", "import", "--snapshotter", "erofs-vm"}
			if tc.local {
				args = append(args, "--local")
			}
			if out, err := d.Ctr(t, append(args, archive)...); err != nil {
				t.Fatalf("import: %v\n%s", err, out)
			}
			c, ctx := d.Client(t), d.Context(t)
			blobs, diffIDs := imageLayers(t, ctx, c, tc.image)
			chain := identity.ChainIDs(append([]digest.Digest{}, diffIDs...))
			snaps := snapshotsByName(t, ctx, c)
			if len(snaps) != len(differImageLayers) {
				t.Errorf("%d snapshots, want %d: %v", len(snaps), len(differImageLayers), snaps)
			}
			for i, chainID := range chain {
				info, ok := snaps[chainID.String()]
				if !ok {
					t.Errorf("layer %d: no snapshot %s", i+1, chainID)
					continue
				}
				if info.Kind != snapshots.KindCommitted {
					t.Errorf("layer %d: snapshot is %v", i+1, info.Kind)
				}
				want := map[string]string{
					snapshotter.LabelLayerDigest:     diffIDs[i].String(),
					snapshotter.LabelLayerBlobDigest: blobs[i].Digest.String(),
				}
				for k, v := range want {
					if info.Labels[k] != v {
						t.Errorf("layer %d: label %s = %q, want %q", i+1, k, info.Labels[k], v)
					}
				}
				layer := info.Labels[snapshotter.LabelLayerBlobPath]
				if filepath.Base(layer) != layout.LayerFile || !strings.HasPrefix(layer, d.SnapshotterRoot()) {
					t.Errorf("layer %d: %s = %q", i+1, snapshotter.LabelLayerBlobPath, layer)
					continue
				}
				if out, err := exec.Command("fsck.erofs", layer).CombinedOutput(); err != nil {
					t.Errorf("layer %d: fsck.erofs %s: %v\n%s", i+1, layer, err, out)
				}
				got := differTree(t, testmount.Erofs(t, layer), allXattrs)
				if diff := difftest.Diff(refTrees[i], got); len(diff) > 0 {
					t.Errorf("layer %d: unpacked layer.erofs != direct conversion of %s:\n%s", i+1, differImageLayers[i], strings.Join(diff, "\n"))
				}
				m, err := layout.ReadMarker(filepath.Dir(layer))
				if err != nil || m.DiffID != diffIDs[i] || m.BlobDigest != blobs[i].Digest || m.MediaType != blobs[i].MediaType {
					t.Errorf("layer %d: marker %+v, %v", i+1, m, err)
				}
			}
			dirs, temps := snapshotDirLeftovers(t, d.SnapshotterRoot())
			if len(dirs) != len(differImageLayers) || len(temps) > 0 {
				t.Errorf("snapshot dirs %v, temp files %v", dirs, temps)
			}
		})
	}
}
