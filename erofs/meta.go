package erofs

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// The metadata serializer: WriteImage lays a Tree out as the metadata area
// of an image and writes it, then the superblock.
//
// Layout of what it writes, from opts.MetaBlkAddr on:
//
//	[device table, if it does not fit in block 0 after the superblock]
//	metadata area (meta_blkaddr): every inode record, root first (nid 0),
//	    then breadth-first with each directory's children sorted by name;
//	    a record holding inline data never crosses a block boundary
//	out-of-line blocks: directory blocks and DataBytes blocks that are not
//	    inline, in the same order as their inodes
//
// Using it (the tar converter and the fsmeta builder both do):
//
//	t := NewTree()                              // root: dir 0755 root:root
//	f := &Node{Mode: syscall.S_IFREG | 0o644, Mtime: ..., Data: Data{
//		Kind: DataChunks, Size: size, ChunkBits: BlockSizeBits,
//		Chunks: []ChunkIndex{{DeviceID: 1, BlkAddr: 42}, {BlkAddr: NullAddr}},
//	}}
//	t.Link(t.Root(), "file", f)                 // or DataBlocks / DataBytes
//	info, err := t.WriteImage(dst, ImageOptions{
//		MetaBlkAddr: 1,                         // first block not yet used
//		Devices:     []DeviceSlot{{Blocks: layerBlocks}},
//		MapDevices:  true,                      // fill mapped_blkaddr
//	})
//	dst.Truncate(int64(info.Blocks) * BlockSize)
//
// Lookup/Link/Unlink edit the tree by (directory, name) in O(1); replacing
// an opaque directory by a fresh Node drops everything below it. nlink,
// nids, compact-vs-extended inodes, inline-vs-block placement, the build
// time (the most common mtime) and the feature bits are all decided here.
//
// Whatever the caller wrote before opts.MetaBlkAddr (file data streamed to
// its final blocks, DataBlocks nodes pointing at it) is left alone: that is
// what lets the tar converter touch each byte of file data once.

// ImageOptions tunes WriteImage.
type ImageOptions struct {
	// MetaBlkAddr is the first block WriteImage may use; blocks before it
	// belong to the caller (block 0 holds the superblock; 0 means 1).
	MetaBlkAddr uint32
	// Devices is the device table (extra devices, in order: a ChunkIndex
	// DeviceID i refers to Devices[i-1]). Tag and Blocks are the caller's.
	Devices []DeviceSlot
	// MapDevices fills each device's MappedBlkAddr so that the image
	// followed by all devices, concatenated, is one flat disk.
	MapDevices bool
	// MaxBlocks, when > 0, fails WriteImage if the image would be larger.
	MaxBlocks uint64
	// DevTableBlkAddr, when > 0, is where a device table too big for
	// block 0 goes: blocks the caller reserved below MetaBlkAddr. With 0
	// the table takes the first blocks from MetaBlkAddr on, which is only
	// reachable if that is below 8 MiB (devt_slotoff is 16 bits counting
	// 128-byte slots): a caller that writes much before MetaBlkAddr
	// reserves the table's blocks first.
	DevTableBlkAddr uint32
}

// devTableBlocks is how many blocks a device table of n slots needs when it
// does not fit in block 0 after the superblock, or 0 when it does.
func devTableBlocks(n int) uint64 {
	if n == 0 || SuperblockOffset+SuperblockSize+uint64(n)*DeviceSlotSize <= BlockSize {
		return 0
	}
	return blocksFor(uint64(n) * DeviceSlotSize)
}

// ImageInfo describes an image WriteImage wrote.
type ImageInfo struct {
	// Blocks is the image size in blocks: the caller must make the file
	// exactly Blocks*BlockSize bytes (Truncate), since trailing blocks may
	// be holes WriteImage did not write.
	Blocks uint32
	// MetaBlkAddr is the first block of the metadata area.
	MetaBlkAddr uint32
	// Inodes is the number of inodes written.
	Inodes uint64
	// BuildTime and BuildTimeNsec are the superblock build time: the most
	// common mtime, so most inodes can be compact.
	BuildTime     int64
	BuildTimeNsec uint32
	// Devices is the device table as written (MappedBlkAddr filled when
	// MapDevices was set).
	Devices []DeviceSlot
}

