package integration

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/erofs-vm/containerd-erofs/integration/guest"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// TestE2E is issue 7's whole flow against the real daemon with the example
// config: import + unpack the 3-layer Debian image with erofs-vm; one
// committed snapshot per layer with the §5 labels; a writable snapshot
// whose raw mounts (API and `erofsctl snapshot-mounts`) have the §4 shape;
// one guest booted from those mounts exactly as qemubox translates them,
// which sees the same tree as GNU tar's extraction of the layers (every
// path, type, mode, owner, size, mtime, device number, symlink target and
// file checksum), runs python3 and cat from the image and writes a file;
// the file on the host inside rwlayer.img's upper/; the diff service's
// Compare of the container turning it into a layer tar holding the file;
// Commit making it a fourth layer.
func TestE2E(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"debugfs", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: %v", tool, err)
		}
	}
	assets := guest.RequireAssets(t)
	archive := e2eAsset(t, E2EArchive)
	var tars []string
	for _, l := range differImageLayers {
		tars = append(tars, e2eAsset(t, l))
	}

	d := StartDaemon(t, DaemonOptions{})
	c := d.Client(t)
	ctx, done, err := c.WithLease(d.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { done(context.WithoutCancel(ctx)) })
	ss := c.SnapshotService(E2ESnapshotter)

	// Import and unpack; one committed snapshot per layer with its labels.
	layers, err := ImportAndUnpack(ctx, c, archive, E2EImage, E2ESnapshotter)
	if err != nil {
		t.Fatal(err)
	}
	if layers.Name != E2EImage || len(layers.ChainIDs) != len(differImageLayers) {
		t.Fatalf("imported %s with %d layers, want %s with %d", layers.Name, len(layers.ChainIDs), E2EImage, len(differImageLayers))
	}
	infos, err := LayerSnapshots(ctx, ss, layers, true)
	if err != nil {
		t.Fatalf("layer snapshots:\n%v", err)
	}
	// An unpack hands out only bind mounts: it must build no merged disk
	// (docs/design.md §4); the first View below builds the top one.
	for i, info := range infos {
		if v, has := info.Labels[snapshotter.LabelFSMetaReady]; has {
			t.Errorf("layer %d: fsmeta-ready=%q right after the unpack", i+1, v)
		}
	}
	layerFiles := LayerPaths(infos)
	for i, f := range layerFiles {
		if !strings.HasPrefix(f, d.SnapshotterRoot()+"/") {
			t.Errorf("layer %d: %s is not under the snapshotter root %s", i+1, f, d.SnapshotterRoot())
		}
	}
	top := layers.ChainIDs[len(layers.ChainIDs)-1].String()

	// A view of the top layer: format/erofs over fsmeta, three devices.
	view, err := ss.View(ctx, "e2e-view", top)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckMounts(view, layerFiles, false, 0); err != nil {
		t.Errorf("view mounts: %v", err)
	}
	e2eCheckLabels(t, ctx, ss, "e2e-view", map[string]string{snapshotter.LabelMountType: "format/erofs"})

	// The container's writable snapshot: the view's mount, then ext4.
	const key = "e2e-container"
	upper, err := ss.Prepare(ctx, key, top)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ss.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	size, err := strconv.ParseInt(info.Labels[snapshotter.LabelWritableSize], 10, 64)
	if err != nil || size != 1<<30 {
		t.Errorf("label %s = %q, want 1073741824 (default_writable_size = '1GiB' in hack/config.toml)", snapshotter.LabelWritableSize, info.Labels[snapshotter.LabelWritableSize])
	}
	if err := CheckMounts(upper, layerFiles, true, size); err != nil {
		t.Fatalf("writable mounts: %v", err)
	}
	e2eCheckLabels(t, ctx, ss, key, map[string]string{snapshotter.LabelMountType: "format/erofs,ext4"})
	// Mounts says the same as Prepare did, and erofsctl prints it raw
	// (ctr would have loop-mounted the erofs part on the host).
	again, err := ss.Mounts(ctx, key)
	if err != nil || !slices.EqualFunc(again, upper, mountEqual) {
		t.Errorf("Mounts(%s) = %s, %v; Prepare returned %s", key, FormatMounts(again), err, FormatMounts(upper))
	}
	e2eCheckErofsctl(t, d, key, upper)

	// The host oracle: GNU tar's extraction of the layer tars, whiteouts
	// applied the way overlayfs means them.
	oracleDir := tarOracle(t, tars)
	want, err := guest.HostManifest(oracleDir)
	if err != nil {
		t.Fatal(err)
	}

	// One guest boot does it all.
	content := fmt.Sprintf("written in the guest by TestE2E at %d", time.Now().UnixNano())
	bootCtx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	rep, res, err := BootContainer(bootCtx, upper, true, content, guest.Config{Assets: &assets, Timeout: 12 * time.Minute})
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	t.Logf("guest ran in %v; python3 printed %q; %s", res.Duration.Round(time.Second), rep.Python, OSReleaseField(rep.OSRelease, "PRETTY_NAME"))
	if err := CheckContainerReport(rep, content); err != nil {
		t.Error(err)
	}
	if len(want) < 1000 {
		t.Fatalf("oracle has only %d entries: not a Debian root", len(want))
	}
	if d := e2eManifestDiff(want, rep.Manifest); len(d) > 0 {
		t.Errorf("the guest's view of the container root (%d entries) differs from GNU tar's extraction (%d entries):\n%s",
			len(rep.Manifest), len(want), strings.Join(d[:min(len(d), 60)], "\n"))
	} else {
		t.Logf("the guest's container root matches GNU tar's extraction: %d entries", len(want))
	}

	// On the host, the write is in upper/ of the ext4 disk.
	got, err := ReadRWLayerFile(ctx, upper[1].Source, E2EGuestFile)
	if err != nil {
		t.Fatal(err)
	}
	if got != content+"\n" {
		t.Errorf("rwlayer.img upper/%s = %q, want %q", E2EGuestFile, got, content+"\n")
	}

	// Diff before Commit: the layer holds the file and nothing else.
	desc, err := DiffActive(ctx, c, E2ESnapshotter, key, top)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := LayerTar(ctx, c.ContentStore(), desc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Header.Name)
		if e.Header.Name == E2EGuestFile && (e.Header.Typeflag != tar.TypeReg || string(e.Data) != content+"\n") {
			t.Errorf("diff layer: %s is type %c with %q, want a file with %q", E2EGuestFile, e.Header.Typeflag, e.Data, content+"\n")
		}
	}
	if wantNames := []string{path.Dir(E2EGuestFile) + "/", E2EGuestFile}; !slices.Equal(names, wantNames) {
		t.Errorf("diff layer %s entries %q, want %q", desc.Digest, names, wantNames)
	}

	// Commit: the container becomes a fourth layer with the file in it.
	const committed = "e2e-committed"
	if err := ss.Commit(ctx, committed, key); err != nil {
		t.Fatal(err)
	}
	cinfo, err := ss.Stat(ctx, committed)
	if err != nil {
		t.Fatal(err)
	}
	order, err := snapshotter.DecodeLayerOrder(cinfo.Labels[snapshotter.LabelLayerOrder])
	if err != nil || len(order) != 4 || !slices.Equal(order[:3], digestStrings(layers.DiffIDs)) || !strings.HasPrefix(order[3], snapshotter.LayerOrderUnknownPrefix) {
		t.Errorf("committed %s: layer order %q (%v), want the 3 diff IDs then snapshot:<id>", committed, order, err)
	}
	if _, has := cinfo.Labels[snapshotter.LabelFSMetaReady]; has {
		t.Errorf("committed %s: fsmeta-ready before any use: its merged disk is built at the first View or Prepare", committed)
	}
	fourth := cinfo.Labels[snapshotter.LabelLayerBlobPath]
	if got, err := ReadLayerFile(fourth, E2EGuestFile); err != nil || got != content+"\n" {
		t.Errorf("committed layer %s: %s = %q, %v", fourth, E2EGuestFile, got, err)
	}
	cview, err := ss.View(ctx, "e2e-committed-view", committed)
	if err != nil {
		t.Fatal(err)
	}
	if cinfo, err = ss.Stat(ctx, committed); err != nil {
		t.Fatal(err)
	}
	if v := cinfo.Labels[snapshotter.LabelFSMetaLayers]; v != "4" || cinfo.Labels[snapshotter.LabelFSMetaReady] != "true" {
		t.Errorf("committed %s after its first View: fsmeta-layers %q fsmeta-ready %q", committed, v, cinfo.Labels[snapshotter.LabelFSMetaReady])
	}
	if err := CheckMounts(cview, append(slices.Clone(layerFiles), fourth), false, 0); err != nil {
		t.Errorf("view of the committed container: %v", err)
	}
}

