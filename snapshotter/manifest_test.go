package snapshotter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
)

// spinboxCheckManifest is spinbox's stale-disk check as docs/design.md §4
// records it from spinbox's source: no manifest or an empty one passes;
// otherwise there must be one line per device= option of the mount, in
// order, "sha256:<hex>" for a device file named sha256-<hex>.erofs and
// "blob:<basename>" for any other.
func spinboxCheckManifest(m mount.Mount) error {
	vmdk := strings.TrimSuffix(m.Source, "fsmeta.erofs") + "merged.vmdk"
	b, err := os.ReadFile(filepath.Join(filepath.Dir(vmdk), "layers.manifest"))
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(bytes.TrimSpace(b)) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	var want []string
	for _, o := range m.Options {
		dev, ok := strings.CutPrefix(o, "device=")
		if !ok {
			continue
		}
		base := filepath.Base(dev)
		if hex, ok := strings.CutSuffix(base, ".erofs"); ok && strings.HasPrefix(hex, "sha256-") {
			want = append(want, "sha256:"+strings.TrimPrefix(hex, "sha256-"))
		} else {
			want = append(want, "blob:"+base)
		}
	}
	got := strings.Fields(string(b))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		return fmt.Errorf("stale or incomplete VMDK: manifest %q, mount wants %q", got, want)
	}
	return nil
}

// TestLayersManifest: the merged disk of a 3-layer stack carries a
// layers.manifest that spinbox's check accepts for the mount it comes
// with, and that the check refuses for a mount over other layers.
func TestLayersManifest(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{})
	ctx := testContext(t)
	stack(t, s, 3)
	ms, err := s.View(ctx, "v", "l3")
	if err != nil {
		t.Fatal(err)
	}
	if err := spinboxCheckManifest(ms[0]); err != nil {
		t.Fatalf("spinbox's check refuses our manifest: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(ms[0].Source), "layers.manifest"))
	if err != nil || strings.Count(string(b), "blob:layer.erofs\n") != 3 {
		t.Fatalf("layers.manifest = %q, %v; want 3 blob:layer.erofs lines", b, err)
	}
	stale := ms[0]
	stale.Options = append(stale.Options[:len(stale.Options):len(stale.Options)], "device=/elsewhere/sha256-"+strings.Repeat("ab", 32)+".erofs")
	if err := spinboxCheckManifest(stale); err == nil {
		t.Fatal("spinbox's check accepted a manifest for another device list")
	}
	// The content-addressed form, for files named by digest.
	hex := strings.Repeat("0f", 32)
	if got := string(layersManifest([]string{"/a/sha256-" + hex + ".erofs", "/b/layer.erofs"})); got != "sha256:"+hex+"\nblob:layer.erofs\n" {
		t.Errorf("layersManifest = %q", got)
	}
}
