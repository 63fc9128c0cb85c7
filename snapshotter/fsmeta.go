package snapshotter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
	"github.com/erofs-vm/containerd-erofs/vmdk"
)

// writeMerged writes dir/fsmeta.erofs over layers (oldest first, the
// committing snapshot's own layer last) and then dir/merged.vmdk over
// [fsmeta.erofs, layers...]. Both appear by temp+fsync+rename, the VMDK
// last: a VMDK present means its fsmeta is complete.
func writeMerged(ctx context.Context, dir string, layers []string) error {
	fsmetaPath := filepath.Join(dir, layout.FSMetaFile)
	var meta *erofs.FSMeta
	if err := layout.WriteFileAtomicFunc(fsmetaPath, 0o644, func(f *os.File) (err error) {
		meta, err = erofs.BuildFSMeta(ctx, f, layers)
		return err
	}); err != nil {
		return fmt.Errorf("build fsmeta of %d layers: %w", len(layers), err)
	}
	testHook("commit:fsmeta-written")
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
	if err := vmdk.WriteFile(filepath.Join(dir, layout.VMDKFile), files); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, layout.VMDKFile), err)
	}
	testHook("commit:vmdk-written")
	return nil
}
