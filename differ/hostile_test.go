package differ

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/klauspost/compress/gzip"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/erofs/testdata/hostile"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// TestApplyHostileLayers applies every layer of the hostile corpus
// (erofs/testdata/hostile), gzip-compressed, through the real differ with a
// local content store, into an extract dir as the snapshotter prepares it,
// with the corpus's size limit as max_layer_size. A rejected layer must
// fail with the corpus's error and leave the dir holding only its empty
// marker; an accepted one leaves layer.erofs and a marker with the diff ID,
// and the kernel, mounting layer.erofs, must show what the corpus says.
// Nothing may be left in TMPDIR either way.
func TestApplyHostileLayers(t *testing.T) {
	requireRoot(t)
	for _, c := range hostile.Cases {
		t.Run(c.Name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			defer func() {
				if left := listDir(t, tmp); len(left) != 0 {
					t.Errorf("temp files left in TMPDIR: %q", left)
				}
			}()
			f := newFixture(t)
			f.d = New(f.store, Config{MaxLayerSize: c.MaxSize})
			desc := storeGzipLayer(t, f.store, c)
			dir, mounts := f.extractDir()
			got, err := f.d.Apply(context.Background(), desc, mounts)
			switch c.Expect {
			case hostile.Reject:
				if err == nil {
					t.Fatalf("applied (%s), want an error containing %q", got.Digest, c.Err)
				}
				if !strings.Contains(err.Error(), c.Err) {
					t.Fatalf("error %q, want one containing %q", err, c.Err)
				}
				assertUntouched(t, dir)
			case hostile.OK:
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if names := listDir(t, dir); strings.Join(names, ",") != layout.MarkerFile+","+layout.LayerFile {
					t.Errorf("dir holds %v, want the marker and %s", names, layout.LayerFile)
				}
				if m, err := layout.ReadMarker(dir); err != nil || m.DiffID != got.Digest {
					t.Errorf("marker %+v, %v; want diff ID %s", m, err, got.Digest)
				}
				mnt := testmount.Erofs(t, filepath.Join(dir, layout.LayerFile))
				if err := c.Verify(mnt); err != nil {
					t.Fatalf("mounted layer: %v", err)
				}
			}
		})
	}
}

// TestHostileLayersContainerd checks the corpus's claims about containerd's
// own applier (pkg/archive.Apply, what the walking differ runs) on a host
// directory: each case's ContainerdExpect outcome, and for a layer both
// accept, the same tree. Where the outcomes differ the corpus says why.
func TestHostileLayersContainerd(t *testing.T) {
	requireRoot(t)
	for _, c := range hostile.Cases {
		if c.ContainerdExpect == "" {
			continue // host-filesystem dependent, or gigabytes on the host
		}
		t.Run(c.Name, func(t *testing.T) {
			root := t.TempDir()
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(c.Write(pw)) }()
			_, err := archive.Apply(context.Background(), root, pr)
			pr.CloseWithError(io.ErrClosedPipe)
			switch {
			case c.ContainerdExpect == hostile.Reject && err == nil:
				t.Fatalf("containerd applies a layer the corpus says it rejects (%s)", c.Containerd)
			case c.ContainerdExpect == hostile.OK && err != nil:
				t.Fatalf("containerd rejects a layer the corpus says it applies (%s): %.300v", c.Containerd, err)
			case c.ContainerdExpect == hostile.OK && c.Expect == hostile.OK:
				if err := c.Verify(root); err != nil {
					t.Fatalf("containerd's extraction differs from ours: %v", err)
				}
			}
		})
	}
}

// storeGzipLayer writes c's tar, gzip-compressed, to the content store as
// it streams: the 1 GiB bomb never exists uncompressed.
func storeGzipLayer(t *testing.T, cs content.Store, c hostile.Case) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	w, err := content.OpenWriter(ctx, cs, content.WithRef("hostile-"+c.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(zw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, 0, ""); err != nil {
		t.Fatal(err)
	}
	info, err := cs.Info(ctx, w.Digest())
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: info.Digest, Size: info.Size}
}
