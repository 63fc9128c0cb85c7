package integration

// The steps of the end-to-end flow (issue 7): an OCI image imported and
// unpacked with erofs-vm, its snapshots and their raw mounts checked
// against docs/design.md §4/§5, a guest booted from a writable snapshot's mounts
// exactly as qemubox translates them, the container's change read back on
// the host, diffed into a layer and committed. TestE2E (e2e_test.go) and
// the demo (hack/demo) run the same functions, so what a new user sees is
// what the test proves. Nothing here takes a testing.TB: every step
// returns an error that names what is wrong.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	tarchive "github.com/containerd/containerd/v2/core/transfer/archive"
	transferimage "github.com/containerd/containerd/v2/core/transfer/image"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/integration/guest"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// The image and snapshotter of the flow.
const (
	// E2ESnapshotter is the snapshotter (and differ) under test.
	E2ESnapshotter = "erofs-vm"
	// E2EArchive is the OCI archive under _output/images
	// (hack/build-test-image.sh, `make test-image`).
	E2EArchive = "debian-3layer.oci.tar"
	// E2EImage is the name the archive carries.
	E2EImage = "docker.io/library/erofs-test:3layer"
	// E2EGuestFile is the file the guest writes into the container's root.
	E2EGuestFile = "root/hello-from-the-guest.txt"
)

// ImageArchive returns the path of an archive of _output/images under the
// repository root, or an error naming the make target that builds it.
func ImageArchive(repoRoot, name string) (string, error) {
	p := filepath.Join(repoRoot, "_output", "images", name)
	if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
		return "", fmt.Errorf("test image %s missing: run `make test-image` (hack/build-test-image.sh)", p)
	}
	return p, nil
}

// ImageLayers are the layers of an unpacked image, oldest first.
type ImageLayers struct {
	Name     string
	Blobs    []ocispec.Descriptor // compressed blobs, as in the manifest
	DiffIDs  []digest.Digest      // uncompressed digests, from the config
	ChainIDs []digest.Digest      // snapshot names of the unpacked layers
}

// ImportAndUnpack imports the OCI archive at path and unpacks its
// linux/amd64 image into snapshotter sn through the transfer service, as
// `ctr images import --snapshotter sn` does: the daemon's unpacker
// prepares each layer with the extract labels, the differ configured for
// sn in unpack_config (erofs-vm) applies it, and the snapshot is
// committed. name is the image name the archive carries. ctx needs a
// namespace; hold a lease in it so nothing is collected half-way.
//
// The transfer service is ctr's default path and the one operators use;
// the client-side unpack (containerd's Image.Unpack, ctr --local) prepares
// extract snapshots by key format alone, without the snapshot.ref label,
// and is covered by TestDifferImport.
func ImportAndUnpack(ctx context.Context, c *client.Client, path, name, sn string) (ImageLayers, error) {
	f, err := os.Open(path)
	if err != nil {
		return ImageLayers{}, err
	}
	defer f.Close()
	plat := platforms.DefaultSpec()
	store := transferimage.NewStore("",
		transferimage.WithNamedPrefix("import", true),
		transferimage.WithPlatforms(plat),
		transferimage.WithUnpack(plat, sn))
	if err := c.Transfer(ctx, tarchive.NewImageImportStream(f, ""), store); err != nil {
		return ImageLayers{}, fmt.Errorf("import %s and unpack with %s: %w", path, sn, err)
	}
	img, err := c.ImageService().Get(ctx, name)
	if err != nil {
		return ImageLayers{}, fmt.Errorf("import %s: image %s: %w", path, name, err)
	}
	return ReadImageLayers(ctx, c, img)
}

// ReadImageLayers reads an image's layers from the content store.
func ReadImageLayers(ctx context.Context, c *client.Client, img images.Image) (ImageLayers, error) {
	mf, err := images.Manifest(ctx, c.ContentStore(), img.Target, platforms.Only(platforms.DefaultSpec()))
	if err != nil {
		return ImageLayers{}, fmt.Errorf("manifest of %s: %w", img.Name, err)
	}
	diffIDs, err := images.RootFS(ctx, c.ContentStore(), mf.Config)
	if err != nil {
		return ImageLayers{}, fmt.Errorf("config of %s: %w", img.Name, err)
	}
	if len(diffIDs) != len(mf.Layers) {
		return ImageLayers{}, fmt.Errorf("%s: %d diff IDs for %d layers", img.Name, len(diffIDs), len(mf.Layers))
	}
	return ImageLayers{
		Name:     img.Name,
		Blobs:    mf.Layers,
		DiffIDs:  diffIDs,
		ChainIDs: identity.ChainIDs(slices.Clone(diffIDs)),
	}, nil
}

