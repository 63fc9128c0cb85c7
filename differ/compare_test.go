package differ

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/differ/difftest"
	"github.com/erofs-vm/containerd-erofs/internal/commitgate"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// compareSetup lays out what the snapshotter would have: snapshots/1 with
// the lower as layer.erofs (made by mkfs.erofs, an independent writer),
// and snapshots/2 with the change left by a real overlayfs, in overlay
// mode (rw/upper) and in block mode (upper/ inside an ext4 rwlayer.img).
type compareSetup struct {
	lowerDir  string
	lowerImg  string
	overlayRW string
	ext4Img   string
	merged    map[string]difftest.Entry
}

func newCompareSetup(t *testing.T) *compareSetup {
	t.Helper()
	lowerDir, upper, merged, _ := overlayChange(t)
	root := t.TempDir()
	s := &compareSetup{lowerDir: lowerDir, merged: merged}
	for _, d := range []string{"snapshots/1", "snapshots/2/rw", "snapshots/3"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.lowerImg = filepath.Join(root, "snapshots/1", layout.LayerFile)
	run(t, "mkfs.erofs", "--quiet", "-x1", s.lowerImg, lowerDir)

	s.overlayRW = filepath.Join(root, "snapshots/2", layout.RWDir)
	run(t, "cp", "-a", upper, filepath.Join(s.overlayRW, layout.UpperDir))

	s.ext4Img = filepath.Join(root, "snapshots/3", layout.RWLayerFile)
	run(t, "truncate", "-s", "64M", s.ext4Img)
	run(t, "mkfs.ext4", "-q", "-F", s.ext4Img)
	mnt := t.TempDir()
	run(t, "mount", "-o", "loop", s.ext4Img, mnt)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			unix.Unmount(mnt, 0)
		}
	})
	run(t, "cp", "-a", upper, filepath.Join(mnt, layout.UpperDir))
	if err := os.Mkdir(filepath.Join(mnt, layout.WorkDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	return s
}

func (s *compareSetup) lowerMounts() []mount.Mount {
	return []mount.Mount{{Type: "erofs", Source: s.lowerImg, Options: []string{"ro"}}}
}

// readDiff returns the uncompressed tar of desc and checks the label.
func readDiff(t *testing.T, cs content.Store, desc ocispec.Descriptor) []byte {
	t.Helper()
	ctx := context.Background()
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	dc, err := compression.DecompressStream(content.NewReader(ra))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	b, err := io.ReadAll(dc)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cs.Info(ctx, desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Labels[labels.LabelUncompressed]; got != digest.FromBytes(b).String() {
		t.Errorf("%s label = %q, want %s", labels.LabelUncompressed, got, digest.FromBytes(b))
	}
	return b
}

// TestCompare: Compare over an EROFS lower and both kinds of writable
// upper yields a blob that, applied by containerd on the lower, recreates
// the tree the container saw.
func TestCompare(t *testing.T) {
	s := newCompareSetup(t)
	tests := []struct {
		name      string
		upper     mount.Mount
		mediaType string
		wantComp  compression.Compression
	}{
		{"overlay mode gzip", mount.Mount{Type: "bind", Source: s.overlayRW, Options: []string{"rbind", "rw"}}, "", compression.Gzip},
		{"block mode zstd", mount.Mount{Type: "ext4", Source: s.ext4Img, Options: []string{"rw", "loop"}}, ocispec.MediaTypeImageLayerZstd, compression.Zstd},
		{"block mode uncompressed", mount.Mount{Type: "ext4", Source: s.ext4Img}, ocispec.MediaTypeImageLayer, compression.Uncompressed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var opts []diff.Opt
			if tc.mediaType != "" {
				opts = append(opts, diff.WithMediaType(tc.mediaType))
			}
			opts = append(opts, diff.WithLabels(map[string]string{"test": "yes"}))
			upper := append(s.lowerMounts(), tc.upper)
			desc, err := f.d.Compare(context.Background(), s.lowerMounts(), upper, opts...)
			if err != nil {
				t.Fatal(err)
			}
			wantMT := tc.mediaType
			if wantMT == "" {
				wantMT = ocispec.MediaTypeImageLayerGzip
			}
			if desc.MediaType != wantMT {
				t.Errorf("media type %s, want %s", desc.MediaType, wantMT)
			}
			info, err := f.store.Info(context.Background(), desc.Digest)
			if err != nil || info.Size != desc.Size || info.Labels["test"] != "yes" {
				t.Errorf("content info %+v, %v", info, err)
			}
			ra, _ := f.store.ReaderAt(context.Background(), desc)
			head := make([]byte, 10)
			ra.ReadAt(head, 0)
			ra.Close()
			if c := compression.DetectCompression(head); c != tc.wantComp {
				t.Errorf("blob compression %v, want %v", c, tc.wantComp)
			}
			got := applyTarOnCopy(t, s.lowerDir, readDiff(t, f.store, desc), difftest.Options{})
			if d := difftest.Diff(s.merged, got); len(d) > 0 {
				t.Errorf("diff applied != merged tree:\n%s", strings.Join(d, "\n"))
			}
			// Nothing left mounted, no upload left open.
			if st, _ := f.store.ListStatuses(context.Background()); len(st) != 0 {
				t.Errorf("open uploads left: %v", st)
			}
		})
	}
	assertNoMountOf(t, s.ext4Img)
}

// TestCompareReference: with WithReference the upload uses that ref, and
// the same change twice gives the same blob.
func TestCompareReference(t *testing.T) {
	s := newCompareSetup(t)
	f := newFixture(t)
	upper := append(s.lowerMounts(), mount.Mount{Type: "bind", Source: s.overlayRW})
	var got []digest.Digest
	for range 2 {
		desc, err := f.d.Compare(context.Background(), s.lowerMounts(), upper, diff.WithReference("my-ref"), diff.WithMediaType(ocispec.MediaTypeImageLayer))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, desc.Digest)
	}
	if got[0] != got[1] {
		t.Errorf("same change, different blobs: %v", got)
	}
}

