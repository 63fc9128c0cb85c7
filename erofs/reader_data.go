package erofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// Data of regular files, symlinks and directories: where each byte lives
// (the kernel's erofs_map_blocks + erofs_map_dev) and reading it.

// Extent maps a byte range of a file's data to where it is stored.
type Extent struct {
	Logical uint64 // byte offset in the file
	Length  uint64 // bytes
	Device  uint16 // 0 = the image itself, i = extra device i (device table order, 1-based)
	// Physical is the byte offset on that device; for Inline, the byte
	// offset of the tail in the image (not block-aligned); meaningless for Hole.
	Physical uint64
	Hole     bool // reads as zeros
	Inline   bool // tail stored in the metadata area, not block-addressable
}

// errCompressed names a compressed inode the reader cannot decode.
func errCompressed(in *imgInode, name string) error {
	where := ""
	if name != "" {
		where = " at " + name
	}
	return fmt.Errorf("erofs: unsupported: compressed inode %d%s: %w", in.Nid, where, errors.ErrUnsupported)
}

// mapAt returns the mapping of the inode's data from byte off (< in.Size)
// to the end of the extent holding it.
func (im *Image) mapAt(in *imgInode, off uint64) (Extent, error) {
	if off >= in.Size {
		return Extent{}, fmt.Errorf("erofs: offset %d past size %d of nid %d", off, in.Size, in.Nid)
	}
	bs := uint64(im.blkSize)
	var e Extent
	switch in.Layout {
	case LayoutFlatPlain, LayoutFlatInline:
		nblocks := (in.Size + bs - 1) >> im.blkBits
		lastblk := nblocks
		if in.Layout == LayoutFlatInline {
			lastblk--
		}
		split := lastblk << im.blkBits
		switch {
		case in.Layout == LayoutFlatPlain && in.rawU == NullAddr:
			e = Extent{Logical: 0, Length: in.Size, Hole: true}
		case off < split:
			phys := uint64(in.rawU) << im.blkBits
			if phys+split > maxOffset {
				return Extent{}, corruptf("nid %d: data at block %d of %d blocks out of range", in.Nid, in.rawU, lastblk)
			}
			e = Extent{Logical: 0, Length: min(split, in.Size), Physical: phys}
		default:
			pa := uint64(in.tailStart())
			n := in.Size - split
			if pa%bs+n > bs {
				return Extent{}, corruptf("nid %d: inline tail of %d bytes at %d crosses a block boundary", in.Nid, n, pa)
			}
			e = Extent{Logical: split, Length: n, Physical: pa, Inline: true}
		}
	case LayoutChunkBased:
		unit := int64(BlockMapEntrySize)
		if in.chunkFmt&ChunkFormatIndexes != 0 {
			unit = ChunkIndexSize
		}
		bits := im.blkBits + uint(in.chunkFmt&chunkFormatBlkbitsMask)
		nr := off >> bits
		base := (in.tailStart() + unit - 1) / unit * unit
		if nr > uint64(maxOffset-base)/uint64(unit) {
			return Extent{}, corruptf("nid %d: chunk %d out of range", in.Nid, nr)
		}
		pos := base + int64(nr)*unit
		var b [ChunkIndexSize]byte
		if err := im.cache.read(b[:unit], pos); err != nil {
			return Extent{}, fmt.Errorf("nid %d chunk %d index: %w", in.Nid, nr, err)
		}
		e.Logical = nr << bits
		e.Length = min(uint64(1)<<bits, in.Size-e.Logical)
		var blk uint32
		if unit == ChunkIndexSize {
			var ci ChunkIndex
			ci.decode(b[:])
			blk = ci.BlkAddr
			e.Device = ci.DeviceID & im.devMask
		} else {
			blk = binary.LittleEndian.Uint32(b[:])
		}
		if blk == NullAddr {
			e.Hole, e.Device = true, 0
		} else {
			e.Physical = uint64(blk) << im.blkBits
		}
	default:
		return Extent{}, errCompressed(in, "")
	}
	// Start the extent at off, so callers always progress from where they
	// are, also after unifyDevice0 cut an extent at a device window.
	if d := off - e.Logical; d > 0 {
		e.Logical, e.Length = off, e.Length-d
		if !e.Hole {
			e.Physical += d
		}
	}
	if !e.Hole && !e.Inline && e.Device == 0 {
		im.unifyDevice0(&e)
	}
	return e, nil
}

// unifyDevice0 moves a primary-device extent that falls in an extra
// device's mapped_blkaddr window to that device, as erofs_map_dev does: a
// writer may address every device through the flat (unified) space.
func (im *Image) unifyDevice0(e *Extent) {
	bs := uint64(im.blkSize)
	for i, d := range im.devs {
		if d.mapped == 0 {
			continue
		}
		start := uint64(d.mapped) * bs
		end := start + uint64(d.blocks)*bs
		switch {
		case e.Physical >= start && e.Physical < end:
			e.Length = min(e.Length, end-e.Physical)
			e.Device = uint16(i + 1)
			e.Physical -= start
			return
		case e.Physical < start && e.Physical+e.Length > start:
			e.Length = start - e.Physical // the rest maps on the next call
		}
	}
}

