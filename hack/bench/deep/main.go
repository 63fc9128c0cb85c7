// Command deep measures what an image's depth costs: the unpack of a
// Debian rootfs plus N-1 small layers, with erofs-vm and with overlayfs +
// walking, in the same daemon and the same run, and the first Prepare of a
// container on each unpacked image (where erofs-vm now builds the merged
// disk, docs/design.md §4).
//
//	go run ./hack/bench/deep [-layers 3,32,128] [-runs 3]
//
// Each image is imported into a fresh namespace without unpacking (the
// blobs are then in the content store), and the unpack alone is timed with
// Go's clock around the client's Image.Unpack, which applies the layers one
// after the other for both snapshotters. Runs alternate between the
// snapshotters; best and median of the runs are reported, and the ratio of
// the bests. Needs root, `make build` (bin/) and `make test-image`
// (_output/images/layers/1-rootfs.tar).
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/integration"
)

func main() {
	repo := flag.String("repo", ".", "repository root (bin/, hack/config.toml, _output/)")
	layerList := flag.String("layers", "3,32,128", "image depths to measure")
	runs := flag.Int("runs", 3, "runs per image and snapshotter")
	flag.Parse()
	if err := run(*repo, *layerList, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/deep:", err)
		os.Exit(1)
	}
}

func run(repo, layerList string, runs int) error {
	var depths []int
	for _, s := range strings.Split(layerList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-layers: %q is not a layer count", s)
		}
		depths = append(depths, n)
	}
	rootfs, err := os.ReadFile(filepath.Join(repo, "_output", "images", "layers", "1-rootfs.tar"))
	if err != nil {
		return fmt.Errorf("%w (run make test-image)", err)
	}
	work, err := os.MkdirTemp("", "bench-deep-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	base := layerBlob{tar: rootfs, gz: gz(rootfs)}

	config, err := os.ReadFile(filepath.Join(repo, "hack", "config.toml"))
	if err != nil {
		return err
	}
	daemonDir := filepath.Join(work, "daemon")
	if err := os.Mkdir(daemonDir, 0o755); err != nil {
		return err
	}
	ctx := context.Background()
	d, err := integration.StartStandalone(ctx, filepath.Join(repo, "bin", "containerd-erofs"), string(config), daemonDir)
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	defer d.Close()
	c, err := client.New(d.Address)
	if err != nil {
		return err
	}
	defer c.Close()

	fmt.Printf("Unpack of a Debian rootfs (121 MB tar, gzip) plus N-1 small layers (20 files and a rewrite each, a whiteout every 10th), erofs-vm vs overlayfs + walking, same daemon; %d runs each, alternated; the first Prepare of a container on the unpacked image (erofs-vm builds the merged disk there). Go's clock.\n\n", runs)
	fmt.Println("| layers | erofs-vm unpack best / median (s) | overlayfs+walking unpack best / median (s) | ratio (best) | first Prepare erofs-vm best / median (ms) | first Prepare overlayfs best / median (ms) |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, n := range depths {
		archive := filepath.Join(work, fmt.Sprintf("deep-%d.oci.tar", n))
		name := fmt.Sprintf("docker.io/library/deep:%d", n)
		if err := writeArchive(archive, name, append([]layerBlob{base}, smallLayers(n-1)...)); err != nil {
			return err
		}
		res := map[string]*timings{"erofs-vm": {}, "overlayfs": {}}
		for r := range runs {
			for _, sn := range []string{"erofs-vm", "overlayfs"} {
				ns := fmt.Sprintf("deep-%d-%s-%d", n, sn, r)
				unpack, prepare, err := measure(ctx, c, ns, archive, name, sn)
				if err != nil {
					return fmt.Errorf("%d layers, %s, run %d: %w", n, sn, r+1, err)
				}
				res[sn].unpack = append(res[sn].unpack, unpack)
				res[sn].prepare = append(res[sn].prepare, prepare)
			}
		}
		if err := os.Remove(archive); err != nil {
			return err
		}
		e, o := res["erofs-vm"], res["overlayfs"]
		fmt.Printf("| %d | %.2f / %.2f | %.2f / %.2f | %.2fx | %.1f / %.1f | %.1f / %.1f |\n", n,
			best(e.unpack).Seconds(), median(e.unpack).Seconds(), best(o.unpack).Seconds(), median(o.unpack).Seconds(),
			best(e.unpack).Seconds()/best(o.unpack).Seconds(),
			ms(best(e.prepare)), ms(median(e.prepare)), ms(best(o.prepare)), ms(median(o.prepare)))
		fmt.Printf("BENCH deep layers=%d erofs_vm_s=%.3f overlayfs_s=%.3f prepare_erofs_vm_ms=%.1f prepare_overlayfs_ms=%.1f\n",
			n, best(e.unpack).Seconds(), best(o.unpack).Seconds(), ms(best(e.prepare)), ms(best(o.prepare)))
	}
	return nil
}

