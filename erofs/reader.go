package erofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

// The reader: an EROFS image (plus its extra devices) opened read-only as
// an fs.FS. The image is untrusted input: every offset, size, count and nid
// read from it is checked before use, and every error about the image's
// content wraps ErrCorrupt and says what is wrong where.
//
// File data is never loaded whole: fs.File reads go straight to the device
// at the mapped offset. Metadata (inodes, directories, xattrs, chunk
// indexes) goes through a small block cache, since walking a tree reads the
// same few blocks many times.

// Image is an open EROFS image, plus its extra devices. It implements
// fs.FS, fs.ReadDirFS and fs.ReadLinkFS with Lstat semantics (symlinks are
// never followed). fs.FileInfo.Sys() of every entry returns *Inode.
// An Image is safe for concurrent use.
type Image struct {
	sb      Superblock
	blkBits uint
	blkSize int64

	dev0     io.ReaderAt
	dev0Size int64 // bytes, or -1 when the reader cannot tell
	devs     []imgDevice
	// flat: the image has extra devices but was opened without them, so
	// device i is read from the primary reader at devs[i-1].mapped blocks,
	// as the kernel does when it mounts a concatenated image.
	flat    bool
	devMask uint16 // the kernel's device_id_mask

	closers []io.Closer
	cache   metaCache

	prefixOnce sync.Once
	prefixes   []imgLongPrefix
	prefixErr  error
}

// imgDevice is one slot of the device table and the reader behind it.
type imgDevice struct {
	r      io.ReaderAt // nil in flat mode
	size   int64       // bytes, or -1
	tag    string
	blocks uint32
	mapped uint32 // mapped_blkaddr: where it starts in the flat address space
}

// Feature bits the reader understands; anything else incompatible is refused.
const (
	featureIncompatComprCfgs       = 0x00000002
	featureIncompatZtailpacking    = 0x00000010
	featureIncompatFragments       = 0x00000020
	featureIncompatXattrPrefixes   = 0x00000040
	featureIncompat48Bit           = 0x00000080
	featureIncompatMetabox         = 0x00000100
	readerFeatureIncompatKnown     = FeatureIncompatZeroPadding | featureIncompatComprCfgs | FeatureIncompatChunkedFile | FeatureIncompatDeviceTable | featureIncompatZtailpacking | featureIncompatFragments | featureIncompatXattrPrefixes
	readerMinBlkBits, readerMaxBlk = 9, 16
)

// Open opens the image at path; devices are the extra devices' files in
// device-table order (as `mount -o device=` would name them). With no
// devices, an image that has a device table is read in flat mode: extra
// device i is found in the image file itself at its mapped_blkaddr, as for
// the concatenation [fsmeta, layer1, ...] the kernel mounts as one disk.
func Open(path string, devices ...string) (*Image, error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	open := func(p string) (*os.File, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		return f, nil
	}
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	devs := make([]io.ReaderAt, 0, len(devices))
	for _, d := range devices {
		df, err := open(d)
		if err != nil {
			closeAll()
			return nil, err
		}
		devs = append(devs, df)
	}
	im, err := NewImage(f, devs...)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, f := range files {
		im.closers = append(im.closers, f)
	}
	return im, nil
}

// NewImage opens an image from readers (for tests and fuzzing). The
// readers' sizes, when they tell them (Size() or Stat()), bound every
// offset; otherwise reads past the end fail as corrupt.
func NewImage(r io.ReaderAt, devices ...io.ReaderAt) (*Image, error) {
	im := &Image{dev0: r, dev0Size: readerSize(r)}
	im.cache.init(r)
	if err := im.readSuperblock(); err != nil {
		return nil, err
	}
	if err := im.readDevices(devices); err != nil {
		return nil, err
	}
	root, err := im.inode(uint64(im.sb.RootNid))
	if err != nil {
		return nil, fmt.Errorf("erofs: root inode: %w", err)
	}
	if !root.isDir() {
		return nil, corruptf("root nid %d is not a directory (mode %#o)", im.sb.RootNid, root.Mode)
	}
	return im, nil
}