// LayerSnapshots returns the committed snapshot of every layer, oldest
// first, and checks that they are the only snapshots of sn and carry the
// docs/design.md §5 labels: diff ID and blob digest, layer.erofs path (present,
// and FS_IMMUTABLE_FL set when the label says so), mount type, and for
// every layer above the base the layer order. A layer's merged disk is
// built at its first use as a parent (docs/design.md §4): where
// fsmeta-ready says it exists, fsmeta-layers must count the stack and
// fsmeta.erofs and merged.vmdk must be beside the layer; where it does
// not, neither file may exist.
func LayerSnapshots(ctx context.Context, sn snapshots.Snapshotter, l ImageLayers, immutable bool) ([]snapshots.Info, error) {
	all := map[string]snapshots.Info{}
	if err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		all[i.Name] = i
		return nil
	}); err != nil {
		return nil, fmt.Errorf("walk snapshots: %w", err)
	}
	var errs []error
	if len(all) != len(l.ChainIDs) {
		names := slices.Sorted(maps.Keys(all))
		errs = append(errs, fmt.Errorf("%d snapshots, want one per layer (%d): %v", len(all), len(l.ChainIDs), names))
	}
	infos := make([]snapshots.Info, len(l.ChainIDs))
	for i, chain := range l.ChainIDs {
		info, ok := all[chain.String()]
		if !ok {
			errs = append(errs, fmt.Errorf("layer %d: no snapshot %s", i+1, chain))
			continue
		}
		infos[i] = info
		if err := checkLayerInfo(i, info, l, immutable); err != nil {
			errs = append(errs, err)
		}
	}
	return infos, errors.Join(errs...)
}

// checkLayerInfo checks the snapshot of layer i (0 = base) of l.
func checkLayerInfo(i int, info snapshots.Info, l ImageLayers, immutable bool) error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("layer %d (%s): %s", i+1, info.Name, fmt.Sprintf(format, a...)))
	}
	if info.Kind != snapshots.KindCommitted {
		bad("kind %v, want committed", info.Kind)
	}
	if i > 0 && info.Parent != l.ChainIDs[i-1].String() {
		bad("parent %q, want %s", info.Parent, l.ChainIDs[i-1])
	}
	lbl := info.Labels
	want := map[string]string{
		snapshotter.LabelLayerDigest:     l.DiffIDs[i].String(),
		snapshotter.LabelLayerBlobDigest: l.Blobs[i].Digest.String(),
		snapshotter.LabelMountType:       "erofs",
	}
	if i > 0 {
		order, err := snapshotter.EncodeLayerOrder(digestStrings(l.DiffIDs[:i+1]))
		if err != nil {
			return err
		}
		want[snapshotter.LabelMountType] = "format/erofs"
		want[snapshotter.LabelLayerOrder] = order
		if lbl[snapshotter.LabelFSMetaReady] != "" {
			want[snapshotter.LabelFSMetaReady] = "true"
			want[snapshotter.LabelFSMetaLayers] = strconv.Itoa(i + 1)
		}
	}
	if immutable {
		want[snapshotter.LabelImmutable] = "true"
	}
	for k, v := range want {
		if lbl[k] != v {
			bad("label %s = %q, want %q", k, lbl[k], v)
		}
	}
	layer := lbl[snapshotter.LabelLayerBlobPath]
	if !filepath.IsAbs(layer) || filepath.Base(layer) != layout.LayerFile {
		bad("label %s = %q, want an absolute path to %s", snapshotter.LabelLayerBlobPath, layer, layout.LayerFile)
		return errors.Join(errs...)
	}
	files := []string{layer}
	merged := []string{filepath.Join(filepath.Dir(layer), layout.FSMetaFile), filepath.Join(filepath.Dir(layer), layout.VMDKFile)}
	if lbl[snapshotter.LabelFSMetaReady] == "true" {
		files = append(files, merged...)
	} else {
		for _, f := range merged {
			if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
				bad("%s exists though no fsmeta-ready label announces it: %v", f, err)
			}
		}
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil || fi.Size() == 0 {
			bad("%s missing or empty: %v", f, err)
			continue
		}
		if immutable {
			if on, err := isImmutable(f); err != nil || !on {
				bad("%s: FS_IMMUTABLE_FL not set (err %v) though set_immutable is on", f, err)
			}
		}
	}
	return errors.Join(errs...)
}

