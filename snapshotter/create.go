package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// Prepare creates an active snapshot. With the unpacker's
// containerd.io/snapshot.ref label it is an extract snapshot the differ
// writes layer.erofs into; otherwise it is writable, backed by an ext4
// rwlayer.img (block mode) or rw/upper + rw/work (overlay mode).
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

// View creates a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

// Mounts returns the mounts of an active or view snapshot.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var snap storage.Snapshot
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		snap, err = storage.GetSnapshot(ctx, key)
		return err
	}); err != nil {
		return nil, fmt.Errorf("mounts of snapshot %q: %w", key, err)
	}
	extract := false
	if snap.Kind == snapshots.KindActive {
		var err error
		if extract, err = s.isExtract(snap.ID); err != nil {
			return nil, fmt.Errorf("mounts of snapshot %q: %w", key, err)
		}
	}
	return s.mounts(snap, extract), nil
}

// snapshotKind is what a new snapshot is for; it decides its files.
type snapshotKind int

const (
	kindView snapshotKind = iota
	kindExtract
	kindWritable
)

func classify(kind snapshots.Kind, key string, labels map[string]string) snapshotKind {
	switch {
	case kind == snapshots.KindView:
		return kindView
	case labels[snapshots.LabelSnapshotRef] != "", isUnpackKey(key):
		return kindExtract
	default:
		return kindWritable
	}
}

// isUnpackKey reports whether key has containerd's unpack key format
// ("extract-<unique> <chainID>", snapshots.UnpackKeyFormat), as the
// snapshotter sees it behind the metadata layer ("<ns>/<n>/extract-...").
// pkg/rootfs.ApplyLayerWithOpts (client image.Unpack, `ctr run` of an
// image not yet unpacked) prepares with that key but without the
// containerd.io/snapshot.ref label the core unpacker sets; taken for a
// writable snapshot, its ext4 mount sends the diff service to the walking
// differ, which cannot mount a file as ext4, and the unpack fails.
func isUnpackKey(key string) bool {
	if i := strings.LastIndexByte(strings.SplitN(key, " ", 2)[0], '/'); i >= 0 {
		key = key[i+1:]
	}
	rest, ok := strings.CutPrefix(key, snapshots.UnpackKeyPrefix+"-")
	return ok && strings.Contains(rest, " ")
}

// create builds the snapshot's directory under a new-* name first (the
// slow part: mkfs.ext4, an empty EROFS image), then in one write
// transaction records the snapshot and renames the directory to its id.
// A crash before the transaction commits leaves a new-* or unrecorded
// directory that startup and Cleanup remove.
func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (_ []mount.Mount, err error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	what := classify(kind, key, base.Labels)
	if what != kindExtract && parent != "" {
		// The mounts returned below name the parent's merged disk: it
		// must be complete before they are handed out (docs/design.md §4).
		if err := s.ensureMerged(ctx, parent); err != nil {
			return nil, fmt.Errorf("snapshot %q: %w", key, err)
		}
	}
	own := map[string]string{}
	var size int64
	switch what {
	case kindExtract:
		own[LabelExtract] = "true"
	case kindWritable:
		if s.cfg.CommitMode == CommitModeBlock {
			if size, err = s.writableSize(key, base.Labels); err != nil {
				return nil, err
			}
			own[LabelWritableSize] = strconv.FormatInt(size, 10)
		}
	}

	name, err := s.mkdirPending()
	if err != nil {
		return nil, fmt.Errorf("snapshot %q: create directory: %w", key, err)
	}
	defer s.donePending(name)
	td := filepath.Join(s.snapshotsRoot(), name)
	testHook("create:mkdir")
	var final string
	defer func() {
		if err == nil {
			return
		}
		for _, d := range []string{td, final} {
			if d == "" {
				continue
			}
			if rerr := os.RemoveAll(d); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				log.G(ctx).WithError(rerr).WithField("path", d).Warn("erofs-vm: failed to remove directory of failed snapshot")
			}
		}
	}()
	if err := os.Chmod(td, 0o755); err != nil {
		return nil, err
	}
	// populate leaves everything it made durable (files by
	// temp+fsync+rename, then the directory synced).
	if err := s.populate(ctx, td, what, parent, size, base.Labels); err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	testHook("create:populated")

	var snap storage.Snapshot
	if err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		n, err := chainDepth(ctx, parent)
		if err != nil {
			return err
		}
		own[LabelMountType] = mountTypeLabel(s.mounts(storage.Snapshot{Kind: kind, ParentIDs: make([]string, n)}, what == kindExtract))
		opts := append(opts[:len(opts):len(opts)], snapshots.WithLabels(own))
		snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...)
		if err != nil {
			return fmt.Errorf("create snapshot %q: %w", key, err)
		}
		final = s.dir(snap.ID)
		if err := os.Rename(td, final); err != nil {
			return fmt.Errorf("snapshot %q: rename %s to %s: %w", key, td, final, err)
		}
		td = ""
		if err := layout.SyncDir(s.snapshotsRoot()); err != nil {
			return err
		}
		testHook("create:renamed")
		return nil
	}); err != nil {
		return nil, err
	}
	testHook("create:recorded")
	return s.mounts(snap, what == kindExtract), nil
}