// TestCompareEmptyUpper: a writable layer never mounted has no upper/; its
// diff is the empty layer.
func TestCompareEmptyUpper(t *testing.T) {
	requireRoot(t)
	f := newFixture(t)
	rw := filepath.Join(t.TempDir(), layout.RWDir)
	if err := os.Mkdir(rw, 0o700); err != nil {
		t.Fatal(err)
	}
	desc, err := f.d.Compare(context.Background(), nil, []mount.Mount{{Type: "bind", Source: rw}}, diff.WithMediaType(ocispec.MediaTypeImageLayer))
	if err != nil {
		t.Fatal(err)
	}
	if b := readDiff(t, f.store, desc); len(readTar(t, b)) != 0 {
		t.Errorf("empty upper gave entries")
	}
}

// TestCompareNotOurs: mounts of other snapshotters, or an upper that is not
// directly over the lower, fall through to the next differ.
func TestCompareNotOurs(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	layer := filepath.Join(dir, layout.LayerFile)
	other := filepath.Join(dir, "x", layout.LayerFile)
	rw := mount.Mount{Type: "ext4", Source: filepath.Join(dir, layout.RWLayerFile)}
	requireRoot(t)
	content := t.TempDir()
	if err := os.WriteFile(filepath.Join(content, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	nonEmpty := filepath.Join(t.TempDir(), layout.LayerFile)
	run(t, "mkfs.erofs", "--quiet", nonEmpty, content)
	erofsM := func(p string) mount.Mount { return mount.Mount{Type: "erofs", Source: p} }
	tests := []struct {
		name         string
		lower, upper []mount.Mount
	}{
		{"overlayfs snapshots", []mount.Mount{{Type: "bind", Source: dir}}, []mount.Mount{{Type: "overlay", Source: "overlay"}}},
		{"upper over another lower", []mount.Mount{erofsM(layer)}, []mount.Mount{erofsM(other), rw}},
		{"upper without lower over a real lower", []mount.Mount{erofsM(nonEmpty)}, []mount.Mount{rw}},
		{"committed upper over another lower", []mount.Mount{erofsM(layer)}, []mount.Mount{{Type: "format/erofs", Source: filepath.Join(dir, layout.FSMetaFile), Options: []string{"device=" + other, "device=" + layer}}}},
		{"upper not writable", []mount.Mount{erofsM(layer)}, []mount.Mount{erofsM(layer)}},
		{"fsmeta without devices", []mount.Mount{{Type: "format/erofs", Source: filepath.Join(dir, layout.FSMetaFile)}}, []mount.Mount{rw}},
		{"ext4 not a rwlayer", nil, []mount.Mount{{Type: "ext4", Source: filepath.Join(dir, "disk.img")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.d.Compare(context.Background(), tc.lower, tc.upper); !errdefs.IsNotImplemented(err) {
				t.Fatalf("err = %v, want ErrNotImplemented", err)
			}
		})
	}
}

// TestCompareNoParent: an active snapshot without parent is diffed against
// the empty view containerd's CreateDiff makes of "" (an empty layer.erofs):
// every entry of the upper is an addition.
func TestCompareNoParent(t *testing.T) {
	requireRoot(t)
	f := newFixture(t)
	empty := filepath.Join(t.TempDir(), layout.LayerFile)
	run(t, "mkfs.erofs", "--quiet", empty, t.TempDir())
	upper := filepath.Join(t.TempDir(), layout.RWDir, layout.UpperDir)
	if err := difftest.MakeBase(upper); err != nil {
		t.Fatal(err)
	}
	want := differTreeOf(t, upper)
	desc, err := f.d.Compare(context.Background(), []mount.Mount{{Type: "erofs", Source: empty, Options: []string{"ro"}}},
		[]mount.Mount{{Type: "bind", Source: upper, Options: []string{"rbind", "rw"}}})
	if err != nil {
		t.Fatal(err)
	}
	got := applyTarOnCopy(t, t.TempDir(), readDiff(t, f.store, desc), difftest.Options{})
	if d := difftest.Diff(want, got); len(d) > 0 {
		t.Errorf("diff applied on nothing != upper:\n%s", strings.Join(d, "\n"))
	}
}

// TestCompareCommitted: the upper may be a View of a committed snapshot
// over the lower; its top layer.erofs (overlay upper form) is the change.
// The layer here comes from mkfs.erofs, an independent writer.
func TestCompareCommitted(t *testing.T) {
	s := newCompareSetup(t)
	f := newFixture(t)
	top := filepath.Join(t.TempDir(), layout.LayerFile)
	run(t, "mkfs.erofs", "--quiet", top, filepath.Join(s.overlayRW, layout.UpperDir))
	upper := []mount.Mount{{Type: "format/erofs", Source: filepath.Join(filepath.Dir(top), layout.FSMetaFile),
		Options: []string{"ro", "device=" + s.lowerImg, "device=" + top}}}
	desc, err := f.d.Compare(context.Background(), s.lowerMounts(), upper)
	if err != nil {
		t.Fatal(err)
	}
	got := applyTarOnCopy(t, s.lowerDir, readDiff(t, f.store, desc), difftest.Options{})
	if d := difftest.Diff(s.merged, got); len(d) > 0 {
		t.Errorf("diff applied != merged tree:\n%s", strings.Join(d, "\n"))
	}
	assertNoMountOf(t, top)
}

func differTreeOf(t *testing.T, root string) map[string]difftest.Entry {
	t.Helper()
	tree, err := difftest.Tree(root, difftest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// TestParseCompareStack: the multi-layer shape is recognised with its
// devices in order.
func TestParseCompareStack(t *testing.T) {
	fsmeta := mount.Mount{Type: "format/erofs", Source: "/s/snapshots/3/fsmeta.erofs",
		Options: []string{"ro", "device=/s/snapshots/1/layer.erofs", "device=/s/snapshots/2/layer.erofs", "device=/s/snapshots/3/layer.erofs"}}
	ls, us, err := parseCompare([]mount.Mount{fsmeta}, []mount.Mount{fsmeta, {Type: "ext4", Source: "/s/snapshots/4/rwlayer.img"}})
	if err != nil {
		t.Fatal(err)
	}
	if ls.image != fsmeta.Source || len(ls.devices) != 3 || ls.devices[2] != "/s/snapshots/3/layer.erofs" || us.ext4Image != "/s/snapshots/4/rwlayer.img" {
		t.Errorf("got %+v %+v", ls, us)
	}
}

// assertNoMountOf fails if anything is still mounted from a loop device
// backed by file.
func assertNoMountOf(t *testing.T, file string) {
	t.Helper()
	out, err := exec.Command("losetup", "-j", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -j: %v: %s", err, out)
	}
	if len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("loop device still attached to %s: %s", file, out)
	}
}

// TestCompareGate: Compare of an active block-mode snapshot takes the same
// gate as the snapshotter's Commit. With a VM's byte-range OFD lock on
// rwlayer.img it fails with FailedPrecondition and writes no content; with
// the quiesced label it reads anyway and the label stays off the content.
func TestCompareGate(t *testing.T) {
	s := newCompareSetup(t)
	f := newFixture(t)
	vm, err := os.OpenFile(s.ext4Img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 100, Len: 1}
	if err := unix.FcntlFlock(vm.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	upper := append(s.lowerMounts(), mount.Mount{Type: "ext4", Source: s.ext4Img})
	_, err = f.d.Compare(context.Background(), s.lowerMounts(), upper)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "container is still running") {
		t.Fatalf("Compare while the VM holds rwlayer.img: %v, want FailedPrecondition", err)
	}
	var blobs int
	if err := f.store.Walk(context.Background(), func(content.Info) error { blobs++; return nil }); (err != nil && !os.IsNotExist(err)) || blobs != 0 {
		t.Errorf("a refused Compare left %d blobs (%v)", blobs, err)
	}
	desc, err := f.d.Compare(context.Background(), s.lowerMounts(), upper,
		diff.WithLabels(map[string]string{commitgate.QuiescedLabel: "true", "kept": "yes"}))
	if err != nil {
		t.Fatalf("quiesced Compare while locked: %v", err)
	}
	info, err := f.store.Info(context.Background(), desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, stored := info.Labels[commitgate.QuiescedLabel]; stored || info.Labels["kept"] != "yes" {
		t.Errorf("content labels %v: want kept=yes and no %s", info.Labels, commitgate.QuiescedLabel)
	}
	got := applyTarOnCopy(t, s.lowerDir, readDiff(t, f.store, desc), difftest.Options{})
	if d := difftest.Diff(s.merged, got); len(d) > 0 {
		t.Errorf("quiesced diff applied != merged tree:\n%s", strings.Join(d, "\n"))
	}
}