func digestStrings(ds []digest.Digest) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h (chattr +i); x/sys/unix
// does not export it.
const fsImmutableFL = 0x00000010

// isImmutable reports whether FS_IMMUTABLE_FL is set on path.
func isImmutable(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return false, fmt.Errorf("FS_IOC_GETFLAGS %s: %w", path, err)
	}
	return flags&fsImmutableFL != 0, nil
}

// LayerPaths returns the layer.erofs of every snapshot, oldest first.
func LayerPaths(infos []snapshots.Info) []string {
	out := make([]string, len(infos))
	for i, info := range infos {
		out[i] = info.Labels[snapshotter.LabelLayerBlobPath]
	}
	return out
}

// CheckMounts checks mounts against the docs/design.md §4 shape for a view or
// active snapshot over layers (their layer.erofs, oldest first): one
// `erofs` ro mount of the only layer, or one `format/erofs` of the top
// layer's fsmeta.erofs with options ro and device= per layer oldest first,
// merged.vmdk non-empty beside it; then, when writable, an `ext4` rw mount
// of an rwlayer.img of writableSize bytes. No overlay, no host path of a
// mount point: these are disks for a VM.
func CheckMounts(mounts []mount.Mount, layers []string, writable bool, writableSize int64) error {
	want := 1
	if writable {
		want = 2
	}
	if len(layers) == 0 {
		return errors.New("CheckMounts: no layers")
	}
	if len(mounts) != want {
		return fmt.Errorf("%d mounts %s, want %d", len(mounts), FormatMounts(mounts), want)
	}
	m := mounts[0]
	switch {
	case len(layers) == 1:
		if m.Type != "erofs" || m.Source != layers[0] || !slices.Equal(m.Options, []string{"ro"}) {
			return fmt.Errorf("mount 0 is %s, want erofs %s ro", FormatMount(m), layers[0])
		}
	default:
		top := filepath.Dir(layers[len(layers)-1])
		wantOpts := []string{"ro"}
		for _, l := range layers {
			wantOpts = append(wantOpts, "device="+l)
		}
		if m.Type != "format/erofs" || m.Source != filepath.Join(top, layout.FSMetaFile) || !slices.Equal(m.Options, wantOpts) {
			return fmt.Errorf("mount 0 is %s, want format/erofs %s %s", FormatMount(m), filepath.Join(top, layout.FSMetaFile), strings.Join(wantOpts, ","))
		}
		vmdk := filepath.Join(top, layout.VMDKFile)
		if fi, err := os.Stat(vmdk); err != nil || fi.Size() == 0 {
			return fmt.Errorf("%s beside the fsmeta is missing or empty (qemubox would attach fsmeta.erofs alone): %v", vmdk, err)
		}
	}
	if !writable {
		return nil
	}
	rw := mounts[1]
	if rw.Type != "ext4" || filepath.Base(rw.Source) != layout.RWLayerFile || slices.Contains(rw.Options, "ro") {
		return fmt.Errorf("mount 1 is %s, want ext4 .../%s writable", FormatMount(rw), layout.RWLayerFile)
	}
	fi, err := os.Stat(rw.Source)
	if err != nil {
		return err
	}
	if fi.Size() != writableSize {
		return fmt.Errorf("%s is %d bytes, want %d", rw.Source, fi.Size(), writableSize)
	}
	return nil
}

// FormatMount renders a mount as one line: type source options.
func FormatMount(m mount.Mount) string {
	return strings.TrimSpace(m.Type + " " + m.Source + " " + strings.Join(m.Options, ","))
}

// FormatMounts renders mounts as "[m0; m1]".
func FormatMounts(ms []mount.Mount) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = FormatMount(m)
	}
	return "[" + strings.Join(s, "; ") + "]"
}

