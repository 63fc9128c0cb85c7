package erofs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"syscall"
)

// The fsmeta builder: N layer images in, one metadata-only image out that
// the kernel mounts as the merged view of the stack, either with every
// layer attached as a device (device=) or as the flat concatenation
// [fsmeta, layer0, ..., layerN-1] on one disk (a VMDK for a micro-VM).
//
// Layout of an fsmeta image:
//
//	block 0                superblock (+ device table when it fits)
//	[blocks 1..D]          device table of more than 23 layers
//	blocks D+1..T          copies of inline tails, one block each, pointed
//	                       at by the last chunk index of their file
//	MetaBlkAddr...         written by Tree.WriteImage: [device table],
//	                       inodes (chunk indexes inline), dir blocks,
//	                       small copied files
//
// Layer data is never copied except bytes a layer keeps inline in its own
// metadata (see fsmeta_chunks.go), so an fsmeta costs a few hundred bytes
// per entry however big the layers are.

// FSMeta describes a built fsmeta image and the devices it refers to, in the
// order a flat VMDK must concatenate them: the fsmeta itself, then Devices.
type FSMeta struct {
	// Blocks is the fsmeta image's own size in blocks (its file is exactly
	// Blocks*BlockSize bytes).
	Blocks uint32
	// Devices are the layers, oldest first, as written in the device table.
	Devices []FSMetaDevice
	// Entries is the number of names in the merged tree (root excluded).
	Entries int
	// Inodes is the number of inodes in the fsmeta (hardlinks once).
	Inodes uint64
	// CopiedBytes is how many bytes of layer data fsmeta carries itself:
	// files and tails the layers store inline, with no block to point at.
	CopiedBytes uint64
}

// FSMetaDevice is one layer image in the device table.
type FSMetaDevice struct {
	Path          string
	Blocks        uint32 // the layer image's size in blocks
	MappedBlkAddr uint32 // where the layer starts in the concatenation
}

// DiskPart is one file of a merged disk and how many of its bytes the disk
// uses.
type DiskPart struct {
	Path string
	Size int64
}

// FlatDisk lists the files whose concatenation is the merged disk, in disk
// order: the fsmeta at fsmetaPath, then each layer of the device table. A
// layer contributes exactly the blocks the device table counts for it, even
// if its file carries trailing bytes, and each must start at the
// mapped_blkaddr recorded for it: that is where the kernel looks for it
// when the disk is mounted as one device. The snapshotter and erofsctl
// both build merged.vmdk from this list.
func (m *FSMeta) FlatDisk(fsmetaPath string) ([]DiskPart, error) {
	parts := make([]DiskPart, 0, len(m.Devices)+1)
	parts = append(parts, DiskPart{Path: fsmetaPath, Size: int64(m.Blocks) * BlockSize})
	next := m.Blocks
	for i, d := range m.Devices {
		if d.MappedBlkAddr != next {
			return nil, fmt.Errorf("erofs: fsmeta %s: device %d (%s) mapped at block %d, want %d", fsmetaPath, i+1, d.Path, d.MappedBlkAddr, next)
		}
		next += d.Blocks
		parts = append(parts, DiskPart{Path: d.Path, Size: int64(d.Blocks) * BlockSize})
	}
	return parts, nil
}

// maxFSMetaLayers bounds the stack: device ids in chunk indexes and the
// superblock's extra_devices are 16-bit.
const maxFSMetaLayers = math.MaxUint16

// BuildFSMeta merges the layer images at layers (oldest first) into a
// metadata-only EROFS image written to dst: the overlay view with whiteouts
// and opaque dirs applied, regular files as chunk-based inodes pointing into
// the layers, one extra device per layer with mapped_blkaddr set so that
// [dst, layers...] concatenated is itself a valid single-device image.
//
// dst is truncated and rewritten from offset 0; on error its contents are
// undefined (callers write to a temp file and rename it into place). The
// output depends only on the layers' contents and order: the same stack
// always gives the same bytes. BuildFSMeta does not sync dst.
func BuildFSMeta(ctx context.Context, dst *os.File, layers []string) (*FSMeta, error) {
	if len(layers) == 0 {
		return nil, errors.New("erofs: fsmeta: no layers")
	}
	if len(layers) > maxFSMetaLayers {
		return nil, fmt.Errorf("erofs: fsmeta: %d layers, at most %d", len(layers), maxFSMetaLayers)
	}
	slots := make([]DeviceSlot, len(layers))
	imgs := make([]layerFS, 0, len(layers))
	defer func() {
		for _, im := range imgs {
			im.(*Image).Close()
		}
	}()
	for i, p := range layers {
		im, blocks, err := openLayer(p)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, im)
		slots[i].Blocks = blocks
		copy(slots[i].Tag[:], fmt.Sprintf("layer%d", i))
	}
	if err := dst.Truncate(0); err != nil {
		return nil, fmt.Errorf("erofs: fsmeta: %w", err)
	}

	// A device table too big for block 0 (more than 23 layers) takes the
	// blocks right after it, before the tail copies: after them it could
	// lie beyond the 8 MiB devt_slotoff reaches.
	opts := ImageOptions{Devices: slots, MapDevices: true}
	b := &fsmetaData{dst: dst, layers: imgs, nextBlk: 1}
	if nb := devTableBlocks(len(slots)); nb > 0 {
		opts.DevTableBlkAddr = 1
		b.nextBlk = 1 + uint32(nb)
	}
	tree, st, err := mergeLayers(ctx, imgs, b.data)
	if err != nil {
		return nil, err
	}
	opts.MetaBlkAddr = b.nextBlk
	info, err := tree.WriteImage(dst, opts)
	if err != nil {
		return nil, fmt.Errorf("erofs: fsmeta: %w", err)
	}
	if err := dst.Truncate(int64(info.Blocks) * BlockSize); err != nil {
		return nil, fmt.Errorf("erofs: fsmeta: %w", err)
	}
	meta := &FSMeta{Blocks: info.Blocks, Entries: st.Entries, Inodes: info.Inodes, CopiedBytes: b.copied}
	for i, d := range info.Devices {
		meta.Devices = append(meta.Devices, FSMetaDevice{Path: layers[i], Blocks: d.Blocks, MappedBlkAddr: d.MappedBlkAddr})
	}
	return meta, nil
}

