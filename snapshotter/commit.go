package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/erofs-vm/containerd-erofs/internal/commitgate"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// ancestor is one committed snapshot of a parent chain.
type ancestor struct {
	id   string
	info snapshots.Info
}

// Commit turns the active snapshot key into the committed snapshot name.
//
// Everything slow happens first, outside any write transaction, in the
// snapshot's own directory (its id does not change): an extract snapshot's
// layer.erofs is validated; a writable one's upper is converted into
// layer.erofs; the layer is flagged immutable if configured. Then one
// write transaction records the commit with the §5 labels. A crash before
// it leaves the snapshot active with extra files a retried Commit
// replaces; after it, a complete committed snapshot. The merged disk over
// the parents (fsmeta.erofs, merged.vmdk) is not built here but at the
// first Prepare or View that uses this snapshot (ensureMerged).
//
// In block mode a writable snapshot's rwlayer.img is read only under the
// commit gate (internal/commitgate), unless the caller's labels say the VM
// is quiesced.
//
// A parent given with snapshots.WithParent to a snapshot prepared without
// one (the unpacker's parallel mode) rebases it onto that parent's chain.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	if err := s.commit(ctx, name, key, opts); err != nil {
		return fmt.Errorf("commit snapshot %q as %q: %w", key, name, err)
	}
	return nil
}

func (s *Snapshotter) commit(ctx context.Context, name, key string, opts []snapshots.Opt) error {
	start := time.Now()
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return err
		}
	}
	var (
		id    string
		info  snapshots.Info
		below []string // layer order of the stack under this one, oldest first
	)
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, _, err = storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if info.Kind != snapshots.KindActive {
			return fmt.Errorf("snapshot is %v, not active: %w", info.Kind, errdefs.ErrFailedPrecondition)
		}
		parent := info.Parent
		if base.Parent != "" && base.Parent != parent {
			if parent != "" {
				return fmt.Errorf("cannot change parent %q to %q: %w", parent, base.Parent, errdefs.ErrInvalidArgument)
			}
			parent = base.Parent
		}
		below, err = stackOrder(ctx, parent)
		return err
	}); err != nil {
		return err
	}

	testHook("commit:read")

	unlock := s.locks.lock(id)
	defer unlock()
	// A concurrent Commit (or Remove) of the same key may have finished
	// while this one waited for the lock: the directory then belongs to a
	// committed snapshot (or none), and lifting its immutable flags or
	// rewriting its files must not happen.
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		cur, ci, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if cur != id || ci.Kind != snapshots.KindActive {
			return fmt.Errorf("snapshot was committed or removed by another call: %w", errdefs.ErrNotFound)
		}
		return nil
	}); err != nil {
		return err
	}
	dir := s.dir(id)
	extract, err := s.isExtract(id)
	if err != nil {
		return err
	}
	if !extract && s.cfg.CommitMode == CommitModeBlock && !commitgate.Quiesced(base.Labels) {
		// A running VM still writes rwlayer.img: refuse before anything
		// changes, and keep the VM out for the whole read
		// (docs/design.md §11). Not a conversion error: nothing is recorded.
		unlock, err := commitgate.Lock(s.rwLayerPath(id))
		if err != nil {
			return err
		}
		defer unlock()
	}
	// A Commit retried after a crash or a failed transaction may find its
	// files flagged: lift the flag so they can be replaced.
	if err := clearImmutableTree(dir); err != nil {
		return err
	}
	own := map[string]string{}
	ownDiffID := LayerOrderUnknownPrefix + id
	if extract {
		own[LabelExtract] = "true"
		if err := validateLayer(s.layerPath(id)); err != nil {
			return err
		}
		m, err := layout.ReadMarker(dir)
		if err != nil {
			return fmt.Errorf("read marker: %v: %w", err, errdefs.ErrFailedPrecondition)
		}
		diffID := m.DiffID
		if diffID == "" {
			// The unpacker names the layer it prepared the snapshot for.
			diffID, _ = digest.Parse(info.Labels[snapshots.LabelSnapshotDiffID])
		}
		if diffID != "" {
			own[LabelLayerDigest] = diffID.String()
			ownDiffID = diffID.String()
		}
		if m.BlobDigest != "" {
			own[LabelLayerBlobDigest] = m.BlobDigest.String()
		}
	} else {
		if err := s.convertUpper(ctx, id); err != nil {
			s.recordConversionError(ctx, key, id, err)
			return fmt.Errorf("convert upper into %s: %w", s.layerPath(id), err)
		}
		if err := validateLayer(s.layerPath(id)); err != nil {
			s.recordConversionError(ctx, key, id, err)
			return err
		}
	}
	testHook("commit:layer-ready")

	order := append(below[:len(below):len(below)], ownDiffID)
	files := []string{s.layerPath(id)}
	layerReady := time.Now()
	if len(below) > 0 {
		// The merged disk itself is built at the first use of this
		// snapshot as a parent (fsmeta.go), so an unpack's intermediate
		// layers never pay for one; the order of its layers is known now.
		v, err := EncodeLayerOrder(order)
		if err != nil {
			return err
		}
		own[LabelLayerOrder] = v
	}
	// Merged files in an active snapshot's dir are left by an attempt of
	// an older version that built them at Commit: whatever this commit's
	// chain is, they do not describe it.
	for _, f := range mergedFiles {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	own[LabelLayerBlobPath] = s.layerPath(id)
	own[LabelMountType] = committedMountType(len(order))
	if s.cfg.SetImmutable {
		for _, f := range files {
			if err := setImmutable(f, true); err != nil {
				return fmt.Errorf("set immutable: %w", err)
			}
		}
		own[LabelImmutable] = "true"
		testHook("commit:immutable-set")
	}
	usage, err := usageOf(dir, files)
	if err != nil {
		return err
	}

	// The caller's options, less the quiesced instruction, which is for
	// this call only, then the labels the snapshotter sets.
	callerOpts := opts
	opts = []snapshots.Opt{func(info *snapshots.Info) error {
		for _, o := range callerOpts {
			if err := o(info); err != nil {
				return err
			}
		}
		delete(info.Labels, commitgate.QuiescedLabel)
		return nil
	}, snapshots.WithLabels(own)}
	if err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		cur, _, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if cur != id {
			return fmt.Errorf("snapshot was removed and prepared again while committing: %w", errdefs.ErrNotFound)
		}
		_, err = storage.CommitActive(ctx, key, name, usage, opts...)
		return err
	}); err != nil {
		return err
	}
	testHook("commit:recorded")
	s.dropWritable(ctx, id)
	log.G(ctx).WithFields(log.Fields{
		"d":      time.Since(start),
		"layer":  layerReady.Sub(start), // validate, or convert the upper
		"layers": len(order),
		"id":     id,
	}).Debug("erofs-vm: snapshot committed")
	return nil
}

