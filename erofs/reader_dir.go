package erofs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"strings"
)

// Directories: blocks of erofs_dirent records followed by their names,
// names sorted across the whole directory (so lookups binary-search the
// blocks by their first name, then the block), "." and ".." included.

// imgDirent is one decoded directory entry.
type imgDirent struct {
	name  string
	nid   uint64
	ftype uint8
}

// dirView is one directory block as read, decoded on demand: lookups
// binary-search it without decoding (or allocating) every name.
type dirView struct {
	b     []byte
	count int
	nid   uint64 // the directory, for errors
	blk   uint64
}

// dirBlockView reads block blk of directory in into buf and checks its header.
func (im *Image) dirBlockView(in *imgInode, blk uint64, buf []byte) (dirView, error) {
	off := blk << im.blkBits
	size := min(uint64(im.blkSize), in.Size-off)
	b := buf[:size]
	if err := im.readData(in, "directory", b, int64(off)); err != nil {
		return dirView{}, err
	}
	if size < DirentSize {
		return dirView{}, corruptf("directory nid %d block %d: %d bytes, too short for a dirent", in.Nid, blk, size)
	}
	first := int(binary.LittleEndian.Uint16(b[8:]))
	if first < DirentSize || first >= len(b) || first%DirentSize != 0 {
		return dirView{}, corruptf("directory nid %d block %d: first name offset %d", in.Nid, blk, first)
	}
	return dirView{b: b, count: first / DirentSize, nid: in.Nid, blk: blk}, nil
}

// name returns the name of dirent i, checked.
func (v dirView) name(i int) ([]byte, error) {
	start := int(binary.LittleEndian.Uint16(v.b[i*DirentSize+8:]))
	end := len(v.b)
	if i+1 < v.count {
		end = int(binary.LittleEndian.Uint16(v.b[(i+1)*DirentSize+8:]))
	}
	if start < v.count*DirentSize || start >= end || end > len(v.b) {
		return nil, corruptf("directory nid %d block %d: dirent %d name at [%d,%d) of %d", v.nid, v.blk, i, start, end, len(v.b))
	}
	name := v.b[start:end]
	if i+1 == v.count {
		// The last name runs to the block's end or its first NUL.
		if z := bytes.IndexByte(name, 0); z >= 0 {
			name = name[:z]
		}
	}
	if len(name) == 0 || len(name) > NameLen {
		return nil, corruptf("directory nid %d block %d: dirent %d name of %d bytes", v.nid, v.blk, i, len(name))
	}
	return name, nil
}

// dirent decodes entry i.
func (v dirView) dirent(i int) (imgDirent, error) {
	name, err := v.name(i)
	if err != nil {
		return imgDirent{}, err
	}
	d := v.b[i*DirentSize:]
	ft := d[10]
	if ft > FTSymlink {
		return imgDirent{}, corruptf("directory nid %d block %d: %q has file type %d", v.nid, v.blk, name, ft)
	}
	return imgDirent{name: string(name), nid: binary.LittleEndian.Uint64(d), ftype: ft}, nil
}

