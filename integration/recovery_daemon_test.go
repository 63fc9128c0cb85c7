package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// Helpers that drive the daemon for the recovery tests.

// rcImage is the 3-layer Debian test image as the recovery tests use it.
const rcImage = "docker.io/library/erofs-test:3layer"

// rcLayerTars returns the uncompressed layer tars of the test image,
// oldest first (skipping or failing when the assets are missing).
func rcLayerTars(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range differImageLayers {
		out = append(out, differAsset(t, l))
	}
	return out
}

// rcImport imports an OCI archive into ctx's namespace without unpacking.
func rcImport(t testing.TB, ctx context.Context, c *client.Client, archive string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := c.Import(ctx, f); err != nil {
		t.Fatalf("import %s: %v", archive, err)
	}
}

// rcUnpack unpacks an image of ctx's namespace into erofs-vm through the
// client (the diff service's Apply, then Commit).
func rcUnpack(ctx context.Context, c *client.Client, name string) error {
	img, err := c.GetImage(ctx, name)
	if err != nil {
		return err
	}
	return img.Unpack(ctx, "erofs-vm")
}

// rcChain returns the chain IDs of an image of ctx's namespace, oldest first.
func rcChain(t *testing.T, ctx context.Context, c *client.Client, name string) []string {
	t.Helper()
	_, diffIDs := imageLayers(t, ctx, c, name)
	var out []string
	for _, id := range identity.ChainIDs(append([]digest.Digest{}, diffIDs...)) {
		out = append(out, id.String())
	}
	return out
}

// rcLease returns ctx with a new lease (no expiry) that is deleted at
// cleanup: snapshots a test makes by hand survive GC only under a lease
// (docs/design.md §4).
func rcLease(t testing.TB, ctx context.Context, c *client.Client) (context.Context, leases.Lease) {
	t.Helper()
	l, err := c.LeasesService().Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	return leases.WithLease(ctx, l.ID), l
}

// rcWriteRWLayer writes files (path -> content) into upper/ of an ext4
// rwlayer.img the way a guest would: a read-write loop device, mount,
// write, unmount, detach. Everything is undone before it returns.
func rcWriteRWLayer(t testing.TB, img string, files map[string]string) {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	defer func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	}()
	mnt, err := os.MkdirTemp(t.TempDir(), "rw-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s (%s): %v", img, dev, err)
	}
	defer func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	}()
	for _, d := range []string{layout.UpperDir, layout.WorkDir} {
		if err := os.MkdirAll(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, content := range files {
		full := filepath.Join(mnt, layout.UpperDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if content == rcWhiteout {
			// An overlay whiteout, as the guest's overlayfs records a deletion.
			if err := unix.Mknod(full, unix.S_IFCHR|0o644, 0); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, rcMtime, rcMtime); err != nil {
			t.Fatal(err)
		}
	}
	unix.Sync()
}

// rcWhiteout as the content given to rcWriteRWLayer writes an overlay
// whiteout (char device 0:0) at the path instead of a file.
const rcWhiteout = "\x00whiteout"

// rcMtime is the mtime rcWriteRWLayer gives the files it writes, so a test
// can predict the committed layer's tree.
var rcMtime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// rcRWLayer returns the ext4 source of a writable snapshot's mounts.
func rcRWLayer(t testing.TB, ms []mount.Mount) string {
	t.Helper()
	for _, m := range ms {
		if m.Type == "ext4" {
			return m.Source
		}
	}
	t.Fatalf("no ext4 mount in %s", FormatMounts(ms))
	return ""
}

// rcKernelCheck views snapshot name of ctx's namespace, mounts the view
// with the kernel (loop devices, multi-device erofs) and compares the tree
// with want. The view is removed again.
func rcKernelCheck(t *testing.T, ctx context.Context, c *client.Client, name string, want rcTree) {
	t.Helper()
	sn := c.SnapshotService("erofs-vm")
	key := "rc-view-" + strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "")
	ms, err := sn.View(ctx, key, name)
	if err != nil {
		t.Fatalf("view %s: %v", name, err)
	}
	// Own cleanup scope, so loops and mounts go before the view does.
	t.Run("kernel "+shortName(name), func(t *testing.T) {
		root := differMountSnapshot(t, ms)
		got, err := rcHostTree(root)
		if err != nil {
			t.Fatal(err)
		}
		if diff := rcDiff(want, got); len(diff) > 0 {
			t.Errorf("kernel mount of %s (%s) != oracle:\n%s", name, FormatMounts(ms), strings.Join(diff, "\n"))
		}
	})
	if err := sn.Remove(ctx, key); err != nil {
		t.Errorf("remove view %s: %v", key, err)
	}
}

func shortName(n string) string {
	if i := strings.LastIndex(n, ":"); i >= 0 && len(n)-i > 13 {
		return n[:i+13]
	}
	return n
}

// rcDeleteImage deletes an image and waits for the GC it triggers.
func rcDeleteImage(ctx context.Context, c *client.Client, name string) error {
	return c.ImageService().Delete(ctx, name, images.SynchronousDelete())
}

// rcGC runs containerd's GC and waits for it: deleting a lease with
// SynchronousDelete schedules a collection and waits for it, and GC runs
// one at a time, so every removal scheduled before has finished too
// (containerd's Remove only drops its own record; the snapshotter's
// Remove runs in GC). Checks of the snapshotter's files run after it,
// never while a GC may be deleting a dir whose record is already gone.
func rcGC(ctx context.Context, c *client.Client) error {
	l, err := c.LeasesService().Create(ctx, leases.WithRandomID())
	if err != nil {
		return err
	}
	return c.LeasesService().Delete(ctx, l, leases.SynchronousDelete)
}

// rcSnapshots walks erofs-vm in ctx's namespace.
func rcSnapshots(ctx context.Context, c *client.Client) (map[string]snapshots.Info, error) {
	out := map[string]snapshots.Info{}
	err := c.SnapshotService("erofs-vm").Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		out[i.Name] = i
		return nil
	})
	return out, err
}
