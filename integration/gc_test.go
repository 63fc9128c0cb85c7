package integration

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/opencontainers/go-digest"
)

// TestGCRemovesImageSnapshots: deleting an image with a synchronous GC
// removes its snapshots from erofs-vm's metastore, their directories under
// snapshots/ and the image's blobs, and nothing else: the same layers
// unpacked from another image (zstd blobs, another namespace) stay and
// mount, and a snapshot held by a lease keeps itself and its parent. Once
// the lease goes, GC takes those too.
func TestGCRemovesImageSnapshots(t *testing.T) {
	differRequireRoot(t)
	oracle := rcOracle(t, rcLayerTars(t))
	d := StartDaemon(t, DaemonOptions{})
	c := d.Client(t)
	gcCtx := namespaced(d.Context(t), "gc")
	keepCtx := namespaced(d.Context(t), "keep")
	const keepImage = "docker.io/library/erofs-test:3layer-zstd"

	rcImport(t, gcCtx, c, differAsset(t, "debian-3layer.oci.tar"))
	if err := rcUnpack(gcCtx, c, rcImage); err != nil {
		t.Fatal(err)
	}
	rcImport(t, keepCtx, c, differAsset(t, "debian-3layer-zstd.oci.tar"))
	if err := rcUnpack(keepCtx, c, keepImage); err != nil {
		t.Fatal(err)
	}
	chain := rcChain(t, gcCtx, c, rcImage)
	gcBlobs, _ := imageLayers(t, gcCtx, c, rcImage)
	keepBlobs, _ := imageLayers(t, keepCtx, c, keepImage)
	img, err := c.ImageService().Get(gcCtx, rcImage)
	if err != nil {
		t.Fatal(err)
	}
	gone := []digest.Digest{img.Target.Digest}
	for _, b := range gcBlobs {
		gone = append(gone, b.Digest)
	}
	var kept []digest.Digest
	for _, b := range keepBlobs {
		kept = append(kept, b.Digest)
	}

	// A writable snapshot over the base layer, under a lease.
	lctx, lease := rcLease(t, gcCtx, c)
	if _, err := c.SnapshotService("erofs-vm").Prepare(lctx, "leased-rw", chain[0]); err != nil {
		t.Fatal(err)
	}

	if err := rcGC(gcCtx, c); err != nil {
		t.Fatal(err)
	}
	before, bad := rcCheckStore(d.SnapshotterRoot())
	if len(bad) > 0 {
		t.Fatalf("before GC, store and files disagree:\n%s", strings.Join(bad, "\n"))
	}
	byKey := func(store map[string]rcSnap, ns string) map[string]rcSnap {
		out := map[string]rcSnap{}
		for _, s := range store {
			if n, k := rcBackingKey(s.Name); n == ns {
				out[k] = s
			}
		}
		return out
	}
	gcBefore := byKey(before, "gc")
	for _, k := range append([]string{"leased-rw"}, chain...) {
		if _, ok := gcBefore[k]; !ok {
			t.Fatalf("no snapshot %s in namespace gc: %v", k, keys(gcBefore))
		}
	}
	for _, dg := range append(append([]digest.Digest{}, gone...), kept...) {
		if _, err := os.Stat(blobPath(d, dg)); err != nil {
			t.Fatalf("blob before GC: %v", err)
		}
	}

	if err := rcDeleteImage(gcCtx, c, rcImage); err != nil {
		t.Fatalf("delete image: %v", err)
	}

	after, bad := rcCheckStore(d.SnapshotterRoot())
	if len(bad) > 0 {
		t.Errorf("after GC, store and files disagree:\n%s", strings.Join(bad, "\n"))
	}
	wantGone := []string{chain[1], chain[2]}
	for _, k := range wantGone {
		s := gcBefore[k]
		if _, ok := after[s.Name]; ok {
			t.Errorf("snapshot %s of the deleted image survived GC", k)
		}
		if _, err := os.Lstat(filepath.Join(d.SnapshotterRoot(), "snapshots", s.ID)); !os.IsNotExist(err) {
			t.Errorf("dir snapshots/%s of %s survived GC (%v)", s.ID, k, err)
		}
	}
	for name, s := range before {
		if _, k := rcBackingKey(name); strings.HasPrefix(name, "gc/") && (k == chain[1] || k == chain[2]) {
			continue
		}
		if _, ok := after[name]; !ok {
			t.Errorf("GC removed %s, which it must keep", name)
		}
		if _, err := os.Stat(filepath.Join(d.SnapshotterRoot(), "snapshots", s.ID)); err != nil {
			t.Errorf("GC removed the dir of %s: %v", name, err)
		}
	}
	if len(after) != len(before)-len(wantGone) {
		t.Errorf("store: %d snapshots before, %d after, want %d removed", len(before), len(after), len(wantGone))
	}
	for _, dg := range gone {
		if _, err := os.Stat(blobPath(d, dg)); !os.IsNotExist(err) {
			t.Errorf("blob %s of the deleted image survived GC (%v)", dg, err)
		}
	}
	for _, dg := range kept {
		if _, err := os.Stat(blobPath(d, dg)); err != nil {
			t.Errorf("blob %s of the other image: %v", dg, err)
		}
	}
	kchain := rcChain(t, keepCtx, c, keepImage)
	klctx, _ := rcLease(t, keepCtx, c)
	rcKernelCheck(t, klctx, c, kchain[len(kchain)-1], oracle[len(kchain)-1])

	// The lease goes: its snapshot and the base layer under it follow.
	if err := c.LeasesService().Delete(gcCtx, lease, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
	final, bad := rcCheckStore(d.SnapshotterRoot())
	if len(bad) > 0 {
		t.Errorf("after the lease's GC, store and files disagree:\n%s", strings.Join(bad, "\n"))
	}
	if left := byKey(final, "gc"); len(left) > 0 {
		t.Errorf("namespace gc still has %v after its lease went", keys(left))
	}
	if got := byKey(final, "keep"); len(got) != len(kchain) {
		t.Errorf("namespace keep has %v, want its %d layers", keys(got), len(kchain))
	}
	ents, _ := os.ReadDir(filepath.Join(d.SnapshotterRoot(), "snapshots"))
	if len(ents) != len(kchain) {
		t.Errorf("%d snapshot dirs left, want %d", len(ents), len(kchain))
	}
	infos, err := rcSnapshots(gcCtx, c)
	if err != nil || len(infos) != 0 {
		t.Errorf("namespace gc lists %v, %v", infos, err)
	}
	for _, i := range infos {
		if i.Kind == snapshots.KindCommitted {
			t.Errorf("committed %s left", i.Name)
		}
	}
}

// blobPath is where the daemon's content store keeps a blob.
func blobPath(d *Daemon, dg digest.Digest) string {
	return filepath.Join(d.Root(), "io.containerd.content.v1.content", "blobs", dg.Algorithm().String(), dg.Encoded())
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