// WriteImage serializes t into w: the metadata area and out-of-line
// directory blocks from opts.MetaBlkAddr on, then the device table and the
// superblock. It consumes t: a Tree is written once.
func (t *Tree) WriteImage(w io.WriterAt, opts ImageOptions) (*ImageInfo, error) {
	nodes, dirs, err := t.collect()
	if err != nil {
		return nil, err
	}
	bt := commonMtime(nodes)
	for _, n := range nodes {
		if n.Implicit {
			n.Mtime, n.MtimeNsec = bt.sec, bt.nsec
		}
	}
	heads := make([]uint32, len(nodes)) // record sizes, by nid order
	for i, n := range nodes {
		h, err := n.plan(bt, dirs[n])
		if err != nil {
			return nil, fmt.Errorf("erofs: %s: %w", describe(n), err)
		}
		heads[i] = uint32(h)
	}

	start := uint64(opts.MetaBlkAddr)
	if start == 0 {
		start = 1
	}
	devs := slices.Clone(opts.Devices)
	devtOff := uint64(SuperblockOffset + SuperblockSize)
	if nb := devTableBlocks(len(devs)); nb > 0 {
		if at := uint64(opts.DevTableBlkAddr); at > 0 {
			if at+nb > start {
				return nil, fmt.Errorf("erofs: device table at block %d (%d blocks) overlaps the metadata at block %d", at, nb, start)
			}
			devtOff = at * BlockSize
		} else {
			devtOff = start * BlockSize
			start += nb
		}
	}
	if devtOff/DeviceSlotSize > math.MaxUint16 {
		return nil, fmt.Errorf("erofs: device table at byte %d is beyond the reach of devt_slotoff", devtOff)
	}

	// Assign nids: records in order, padding to the next block whenever a
	// record that fits in one block would otherwise straddle two.
	var cur uint64
	for i, n := range nodes {
		head := uint64(heads[i])
		if head <= BlockSize && cur%BlockSize+head > BlockSize {
			cur = align64(cur, BlockSize)
		}
		if cur/SlotSize > math.MaxUint32 {
			return nil, fmt.Errorf("erofs: metadata area beyond %d inode slots", uint64(math.MaxUint32))
		}
		n.nid = uint32(cur / SlotSize)
		cur = align64(cur+head, SlotSize)
	}
	// fsck.erofs 1.5 reads an xattr ibody header after every inode, even
	// one without xattrs: keep that read inside the image when the last
	// record ends on a block boundary.
	metaBlocks := blocksFor(cur + XattrIbodyHeaderSize)
	if nodes[0].nid != 0 {
		return nil, fmt.Errorf("erofs: root nid %d, want 0", nodes[0].nid)
	}
	next := start + metaBlocks
	for _, n := range nodes {
		if nb := n.outOfLineBlocks(); nb > 0 {
			n.Data.BlkAddr = uint32(next)
			next += nb
		}
	}
	if next > math.MaxUint32 {
		return nil, fmt.Errorf("erofs: image of %d blocks exceeds 2^32 blocks", next)
	}
	if opts.MaxBlocks > 0 && next > opts.MaxBlocks {
		return nil, fmt.Errorf("erofs: image of %d bytes exceeds the limit of %d bytes: %w", next*BlockSize, opts.MaxBlocks*BlockSize, ErrTooLarge)
	}

	sw := newSeqWriter(w, int64(start)*BlockSize)
	for i, n := range nodes {
		sw.padTo(int64(start)*BlockSize + int64(n.nid)*SlotSize)
		sw.buf = n.appendInode(sw.buf, uint32(i+1))
		switch n.layout {
		case LayoutFlatInline:
			sw.buf = n.appendTail(sw.buf, dirs[n])
		case LayoutChunkBased:
			for (sw.off+int64(len(sw.buf)))%ChunkIndexSize != 0 {
				sw.buf = append(sw.buf, 0)
			}
			sw.buf = appendChunkIndexes(sw.buf, n.Data.Chunks)
		}
		if err := sw.maybeFlush(); err != nil {
			return nil, err
		}
	}
	for _, n := range nodes {
		if n.outOfLineBlocks() == 0 {
			continue
		}
		sw.padTo(int64(n.Data.BlkAddr) * BlockSize)
		if err := n.writeBlocks(sw, dirs[n]); err != nil {
			return nil, err
		}
	}
	sw.padTo(int64(next) * BlockSize)
	if err := sw.flush(); err != nil {
		return nil, err
	}

	if opts.MapDevices {
		mapped := next
		for i := range devs {
			if mapped > math.MaxUint32 {
				return nil, fmt.Errorf("erofs: device %d maps beyond 2^32 blocks", i+1)
			}
			devs[i].MappedBlkAddr = uint32(mapped)
			mapped += uint64(devs[i].Blocks)
		}
	}
	sb := Superblock{
		Magic:         Magic,
		BlkSzBits:     BlockSizeBits,
		RootNid:       uint16(nodes[0].nid),
		Inos:          uint64(len(nodes)),
		BuildTime:     uint64(bt.sec),
		BuildTimeNsec: bt.nsec,
		Blocks:        uint32(next),
		MetaBlkAddr:   uint32(start),
	}
	for _, n := range nodes {
		if n.layout == LayoutChunkBased {
			sb.FeatureIncompat |= FeatureIncompatChunkedFile
			break
		}
	}
	if len(devs) > 0 {
		sb.FeatureIncompat |= FeatureIncompatDeviceTable
		sb.ExtraDevices = uint16(len(devs))
		sb.DevtSlotOff = uint16(devtOff / DeviceSlotSize)
		var table []byte
		for i := range devs {
			table = append(table, devs[i].Marshal()...)
		}
		if _, err := w.WriteAt(table, int64(devtOff)); err != nil {
			return nil, fmt.Errorf("erofs: write device table: %w", err)
		}
	}
	if _, err := w.WriteAt(sb.Marshal(), SuperblockOffset); err != nil {
		return nil, fmt.Errorf("erofs: write superblock: %w", err)
	}
	return &ImageInfo{
		Blocks: uint32(next), MetaBlkAddr: uint32(start), Inodes: uint64(len(nodes)),
		BuildTime: bt.sec, BuildTimeNsec: bt.nsec, Devices: devs,
	}, nil
}