// openLayer opens one layer image and checks what the device table and
// the flat concatenation need of it.
func openLayer(p string) (*Image, uint32, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, 0, fmt.Errorf("erofs: fsmeta: layer: %w", err)
	}
	if !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0 {
		return nil, 0, fmt.Errorf("erofs: fsmeta: layer %s is not a file", p)
	}
	if fi.Size()%BlockSize != 0 || fi.Size() == 0 {
		// The next layer of a flat disk starts where this one ends, on a
		// block boundary: a ragged layer would shift every later one.
		return nil, 0, fmt.Errorf("erofs: fsmeta: layer %s is %d bytes, not a positive multiple of %d", p, fi.Size(), BlockSize)
	}
	if fi.Size()/BlockSize > math.MaxUint32 {
		return nil, 0, fmt.Errorf("erofs: fsmeta: layer %s has more than 2^32 blocks", p)
	}
	im, err := Open(p)
	if err != nil {
		return nil, 0, fmt.Errorf("erofs: fsmeta: layer %w", err)
	}
	if sb := im.Superblock(); sb.ExtraDevices != 0 {
		im.Close()
		return nil, 0, fmt.Errorf("erofs: fsmeta: layer %s has %d devices of its own: only single-device layers can be stacked", p, sb.ExtraDevices)
	}
	return im, uint32(fi.Size() / BlockSize), nil
}

// fsmetaData decides, per file, how fsmeta reaches its bytes, and writes
// the inline tails it must copy into blocks 1.. of dst as it goes.
type fsmetaData struct {
	dst     *os.File
	layers  []layerFS
	nextBlk uint32 // next free block for a tail copy
	copied  uint64
}

// maxCopyAll bounds a whole-file copy held in memory: only files a layer
// keeps entirely inline (under one block) or unaligned (never, in an
// uncompressed layer) are copied whole.
const maxCopyAll = 16 << 20

func (b *fsmetaData) data(layer int, p string, ino *Inode) (Data, error) {
	l := b.layers[layer]
	if ino.Size == 0 {
		return Data{}, nil
	}
	exts, err := l.Extents(ino)
	if err != nil {
		return Data{}, err
	}
	if ino.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		if ino.Size > maxSymlinkSize {
			return Data{}, fmt.Errorf("symlink target of %d bytes: %w", ino.Size, ErrCorrupt)
		}
		target := make([]byte, ino.Size)
		if err := readExtents(l, exts, target, 0); err != nil {
			return Data{}, err
		}
		return Data{Kind: DataBytes, Bytes: target}, nil
	}
	plan, err := planChunks(exts, ino.Size, uint16(layer+1))
	if err != nil {
		return Data{}, err
	}
	if plan.copyAll {
		if ino.Size > maxCopyAll {
			return Data{}, fmt.Errorf("%d bytes of unaddressable data: too big to copy into fsmeta", ino.Size)
		}
		buf := make([]byte, ino.Size)
		if err := readExtents(l, exts, buf, 0); err != nil {
			return Data{}, err
		}
		b.copied += ino.Size
		return Data{Kind: DataBytes, Bytes: buf}, nil
	}
	if plan.tailChunk >= 0 {
		buf := make([]byte, plan.tailLen)
		if err := readExtents(l, exts, buf, plan.tailOff); err != nil {
			return Data{}, err
		}
		if _, err := b.dst.WriteAt(buf, int64(b.nextBlk)*BlockSize); err != nil {
			return Data{}, fmt.Errorf("write tail copy: %w", err)
		}
		plan.chunks[plan.tailChunk] = ChunkIndex{DeviceID: 0, BlkAddr: b.nextBlk}
		if b.nextBlk++; b.nextBlk == NullAddr {
			return Data{}, errors.New("fsmeta: too many tail copies")
		}
		b.copied += plan.tailLen
	}
	return Data{Kind: DataChunks, Size: ino.Size, ChunkBits: plan.chunkBits + BlockSizeBits, Chunks: plan.chunks}, nil
}
