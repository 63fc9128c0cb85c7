package snapshotter

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/filters"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// Stat returns the info of the snapshot key, labels included (with the
// merged-disk labels derived from its files, see withMergedLabels).
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	var id string
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		id, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("stat snapshot %q: %w", key, err)
	}
	return s.withMergedLabels(id, info), nil
}

// withMergedLabels adds LabelFSMetaReady and LabelFSMetaLayers to the info
// of a committed snapshot whose merged disk exists. They are derived, not
// recorded: the merged disk is built at the snapshot's first use as a
// parent (fsmeta.go), and recording a label then would change the
// committed snapshot's Updated time, which containerd's snapshotter
// conformance suite forbids (a committed snapshot's Created == Updated
// until someone calls Update). The VMDK is written after the fsmeta it
// names, so its presence is the proof that the disk is complete.
func (s *Snapshotter) withMergedLabels(id string, info snapshots.Info) snapshots.Info {
	if info.Kind != snapshots.KindCommitted || info.Parent == "" || !s.hasMerged(id) {
		return info
	}
	labels := make(map[string]string, len(info.Labels)+2)
	maps.Copy(labels, info.Labels)
	labels[LabelFSMetaReady] = "true"
	if order, err := DecodeLayerOrder(info.Labels[LabelLayerOrder]); err == nil {
		labels[LabelFSMetaLayers] = strconv.Itoa(len(order))
	}
	info.Labels = labels
	return info
}

// hasMerged reports whether snapshot id's merged disk is complete.
func (s *Snapshotter) hasMerged(id string) bool {
	_, err := os.Lstat(filepath.Join(s.dir(id), layout.VMDKFile))
	return err == nil
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
// syntax: kind, name, parent, labels.<key>). The filters see the derived
// merged-disk labels too, so labels."erofs-vm/fsmeta-ready"==true selects
// the snapshots whose merged disk exists.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, fs ...string) error {
	filter, err := filters.ParseAll(fs...)
	if err != nil {
		return fmt.Errorf("walk snapshots: %w", err)
	}
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			info = s.withMergedLabels(id, info)
			if !filter.Match(adaptInfo(info)) {
				return nil
			}
			return fn(ctx, info)
		})
	})
}

// adaptInfo exposes a snapshot's fields to containerd's filter syntax the
// way core/snapshots/storage does for the labels it stores.
func adaptInfo(info snapshots.Info) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 0 {
			return "", false
		}
		switch fieldpath[0] {
		case "kind":
			switch info.Kind {
			case snapshots.KindActive:
				return "active", true
			case snapshots.KindView:
				return "view", true
			case snapshots.KindCommitted:
				return "committed", true
			}
		case "name":
			return info.Name, true
		case "parent":
			return info.Parent, true
		case "labels":
			v, ok := info.Labels[strings.Join(fieldpath[1:], ".")]
			return v, ok
		}
		return "", false
	})
}

// Usage returns the real allocated bytes and inodes of the snapshot's
// files. A committed snapshot's layer never changes, so it was measured at
// Commit (its merged disk, once built, is added); an active one is measured now (a sparse rwlayer.img counts what
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
		// What Commit measured, plus the merged disk built since.
		for _, f := range mergedFiles {
			if fi, err := os.Lstat(filepath.Join(s.dir(id), f)); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					usage.Inodes++
					usage.Size += st.Blocks * 512
				}
			}
		}
		return usage, nil
	}
	du, err := fs.DiskUsage(ctx, s.dir(id))
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage of snapshot %q: %s: %w", key, s.dir(id), err)
	}
	return snapshots.Usage(du), nil
}
