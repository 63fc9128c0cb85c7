package erofs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// repoRoot walks up from the test's directory to the module root.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// testAsset returns the path of a built test asset under _output, skipping
// (or failing under EROFS_REQUIRE_ASSETS=1) when it is missing.
func testAsset(t testing.TB, rel, target string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "_output", rel)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("EROFS_REQUIRE_ASSETS") == "1" {
			t.Fatalf("%s missing: run `make %s`", p, target)
		}
		t.Skipf("%s missing: run `make %s` (hack/build-test-image.sh)", p, target)
	}
	return p
}

// TestConvertDebianLayers converts the real Debian layers (rootfs, an
// apt-installed package layer, and a layer of changes with whiteouts,
// opaque dirs and hardlinks) and judges each by the kernel, fsck.erofs and
// GNU tar.
func TestConvertDebianLayers(t *testing.T) {
	testmount.RequireRoot(t)
	if testing.Short() {
		t.Skip("converts and extracts ~150 MB of layers")
	}
	for _, layer := range []string{"1-rootfs.tar", "2-packages.tar", "3-changes.tar"} {
		t.Run(layer, func(t *testing.T) {
			p := testAsset(t, filepath.Join("images", "layers", layer), "test-image")
			oracle(t, p, nil)
		})
	}
}

// BenchmarkConvertRootfs converts the Debian rootfs layer from memory into
// a tmpfs file: the converter's own cost (tar parsing + one write of the
// data + metadata), for profiling with -cpuprofile.
func BenchmarkConvertRootfs(b *testing.B) {
	layer, err := os.ReadFile(testAsset(b, filepath.Join("images", "layers", "1-rootfs.tar"), "test-image"))
	if err != nil {
		b.Fatal(err)
	}
	dir := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir = "/dev/shm"
	}
	b.SetBytes(int64(len(layer)))
	for b.Loop() {
		f, err := os.CreateTemp(dir, "bench-*.erofs")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ConvertTar(context.Background(), f, bytes.NewReader(layer), ConvertOptions{}); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(f.Name())
	}
}