// Close releases the files Open opened. Images from NewImage own nothing.
func (im *Image) Close() error {
	var errs []error
	for _, c := range im.closers {
		errs = append(errs, c.Close())
	}
	im.closers = nil
	return errors.Join(errs...)
}

// Superblock returns the decoded superblock.
func (im *Image) Superblock() Superblock { return im.sb }

// BlockSize returns the image's block size in bytes.
func (im *Image) BlockSize() int64 { return im.blkSize }

// Devices returns the device table (empty for a single-device image).
func (im *Image) Devices() []DeviceSlot {
	out := make([]DeviceSlot, len(im.devs))
	for i, d := range im.devs {
		copy(out[i].Tag[:], d.tag)
		out[i].Blocks = d.blocks
		out[i].MappedBlkAddr = d.mapped
	}
	return out
}

// Flat reports whether extra devices are read from the primary image at
// their mapped_blkaddr (opened without device files).
func (im *Image) Flat() bool { return im.flat }

func (im *Image) readSuperblock() error {
	// The largest block we accept holds the superblock and its checksum range.
	head := make([]byte, SuperblockOffset+SuperblockSize)
	if err := readFull(im.dev0, head, 0); err != nil {
		return fmt.Errorf("erofs: superblock: %w", err)
	}
	sbBytes := head[SuperblockOffset:]
	if err := Unmarshal(sbBytes, &im.sb); err != nil {
		return err
	}
	sb := &im.sb
	if sb.Magic != Magic {
		return corruptf("bad superblock magic %#x (want %#x): not an EROFS image", sb.Magic, uint32(Magic))
	}
	if sb.BlkSzBits < readerMinBlkBits || sb.BlkSzBits > readerMaxBlk {
		return corruptf("superblock block size 2^%d outside 2^%d..2^%d", sb.BlkSzBits, readerMinBlkBits, readerMaxBlk)
	}
	im.blkBits = uint(sb.BlkSzBits)
	im.blkSize = 1 << im.blkBits
	if sb.DirBlkBits != 0 {
		return fmt.Errorf("erofs: unsupported: dirblkbits %d: %w", sb.DirBlkBits, errors.ErrUnsupported)
	}
	if unk := sb.FeatureIncompat &^ readerFeatureIncompatKnown; unk != 0 {
		return fmt.Errorf("erofs: unsupported incompatible features %#x: %w", unk, errors.ErrUnsupported)
	}
	if sb.FeatureCompat&FeatureCompatSbChksum != 0 {
		if err := im.verifySuperblockChecksum(); err != nil {
			return err
		}
	}
	if im.dev0Size >= 0 && uint64(sb.MetaBlkAddr)<<im.blkBits >= uint64(im.dev0Size) {
		return corruptf("meta_blkaddr %d beyond the image end (%d bytes)", sb.MetaBlkAddr, im.dev0Size)
	}
	return nil
}

// verifySuperblockChecksum checks the crc32c the kernel verifies: over the
// superblock's block from the superblock to the block end, the checksum
// field read as zero, seeded with ~0 and not inverted at the end.
func (im *Image) verifySuperblockChecksum() error {
	if im.blkSize <= SuperblockOffset {
		return fmt.Errorf("erofs: unsupported: superblock checksum with %d-byte blocks: %w", im.blkSize, errors.ErrUnsupported)
	}
	b := make([]byte, im.blkSize-SuperblockOffset)
	if err := readFull(im.dev0, b, SuperblockOffset); err != nil {
		return fmt.Errorf("erofs: superblock checksum range: %w", err)
	}
	want := binary.LittleEndian.Uint32(b[4:])
	clear(b[4:8])
	got := ^crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	if got != want {
		return corruptf("superblock checksum %#08x, computed %#08x", want, got)
	}
	return nil
}

