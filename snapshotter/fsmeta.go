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
	files, err := vmdkFiles(fsmetaPath, meta, layers)
	if err != nil {
		return err
	}
	if err := vmdk.WriteFile(filepath.Join(dir, layout.VMDKFile), files); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, layout.VMDKFile), err)
	}
	testHook("commit:vmdk-written")
	return nil
}

// vmdkFiles lists the extents of the merged disk. Each file contributes
// exactly the blocks its superblock (or the device table) counts, so every
// layer starts at the mapped_blkaddr the fsmeta recorded for it, even if a
// layer file carries trailing bytes.
func vmdkFiles(fsmetaPath string, meta *erofs.FSMeta, layers []string) ([]vmdk.File, error) {
	if len(meta.Devices) != len(layers) {
		return nil, fmt.Errorf("fsmeta %s has %d devices for %d layers", fsmetaPath, len(meta.Devices), len(layers))
	}
	files := make([]vmdk.File, 0, len(layers)+1)
	files = append(files, vmdk.File{Path: fsmetaPath, Size: int64(meta.Blocks) * erofs.BlockSize})
	next := meta.Blocks
	for i, d := range meta.Devices {
		if d.MappedBlkAddr != next {
			return nil, fmt.Errorf("fsmeta %s: device %d (%s) mapped at block %d, want %d", fsmetaPath, i+1, layers[i], d.MappedBlkAddr, next)
		}
		next += d.Blocks
		files = append(files, vmdk.File{Path: layers[i], Size: int64(d.Blocks) * erofs.BlockSize})
	}
	return files, nil
}