// mkdirPending creates a new-* directory under snapshots/ and returns its
// name, already marked pending: a concurrent Cleanup lists the directory
// only after it is in s.pending, so it never takes it for an orphan (with
// os.MkdirTemp the name is known only once the directory exists, and a
// Cleanup in between removed it from under the Prepare).
func (s *Snapshotter) mkdirPending() (string, error) {
	for {
		name := tempDirPrefix + strconv.FormatUint(rand.Uint64(), 36)
		s.addPending(name)
		err := os.Mkdir(filepath.Join(s.snapshotsRoot(), name), 0o700)
		if err == nil {
			return name, nil
		}
		s.donePending(name)
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
}

// populate creates the files a new snapshot starts with in dir.
func (s *Snapshotter) populate(ctx context.Context, dir string, what snapshotKind, parent string, size int64, labels map[string]string) error {
	switch what {
	case kindExtract:
		// The marker: the differ converts into directories that have one
		// and replaces it with what it learnt about the layer. containerd's
		// unpacker names the layer's diff ID at Prepare; passing it on lets
		// Apply refuse a blob that does not match it before layer.erofs
		// exists, with both digests in the error (without it, the
		// unpacker compares after Apply and removes the snapshot).
		var m layout.Marker
		if d, err := digest.Parse(labels[snapshots.LabelSnapshotDiffID]); err == nil {
			m.DiffID = d
		}
		if m == (layout.Marker{}) {
			return layout.WriteFileAtomic(filepath.Join(dir, layout.MarkerFile), nil, 0o644)
		}
		return layout.WriteMarker(dir, m)
	case kindView:
		if parent != "" {
			return nil // nothing of its own: its mounts are its parent's
		}
		// A view of nothing is an empty filesystem; an empty EROFS image
		// keeps it a read-only erofs disk like every other view.
		return writeEmptyLayer(ctx, dir)
	}
	if s.cfg.CommitMode == CommitModeOverlay {
		rw := filepath.Join(dir, layout.RWDir)
		for _, d := range []string{rw, filepath.Join(rw, layout.UpperDir), filepath.Join(rw, layout.WorkDir)} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(d, 0o755); err != nil {
				return err
			}
		}
		if err := layout.SyncDir(rw); err != nil {
			return err
		}
		return layout.SyncDir(dir)
	}
	return s.createRWLayer(ctx, dir, size)
}

// writeEmptyLayer writes dir/layer.erofs holding an empty root directory.
func writeEmptyLayer(ctx context.Context, dir string) error {
	empty, err := os.MkdirTemp(dir, ".empty-")
	if err != nil {
		return err
	}
	defer os.Remove(empty)
	if err := os.Chmod(empty, 0o755); err != nil {
		return err
	}
	return writeLayerAtomic(dir, func(f *os.File) error {
		_, err := erofs.ConvertDir(ctx, f, empty, erofs.ConvertOptions{})
		return err
	})
}

// chainDepth is how many committed layers lie under a new snapshot of
// parent, capped at 2: all a mount shape depends on (none, one, several).
// One lookup, however deep the chain.
func chainDepth(ctx context.Context, parent string) (int, error) {
	if parent == "" {
		return 0, nil
	}
	_, info, _, err := storage.GetInfo(ctx, parent)
	if err != nil {
		return 0, fmt.Errorf("parent %q: %w", parent, err)
	}
	if info.Parent == "" {
		return 1, nil
	}
	return 2, nil
}
