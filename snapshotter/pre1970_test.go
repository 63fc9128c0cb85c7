package snapshotter

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// TestCommitPre1970Layers commits two layers whose files date from 1800, as
// the differ writes them (a negative superblock build time in each): the
// commit-time layer check and the fsmeta build read them, and the merged
// metadata shows the times unchanged.
func TestCommitPre1970Layers(t *testing.T) {
	requireHost(t)
	ctx := testContext(t)
	s, _ := newTestSnapshotter(t, Config{})
	old := time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC)
	parent := ""
	for _, name := range []string{"old-a", "old-b"} {
		key := "extract-" + name
		ms, err := s.Prepare(ctx, key, parent, snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: name}))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range []*tar.Header{
			{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: old},
			{Typeflag: tar.TypeReg, Name: name + "/f", Mode: 0o644, ModTime: old, Size: 1},
		} {
			h.Format = tar.FormatPAX
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Size == 1 {
				if _, err := tw.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		err = layout.WriteFileAtomicFunc(filepath.Join(ms[0].Source, layout.LayerFile), 0o644, func(f *os.File) error {
			_, err := erofs.ConvertTar(ctx, f, &buf, erofs.ConvertOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, name, key); err != nil {
			t.Fatalf("commit of a layer dated 1800: %v", err)
		}
		parent = name
	}
	vms, err := s.View(ctx, "view", parent)
	if err != nil {
		t.Fatal(err)
	}
	var devices []string
	for _, o := range vms[0].Options {
		if d, ok := strings.CutPrefix(o, "device="); ok {
			devices = append(devices, d)
		}
	}
	im, err := erofs.Open(vms[0].Source, devices...)
	if err != nil {
		t.Fatalf("open the merged metadata %s: %v", vms[0].Source, err)
	}
	defer im.Close()
	for _, p := range []string{"old-a/f", "old-b/f", "old-b"} {
		fi, err := im.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(old) {
			t.Errorf("%s: mtime %v in the merged metadata, want %v", p, fi.ModTime(), old)
		}
	}
}
