package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// The fsmeta tests judge a merged image by three independent views of the
// same layer stack, which must agree entry by entry:
//
//	(a) the kernel's multi-device mount of fsmeta, each layer a loop device;
//	(b) the flat concatenation [fsmeta, layers...] mounted as one device;
//	(c) the oracle: a read-only overlay whose lowerdirs are the layer images
//	    themselves, loop-mounted; none of our code is involved in it.

// mkfsLayer turns a layer dir in overlayfs upper form into an image with
// erofs-utils, an implementation independent of ours.
func mkfsLayer(t *testing.T, dir, out string) {
	t.Helper()
	fsmetaRun(t, "mkfs.erofs", "--quiet", "--preserve-mtime", "-Uc1b9d5a2-1b2c-4d5e-8f90-123456789abc", out, dir)
}

// views mounts the oracle for layers (oldest first) and returns its tree.
func oracleTree(t *testing.T, base string, layers []string) map[string]fsmetaEntry {
	t.Helper()
	var lowers []string // newest first, as overlayfs wants them
	for i, l := range layers {
		dev := fsmetaLoop(t, l)
		lowers = append([]string{fsmetaMount(t, base, fmt.Sprintf("L%d", i), "erofs", dev)}, lowers...)
	}
	if len(lowers) == 1 {
		return fsmetaTree(t, lowers[0]) // overlayfs needs two lowers without an upper
	}
	ov := fsmetaMount(t, base, "oracle", "overlay", "overlay", "lowerdir="+strings.Join(lowers, ":"))
	return fsmetaTree(t, ov)
}

// buildFSMeta runs the builder and returns the fsmeta path and its result.
func buildFSMeta(t *testing.T, base string, layers []string) (string, *erofs.FSMeta) {
	t.Helper()
	p := filepath.Join(base, "fsmeta.erofs")
	f, err := os.Create(p)
	must(t, err)
	defer f.Close()
	meta, err := erofs.BuildFSMeta(context.Background(), f, layers)
	if err != nil {
		t.Fatalf("BuildFSMeta: %v", err)
	}
	fi, err := f.Stat()
	must(t, err)
	if fi.Size() != int64(meta.Blocks)*erofs.BlockSize {
		t.Fatalf("fsmeta is %d bytes, FSMeta.Blocks says %d blocks", fi.Size(), meta.Blocks)
	}
	if len(meta.Devices) != len(layers) {
		t.Fatalf("%d devices for %d layers", len(meta.Devices), len(layers))
	}
	next := meta.Blocks
	for i, d := range meta.Devices {
		if d.Path != layers[i] || d.MappedBlkAddr != next {
			t.Fatalf("device %d = %+v, want path %s mapped at %d", i, d, layers[i], next)
		}
		next += d.Blocks
	}
	return p, meta
}

// concatFlat writes [fsmeta, layers...] as one file: the bytes a flat VMDK
// presents to a guest.
func concatFlat(t *testing.T, out string, parts ...string) {
	t.Helper()
	w, err := os.Create(out)
	must(t, err)
	defer w.Close()
	for _, p := range parts {
		r, err := os.Open(p)
		must(t, err)
		_, err = io.Copy(w, r)
		r.Close()
		must(t, err)
	}
}

// checkFSMetaViews builds fsmeta over layers and compares views (a) and
// (b) with the oracle, and fsck.erofs with the layers as devices.
func checkFSMetaViews(t *testing.T, base string, layers []string, oracle map[string]fsmetaEntry) {
	t.Helper()
	fsmeta, _ := buildFSMeta(t, base, layers)

	fsckArgs := []string{}
	for _, l := range layers {
		fsckArgs = append(fsckArgs, "--device="+l)
	}
	fsmetaRun(t, "fsck.erofs", append(fsckArgs, fsmeta)...)

	// (a) multi-device: device= must name block devices, in table order.
	var opts []string
	for _, l := range layers {
		opts = append(opts, "device="+fsmetaLoop(t, l))
	}
	multi := fsmetaMount(t, base, "multi", "erofs", fsmetaLoop(t, fsmeta), opts...)
	a := fsmetaTree(t, multi)
	fsmetaSameTree(t, "multi-device", a, "overlay", oracle, fsmetaDiffOpts{noNlink: true})

	// (b) flat: one device, the kernel adds each slot's mapped_blkaddr.
	flat := filepath.Join(base, "flat.raw")
	concatFlat(t, flat, append([]string{fsmeta}, layers...)...)
	// fsck.erofs 1.5 cannot check a flat image (it insists on one --device
	// per slot); the kernel mount below is the judge of the flat layout.
	b := fsmetaTree(t, fsmetaMount(t, base, "flat", "erofs", fsmetaLoop(t, flat)))
	fsmetaSameTree(t, "flat", b, "multi-device", a, fsmetaDiffOpts{})
}

func TestFSMetaCraftedStacks(t *testing.T) {
	fsmetaRequireHost(t, "mkfs.erofs", "fsck.erofs", "losetup", "mount")
	stacks := craftedStacks()
	names := make([]string, 0, len(stacks))
	for n := range stacks {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			dirs, expected := buildStackDirs(t, base, stacks[name])
			var layers []string
			for i, d := range dirs {
				img := filepath.Join(base, fmt.Sprintf("layer%d.erofs", i))
				mkfsLayer(t, d, img)
				layers = append(layers, img)
			}
			oracle := oracleTree(t, base, layers)
			// The harness and the oracle first agree with the intended result
			// (mtimes aside: the expected dir was written in one go).
			want := fsmetaTree(t, expected)
			fsmetaSameTree(t, "overlay", stripMtime(oracle), "expected", stripMtime(want), fsmetaDiffOpts{noNlink: true})
			checkFSMetaViews(t, base, layers, oracle)
		})
	}
}

func stripMtime(m map[string]fsmetaEntry) map[string]fsmetaEntry {
	out := make(map[string]fsmetaEntry, len(m))
	for p, e := range m {
		e.Mtime = ""
		if p == "/" {
			e.Perm = 0 // the expected root is a test temp dir
		}
		out[p] = e
	}
	return out
}
