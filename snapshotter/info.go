package snapshotter

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
)

// Stat returns the info of the snapshot key, labels included.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("stat snapshot %q: %w", key, err)
	}
	return info, nil
}

// Update changes the labels of a snapshot, with containerd's usual
// semantics (fieldpaths "labels" or "labels.<key>", none meaning all
// labels). The erofs-vm/ labels record what the snapshotter did, so an
// Update may drop them with the rest but may not set or change one.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (_ snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, cur, _, err := storage.GetInfo(ctx, info.Name)
		if err != nil {
			return err
		}
		for k, v := range info.Labels {
			if !isOwnLabel(k) || v == "" || cur.Labels[k] == v {
				continue
			}
			if touches(k, fieldpaths) {
				return fmt.Errorf("label %s is set by the snapshotter, not by Update: %w", k, errdefs.ErrInvalidArgument)
			}
		}
		info, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("update snapshot %q: %w", info.Name, err)
	}
	return info, nil
}

// touches reports whether an Update with fieldpaths writes label k.
func touches(k string, fieldpaths []string) bool {
	if len(fieldpaths) == 0 {
		return true
	}
	for _, p := range fieldpaths {
		if p == "labels" || p == "labels."+k {
			return true
		}
	}
	return false
}

// Walk calls fn for every snapshot matching the filters (containerd filter
// syntax: kind, name, parent, labels.<key>).
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Usage returns the real allocated bytes and inodes of the snapshot's
// files. Committed snapshots never change, so theirs was measured at
// Commit; an active one is measured now (a sparse rwlayer.img counts what
// it has allocated, not its size).
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	}); err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage of snapshot %q: %w", key, err)
	}
	if info.Kind == snapshots.KindCommitted {
		return usage, nil
	}
	du, err := fs.DiskUsage(ctx, s.dir(id))
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage of snapshot %q: %s: %w", key, s.dir(id), err)
	}
	return snapshots.Usage(du), nil
}
