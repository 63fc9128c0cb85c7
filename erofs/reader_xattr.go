package erofs

import (
	"encoding/binary"
	"fmt"
)

// Extended attributes: an inode's inline area (erofs_xattr_ibody_header,
// then shared xattr ids, then entries) and the shared entries it names in
// the xattr area at xattr_blkaddr. Names are stored without their prefix:
// a name index selects a well-known prefix, or (bit 0x80) an entry of the
// long-prefix table.

// xattrLongPrefixFlag marks a name index that refers to the long-prefix table.
const xattrLongPrefixFlag = 0x80

// imgLongPrefix is one entry of the long xattr name prefix table.
type imgLongPrefix struct {
	base  uint8
	infix string
}

// xattrs returns all xattrs of an inode: inline ones, then shared ones, the
// order the kernel lists them in.
func (im *Image) xattrs(in *imgInode) ([]Xattr, error) {
	if in.xcount == 0 {
		return nil, nil
	}
	area := make([]byte, in.xsize)
	if err := im.cache.read(area, in.iloc+in.isize); err != nil {
		return nil, fmt.Errorf("xattrs of nid %d: %w", in.Nid, err)
	}
	shared := int(area[4]) // h_shared_count
	pos := XattrIbodyHeaderSize + 4*shared
	if pos > len(area) {
		return nil, corruptf("nid %d: %d shared xattr ids do not fit in %d bytes of xattrs", in.Nid, shared, len(area))
	}
	var out []Xattr
	for pos < len(area) {
		x, n, err := im.parseXattr(area[pos:])
		if err != nil {
			return nil, fmt.Errorf("nid %d inline xattr at +%d: %w", in.Nid, pos, err)
		}
		out = append(out, x)
		pos += n
	}
	base := int64(im.sb.XattrBlkAddr) << im.blkBits
	for i := range shared {
		id := binary.LittleEndian.Uint32(area[XattrIbodyHeaderSize+4*i:])
		x, err := im.sharedXattr(base + int64(id)*4)
		if err != nil {
			return nil, fmt.Errorf("nid %d shared xattr id %d: %w", in.Nid, id, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// sharedXattr reads one entry of the shared xattr area.
func (im *Image) sharedXattr(off int64) (Xattr, error) {
	var hdr [XattrEntrySize]byte
	if err := im.cache.read(hdr[:], off); err != nil {
		return Xattr{}, err
	}
	var e XattrEntry
	if err := Unmarshal(hdr[:], &e); err != nil {
		return Xattr{}, err
	}
	b := make([]byte, XattrEntrySize+int(e.NameLen)+int(e.ValueSize))
	if err := im.cache.read(b, off); err != nil {
		return Xattr{}, err
	}
	x, _, err := im.parseXattr(b)
	return x, err
}

// parseXattr decodes the entry at the start of b and returns it and its
// size including padding to 4 bytes.
func (im *Image) parseXattr(b []byte) (Xattr, int, error) {
	if len(b) < XattrEntrySize {
		return Xattr{}, 0, corruptf("truncated xattr entry (%d bytes)", len(b))
	}
	var e XattrEntry
	if err := Unmarshal(b, &e); err != nil {
		return Xattr{}, 0, err
	}
	end := XattrEntrySize + int(e.NameLen) + int(e.ValueSize)
	if end > len(b) {
		return Xattr{}, 0, corruptf("xattr entry of %d bytes overruns its area (%d bytes)", end, len(b))
	}
	size := (end + 3) &^ 3
	if size > len(b) {
		size = len(b) // the last shared entry need not be padded on disk
	}
	name := b[XattrEntrySize : XattrEntrySize+int(e.NameLen)]
	prefix, err := im.xattrNamePrefix(e.NameIndex)
	if err != nil {
		return Xattr{}, 0, err
	}
	full := prefix + string(name)
	if full == "" {
		return Xattr{}, 0, corruptf("empty xattr name")
	}
	value := make([]byte, e.ValueSize)
	copy(value, b[XattrEntrySize+int(e.NameLen):end])
	return Xattr{Name: full, Value: value}, size, nil
}

func (im *Image) xattrNamePrefix(index uint8) (string, error) {
	if index&xattrLongPrefixFlag == 0 {
		p, ok := xattrPrefix(index)
		if !ok {
			return "", corruptf("unknown xattr name index %d", index)
		}
		return p, nil
	}
	prefixes, err := im.longPrefixes()
	if err != nil {
		return "", err
	}
	i := int(index &^ xattrLongPrefixFlag)
	if i >= len(prefixes) {
		return "", corruptf("xattr long prefix %d of %d", i, len(prefixes))
	}
	p, ok := xattrPrefix(prefixes[i].base)
	if !ok {
		return "", corruptf("xattr long prefix %d has unknown base index %d", i, prefixes[i].base)
	}
	return p + prefixes[i].infix, nil
}

// longPrefixes loads the long xattr name prefix table once: xattr_prefix_count
// records at xattr_prefix_start*4, each a le16 length then base index and
// infix, padded to 4 bytes; in the packed inode's data when the image has
// one (fragments), else in the primary device.
func (im *Image) longPrefixes() ([]imgLongPrefix, error) {
	im.prefixOnce.Do(func() {
		sb := &im.sb
		if sb.FeatureIncompat&featureIncompatXattrPrefixes == 0 || sb.XattrPrefixCount == 0 {
			return
		}
		read := func(p []byte, off int64) error { return im.cache.read(p, off) }
		if sb.FeatureIncompat&featureIncompatFragments != 0 && sb.PackedNid != 0 {
			packed, err := im.inode(sb.PackedNid)
			if err != nil {
				im.prefixErr = fmt.Errorf("packed inode: %w", err)
				return
			}
			read = func(p []byte, off int64) error { return im.readData(packed, "packed inode", p, off) }
		}
		pos := int64(sb.XattrPrefixStart) * 4
		for i := range int(sb.XattrPrefixCount) {
			var l [2]byte
			if err := read(l[:], pos); err != nil {
				im.prefixErr = fmt.Errorf("xattr long prefix %d: %w", i, err)
				return
			}
			n := int(binary.LittleEndian.Uint16(l[:]))
			if n < 1 {
				im.prefixErr = corruptf("xattr long prefix %d is empty", i)
				return
			}
			rec := make([]byte, n)
			if err := read(rec, pos+2); err != nil {
				im.prefixErr = fmt.Errorf("xattr long prefix %d: %w", i, err)
				return
			}
			im.prefixes = append(im.prefixes, imgLongPrefix{base: rec[0], infix: string(rec[1:])})
			pos += int64(2+n+3) &^ 3
		}
	})
	return im.prefixes, im.prefixErr
}