// ErrTooLarge is wrapped by errors about an image exceeding a size limit.
var ErrTooLarge = fmt.Errorf("image too large")

// collect groups the entries by parent and returns the reachable inodes in
// nid order, breadth-first from the root, and each directory's entries
// sorted bytewise including "." and "..". The order depends on names only,
// never on map iteration, so the same input always gives the same image,
// and the inodes of one directory sit next to each other. It also counts
// nlink. The lists live in a map for the write only: a Node carries no
// per-directory field, which keeps every Node in the 128-byte size class.
func (t *Tree) collect() ([]*Node, map[*Node][]dirEntry, error) {
	// Count first so each directory's list is allocated once, exactly.
	counts := make(map[*Node]int)
	for k := range t.entries {
		counts[k.parent]++
	}
	dirs := make(map[*Node][]dirEntry, len(counts))
	for k, n := range t.entries {
		l, ok := dirs[k.parent]
		if !ok {
			l = make([]dirEntry, 0, counts[k.parent]+2)
		}
		dirs[k.parent] = append(l, dirEntry{k.name, n})
	}
	t.entries, counts = nil, nil // no longer needed: let them go before the big allocations
	parent := map[*Node]*Node{t.root: t.root}
	nodes := []*Node{t.root}
	t.root.placed = true
	for i := 0; i < len(nodes); i++ {
		d := nodes[i]
		if !d.IsDir() {
			continue
		}
		children := append(dirs[d], dirEntry{".", d}, dirEntry{"..", parent[d]})
		slices.SortFunc(children, func(a, b dirEntry) int { return strings.Compare(a.name, b.name) })
		dirs[d] = children
		d.nlink = 2
		for _, c := range children {
			if c.name == "." || c.name == ".." {
				continue
			}
			if c.node.IsDir() {
				if c.node.placed {
					return nil, nil, fmt.Errorf("erofs: directory %q linked twice", c.name)
				}
				parent[c.node] = d
				d.nlink++
			} else {
				c.node.nlink++
			}
			if !c.node.placed {
				c.node.placed = true
				nodes = append(nodes, c.node)
			}
		}
	}
	return nodes, dirs, nil
}

