package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/differ/difftest"
)

// TestDifferCompareRoundTrip: a writable erofs-vm snapshot on the 3-layer
// image gets one change of every kind (through a kernel overlay of its own
// mounts, as the guest sees them); the diff service (erofs-vm Compare)
// turns it into a layer; that layer applied on the image by walking on
// overlayfs, and by erofs-vm on erofs-vm, gives the changed tree both times.
func TestDifferCompareRoundTrip(t *testing.T) {
	differRequireRoot(t)
	archive := differAsset(t, "debian-3layer.oci.tar")
	cfg, err := os.ReadFile(filepath.Join(RepoRoot(t), "hack", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"block", "overlay"} {
		t.Run(mode, func(t *testing.T) {
			config := strings.Replace(string(cfg), "commit_mode = 'block'", "commit_mode = '"+mode+"'", 1)
			if !strings.Contains(config, "commit_mode = '"+mode+"'") {
				t.Fatalf("cannot set commit_mode in hack/config.toml:\n%s", cfg)
			}
			differCompareRoundTrip(t, archive, mode, config)
		})
	}
}

func differCompareRoundTrip(t *testing.T, archive, mode, config string) {
	const image = "docker.io/library/erofs-test:3layer"
	d := StartDaemon(t, DaemonOptions{Config: config})
	for _, sn := range []string{"erofs-vm", "overlayfs"} {
		if out, err := d.Ctr(t, "images", "import", "--snapshotter", sn, archive); err != nil {
			t.Fatalf("import for %s: %v\n%s", sn, err, out)
		}
	}
	c := d.Client(t)
	ctx, done, err := c.WithLease(d.Context(t), leases.WithExpiration(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { done(ctx) })
	_, diffIDs := imageLayers(t, ctx, c, image)
	top := identity.ChainID(diffIDs).String()
	esn, osn := c.SnapshotService("erofs-vm"), c.SnapshotService("overlayfs")

	upper, err := esn.Prepare(ctx, "rt-container", top)
	if err != nil {
		t.Fatal(err)
	}
	wantLast := map[string]string{"block": "ext4", "overlay": "bind"}[mode]
	if last := upper[len(upper)-1]; last.Type != wantLast {
		t.Fatalf("writable snapshot mounts %+v: want %s last (%s mode)", upper, wantLast, mode)
	}
	var want map[string]difftest.Entry
	t.Run("change", func(t *testing.T) {
		// Mounted only inside this subtest: its cleanups unmount before
		// Compare mounts the rwlayer itself.
		root, upperDir := differMountWritable(t, upper)
		if err := difftest.CheckBase(root); err != nil {
			t.Fatalf("the test image lacks what the change needs: %v", err)
		}
		if err := difftest.ApplyChanges(root); err != nil {
			t.Fatal(err)
		}
		want = differTree(t, root, difftest.Options{})
		if err := difftest.LinkGroupsFrom(want, upperDir); err != nil {
			t.Fatal(err)
		}
	})
	if want == nil {
		t.FailNow()
	}

	lower, err := esn.View(ctx, "rt-lower", top)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := c.DiffService().Compare(ctx, lower, upper, diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
	if err != nil {
		t.Fatalf("Compare: %v", err)
	}
	info, err := c.ContentStore().Info(ctx, desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := digest.Parse(info.Labels[labels.LabelUncompressed]); err != nil || desc.MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Errorf("diff blob %+v labels %v", desc, info.Labels)
	}
	t.Logf("diff: %s, %d bytes, uncompressed %s", desc.Digest, desc.Size, info.Labels[labels.LabelUncompressed])
	// The CLI (rootfs.CreateDiff: its own view of the parent, then the
	// diff service) writes the same blob to stdout.
	cli := exec.Command(Binary(t, "ctr"), "--address", d.Address(), "snapshots", "--snapshotter", "erofs-vm", "diff", "rt-container")
	var stderr bytes.Buffer
	cli.Stderr = &stderr
	blob, err := cli.Output()
	if err != nil {
		t.Fatalf("ctr snapshots diff: %v: %s", err, stderr.String())
	}
	if got := digest.FromBytes(blob); got != desc.Digest {
		t.Errorf("ctr snapshots diff wrote %d bytes (%s), the diff service's blob is %s", len(blob), got, desc.Digest)
	}

	check := func(t *testing.T, what string, mounts []mount.Mount) {
		got := differTree(t, differMountSnapshot(t, mounts), difftest.Options{})
		if d := difftest.Diff(want, got); len(d) > 0 {
			t.Errorf("%s != changed tree:\n%s", what, strings.Join(d, "\n"))
		}
	}
	t.Run("walking on overlayfs", func(t *testing.T) {
		m, err := osn.Prepare(ctx, "rt-walking", top)
		if err != nil {
			t.Fatal(err)
		}
		// The diff service tries erofs-vm first; it must pass these on.
		if _, err := c.DiffService().Apply(ctx, desc, m); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		check(t, "overlayfs after walking Apply", m)
	})
	t.Run("erofs-vm", func(t *testing.T) {
		m, err := esn.Prepare(ctx, "rt-extract", top, snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: "rt-applied"}))
		if err != nil {
			t.Fatal(err)
		}
		applied, err := c.DiffService().Apply(ctx, desc, m)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if applied.Digest.String() != info.Labels[labels.LabelUncompressed] {
			t.Errorf("applied diff ID %s, blob label says %s", applied.Digest, info.Labels[labels.LabelUncompressed])
		}
		if err := esn.Commit(ctx, "rt-applied", "rt-extract"); err != nil {
			t.Fatal(err)
		}
		v, err := esn.View(ctx, "rt-applied-view", "rt-applied")
		if err != nil {
			t.Fatal(err)
		}
		check(t, "erofs-vm after erofs-vm Apply", v)
	})
}