type timings struct{ unpack, prepare []time.Duration }

func best(ds []time.Duration) time.Duration { return slices.Min(ds) }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// measure imports the archive into namespace ns without unpacking, then
// times the unpack with snapshotter sn and the first Prepare on the
// result, and deletes everything again (synchronous GC).
func measure(ctx context.Context, c *client.Client, ns, archive, name, sn string) (unpack, prepare time.Duration, err error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	ctx, done, err := c.WithLease(ctx, leases.WithExpiration(time.Hour))
	if err != nil {
		return 0, 0, err
	}
	defer func() { err = errors.Join(err, done(context.WithoutCancel(ctx))) }()
	f, err := os.Open(archive)
	if err != nil {
		return 0, 0, err
	}
	imgs, err := c.Import(ctx, f)
	f.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("import: %w", err)
	}
	i := slices.IndexFunc(imgs, func(im images.Image) bool { return im.Name == name })
	if i < 0 {
		return 0, 0, fmt.Errorf("import gave %v, not %s", imgs, name)
	}
	img := client.NewImage(c, imgs[i])
	t0 := time.Now()
	if err := img.Unpack(ctx, sn); err != nil {
		return 0, 0, fmt.Errorf("unpack: %w", err)
	}
	unpack = time.Since(t0)
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return 0, 0, err
	}
	ss := c.SnapshotService(sn)
	t0 = time.Now()
	if _, err := ss.Prepare(ctx, "bench-container", identity.ChainID(diffIDs).String()); err != nil {
		return 0, 0, fmt.Errorf("prepare: %w", err)
	}
	prepare = time.Since(t0)
	if err := ss.Remove(ctx, "bench-container"); err != nil {
		return 0, 0, err
	}
	if err := c.ImageService().Delete(ctx, name, images.SynchronousDelete()); err != nil {
		return 0, 0, fmt.Errorf("delete image: %w", err)
	}
	return unpack, prepare, nil
}

// layerBlob is one layer: its tar (the diff ID's input) and its gzip blob.
type layerBlob struct{ tar, gz []byte }

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// smallLayers makes n small layers: each adds a directory of 20 small
// files and rewrites one file of the layer before it; every 10th whites
// out a file of an earlier layer. Their cost in an unpack is the
// per-layer overhead, not data.
func smallLayers(n int) []layerBlob {
	out := make([]layerBlob, 0, n)
	mtime := time.Unix(1700000000, 0)
	for i := 2; i <= n+1; i++ {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		add := func(h *tar.Header, body string) {
			h.ModTime, h.Format = mtime, tar.FormatPAX
			h.Size = int64(len(body))
			tw.WriteHeader(h)
			tw.Write([]byte(body))
		}
		dir := fmt.Sprintf("opt/layer-%03d", i)
		add(&tar.Header{Typeflag: tar.TypeDir, Name: "opt/", Mode: 0o755}, "")
		add(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}, "")
		for f := range 20 {
			add(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s/file-%02d", dir, f), Mode: 0o644}, strings.Repeat(fmt.Sprintf("layer %d file %d\n", i, f), 20))
		}
		if i > 2 {
			add(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("opt/layer-%03d/file-00", i-1), Mode: 0o644}, fmt.Sprintf("rewritten by layer %d\n", i))
		}
		if i%10 == 0 {
			add(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("opt/layer-%03d/.wh.file-01", i-5), Mode: 0o644}, "")
		}
		tw.Close()
		out = append(out, layerBlob{tar: buf.Bytes(), gz: gz(buf.Bytes())})
	}
	return out
}

// writeArchive writes the image archive of the given gzip layers.
func writeArchive(path, name string, layers []layerBlob) error {
	al := make([]integration.ArchiveLayer, len(layers))
	for i, l := range layers {
		al[i] = integration.ArchiveLayer{Blob: l.gz, MediaType: ocispec.MediaTypeImageLayerGzip, DiffID: digest.FromBytes(l.tar)}
	}
	return integration.WriteImageArchive(path, name, al)
}