// commonMtime returns the most common mtime of the explicit inodes (the
// earliest on a tie; zero if there are none).
func commonMtime(nodes []*Node) buildStamp {
	counts := make(map[buildStamp]int)
	var best buildStamp
	bestN := 0
	for _, n := range nodes {
		if n.Implicit {
			continue
		}
		s := buildStamp{n.Mtime, n.MtimeNsec}
		counts[s]++
		c := counts[s]
		if c > bestN || c == bestN && (s.sec < best.sec || s.sec == best.sec && s.nsec < best.nsec) {
			best, bestN = s, c
		}
	}
	return best
}

// appendTail appends the inline tail of a FLAT_INLINE node.
func (n *Node) appendTail(b []byte, children []dirEntry) []byte {
	full := int(n.Data.Size / BlockSize)
	if !n.IsDir() {
		return append(b, n.Data.Bytes[full*BlockSize:]...)
	}
	blk := 0
	dirBlocks(children, func(s, e int) {
		if blk == full {
			b = appendDirBlock(b, children[s:e])
		}
		blk++
	})
	return b
}

// writeBlocks writes n's out-of-line blocks (all but an inline tail).
func (n *Node) writeBlocks(sw *seqWriter, children []dirEntry) error {
	nb := int(n.outOfLineBlocks())
	if !n.IsDir() {
		end := min(nb*BlockSize, len(n.Data.Bytes))
		sw.buf = append(sw.buf, n.Data.Bytes[:end]...)
		return sw.maybeFlush()
	}
	blk := 0
	var err error
	dirBlocks(children, func(s, e int) {
		if blk < nb && err == nil {
			base := sw.off + int64(len(sw.buf))
			sw.buf = appendDirBlock(sw.buf, children[s:e])
			sw.padTo(base + BlockSize)
			err = sw.maybeFlush()
		}
		blk++
	})
	return err
}

// describe names a node in errors, as well as a node without a path can be.
func describe(n *Node) string {
	return fmt.Sprintf("inode mode %#o uid %d gid %d", n.Mode, n.UID, n.GID)
}

func align64(n, a uint64) uint64 { return (n + a - 1) / a * a }

// seqWriter writes a mostly sequential byte stream through a buffer, so the
// metadata of 100k inodes costs a few big writes rather than 100k small ones.
type seqWriter struct {
	w   io.WriterAt
	off int64 // image offset of buf[0]
	buf []byte
	err error // first write error, sticky
}

const seqWriterSize = 1 << 20

func newSeqWriter(w io.WriterAt, off int64) *seqWriter {
	return &seqWriter{w: w, off: off, buf: make([]byte, 0, 64<<10)} // grows to seqWriterSize
}

// padTo appends zeros up to image offset off.
func (s *seqWriter) padTo(off int64) {
	for cur := s.off + int64(len(s.buf)); cur < off; {
		n := min(off-cur, int64(BlockSize))
		s.buf = append(s.buf, zeroBlock[:n]...)
		cur += n
		if len(s.buf) >= seqWriterSize {
			// Long runs of padding are rare (block alignment); flush
			// errors surface at the next maybeFlush.
			s.flushErr(s.flush())
		}
	}
}

func (s *seqWriter) flushErr(err error) {
	if err != nil && s.err == nil {
		s.err = err
	}
}

func (s *seqWriter) maybeFlush() error {
	if s.err != nil {
		return s.err
	}
	if len(s.buf) < seqWriterSize {
		return nil
	}
	return s.flush()
}

func (s *seqWriter) flush() error {
	if s.err != nil {
		return s.err
	}
	if len(s.buf) > 0 {
		if _, err := s.w.WriteAt(s.buf, s.off); err != nil {
			s.err = fmt.Errorf("erofs: write metadata at %d: %w", s.off, err)
			return s.err
		}
	}
	s.off += int64(len(s.buf))
	s.buf = s.buf[:0]
	return nil
}

var zeroBlock [BlockSize]byte
