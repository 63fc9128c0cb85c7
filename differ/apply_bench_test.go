package differ

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// repoFile returns path under the repository root (found by go.mod).
func repoFile(tb testing.TB, rel string) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, rel)
		}
		if filepath.Dir(dir) == dir {
			tb.Fatal("no go.mod above the working directory")
		}
		dir = filepath.Dir(dir)
	}
}

// BenchmarkApplyRootfs applies the Debian rootfs layer (gzip, then zstd)
// with the real converter, and with containerd's own applier (what the
// walking differ does: extract onto a host dir) for comparison: the
// per-layer cost of an unpack without the daemon around it.
func BenchmarkApplyRootfs(b *testing.B) {
	if os.Getenv("EROFS_BENCH_DEBUG") == "1" {
		log.SetLevel("debug") // per-phase timings of each Apply
	}
	layer := repoFile(b, "_output/images/layers/1-rootfs.tar")
	if _, err := os.Stat(layer); err != nil {
		b.Skip("no test image: make test-image (hack/build-test-image.sh)")
	}
	for _, tc := range []struct {
		name, mediaType string
		cmd             []string
	}{
		{"gzip", ocispec.MediaTypeImageLayerGzip, []string{"gzip", "-6", "-c", layer}},
		{"zstd", ocispec.MediaTypeImageLayerZstd, []string{"zstd", "-3", "-q", "-c", layer}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFixture(b)
			f.d = New(f.store, Config{})
			blobPath := filepath.Join(b.TempDir(), "blob")
			out, err := os.Create(blobPath)
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(tc.cmd[0], tc.cmd[1:]...)
			cmd.Stdout = out
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
			out.Close()
			blob, err := os.Open(blobPath)
			if err != nil {
				b.Fatal(err)
			}
			defer blob.Close()
			fi, _ := blob.Stat()
			dg, err := digest.FromReader(blob)
			if err != nil {
				b.Fatal(err)
			}
			blob.Seek(0, 0)
			desc := ocispec.Descriptor{MediaType: tc.mediaType, Digest: dg, Size: fi.Size()}
			if err := content.WriteBlob(context.Background(), f.store, "bench", blob, desc); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(fi.Size())
			benchAppliers(b, f, desc, true)
		})
	}
}

// benchAppliers applies desc once per iteration with the erofs-vm differ
// and with containerd's own applier (what the walking differ does: extract
// onto a host dir), each into a fresh snapshot-like dir. syncFirst starts
// each run with no dirty pages of the last one.
func benchAppliers(b *testing.B, f *fixture, desc ocispec.Descriptor, syncFirst bool) {
	for _, applier := range []struct {
		name string
		a    diff.Applier
	}{{"erofs-vm", f.d}, {"walking", apply.NewFileSystemApplier(f.store)}} {
		b.Run(applier.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "snap")
				os.Mkdir(dir, 0o700)
				if applier.name == "erofs-vm" {
					os.WriteFile(filepath.Join(dir, ".erofslayer"), nil, 0o644)
				}
				if syncFirst {
					exec.Command("sync").Run()
				}
				b.StartTimer()
				if _, err := applier.a.Apply(context.Background(), desc, bindOf(dir)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func bindOf(dir string) []mount.Mount {
	return []mount.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}}
}
