package snapshotter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Remove deletes the snapshot key: its record in one write transaction,
// then its directory (immutable flags lifted first). A crash between the
// two leaves an unrecorded directory that Cleanup and startup remove.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var id string
	if err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, _, err = storage.Remove(ctx, key)
		return err
	}); err != nil {
		return fmt.Errorf("failed to remove snapshot %q: %w", key, err)
	}
	testHook("remove:recorded")
	// The record is gone: from here on failures are only logged, and
	// Cleanup retries them.
	unlock := s.locks.lock(id)
	defer unlock()
	s.removeDir(ctx, s.dir(id))
	return nil
}

// Cleanup removes the directories no snapshot record names: those of
// removed snapshots whose deletion failed or was cut by a crash, and
// new-* directories of creations that never got recorded.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	orphans, err := s.orphans(ctx)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for _, d := range orphans {
		s.removeDir(ctx, d)
	}
	return nil
}

// orphans lists snapshot directories without a record. It runs in a write
// transaction so no creation can record a new id while it reads.
func (s *Snapshotter) orphans(ctx context.Context) ([]string, error) {
	var out []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		ids, err := storage.IDMap(ctx)
		if errdefs.IsNotFound(err) {
			// A store that never recorded a snapshot has no bucket yet.
			ids, err = map[string]string{}, nil
		}
		if err != nil {
			return err
		}
		entries, err := os.ReadDir(s.snapshotsRoot())
		if err != nil {
			return err
		}
		for _, e := range entries {
			n := e.Name()
			if _, ok := ids[n]; ok || s.isPending(n) {
				continue
			}
			out = append(out, filepath.Join(s.snapshotsRoot(), n))
		}
		return nil
	})
	return out, err
}

// removeDir deletes a snapshot directory: unmounts a conversion mount a
// crash may have left, lifts immutable flags, removes everything.
func (s *Snapshotter) removeDir(ctx context.Context, dir string) {
	s.removeTemps(ctx, dir)
	if err := clearImmutableTree(dir); err != nil {
		logWarn(ctx, err, dir, "erofs-vm: failed to lift immutable flags")
	}
	testHook("remove:unflagged")
	if err := os.RemoveAll(dir); err != nil {
		logWarn(ctx, err, dir, "erofs-vm: failed to remove snapshot directory")
	}
	testHook("remove:deleted")
}

// isTemp reports whether a name in a snapshot directory is a leftover of
// an interrupted write: temp files (".<name>.tmp-*"), an empty dir made for
// a conversion, a conversion mount point.
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && (strings.Contains(name, ".tmp-") ||
		strings.HasPrefix(name, ".empty-") || strings.HasPrefix(name, commitMountPrefix))
}

// removeTemps deletes the leftovers of interrupted writes in dir.
func (s *Snapshotter) removeTemps(ctx context.Context, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !isTemp(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), commitMountPrefix) {
			if err := unmountDetach(p); err != nil {
				logWarn(ctx, err, p, "erofs-vm: failed to unmount leftover conversion mount")
				continue
			}
		}
		if err := os.RemoveAll(p); err != nil {
			logWarn(ctx, err, p, "erofs-vm: failed to remove leftover temp file")
		}
	}
}

// recover runs at startup, before any other call: it removes orphan
// directories, leftovers of interrupted writes in live ones, and the
// writable layer of snapshots committed just before a crash.
func (s *Snapshotter) recover(ctx context.Context) error {
	if err := s.Cleanup(ctx); err != nil {
		return err
	}
	live := map[string]snapshots.Kind{}
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			live[id] = info.Kind
			return nil
		})
	}); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	for id, kind := range live {
		s.removeTemps(ctx, s.dir(id))
		if kind == snapshots.KindCommitted {
			s.dropWritable(ctx, id)
		}
	}
	return nil
}

func logWarn(ctx context.Context, err error, path, msg string) {
	if err == nil {
		return
	}
	log.G(ctx).WithError(err).WithField("path", path).Warn(msg)
}