// dirBlock decodes block blk of directory in.
func (im *Image) dirBlock(in *imgInode, blk uint64, buf []byte) ([]imgDirent, error) {
	v, err := im.dirBlockView(in, blk, buf)
	if err != nil {
		return nil, err
	}
	out := make([]imgDirent, v.count)
	for i := range out {
		if out[i], err = v.dirent(i); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (im *Image) dirBlocks(in *imgInode) uint64 {
	return (in.Size + uint64(im.blkSize) - 1) >> im.blkBits
}

// readDirAll returns the entries of a directory but "." and "..", sorted;
// an image whose names are out of order or repeated is corrupt (lookups
// would miss entries).
func (im *Image) readDirAll(in *imgInode, name string) ([]imgDirent, error) {
	if in.compressed() {
		return nil, errCompressed(in, name)
	}
	buf := make([]byte, im.blkSize)
	var out []imgDirent
	prev := ""
	n := im.dirBlocks(in)
	for blk := range n {
		ents, err := im.dirBlock(in, blk, buf)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if prev != "" && e.name <= prev {
				return nil, corruptf("directory nid %d: %q after %q: names out of order or repeated", in.Nid, e.name, prev)
			}
			prev = e.name
			if e.name == "." || e.name == ".." {
				continue
			}
			if strings.IndexByte(e.name, '/') >= 0 {
				return nil, corruptf("directory nid %d: name %q contains '/'", in.Nid, e.name)
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// lookup finds name in directory in by binary search over its blocks
// (by their first names), then within the block, as the kernel does.
func (im *Image) lookup(in *imgInode, name string) (imgDirent, bool, error) {
	if in.compressed() {
		return imgDirent{}, false, errCompressed(in, "")
	}
	want := []byte(name)
	buf := make([]byte, im.blkSize)
	lo, hi := uint64(0), im.dirBlocks(in)
	for lo < hi {
		mid := lo + (hi-lo)/2
		v, err := im.dirBlockView(in, mid, buf)
		if err != nil {
			return imgDirent{}, false, err
		}
		first, err := v.name(0)
		if err != nil {
			return imgDirent{}, false, err
		}
		if bytes.Compare(want, first) < 0 {
			hi = mid
			continue
		}
		// Binary search in the block for the last name <= want.
		l, h := 0, v.count
		for l < h {
			m := l + (h-l)/2
			n, err := v.name(m)
			if err != nil {
				return imgDirent{}, false, err
			}
			switch c := bytes.Compare(n, want); {
			case c == 0:
				e, err := v.dirent(m)
				return e, err == nil, err
			case c < 0:
				l = m + 1
			default:
				h = m
			}
		}
		if l < v.count {
			return imgDirent{}, false, nil // between two names of this block
		}
		lo = mid + 1
	}
	return imgDirent{}, false, nil
}

// ftypeMode maps a dirent file type to the fs.FileMode type bits.
func ftypeMode(ft uint8) fs.FileMode {
	switch ft {
	case FTDir:
		return fs.ModeDir
	case FTSymlink:
		return fs.ModeSymlink
	case FTChrdev:
		return fs.ModeDevice | fs.ModeCharDevice
	case FTBlkdev:
		return fs.ModeDevice
	case FTFifo:
		return fs.ModeNamedPipe
	case FTSock:
		return fs.ModeSocket
	case FTRegFile:
		return 0
	}
	return fs.ModeIrregular
}

// childInode loads the inode a dirent names and checks the two agree on
// the file type (mkfs and our writer always store the inode's type).
func (im *Image) childInode(e imgDirent) (*imgInode, error) {
	in, err := im.inode(e.nid)
	if err != nil {
		return nil, err
	}
	if e.ftype != FTUnknown && fileType(in.Mode) != e.ftype {
		return nil, corruptf("%q: dirent file type %d, but nid %d has mode %#o", e.name, e.ftype, e.nid, in.Mode)
	}
	return in, nil
}

// imgDirEntry is the fs.DirEntry of an entry; Info loads the inode.
type imgDirEntry struct {
	im *Image
	e  imgDirent
}

func (d *imgDirEntry) Name() string      { return d.e.name }
func (d *imgDirEntry) IsDir() bool       { return d.e.ftype == FTDir }
func (d *imgDirEntry) Type() fs.FileMode { return ftypeMode(d.e.ftype) }
func (d *imgDirEntry) String() string    { return fs.FormatDirEntry(d) }

// Nid returns the entry's inode number without reading the inode.
func (d *imgDirEntry) Nid() uint64 { return d.e.nid }

func (d *imgDirEntry) Info() (fs.FileInfo, error) {
	in, err := d.im.childInode(d.e)
	if err != nil {
		return nil, err
	}
	full, err := d.im.fullInode(in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.e.name, err)
	}
	return &imgInfo{name: d.e.name, ino: full}, nil
}

func (im *Image) dirEntries(ents []imgDirent) []fs.DirEntry {
	out := make([]fs.DirEntry, len(ents))
	for i := range ents {
		out[i] = &imgDirEntry{im: im, e: ents[i]}
	}
	return out
}
