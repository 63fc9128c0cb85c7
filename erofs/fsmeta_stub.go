package erofs

// PLACEHOLDER owned by the fsmeta work (issue 5): replace this file with the
// real builder in fsmeta.go. The signatures below are the contract the
// snapshotter and erofsctl merge code against; keep them (extend freely).

import (
	"context"
	"errors"
	"os"
)

// FSMeta describes a built fsmeta image and the devices it refers to, in the
// order a flat VMDK must concatenate them: the fsmeta itself, then Devices.
type FSMeta struct {
	// Blocks is the fsmeta image's own size in blocks (its file is exactly
	// Blocks*BlockSize bytes).
	Blocks uint32
	// Devices are the layers, oldest first, as written in the device table.
	Devices []FSMetaDevice
}

// FSMetaDevice is one layer image in the device table.
type FSMetaDevice struct {
	Path          string
	Blocks        uint32 // the layer image's size in blocks
	MappedBlkAddr uint32 // where the layer starts in the concatenation
}

// BuildFSMeta merges the layer images at layers (oldest first) into a
// metadata-only EROFS image written to dst: the overlay view with whiteouts
// and opaque dirs applied, regular files as chunk-based inodes pointing into
// the layers, one extra device per layer with mapped_blkaddr set so that
// [dst, layers...] concatenated is itself a valid single-device image.
func BuildFSMeta(ctx context.Context, dst *os.File, layers []string) (*FSMeta, error) {
	return nil, errors.New("erofs: BuildFSMeta not implemented yet")
}