// e2eAsset returns _output/images/<rel>, skipping (failing under
// EROFS_REQUIRE_ASSETS=1) when it is missing.
func e2eAsset(t *testing.T, rel string) string {
	t.Helper()
	p, err := ImageArchive(RepoRoot(t), rel)
	if err != nil {
		if os.Getenv(guest.RequireAssetsEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return p
}

func mountEqual(a, b mount.Mount) bool {
	return a.Type == b.Type && a.Source == b.Source && a.Target == b.Target && slices.Equal(a.Options, b.Options)
}

// e2eCheckLabels checks some labels of snapshot key.
func e2eCheckLabels(t *testing.T, ctx context.Context, ss snapshots.Snapshotter, key string, want map[string]string) {
	t.Helper()
	info, err := ss.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if info.Labels[k] != v {
			t.Errorf("%s: label %s = %q, want %q", key, k, info.Labels[k], v)
		}
	}
}

// e2eCheckErofsctl runs `erofsctl snapshot-mounts` against the daemon and
// compares its JSON and text output with the mounts from the API.
func e2eCheckErofsctl(t *testing.T, d *Daemon, key string, want []mount.Mount) {
	t.Helper()
	bin := Binary(t, "erofsctl")
	args := []string{"snapshot-mounts", "--address", d.Address(), "--namespace", "default", "--snapshotter", E2ESnapshotter}
	out, err := exec.Command(bin, append(args, "--json", key)...).Output()
	if err != nil {
		t.Fatalf("erofsctl snapshot-mounts --json: %v", err)
	}
	var got []struct {
		Type, Source string
		Options      []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("erofsctl snapshot-mounts --json: %v\n%s", err, out)
	}
	text, err := exec.Command(bin, append(args, key)...).Output()
	if err != nil {
		t.Fatalf("erofsctl snapshot-mounts: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	if len(got) != len(want) || len(lines) != len(want) {
		t.Fatalf("erofsctl printed %d mounts (json) / %d lines, API has %d:\n%s", len(got), len(lines), len(want), text)
	}
	for i, m := range want {
		if got[i].Type != m.Type || got[i].Source != m.Source || !slices.Equal(got[i].Options, m.Options) {
			t.Errorf("erofsctl --json mount %d = %+v, API %s", i, got[i], FormatMount(m))
		}
		if f := strings.Fields(lines[i]); len(f) != 3 || f[0] != m.Type || f[1] != m.Source || f[2] != strings.Join(m.Options, ",") {
			t.Errorf("erofsctl line %d = %q, API %s", i, lines[i], FormatMount(m))
		}
	}
}

// e2eManifestDiff compares two manifests like guest.Diff (mtimes included) but
// leaves out the root directory itself: in the guest it is the overlay's
// upper dir, made when the disk was first mounted, not part of the image.
func e2eManifestDiff(want, got guest.Manifest) []string {
	w, g := guest.Manifest{}, guest.Manifest{}
	for k, v := range want {
		if k != "." {
			w[k] = v
		}
	}
	for k, v := range got {
		if k != "." {
			g[k] = v
		}
	}
	return guest.Diff(w, g, false)
}

// tarOracle extracts the layer tars (oldest first) with GNU tar into a
// fresh directory, applying each layer's whiteouts before extracting it
// the way overlayfs means them: ".wh.NAME" deletes NAME below, an opaque
// dir (".wh..wh..opq") hides everything below it, and an entry replaces
// whatever of another type was at its path (a file over a dir, a dir over
// a file). None of this project's code is involved.
func tarOracle(t *testing.T, tars []string) string {
	t.Helper()
	root := t.TempDir()
	for _, lt := range tars {
		f, err := os.Open(lt)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				t.Fatalf("%s: %v", lt, err)
			}
			name := path.Clean(h.Name)
			dir, base := path.Split(name)
			p := filepath.Join(root, name)
			switch {
			case base == ".wh..wh..opq":
				ents, _ := os.ReadDir(filepath.Join(root, dir))
				for _, e := range ents {
					if err := os.RemoveAll(filepath.Join(root, dir, e.Name())); err != nil {
						t.Fatal(err)
					}
				}
			case strings.HasPrefix(base, ".wh."):
				if err := os.RemoveAll(filepath.Join(root, dir, strings.TrimPrefix(base, ".wh."))); err != nil {
					t.Fatal(err)
				}
			default:
				fi, err := os.Lstat(p)
				if err == nil && (h.Typeflag != tar.TypeDir || !fi.IsDir()) {
					if err := os.RemoveAll(p); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		f.Close()
		cmd := exec.Command("tar", "-x", "-f", lt, "-C", root, "--numeric-owner", "--same-owner",
			"--same-permissions", "--xattrs", "--xattrs-include=*", "--exclude=.wh.*")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tar -x %s: %v\n%s", lt, err, out)
		}
	}
	return root
}