// devRead reads p at off on device dev (0 = primary). Metadata reads of
// the primary device go through the block cache.
func (im *Image) devRead(dev uint16, off uint64, p []byte, cached bool) error {
	if off > maxOffset {
		return corruptf("device %d offset %d out of range", dev, off)
	}
	if dev != 0 {
		if int(dev) > len(im.devs) {
			return corruptf("device id %d, but the image has %d extra devices", dev, len(im.devs))
		}
		d := &im.devs[dev-1]
		if !im.flat {
			return readFull(d.r, p, int64(off))
		}
		if d.mapped == 0 {
			return fmt.Errorf("erofs: extra device %d (%q) has no mapped_blkaddr, so it cannot be read from the primary image: pass its file as a device", dev, d.tag)
		}
		off += uint64(d.mapped) << im.blkBits
		if off > maxOffset {
			return corruptf("device %d offset %d out of range", dev, off)
		}
	}
	if cached {
		return im.cache.read(p, int64(off))
	}
	return readFull(im.dev0, p, int64(off))
}

// readData fills p with the inode's data at off; it fails if p runs past
// the data's end. name is for errors.
func (im *Image) readData(in *imgInode, name string, p []byte, off int64) error {
	n, err := im.readDataAt(in, p, off, in.isDir())
	if err == nil && n < len(p) {
		err = corruptf("%s: %d bytes at %d past the data end (%d bytes)", name, len(p), off, in.Size)
	}
	return err
}

// readDataAt is io.ReaderAt over the inode's data; cached routes primary
// device reads through the metadata cache (directories).
func (im *Image) readDataAt(in *imgInode, p []byte, off int64, cached bool) (int, error) {
	if off < 0 {
		return 0, fs.ErrInvalid
	}
	if in.compressed() {
		return 0, errCompressed(in, "")
	}
	done := 0
	for done < len(p) {
		pos := uint64(off) + uint64(done)
		if pos >= in.Size {
			return done, io.EOF
		}
		e, err := im.mapAt(in, pos)
		if err != nil {
			return done, err
		}
		if e.Length == 0 || pos < e.Logical || pos >= e.Logical+e.Length {
			return done, corruptf("nid %d: bad mapping of offset %d", in.Nid, pos)
		}
		within := pos - e.Logical
		n := int(min(uint64(len(p)-done), e.Length-within))
		chunk := p[done : done+n]
		switch {
		case e.Hole:
			clear(chunk)
		case e.Inline:
			err = im.cache.read(chunk, int64(e.Physical+within))
		default:
			err = im.devRead(e.Device, e.Physical+within, chunk, cached)
		}
		if err != nil {
			return done, fmt.Errorf("nid %d data at %d: %w", in.Nid, pos, err)
		}
		done += n
	}
	return done, nil
}

// Extents returns where the data of a regular file, symlink or directory
// is stored, in file order, adjacent pieces of one mapping merged. A
// primary-device address inside an extra device's mapped_blkaddr window is
// reported on that device. Compressed inodes fail with errors.ErrUnsupported.
func (im *Image) Extents(ino *Inode) ([]Extent, error) {
	in, err := im.inode(ino.Nid)
	if err != nil {
		return nil, err
	}
	if !in.hasData() {
		return nil, nil
	}
	if in.compressed() {
		return nil, errCompressed(in, "")
	}
	var out []Extent
	for pos := uint64(0); pos < in.Size; {
		e, err := im.mapAt(in, pos)
		if err != nil {
			return nil, err
		}
		if e.Length == 0 || e.Logical != pos {
			return nil, corruptf("nid %d: bad mapping of offset %d", in.Nid, pos)
		}
		if n := len(out); n > 0 && mergeable(&out[n-1], &e) {
			out[n-1].Length += e.Length
		} else {
			out = append(out, e)
		}
		pos += e.Length
	}
	return out, nil
}

func mergeable(a, b *Extent) bool {
	if a.Logical+a.Length != b.Logical || a.Inline || b.Inline || a.Hole != b.Hole {
		return false
	}
	return a.Hole || (a.Device == b.Device && a.Physical+a.Length == b.Physical)
}

// imgFile is an open non-directory: data is read on demand, never whole.
type imgFile struct {
	im   *Image
	in   *imgInode
	info *imgInfo
	path string
	off  int64
}

var (
	_ io.ReaderAt = (*imgFile)(nil)
	_ io.Seeker   = (*imgFile)(nil)
)

func (f *imgFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *imgFile) Close() error               { return nil }

// Read implements io.Reader.
func (f *imgFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// ReadAt implements io.ReaderAt.
func (f *imgFile) ReadAt(p []byte, off int64) (int, error) {
	if !f.in.hasData() {
		return 0, io.EOF
	}
	n, err := f.im.readDataAt(f.in, p, off, false)
	if err != nil && err != io.EOF {
		err = &fs.PathError{Op: "read", Path: f.path, Err: err}
	}
	return n, err
}

// Seek implements io.Seeker.
func (f *imgFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += int64(f.in.Size)
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.path, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.path, Err: fs.ErrInvalid}
	}
	f.off = offset
	return offset, nil
}