func (im *Image) readDevices(devices []io.ReaderAt) error {
	sb := &im.sb
	n := 0
	if sb.FeatureIncompat&FeatureIncompatDeviceTable != 0 {
		n = int(sb.ExtraDevices)
	}
	if len(devices) > 0 && len(devices) != n {
		return fmt.Errorf("erofs: image has %d extra devices, %d given", n, len(devices))
	}
	if n == 0 {
		return nil
	}
	im.flat = len(devices) == 0
	// roundup_pow_of_two(n+1) - 1, as the kernel masks chunk device ids.
	m := uint32(1)
	for m < uint32(n)+1 {
		m <<= 1
	}
	im.devMask = uint16(m - 1)
	pos := int64(sb.DevtSlotOff) * DeviceSlotSize
	if pos < SuperblockOffset+SuperblockSize {
		return corruptf("device table at %d overlaps the superblock", pos)
	}
	raw := make([]byte, n*DeviceSlotSize)
	if err := im.cache.read(raw, pos); err != nil {
		return fmt.Errorf("erofs: device table (%d slots at %d): %w", n, pos, err)
	}
	im.devs = make([]imgDevice, n)
	for i := range im.devs {
		var ds DeviceSlot
		if err := Unmarshal(raw[i*DeviceSlotSize:], &ds); err != nil {
			return err
		}
		d := &im.devs[i]
		d.tag = cString(ds.Tag[:])
		d.blocks = ds.Blocks
		d.mapped = ds.MappedBlkAddr
		d.size = -1
		if !im.flat {
			d.r = devices[i]
			d.size = readerSize(devices[i])
		}
	}
	return nil
}

// readerSize returns the size of r when it can tell, else -1.
func readerSize(r io.ReaderAt) int64 {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size()
	case interface{ Stat() (os.FileInfo, error) }:
		if fi, err := v.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size()
		}
	}
	return -1
}

// readFull reads exactly len(p) bytes at off; running short is corruption
// (the image points past its end).
func readFull(r io.ReaderAt, p []byte, off int64) error {
	if off < 0 || off > maxOffset-int64(len(p)) {
		return corruptf("offset %d+%d out of range", off, len(p))
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return corruptf("%d bytes at offset %d: only %d before the end of the device", len(p), off, n)
	}
	return err
}

// maxOffset keeps offset arithmetic far from int64 overflow.
const maxOffset = 1 << 62

func corruptf(format string, args ...any) error {
	return fmt.Errorf("erofs: %s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// metaCache caches whole blocks of the primary device for metadata reads.
// A plain map with FIFO eviction: walks touch blocks in order, and the
// point is only to avoid one syscall per 32-byte inode.
type metaCache struct {
	mu     sync.Mutex
	r      io.ReaderAt
	blocks map[int64][]byte
	order  []int64
	next   int
}

const (
	metaCacheBlock = 4096
	metaCacheSlots = 256
)

func (c *metaCache) init(r io.ReaderAt) {
	c.r = r
	c.blocks = make(map[int64][]byte, metaCacheSlots)
}

// read fills p from the primary device at off through the cache.
func (c *metaCache) read(p []byte, off int64) error {
	if off < 0 || off > maxOffset-int64(len(p)) {
		return corruptf("metadata offset %d+%d out of range", off, len(p))
	}
	for len(p) > 0 {
		blk := off / metaCacheBlock
		b, err := c.block(blk)
		if err != nil {
			return err
		}
		in := int(off % metaCacheBlock)
		if in >= len(b) {
			return corruptf("%d bytes at offset %d: past the end of the device", len(p), off)
		}
		n := copy(p, b[in:])
		p = p[n:]
		off += int64(n)
	}
	return nil
}

func (c *metaCache) block(blk int64) ([]byte, error) {
	c.mu.Lock()
	b, ok := c.blocks[blk]
	c.mu.Unlock()
	if ok {
		return b, nil
	}
	buf := make([]byte, metaCacheBlock)
	n, err := c.r.ReadAt(buf, blk*metaCacheBlock)
	if n < len(buf) {
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if n == 0 {
			return nil, corruptf("block at offset %d past the end of the device", blk*metaCacheBlock)
		}
		buf = buf[:n] // the image's last, short block
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.order) < metaCacheSlots {
		c.order = append(c.order, blk)
	} else {
		delete(c.blocks, c.order[c.next])
		c.order[c.next] = blk
		c.next = (c.next + 1) % metaCacheSlots
	}
	c.blocks[blk] = buf
	return buf, nil
}