// Sections of the container script's output.
const (
	sectionPrefix    = "@@E2E "
	sectionSuffix    = "@@"
	SectionPython    = "python"
	SectionOSRelease = "os-release"
	SectionWrite     = "write"
	SectionManifest  = "manifest"
)

// ContainerScript is the guest script run in the container's root
// (guest.RootDir, the overlay of the snapshot's mounts): optionally the
// manifest of the whole tree first (before anything runs in it), then
// python3 and cat from the image through chroot, then writing content to
// E2EGuestFile. Each step's output is framed as a section for
// ParseContainerReport; a failing step makes the script exit non-zero.
func ContainerScript(withManifest bool, content string) string {
	var b strings.Builder
	sec := func(name string) { fmt.Fprintf(&b, "echo '%s%s%s'\n", sectionPrefix, name, sectionSuffix) }
	b.WriteString("rc=0\n")
	if withManifest {
		sec(SectionManifest)
		b.WriteString(guest.ManifestScript(guest.RootDir))
	}
	sec(SectionPython)
	fmt.Fprintf(&b, "chroot %s /usr/bin/python3 -c 'print(6*7)' 2>&1 || { echo \"python3 failed: $?\"; rc=1; }\n", guest.RootDir)
	sec(SectionOSRelease)
	fmt.Fprintf(&b, "chroot %s /bin/cat /etc/os-release 2>&1 || { echo \"cat failed: $?\"; rc=1; }\n", guest.RootDir)
	sec(SectionWrite)
	// The image's own shell writes the file: the write goes through the
	// overlay into upper/ on the ext4 disk.
	fmt.Fprintf(&b, "chroot %s /bin/sh -c 'printf \"%%s\\n\" \"$1\" > /%s && cat /%s' sh %s 2>&1 || { echo \"write failed: $?\"; rc=1; }\n",
		guest.RootDir, E2EGuestFile, E2EGuestFile, shellQuote(content))
	b.WriteString("exit $rc\n")
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ContainerReport is what ContainerScript printed, by section.
type ContainerReport struct {
	Python    string // python3's stdout, trimmed
	OSRelease string // /etc/os-release of the image
	Written   string // E2EGuestFile read back in the guest, trimmed
	Manifest  guest.Manifest
	Raw       string // the whole script output
}

// ParseContainerReport splits the script output into its sections.
func ParseContainerReport(out string, withManifest bool) (*ContainerReport, error) {
	secs := map[string]string{}
	cur := ""
	for _, line := range strings.SplitAfter(out, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, sectionPrefix) && strings.HasSuffix(t, sectionSuffix) {
			cur = strings.TrimSuffix(strings.TrimPrefix(t, sectionPrefix), sectionSuffix)
			secs[cur] = ""
			continue
		}
		if cur != "" {
			secs[cur] += line
		}
	}
	r := &ContainerReport{Raw: out}
	for _, s := range []string{SectionPython, SectionOSRelease, SectionWrite} {
		if _, ok := secs[s]; !ok {
			return r, fmt.Errorf("guest output has no %q section:\n%s", s, out)
		}
	}
	r.Python = strings.TrimSpace(secs[SectionPython])
	r.OSRelease = secs[SectionOSRelease]
	r.Written = strings.TrimSpace(secs[SectionWrite])
	if withManifest {
		m, err := guest.ParseManifest(secs[SectionManifest])
		if err != nil {
			return r, fmt.Errorf("guest manifest: %w", err)
		}
		r.Manifest = m
	}
	return r, nil
}

// BootContainer boots a guest from a writable snapshot's mounts the way
// qemubox does (guest.BootMounts: DisksFromMounts, then the guest mount
// plan) and runs ContainerScript in it. The guest unmounts before it
// powers off, so the ext4 disk is clean when this returns. A script that
// fails is an error quoting its output.
func BootContainer(ctx context.Context, mounts []mount.Mount, withManifest bool, content string, cfg guest.Config) (*ContainerReport, *guest.Result, error) {
	res, err := guest.BootMounts(ctx, mounts, ContainerScript(withManifest, content), cfg)
	if err != nil {
		return nil, res, err
	}
	rep, perr := ParseContainerReport(res.Output, withManifest)
	if res.ExitCode != 0 {
		return rep, res, fmt.Errorf("guest script exited %d:\n%s", res.ExitCode, tailString(res.Output, 4000))
	}
	return rep, res, perr
}

