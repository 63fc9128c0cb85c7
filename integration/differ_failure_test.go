package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	tarchive "github.com/containerd/containerd/v2/core/transfer/archive"
	timage "github.com/containerd/containerd/v2/core/transfer/image"
	"github.com/containerd/platforms"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// differTar makes a small layer tar; names ending in / are dirs.
func differTar(t *testing.T, names ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i, n := range names {
		h := &tar.Header{Name: n, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(20000 * (i + 1))}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Size, h.Mode = tar.TypeDir, 0, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(bytes.Repeat([]byte{byte('a' + i)}, int(h.Size)))
	}
	tw.Close()
	return b.Bytes()
}

func differGzip(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

func differZstd(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// waitNoLeftovers polls until the snapshotter has neither snapshots in its
// metastore nor dirs or temp files on disk (the unpacker removes a failed
// extract snapshot right after the Apply error), failing after a minute.
func waitNoLeftovers(t *testing.T, d *Daemon, c *client.Client) {
	t.Helper()
	ctx := d.Context(t)
	deadline := time.Now().Add(time.Minute)
	for {
		snaps := snapshotsByName(t, ctx, c)
		dirs, temps := snapshotDirLeftovers(t, d.SnapshotterRoot())
		if len(snaps) == 0 && len(dirs) == 0 && len(temps) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: snapshots %v, snapshot dirs %v, temp files %v", snaps, dirs, temps)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDifferApplyFailures: a layer that does not match its diff ID, a
// truncated gzip, a corrupt zstd and a tar escaping the root each fail the
// unpack with an error naming the blob's digest and leave no snapshot,
// snapshot dir or temp file behind.
func TestDifferApplyFailures(t *testing.T) {
	differRequireRoot(t)
	good := differTar(t, "etc/", "etc/a", "etc/b", "usr/", "usr/big")
	gz := differGzip(good)
	zs := differZstd(t, good)
	corrupt := append([]byte{}, zs...)
	for i := len(corrupt) / 3; i < len(corrupt)/3+64; i++ {
		corrupt[i] ^= 0xa5
	}
	escape := differTar(t, "etc/", "../../escaped")
	wrongDiffID := digest.FromString("some other layer")
	tests := []struct {
		name  string
		layer ociLayer
		also  string // a further substring the error must hold
	}{
		// The snapshotter passes the unpacker's diff ID label to the
		// differ, so Apply itself refuses the blob, naming both digests
		// (containerd's unpacker, checking after Apply, names only what
		// it computed).
		{"diff ID mismatch", ociLayer{gz, ocispec.MediaTypeImageLayerGzip, wrongDiffID}, "expected " + wrongDiffID.String()},
		{"truncated gzip", ociLayer{gz[:len(gz)*2/3], ocispec.MediaTypeImageLayerGzip, digest.FromBytes(good)}, ""},
		{"corrupt zstd", ociLayer{corrupt, ocispec.MediaTypeImageLayerZstd, digest.FromBytes(good)}, ""},
		{"escape", ociLayer{differGzip(escape), ocispec.MediaTypeImageLayerGzip, digest.FromBytes(escape)}, "escapes"},
	}
	d := StartDaemon(t, DaemonOptions{})
	c := d.Client(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "docker.io/library/differ-bad:" + strings.ReplaceAll(tc.name, " ", "-")
			archive := ociArchive(t, name, []ociLayer{tc.layer})
			blob := digest.FromBytes(tc.layer.Blob)
			out, err := d.Ctr(t, "images", "import", "--snapshotter", "erofs-vm", archive)
			if err == nil {
				t.Fatalf("import of a bad layer succeeded:\n%s", out)
			}
			if !strings.Contains(err.Error(), blob.Encoded()) {
				t.Errorf("error does not name the blob %s:\n%v", blob, err)
			}
			if tc.also != "" && !strings.Contains(err.Error(), tc.also) {
				t.Errorf("error does not say %q:\n%v", tc.also, err)
			}
			t.Logf("case %d: %v", i, err)
			waitNoLeftovers(t, d, c)
		})
	}
}

// TestDifferApplyCancel: a client that goes away while a layer streams
// (its context cancelled mid-Apply, during a transfer-service import)
// fails the unpack and leaves no snapshot, dir or temp file behind.
func TestDifferApplyCancel(t *testing.T) {
	differRequireRoot(t)
	archive := differAsset(t, "debian-3layer.oci.tar")
	d := StartDaemon(t, DaemonOptions{})
	c := d.Client(t)
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	ctx, cancel := withCancel(d.Context(t))
	defer cancel()
	// Cancel as soon as the differ's temp file shows up: the blob is then
	// being streamed into it.
	seen := make(chan string, 1)
	go func() {
		defer cancel()
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			m, _ := filepath.Glob(filepath.Join(d.SnapshotterRoot(), "snapshots", "*", ".layer.erofs.tmp-*"))
			if len(m) > 0 {
				seen <- m[0]
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	store := timage.NewStore("", timage.WithNamedPrefix("cancel", true),
		timage.WithPlatforms(platforms.DefaultSpec()), timage.WithUnpack(platforms.DefaultSpec(), "erofs-vm"))
	err = c.Transfer(ctx, tarchive.NewImageImportStream(f, ""), store)
	select {
	case p := <-seen:
		t.Logf("cancelled while %s existed", p)
	default:
		t.Fatalf("the import ended (%v) before a temp file was seen: cannot test mid-stream cancellation", err)
	}
	if err == nil {
		t.Fatal("cancelled import succeeded")
	}
	t.Logf("import error: %v", err)
	waitNoLeftovers(t, d, c)
}
