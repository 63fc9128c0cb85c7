package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"github.com/erofs-vm/containerd-erofs/vmdk"
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
	testmount.Run(t, "mkfs.erofs", "--quiet", "--preserve-mtime", "-Uc1b9d5a2-1b2c-4d5e-8f90-123456789abc", out, dir)
}

// maxLoopLayers: stacks up to this many layers get a loop device per
// layer; taller ones (500) are mounted file-backed (erofs can, since Linux
// 6.12), which spares the shared machine hundreds of loop devices.
const maxLoopLayers = 64

// maxDeviceOpts: mount(2) takes one page of options, so `-o device=` per
// layer stops fitting at about 4096/len("device=/dev/loopNNN,") layers.
// Taller stacks are checked in flat mode only, which is how a guest
// mounts them anyway.
const maxDeviceOpts = 150

// oracleTree mounts the oracle for layers (oldest first) and returns its tree.
func oracleTree(t *testing.T, base string, layers []string) fsmetaView {
	t.Helper()
	var lowers []string // newest first, as overlayfs wants them
	for i, l := range layers {
		src := l
		if len(layers) <= maxLoopLayers {
			src = testmount.Loop(t, l, false)
		}
		name := fmt.Sprintf("L%d", i)
		fsmetaMount(t, base, name, "erofs", src)
		lowers = append([]string{name}, lowers...)
	}
	if len(lowers) == 1 {
		return fsmetaTree(t, filepath.Join(base, lowers[0])) // overlayfs needs two lowers without an upper
	}
	// Relative lowerdirs, resolved in base: 500 absolute paths would not
	// fit in mount(2)'s one page of options.
	dir := filepath.Join(base, "oracle")
	fsmetaMust(t, os.MkdirAll(dir, 0o755))
	testmount.RunIn(t, base, "mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir="+strings.Join(lowers, ":"), dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return fsmetaTree(t, dir)
}

// buildFSMeta runs the builder and returns the fsmeta path and its result.
func buildFSMeta(t *testing.T, base string, layers []string) (string, *erofs.FSMeta) {
	t.Helper()
	p := filepath.Join(base, "fsmeta.erofs")
	f, err := os.Create(p)
	fsmetaMust(t, err)
	defer f.Close()
	meta, err := erofs.BuildFSMeta(context.Background(), f, layers)
	if err != nil {
		t.Fatalf("BuildFSMeta: %v", err)
	}
	fi, err := f.Stat()
	fsmetaMust(t, err)
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

// flatFromVMDK writes the flat VMDK over [fsmeta, layers...] and lets
// qemu-img, the same block layer a guest's disk goes through, turn it into
// the raw disk the guest would see.
func flatFromVMDK(t *testing.T, base string, parts ...string) string {
	t.Helper()
	files, err := vmdk.FilesFromPaths(parts...)
	fsmetaMust(t, err)
	desc := filepath.Join(base, "merged.vmdk")
	fsmetaMust(t, vmdk.WriteFile(desc, files))
	info := testmount.Run(t, "qemu-img", "info", "--output=json", desc)
	var want int64
	for _, f := range files {
		want += f.Size
	}
	if !strings.Contains(info, fmt.Sprintf(`"virtual-size": %d,`, want)) {
		t.Fatalf("qemu-img info of %s does not show %d bytes:\n%s", desc, want, info)
	}
	flat := filepath.Join(base, "flat.raw")
	testmount.Run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", desc, flat)
	return flat
}

// checkFSMetaViews builds fsmeta over layers and compares views (a) and
// (b) with the oracle, and fsck.erofs with the layers as devices.
func checkFSMetaViews(t *testing.T, base string, layers []string, oracle fsmetaView) {
	t.Helper()
	fsmeta, _ := buildFSMeta(t, base, layers)

	fsckArgs := []string{}
	for _, l := range layers {
		fsckArgs = append(fsckArgs, "--device="+l)
	}
	testmount.Run(t, "fsck.erofs", append(fsckArgs, fsmeta)...)

	// (b) flat: one device, the kernel adds each slot's mapped_blkaddr.
	flat := flatFromVMDK(t, base, append([]string{fsmeta}, layers...)...)
	// fsck.erofs 1.5 cannot check a flat image (it insists on one --device
	// per slot); the kernel mount below is the judge of the flat layout.
	b := fsmetaTree(t, fsmetaMount(t, base, "flat", "erofs", testmount.Loop(t, flat, false)))
	fsmetaSameTree(t, "overlay", oracle, "flat", b, fsmetaDiffOpts{noNlink: true})
	if len(layers) > maxDeviceOpts {
		t.Logf("%d layers: multi-device mount skipped (device= options exceed mount(2)'s page)", len(layers))
		return
	}

	// (a) multi-device: device= must name block devices, in table order.
	var opts []string
	for _, l := range layers {
		opts = append(opts, "device="+testmount.Loop(t, l, false))
	}
	multi := fsmetaMount(t, base, "multi", "erofs", testmount.Loop(t, fsmeta, false), opts...)
	a := fsmetaTree(t, multi)
	// Exact, nlink included: both are the same fsmeta.
	fsmetaSameTree(t, "flat", b, "multi-device", a, fsmetaDiffOpts{})
}

// convertDirLayer turns a layer dir into an image with our own converter,
// the way the differ makes layers from a container's upper dir.
func convertDirLayer(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	fsmetaMust(t, err)
	defer f.Close()
	if _, err := erofs.ConvertDir(context.Background(), f, dir, erofs.ConvertOptions{}); err != nil {
		t.Fatalf("ConvertDir %s: %v", dir, err)
	}
}

// layerMakers build the layers of the crafted stacks two ways: erofs-utils
// (inline tails, its own layout) and our converter (what production stacks).
var layerMakers = []struct {
	name string
	make func(t *testing.T, dir, out string)
}{
	{"mkfs", mkfsLayer},
	{"ours", convertDirLayer},
}

func TestFSMetaCraftedStacks(t *testing.T) {
	fsmetaRequireHost(t, "mkfs.erofs", "fsck.erofs", "losetup", "mount", "qemu-img")
	stacks := craftedStacks()
	names := make([]string, 0, len(stacks))
	for n := range stacks {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, lm := range layerMakers {
		for _, name := range names {
			if name == "500-layers" && lm.name != "ours" {
				continue // 500 mounts take half a minute: once is enough
			}
			t.Run(lm.name+"/"+name, func(t *testing.T) {
				checkCraftedStack(t, stacks[name], lm.make)
			})
		}
	}
}

func checkCraftedStack(t *testing.T, stack [][]stackOp, makeLayer func(t *testing.T, dir, out string)) {
	base := t.TempDir()
	dirs, expected := buildStackDirs(t, base, stack)
	var layers []string
	for i, d := range dirs {
		img := filepath.Join(base, fmt.Sprintf("layer%d.erofs", i))
		makeLayer(t, d, img)
		layers = append(layers, img)
	}
	oracle := oracleTree(t, base, layers)
	// The harness and the oracle first agree with the intended result
	// (mtimes aside: the expected dir was written in one go).
	want := fsmetaTree(t, expected)
	fsmetaSameTree(t, "expected", want, "overlay", oracle, fsmetaDiffOpts{noNlink: true, noMtime: true})
	checkFSMetaViews(t, base, layers, oracle)
}

// TestFSMetaLayerOver2GiB puts a layer larger than one VMDK extent (2 GiB)
// in the middle of a stack, so the VMDK splits it and the top layer is
// mapped beyond 2 GiB of the flat disk: reads of the top layer's files go
// through a later extent and a mapped_blkaddr past 2^19 blocks.
func TestFSMetaLayerOver2GiB(t *testing.T) {
	fsmetaRequireHost(t, "mkfs.erofs", "fsck.erofs", "losetup", "mount", "qemu-img")
	base := t.TempDir()
	dirs, _ := buildStackDirs(t, base, [][]stackOp{
		{opFile("bottom", "bottom", 0o644), opDir("d", 0o755), opFile("d/x", "x", 0o644)},
		{opBig("middle", "0123456789abcdef", 300000), opFile("d/y", "y", 0o644)},
		{opBig("top", "top of the stack ", 100000), opWhiteout("d/x")},
	})
	var layers []string
	for i, d := range dirs {
		img := filepath.Join(base, fmt.Sprintf("layer%d.erofs", i))
		mkfsLayer(t, d, img)
		layers = append(layers, img)
	}
	// A sparse tail: the layer's own blocks end early, the device (and
	// its slot in the flat disk) is 2.5 GiB.
	fsmetaMust(t, os.Truncate(layers[1], 5<<29))
	oracle := oracleTree(t, base, layers)
	fsmeta, meta := buildFSMeta(t, base, layers)
	if top := meta.Devices[2].MappedBlkAddr; uint64(top)*erofs.BlockSize <= 2<<30 {
		t.Fatalf("top layer mapped at block %d: the test no longer crosses 2 GiB", top)
	}
	d, err := vmdk.NewDescriptor(fsmetaFiles(t, append([]string{fsmeta}, layers...)...))
	fsmetaMust(t, err)
	if len(d.Extents) < 4 {
		t.Fatalf("%d VMDK extents for 3 layers incl. a 2.5 GiB one: no split", len(d.Extents))
	}
	checkFSMetaViews(t, base, layers, oracle)
}

func fsmetaFiles(t *testing.T, paths ...string) []vmdk.File {
	t.Helper()
	files, err := vmdk.FilesFromPaths(paths...)
	fsmetaMust(t, err)
	return files
}

// TestFSMetaChunkedLayerWithHoles stacks a layer whose files are themselves
// chunk-based with holes (what a converter may write for sparse files),
// built directly with the serializer: fsmeta must keep the holes as holes
// and remap every data chunk, and the kernel must read the same bytes
// through all views.
func TestFSMetaChunkedLayerWithHoles(t *testing.T) {
	fsmetaRequireHost(t, "mkfs.erofs", "fsck.erofs", "losetup", "mount", "qemu-img")
	base := t.TempDir()
	const B = erofs.BlockSize
	blocks := [][]byte{nil} // block 0: superblock
	block := func(fill byte, n int) uint32 {
		b := bytes.Repeat([]byte{fill}, B)
		b = b[:n]
		blocks = append(blocks, append(b, make([]byte, B-n)...))
		return uint32(len(blocks) - 1)
	}
	hole := erofs.ChunkIndex{BlkAddr: erofs.NullAddr}
	// sparse: 1-block chunks [data, hole, hole, data, data, data(100 B)].
	sparse := erofs.Data{Kind: erofs.DataChunks, Size: 5*B + 100, ChunkBits: 12, Chunks: []erofs.ChunkIndex{
		{BlkAddr: block('a', B)}, hole, hole, {BlkAddr: block('b', B)}, {BlkAddr: block('c', B)}, {BlkAddr: block('d', 100)},
	}}
	// wide: 4-block chunks [4 data blocks, hole, 2 data blocks (last partial)].
	first := block('e', B)
	block('f', B)
	block('g', B)
	block('h', B)
	second := block('i', B)
	block('j', 7)
	wide := erofs.Data{Kind: erofs.DataChunks, Size: 9*B + 7, ChunkBits: 14, Chunks: []erofs.ChunkIndex{
		{BlkAddr: first}, hole, {BlkAddr: second},
	}}
	tree := erofs.NewTree()
	for name, d := range map[string]erofs.Data{"sparse": sparse, "wide": wide} {
		n := &erofs.Node{Mode: syscall.S_IFREG | 0o644, Mtime: 1700000000, Data: d}
		fsmetaMust(t, tree.Link(tree.Root(), name, n))
	}
	l0 := filepath.Join(base, "layer0.erofs")
	f, err := os.Create(l0)
	fsmetaMust(t, err)
	for i, b := range blocks[1:] {
		_, err := f.WriteAt(b, int64(i+1)*B)
		fsmetaMust(t, err)
	}
	info, err := tree.WriteImage(f, erofs.ImageOptions{MetaBlkAddr: uint32(len(blocks))})
	fsmetaMust(t, err)
	fsmetaMust(t, f.Truncate(int64(info.Blocks)*B))
	fsmetaMust(t, f.Close())

	dirs, _ := buildStackDirs(t, base, [][]stackOp{{opFile("upper", "u", 0o644)}})
	l1 := filepath.Join(base, "layer1.erofs")
	convertDirLayer(t, dirs[0], l1)
	layers := []string{l0, l1}
	oracle := oracleTree(t, base, layers)

	// The oracle reads the layer as intended: holes are zeros.
	want := map[string][]byte{
		"sparse": slices.Concat(bytes.Repeat([]byte{'a'}, B), make([]byte, 2*B), bytes.Repeat([]byte{'b'}, B),
			bytes.Repeat([]byte{'c'}, B), bytes.Repeat([]byte{'d'}, 100)),
		"wide": slices.Concat(bytes.Repeat([]byte{'e'}, B), bytes.Repeat([]byte{'f'}, B), bytes.Repeat([]byte{'g'}, B),
			bytes.Repeat([]byte{'h'}, B), make([]byte, 4*B), bytes.Repeat([]byte{'i'}, B), bytes.Repeat([]byte{'j'}, 7)),
	}
	for name, w := range want {
		if got := oracle.entries[name].SHA256; got != sha256.Sum256(w) {
			t.Fatalf("%s: the hand-built layer does not read as intended", name)
		}
	}
	checkFSMetaViews(t, base, layers, oracle)
}
