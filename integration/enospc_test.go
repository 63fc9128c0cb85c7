package integration

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// TestSnapshotterRootFull: with the snapshotter root (root_path) on a
// 64 MiB ext4, unpacking the 255 MB Debian image runs out of space. The
// import must fail with an error that says so ("no space left on device"),
// leave the root exactly as it was (same files, no snapshot dir, no temp
// file, the same free blocks, no snapshot in the metastore), and the daemon
// must keep serving: a small image imports and unpacks afterwards.
func TestSnapshotterRootFull(t *testing.T) {
	differRequireRoot(t)
	archive := differAsset(t, "debian-3layer.oci.tar")
	root := smallExt4(t, 64<<20)
	snRoot := filepath.Join(root, "erofs-vm")

	cfg, err := os.ReadFile(filepath.Join(RepoRoot(t), "hack", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(cfg), "root_path = ''", fmt.Sprintf("root_path = %q", snRoot), 1)
	if conf == string(cfg) {
		t.Fatal("hack/config.toml has no root_path = '' line to point at the small filesystem")
	}
	d := StartDaemon(t, DaemonOptions{Config: conf})
	c := d.Client(t)
	ctx := withTestLease(t, d.Context(t), c)

	before := treeListing(t, snRoot)
	freeBefore := freeBlocks(t, root)

	_, err = ImportAndUnpack(ctx, c, archive, E2EImage, "erofs-vm")
	if err == nil {
		t.Fatal("unpacking 255 MB into a 64 MiB snapshotter root succeeded")
	}
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("error does not say the disk is full: %v", err)
	}
	t.Logf("import error: %v", err)

	// The unpacker removes the failed extract snapshot right after Apply
	// returns; give it a moment, then the root must be as before.
	deadline := time.Now().Add(time.Minute)
	for {
		after := treeListing(t, snRoot)
		snaps := snapshotsByName(t, ctx, c)
		if slices.Equal(before, after) && len(snaps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("root changed by a failed unpack:\nbefore %q\nafter  %q\nsnapshots %v", before, after, snaps)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Blocks: the metastore may have grown by a page or two.
	if freeAfter := freeBlocks(t, root); freeAfter+64 < freeBefore {
		t.Errorf("free blocks %d before, %d after: the failed unpack leaked %d KiB", freeBefore, freeAfter, (freeBefore-freeAfter)*4)
	}
	if !d.Running() {
		t.Fatal("the daemon died on a full disk")
	}

	// Still serving: a one-layer image of a few files fits and unpacks.
	layer := differTar(t, "etc/", "etc/hostname", "usr/", "usr/small")
	small := ociArchive(t, "docker.io/library/enospc-small:1", []ociLayer{{differGzip(layer), ocispec.MediaTypeImageLayerGzip, digest.FromBytes(layer)}})
	l, err := ImportAndUnpack(ctx, c, small, "docker.io/library/enospc-small:1", "erofs-vm")
	if err != nil {
		t.Fatalf("a small image after the full disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(snRoot, "snapshots")); err != nil {
		t.Fatal(err)
	}
	infos, err := LayerSnapshots(ctx, c.SnapshotService("erofs-vm"), l, true)
	if err != nil {
		t.Fatalf("the small image's snapshot: %v", err)
	}
	if p := LayerPaths(infos); len(p) != 1 || !strings.HasPrefix(p[0], snRoot) {
		t.Fatalf("layer paths %v, want one under %s", p, snRoot)
	}
}

// smallExt4 makes a size-byte ext4 on a loop device, mounted under
// t.TempDir(), unmounted and detached at cleanup.
func smallExt4(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "small.ext4")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	testmount.Run(t, "mkfs.ext4", "-q", "-F", img)
	dev := testmount.Loop(t, img, true)
	return testmount.Mount(t, "ext4", dev, "")
}

// freeBlocks is the filesystem's count of free blocks.
func freeBlocks(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bfree
}

// treeListing lists every path under root with its type, and size for
// regular files (metadata.db aside: bolt grows it by pages as it pleases).
func treeListing(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := rel + " " + d.Type().String()
		if d.Type().IsRegular() && d.Name() != "metadata.db" {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d", fi.Size())
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// withTestLease returns ctx under a lease deleted at cleanup, so nothing
// the test makes is collected half-way.
func withTestLease(t *testing.T, ctx context.Context, c *client.Client) context.Context {
	t.Helper()
	ctx, done, err := c.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { done(ctx) })
	return ctx
}