// stackOrder returns the layer order (diff IDs, oldest first) of the
// committed stack that ends at parent: its layer-order label, or a base
// layer's own entry. One lookup however deep the stack, where walking the
// chain made every Commit of an N-layer unpack cost O(N). A stack whose
// label an Update dropped is walked instead.
func stackOrder(ctx context.Context, parent string) ([]string, error) {
	if parent == "" {
		return nil, nil
	}
	id, info, _, err := storage.GetInfo(ctx, parent)
	if err != nil {
		return nil, fmt.Errorf("parent %q: %w", parent, err)
	}
	if info.Kind != snapshots.KindCommitted {
		return nil, fmt.Errorf("parent %q is %v, not committed: %w", parent, info.Kind, errdefs.ErrFailedPrecondition)
	}
	if info.Parent == "" {
		return []string{layerOrderEntry(id, info)}, nil
	}
	if order, err := DecodeLayerOrder(info.Labels[LabelLayerOrder]); err == nil && len(order) > 1 {
		return order, nil
	}
	chain, err := ancestors(ctx, parent)
	if err != nil {
		return nil, err
	}
	order := make([]string, 0, len(chain))
	for i := len(chain) - 1; i >= 0; i-- {
		order = append(order, layerOrderEntry(chain[i].id, chain[i].info))
	}
	return order, nil
}

// layerOrderEntry is a committed layer's entry in a layer order: its diff
// ID, or snapshot:<id> when that is unknown (a layer from a container).
func layerOrderEntry(id string, info snapshots.Info) string {
	if d := info.Labels[LabelLayerDigest]; d != "" {
		return d
	}
	return LayerOrderUnknownPrefix + id
}

// ancestors returns the committed chain from parent down to the base,
// nearest first (the order of storage.Snapshot.ParentIDs).
func ancestors(ctx context.Context, parent string) ([]ancestor, error) {
	var chain []ancestor
	for p := parent; p != ""; {
		id, info, _, err := storage.GetInfo(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("parent %q: %w", p, err)
		}
		if info.Kind != snapshots.KindCommitted {
			return nil, fmt.Errorf("parent %q is %v, not committed: %w", p, info.Kind, errdefs.ErrFailedPrecondition)
		}
		chain = append(chain, ancestor{id: id, info: info})
		p = info.Parent
	}
	return chain, nil
}

// recordConversionError keeps the snapshot active and says why it could
// not be committed in LabelConversionError.
func (s *Snapshotter) recordConversionError(ctx context.Context, key, id string, cause error) {
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		cur, _, _, err := storage.GetInfo(ctx, key)
		if err != nil || cur != id {
			return err
		}
		_, err = storage.UpdateInfo(ctx, snapshots.Info{Name: key, Labels: map[string]string{LabelConversionError: cause.Error()}}, "labels."+LabelConversionError)
		return err
	})
	if err != nil {
		logWarn(ctx, err, s.dir(id), "erofs-vm: failed to record conversion error")
	}
}

// dropWritable deletes what only an active writable snapshot needed, once
// it is committed. A failure only wastes space: recovery retries.
func (s *Snapshotter) dropWritable(ctx context.Context, id string) {
	for _, p := range []string{s.rwLayerPath(id), s.rwDir(id)} {
		if err := os.RemoveAll(p); err != nil {
			logWarn(ctx, err, p, "erofs-vm: failed to remove writable layer of committed snapshot")
		}
	}
}

// usageOf is the real allocation of the committed snapshot's files (and its
// directory and marker): st_blocks, not apparent sizes.
func usageOf(dir string, files []string) (snapshots.Usage, error) {
	var u snapshots.Usage
	all := append([]string{dir, filepath.Join(dir, layout.MarkerFile)}, files...)
	for _, f := range all {
		fi, err := os.Lstat(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return u, err
		}
		u.Inodes++
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			u.Size += st.Blocks * 512
		}
	}
	return u, nil
}
