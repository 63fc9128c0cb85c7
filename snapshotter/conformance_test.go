package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
)

// TestConformance runs containerd's own snapshotter conformance suite
// against the snapshotter in both commit modes, through hostMounter (test
// code only) so the suite can mount what it gets on the host.
//
// The suite is given the name "erofs": it keys one known limitation on the
// name (checkRename skips renaming a directory that lives in a lower layer
// for overlayfs and erofs, since overlayfs without redirect_dir returns
// EXDEV). Ours has that limitation for the same reason: the guest builds
// an overlay, and redirect_dir is not used because the fsmeta merge does
// not follow redirects.
func TestConformance(t *testing.T) {
	requireHost(t)
	// The suite makes its dirs as os.TempDir()/snapshot-suite-erofs-*.
	suiteDirs := filepath.Join(os.TempDir(), "snapshot-suite-erofs-")
	defer func() {
		if m := mountsUnder(t, suiteDirs); len(m) > 0 {
			t.Errorf("mounts left behind: %v", m)
		}
		if l := loopsBackedBy(t, suiteDirs); len(l) > 0 {
			t.Errorf("loop devices left behind: %v", l)
		}
	}()
	for _, mode := range []CommitMode{CommitModeBlock, CommitModeOverlay} {
		t.Run(string(mode), func(t *testing.T) {
			testsuite.SnapshotterSuite(t, "erofs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
				s, err := open(root, Config{CommitMode: mode, SetImmutable: true, DefaultWritableSize: 64 << 20})
				if err != nil {
					return nil, nil, err
				}
				w, err := newHostMounter(s, filepath.Join(filepath.Dir(root), "hostmnt"))
				if err != nil {
					return nil, nil, err
				}
				return w, w.Close, nil
			})
		})
	}
}
