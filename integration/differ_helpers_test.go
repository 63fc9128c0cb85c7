package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"

	"github.com/erofs-vm/containerd-erofs/differ/difftest"
	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// differAsset returns a file of _output/images, or skips (fails under
// EROFS_REQUIRE_ASSETS=1) naming the make target that builds it.
func differAsset(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(RepoRoot(t), "_output", "images", rel)
	if _, err := os.Stat(p); err != nil {
		msg := p + " missing: run `make test-image`"
		if os.Getenv("EROFS_REQUIRE_ASSETS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func differRequireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon, loop devices and kernel mounts")
	}
}

// differMountSnapshot mounts the raw mounts of an erofs-vm snapshot the
// way the guest does (docs/design.md §4): the EROFS stack read-only, and for a
// writable snapshot the ext4 rwlayer with an overlay over both. Mounts of
// other snapshotters (overlayfs, bind) go through containerd's mount
// package. It returns the root of the tree a container sees.
func differMountSnapshot(t testing.TB, mounts []mount.Mount) string {
	t.Helper()
	root, _ := differMountWritable(t, mounts)
	return root
}

// differMountWritable is differMountSnapshot that also returns the overlay
// upper dir of a writable erofs-vm snapshot ("" for others).
func differMountWritable(t testing.TB, mounts []mount.Mount) (root, upper string) {
	t.Helper()
	if len(mounts) == 0 {
		t.Fatal("no mounts")
	}
	switch {
	case mounts[0].Type == "erofs", mounts[0].Type == "format/erofs", mounts[0].Type == "ext4",
		len(mounts) == 1 && mounts[0].Type == "bind" && filepath.Base(mounts[0].Source) == "upper":
	default:
		dir := t.TempDir()
		if err := mount.All(mounts, dir); err != nil {
			t.Fatalf("mount %+v: %v", mounts, err)
		}
		t.Cleanup(func() {
			if err := mount.UnmountAll(dir, 0); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		})
		return dir, ""
	}
	var lower, rw string
	for _, m := range mounts {
		switch m.Type {
		case "erofs":
			lower = testmount.Erofs(t, m.Source)
		case "format/erofs":
			var devs []string
			for _, o := range m.Options {
				if d, ok := strings.CutPrefix(o, "device="); ok {
					devs = append(devs, d)
				}
			}
			lower = testmount.Erofs(t, m.Source, devs...)
		case "ext4":
			rw = testmount.Mount(t, "ext4", testmount.Loop(t, m.Source, true), "")
		case "bind":
			// overlay commit mode: rw/ (upper/ and work/ inside), or rw/upper
			// alone for a snapshot without parent.
			rw = m.Source
			if filepath.Base(rw) == "upper" {
				return rw, rw
			}
		default:
			t.Fatalf("unexpected mount %+v", m)
		}
	}
	if rw == "" {
		return lower, ""
	}
	for _, d := range []string{"upper", "work"} {
		if err := os.MkdirAll(filepath.Join(rw, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	upper = filepath.Join(rw, "upper")
	if lower == "" {
		return upper, upper
	}
	return testmount.Mount(t, "overlay", "overlay",
		"lowerdir="+lower+",upperdir="+upper+",workdir="+filepath.Join(rw, "work")), upper
}

// differReferenceLayer converts an uncompressed layer tar the direct way,
// `erofsctl convert`, falling back to erofs.ConvertTar in process while the
// subcommand does not exist yet.
func differReferenceLayer(t *testing.T, tarPath string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(tarPath)+".erofs")
	cmd := exec.Command(Binary(t, "erofsctl"), "convert", "-o", out, tarPath)
	b, err := cmd.CombinedOutput()
	if err == nil {
		return out
	}
	if !strings.Contains(string(b), "unknown command") {
		t.Fatalf("erofsctl convert %s: %v\n%s", tarPath, err, b)
	}
	t.Logf("erofsctl has no convert yet; converting %s with erofs.ConvertTar", filepath.Base(tarPath))
	src, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := erofs.ConvertTar(context.Background(), dst, src, erofs.ConvertOptions{}); err != nil {
		t.Fatalf("ConvertTar %s: %v", tarPath, err)
	}
	return out
}

// allXattrs keeps every xattr: EROFS layers carry overlay whiteouts and
// opaque markers, and those must match too.
var allXattrs = difftest.Options{KeepXattr: func(string) bool { return true }}

// differTree is difftest.Tree failing t on error.
func differTree(t testing.TB, root string, opts difftest.Options) map[string]difftest.Entry {
	t.Helper()
	tree, err := difftest.Tree(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// ociLayer is a layer of ociArchive's image.
type ociLayer = ArchiveLayer

// ociArchive writes an OCI image layout archive (what `ctr images import`
// reads) of one image whose layers are the given blobs into a temp dir and
// returns its path.
func ociArchive(t *testing.T, name string, layers []ociLayer) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.oci.tar")
	if err := WriteImageArchive(p, name, layers); err != nil {
		t.Fatal(err)
	}
	return p
}

// withCancel is context.WithCancel, named here so tests read top-down.
func withCancel(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithCancel(ctx)
}