// CheckContainerReport checks what the image's programs printed in the
// guest and that the write was read back.
func CheckContainerReport(r *ContainerReport, content string) error {
	var errs []error
	if r.Python != "42" {
		errs = append(errs, fmt.Errorf("python3 -c 'print(6*7)' printed %q, want 42", r.Python))
	}
	if !strings.Contains(r.OSRelease, "ID=debian") || !strings.Contains(r.OSRelease, "VERSION_CODENAME=bookworm") {
		errs = append(errs, fmt.Errorf("/etc/os-release of the image is not Debian bookworm:\n%s", r.OSRelease))
	}
	if r.Written != content {
		errs = append(errs, fmt.Errorf("the guest read back %q from /%s, want %q", r.Written, E2EGuestFile, content))
	}
	return errors.Join(errs...)
}

// OSReleaseField returns KEY's unquoted value in an os-release text.
func OSReleaseField(osRelease, key string) string {
	for _, l := range strings.Split(osRelease, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// ReadRWLayerFile reads upper/<rel> inside an ext4 writable layer image
// with debugfs (e2fsprogs), without mounting it: where the container's
// writes land on the host.
func ReadRWLayerFile(ctx context.Context, rwlayer, rel string) (string, error) {
	p := "/upper/" + strings.TrimPrefix(rel, "/")
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "stat "+p, rwlayer)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Type: regular") {
		return "", fmt.Errorf("debugfs stat %s in %s: %v: %s", p, rwlayer, err, strings.TrimSpace(string(out)))
	}
	cmd = exec.CommandContext(ctx, "debugfs", "-R", "cat "+p, rwlayer)
	cmd.Stderr = io.Discard // the banner
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("debugfs cat %s in %s: %w", p, rwlayer, err)
	}
	return string(b), nil
}

// DiffActive asks the diff service for the change of the active snapshot
// key over its parent: Compare(View(parent), Mounts(key)), gzip. It runs
// before Commit, which turns the snapshot into a layer. The view is
// removed again.
func DiffActive(ctx context.Context, c *client.Client, sn, key, parent string) (ocispec.Descriptor, error) {
	ss := c.SnapshotService(sn)
	upper, err := ss.Mounts(ctx, key)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("mounts of %s: %w", key, err)
	}
	viewKey := key + "-diff-lower"
	lower, err := ss.View(ctx, viewKey, parent)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("view of %s: %w", parent, err)
	}
	defer ss.Remove(context.WithoutCancel(ctx), viewKey)
	desc, err := c.DiffService().Compare(ctx, lower, upper, diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("compare %s with %s: %w", key, parent, err)
	}
	return desc, nil
}

// TarEntry is one entry of a layer tar: its header, and the data of
// regular files up to maxTarData bytes.
type TarEntry struct {
	Header tar.Header
	Data   []byte
}

const maxTarData = 1 << 20

// LayerTar reads the layer blob desc from the content store, decompresses
// it (containerd's compression, as Apply does) and returns its entries by
// name, in tar order.
func LayerTar(ctx context.Context, cs content.Store, desc ocispec.Descriptor) ([]TarEntry, error) {
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", desc.Digest, err)
	}
	defer ra.Close()
	ds, err := compression.DecompressStream(content.NewReader(ra))
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", desc.Digest, err)
	}
	defer ds.Close()
	var out []TarEntry
	tr := tar.NewReader(ds)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", desc.Digest, err)
		}
		e := TarEntry{Header: *h}
		if h.Typeflag == tar.TypeReg && h.Size <= maxTarData {
			if e.Data, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("layer %s: %s: %w", desc.Digest, h.Name, err)
			}
		}
		out = append(out, e)
	}
}

// ReadLayerFile reads a regular file from a layer.erofs with this
// project's reader.
func ReadLayerFile(layer, rel string) (string, error) {
	im, err := erofs.Open(layer)
	if err != nil {
		return "", err
	}
	defer im.Close()
	b, err := fs.ReadFile(im, strings.TrimPrefix(rel, "/"))
	if err != nil {
		return "", fmt.Errorf("%s in %s: %w", rel, layer, err)
	}
	return string(b), nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
