package snapshotter

import (
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// Mount types of docs/design.md §4.
const (
	typeBind        = "bind"
	typeErofs       = "erofs"
	typeFormatErofs = "format/erofs"
	typeExt4        = "ext4"
)

// mounts returns the docs/design.md §4 shape of an active or view snapshot:
//
//	extract                     bind rw of the snapshot dir (the differ writes there)
//	over 1 layer                erofs <parent>/layer.erofs ro
//	over N>1 layers             format/erofs <parent>/fsmeta.erofs ro,device=<layer>... oldest first
//	writable, block mode        the lowers, then ext4 rwlayer.img rw
//	writable, overlay mode      the lowers, then bind rw of rw/ (upper/ and work/ inside);
//	                            with no parent, bind rw of rw/upper alone (it is the rootfs)
//	view with no parent         erofs of the view's own empty layer.erofs ro
//
// It reads no file and no label: the snapshot's kind, its parent chain and
// whether it is an extract decide.
func (s *Snapshotter) mounts(snap storage.Snapshot, extract bool) []mount.Mount {
	if snap.Kind == snapshots.KindActive && extract {
		return []mount.Mount{{Type: typeBind, Source: s.dir(snap.ID), Options: []string{"rbind", "rw"}}}
	}
	ms := s.lowerMounts(snap.ParentIDs)
	if snap.Kind == snapshots.KindView {
		if len(ms) == 0 {
			return []mount.Mount{{Type: typeErofs, Source: s.layerPath(snap.ID), Options: []string{"ro"}}}
		}
		return ms
	}
	if s.cfg.CommitMode == CommitModeOverlay {
		if len(ms) == 0 {
			// Nothing to overlay: the upper itself is the root filesystem.
			return []mount.Mount{{Type: typeBind, Source: filepath.Join(s.rwDir(snap.ID), layout.UpperDir), Options: []string{"rbind", "rw"}}}
		}
		return append(ms, mount.Mount{Type: typeBind, Source: s.rwDir(snap.ID), Options: []string{"rbind", "rw"}})
	}
	return append(ms, mount.Mount{Type: typeExt4, Source: s.rwLayerPath(snap.ID), Options: []string{"rw"}})
}

// lowerMounts is the read-only part for a parent chain given nearest first
// (storage.Snapshot.ParentIDs order). The nearest parent's fsmeta.erofs
// covers the whole chain; device= lists its layers oldest first, the order
// of its device table.
func (s *Snapshotter) lowerMounts(parentIDs []string) []mount.Mount {
	switch len(parentIDs) {
	case 0:
		return nil
	case 1:
		return []mount.Mount{{Type: typeErofs, Source: s.layerPath(parentIDs[0]), Options: []string{"ro"}}}
	}
	opts := make([]string, 0, len(parentIDs)+1)
	opts = append(opts, "ro")
	for i := len(parentIDs) - 1; i >= 0; i-- {
		opts = append(opts, "device="+s.layerPath(parentIDs[i]))
	}
	return []mount.Mount{{Type: typeFormatErofs, Source: s.fsmetaPath(parentIDs[0]), Options: opts}}
}

// mountTypeLabel renders the mount types of ms for LabelMountType.
func mountTypeLabel(ms []mount.Mount) string {
	t := make([]string, len(ms))
	for i, m := range ms {
		t[i] = m.Type
	}
	return strings.Join(t, ",")
}

// committedMountType is LabelMountType of a committed snapshot with n
// layers: the shape of a View of it.
func committedMountType(n int) string {
	if n > 1 {
		return typeFormatErofs
	}
	return typeErofs
}
