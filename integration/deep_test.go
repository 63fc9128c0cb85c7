package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/integration/guest"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"github.com/erofs-vm/containerd-erofs/internal/treecmp"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// deepLayerCount is how deep TestDeepImage's image is: deeper than the
// per-layer fsmeta of every Commit could afford (issue 21), and deep enough
// that a host device= mount of every layer is near its limit.
const deepLayerCount = 128

// deepLayers builds the layer tars of a deep image, oldest first. Every
// layer changes something the ones below made: files rewritten, whited
// out, dirs made opaque, names changing type (file to dir, dir to
// symlink), hardlink pairs made and one of their names replaced later.
func deepLayers(t *testing.T, n int) [][]byte {
	t.Helper()
	mtime := time.Unix(1700000000, 0)
	var out [][]byte
	for i := 1; i <= n; i++ {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		put := func(h *tar.Header, body string) {
			h.ModTime, h.Format = mtime, tar.FormatPAX
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(body))
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if body != "" {
				if _, err := tw.Write([]byte(body)); err != nil {
					t.Fatal(err)
				}
			}
		}
		dir := func(name string) { put(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755}, "") }
		file := func(name, body string) {
			put(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, body)
		}
		if i == 1 {
			for d := range 16 {
				dir(fmt.Sprintf("d%02d", d))
				for f := range 4 {
					file(fmt.Sprintf("d%02d/f%d", d, f), fmt.Sprintf("base %d/%d\n", d, f))
				}
			}
			dir("tc0")
			file("tc0/child", "a dir that will become a file\n")
			file("tc1", "a file that will become a dir\n")
			dir("tc2")
			file("tc2/child", "a dir that will become a symlink\n")
		} else {
			dir(fmt.Sprintf("l%03d", i))
			file(fmt.Sprintf("l%03d/new", i), fmt.Sprintf("added by layer %d\n", i))
			d := fmt.Sprintf("d%02d", i%16)
			dir(d)
			file(fmt.Sprintf("%s/f%d", d, i%4), fmt.Sprintf("rewritten by layer %d\n", i))
		}
		if i%5 == 0 {
			file(fmt.Sprintf("d%02d/.wh.f%d", (i+3)%16, (i+1)%4), "")
		}
		if i%7 == 0 {
			d := fmt.Sprintf("d%02d", (i+5)%16)
			dir(d)
			file(d+"/.wh..wh..opq", "")
			file(d+"/after-opaque", fmt.Sprintf("the only entry left by layer %d\n", i))
		}
		switch {
		case i == 40:
			file(".wh.tc0", "")
			file("tc0", "now a file\n")
		case i == 60:
			file(".wh.tc1", "")
			dir("tc1")
			file("tc1/inside", "now a dir\n")
		case i == 80:
			file(".wh.tc2", "")
			put(&tar.Header{Typeflag: tar.TypeSymlink, Name: "tc2", Linkname: "d01", Mode: 0o777}, "")
		}
		if i%13 == 0 {
			dir("hl")
			a := fmt.Sprintf("hl/%03da", i)
			file(a, fmt.Sprintf("hardlinked in layer %d\n", i))
			put(&tar.Header{Typeflag: tar.TypeLink, Name: fmt.Sprintf("hl/%03db", i), Linkname: a, Mode: 0o644}, "")
			if i > 13 {
				// Replace one name of the previous pair: the other keeps
				// the old content, and the two are no longer one inode.
				file(fmt.Sprintf("hl/%03db", i-13), fmt.Sprintf("replaced in layer %d\n", i))
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// TestDeepImage unpacks a 128-layer image with erofs-vm and checks that
// the unpack builds no merged disk; that the first View of the top layer
// builds one equal, as the kernel reads the flattened VMDK, to GNU tar's
// extraction of the 128 tars; that a View of a middle layer equals that
// layer's prefix of the stack; and that a guest booted from the top
// layer's mounts sees the same tree.
func TestDeepImage(t *testing.T) {
	differRequireRoot(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (hack/install-deps.sh installs qemu-utils)")
	}
	assets := guest.RequireAssets(t)
	tarsBytes := deepLayers(t, deepLayerCount)
	var layers []ociLayer
	var tarPaths []string
	dir := t.TempDir()
	for i, b := range tarsBytes {
		layers = append(layers, ociLayer{b, ocispec.MediaTypeImageLayer, digest.FromBytes(b)})
		p := filepath.Join(dir, fmt.Sprintf("layer-%03d.tar", i+1))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tarPaths = append(tarPaths, p)
	}
	const name = "docker.io/library/deep:128"
	archive := ociArchive(t, name, layers)

	d := StartDaemon(t, DaemonOptions{})
	c := d.Client(t)
	ctx := d.Context(t)
	ctx, done, err := c.WithLease(ctx, leases.WithExpiration(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { done(context.WithoutCancel(ctx)) })
	start := time.Now()
	img, err := ImportAndUnpack(ctx, c, archive, name, E2ESnapshotter)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unpack of %d layers: %v", deepLayerCount, time.Since(start).Round(time.Millisecond))
	ss := c.SnapshotService(E2ESnapshotter)
	infos, err := LayerSnapshots(ctx, ss, img, true)
	if err != nil {
		t.Fatalf("layer snapshots:\n%v", err)
	}
	for i, info := range infos {
		if _, has := info.Labels[snapshotter.LabelFSMetaReady]; has {
			t.Fatalf("layer %d has a merged disk right after the unpack: unpacks must not build them", i+1)
		}
	}

	// View a layer and judge its merged disk the way the guest reads it:
	// the VMDK flattened by qemu-img into one raw device, mounted by the
	// kernel with no device= option, against GNU tar's extraction.
	check := func(layer int) []mount.Mount {
		t.Helper()
		key := fmt.Sprintf("deep-view-%d", layer)
		t0 := time.Now()
		ms, err := ss.View(ctx, key, img.ChainIDs[layer-1].String())
		if err != nil {
			t.Fatalf("view of layer %d: %v", layer, err)
		}
		t.Logf("first View of layer %d (builds its merged disk): %v", layer, time.Since(t0).Round(time.Millisecond))
		if len(ms) != 1 || ms[0].Type != "format/erofs" || !strings.HasSuffix(ms[0].Source, layout.FSMetaFile) {
			t.Fatalf("view of layer %d: mounts %s, want one format/erofs over fsmeta", layer, FormatMounts(ms))
		}
		vmdk := filepath.Join(filepath.Dir(ms[0].Source), layout.VMDKFile)
		raw := filepath.Join(t.TempDir(), "flat.raw")
		testmount.Run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk, raw)
		mnt := testmount.Mount(t, "erofs", testmount.Loop(t, raw, false), "ro")
		// The tars carry no root entry: GNU tar's root is the temp dir.
		treecmp.Compare(t, tarOracle(t, tarPaths[:layer]), mnt, treecmp.Options{IgnoreRoot: true})
		return ms
	}
	check(deepLayerCount / 2)
	top := check(deepLayerCount)

	// One guest boot: the top layer's disk as a VM runtime attaches it.
	oracle, err := guest.HostManifest(tarOracle(t, tarPaths))
	if err != nil {
		t.Fatal(err)
	}
	bootCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	res, err := guest.BootMounts(bootCtx, top, guest.ManifestScript(guest.RootDir), guest.Config{Assets: &assets, Timeout: 8 * time.Minute})
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("guest script exited %d:\n%s", res.ExitCode, tailString(res.Output, 4000))
	}
	got, err := guest.ParseManifest(res.Output)
	if err != nil {
		t.Fatal(err)
	}
	// The tars carry no root entry: GNU tar's root is a temp dir.
	delete(oracle, ".")
	delete(got, ".")
	if diff := guest.Diff(oracle, got, false); len(diff) > 0 {
		t.Errorf("the guest's view of the %d-layer image differs from the extraction:\n%s", deepLayerCount, strings.Join(diff, "\n"))
	}
	t.Logf("guest saw %d entries in %v", len(got), res.Duration.Round(time.Second))
}
