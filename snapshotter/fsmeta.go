package snapshotter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
	"github.com/erofs-vm/containerd-erofs/vmdk"
)

// The merged disk of a committed snapshot with parents (fsmeta.erofs and
// merged.vmdk) is built the first time a non-extract Prepare or a View
// takes that snapshot as parent, before those mounts are returned, never at
// Commit (docs/design.md §4). An unpack commits every layer of an image but
// hands out only bind mounts, so a deep image's intermediate layers never
// pay for a merged disk; building one per Commit cost layers × entries.
//
// Crash safety: the files appear by temp+fsync+rename, the VMDK after the
// fsmeta it names, so a VMDK present means a complete disk; mounts naming
// the disk are returned only after that. A crash at any point leaves no
// merged disk, a complete fsmeta without its VMDK (rebuilt, flags lifted,
// at the next use: no mount ever named it), or a complete disk. Nothing is
// recorded in the metastore: the fsmeta-ready label is derived from the
// VMDK's presence (withMergedLabels says why), so there is no window where
// record and files disagree. A mount shape once handed out never changes.

// mergedFiles are the files the merged disk adds to a committed snapshot,
// in the order they are written: the VMDK last.
var mergedFiles = []string{layout.FSMetaFile, layout.ManifestFile, layout.VMDKFile}

// ensureMerged gives the committed snapshot named parent its merged disk if
// it has parents and none yet. Concurrent callers for the same parent
// serialise on its id lock; the later ones find the VMDK and return.
func (s *Snapshotter) ensureMerged(ctx context.Context, parent string) error {
	var (
		id    string
		chain []ancestor
		base  bool // no parents: its own layer.erofs is its disk
		ready bool
	)
	read := func(ctx context.Context) (err error) {
		var info snapshots.Info
		id, info, _, err = storage.GetInfo(ctx, parent)
		if err != nil {
			return fmt.Errorf("parent %q: %w", parent, err)
		}
		if info.Kind != snapshots.KindCommitted {
			return fmt.Errorf("parent %q is %v, not committed: %w", parent, info.Kind, errdefs.ErrFailedPrecondition)
		}
		base = info.Parent == ""
		ready = base || s.hasMerged(id)
		if !ready {
			chain, err = ancestors(ctx, parent)
		}
		return err
	}
	if err := s.ms.WithTransaction(ctx, false, read); err != nil {
		return err
	}
	if base {
		return nil
	}
	if ready {
		return s.flagMerged(id, parent)
	}
	unlock := s.locks.lock(id)
	defer unlock()
	before := id
	if err := s.ms.WithTransaction(ctx, false, read); err != nil {
		return err
	}
	if id != before {
		return fmt.Errorf("parent %q was removed and committed again while its disk was built: %w", parent, errdefs.ErrNotFound)
	}
	if ready {
		return nil // built by a caller that held the lock before us
	}
	start := time.Now()
	dir := s.dir(id)
	// Files of a build a crash cut short: no mount named them (there is
	// no VMDK), so they are replaced; lift their flags first.
	for _, f := range mergedFiles {
		if err := setImmutable(filepath.Join(dir, f), false); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("merged disk of %q: %w", parent, err)
		}
	}
	layers := make([]string, 0, len(chain))
	for i := len(chain) - 1; i >= 0; i-- {
		layers = append(layers, s.layerPath(chain[i].id))
	}
	if err := writeMerged(ctx, dir, layers); err != nil {
		return fmt.Errorf("merged disk of %q: %w", parent, err)
	}
	if err := s.flagMerged(id, parent); err != nil {
		return err
	}
	testHook("merge:immutable-set")
	log.G(ctx).WithFields(log.Fields{
		"d":      time.Since(start),
		"layers": len(layers),
		"id":     id,
	}).Debug("erofs-vm: merged disk built")
	return nil
}

// flagMerged sets FS_IMMUTABLE_FL on a complete merged disk when
// configured. It runs at every use, not only after a build: a crash
// between the VMDK's rename and the flags leaves a complete disk without
// them, and setting a flag that is set costs one ioctl.
func (s *Snapshotter) flagMerged(id, parent string) error {
	if !s.cfg.SetImmutable {
		return nil
	}
	for _, f := range mergedFiles {
		// A disk built before layers.manifest existed has none.
		if err := setImmutable(filepath.Join(s.dir(id), f), true); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("merged disk of %q: set immutable: %w", parent, err)
		}
	}
	return nil
}

// layersManifest is spinbox's layers.manifest for a merged disk over layers
// (oldest first): one line per device= of the mount, in that order,
// "sha256:<hex>" for a file named sha256-<hex>.erofs and "blob:<basename>"
// for any other. spinbox compares it with the mount's device= list before
// it attaches merged.vmdk and refuses a mismatch as a stale disk; a missing
// manifest it accepts, so writing one makes its guard live for our disks.
func layersManifest(layers []string) []byte {
	var b bytes.Buffer
	for _, l := range layers {
		base := filepath.Base(l)
		if hex, ok := strings.CutSuffix(strings.TrimPrefix(base, "sha256-"), ".erofs"); ok && strings.HasPrefix(base, "sha256-") {
			fmt.Fprintf(&b, "sha256:%s\n", hex)
		} else {
			fmt.Fprintf(&b, "blob:%s\n", base)
		}
	}
	return b.Bytes()
}

// writeMerged writes dir/fsmeta.erofs over layers (oldest first, the
// snapshot's own layer last), then dir/layers.manifest, then
// dir/merged.vmdk over [fsmeta.erofs, layers...]. Each appears by
// temp+fsync+rename, the VMDK last: a VMDK present means the others are
// complete.
func writeMerged(ctx context.Context, dir string, layers []string) error {
	fsmetaPath := filepath.Join(dir, layout.FSMetaFile)
	var meta *erofs.FSMeta
	if err := layout.WriteFileAtomicFunc(fsmetaPath, 0o644, func(f *os.File) (err error) {
		meta, err = erofs.BuildFSMeta(ctx, f, layers)
		return err
	}); err != nil {
		return fmt.Errorf("build fsmeta of %d layers: %w", len(layers), err)
	}
	testHook("merge:fsmeta-written")
	if len(meta.Devices) != len(layers) {
		return fmt.Errorf("fsmeta %s has %d devices for %d layers", fsmetaPath, len(meta.Devices), len(layers))
	}
	parts, err := meta.FlatDisk(fsmetaPath)
	if err != nil {
		return err
	}
	files := make([]vmdk.File, len(parts))
	for i, p := range parts {
		files[i] = vmdk.File{Path: p.Path, Size: p.Size}
	}
	manifest := filepath.Join(dir, layout.ManifestFile)
	if err := layout.WriteFileAtomic(manifest, layersManifest(layers), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", manifest, err)
	}
	testHook("merge:manifest-written")
	if err := vmdk.WriteFile(filepath.Join(dir, layout.VMDKFile), files); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, layout.VMDKFile), err)
	}
	testHook("merge:vmdk-written")
	return nil
}
