package erofs

import (
	"fmt"
	"syscall"
)

// Tree is an in-memory inode tree that WriteImage serializes into the
// metadata area of an image. The tar and directory converters build one
// while streaming file data, and the fsmeta builder builds one from merged
// layers; both then hand it to the same serializer.
//
// Entries are indexed in one hash map keyed by (parent, name), so adding or
// finding a name costs the same in a directory of 100k entries as in one of
// two. Directories are sorted once, when the image is written. A Node linked
// under several names is a hardlink group; nlink is counted at write time
// from the names reachable from the root, so replacing or unlinking a name
// never needs bookkeeping.
type Tree struct {
	root    *Node
	entries map[entryKey]*Node
}

type entryKey struct {
	parent *Node
	name   string
}

// Node is one inode. Fill the exported fields, then Link it into a Tree.
type Node struct {
	// Mode is st_mode: S_IFMT type bits and permission bits including
	// setuid, setgid and sticky.
	Mode uint32
	// UID and GID are the numeric owner.
	UID, GID uint32
	// Rdev is the device number of a char or block device, encoded like
	// Linux new_encode_dev (see Mkdev).
	Rdev uint32
	// MtimeNsec and Mtime are the modification time.
	MtimeNsec uint32
	nid       uint32 // filled by WriteImage (< 2^32: metadata area < 128 GiB); packs here
	Mtime     int64
	// Xattrs are the extended attributes, full names. WriteImage validates
	// them and stores them inline in the inode, sorted by name.
	Xattrs []Xattr
	// Data says where a regular file's or symlink's contents live.
	// Directories get theirs from the tree; leave it zero for them and for
	// devices, fifos and sockets.
	Data Data

	// Filled by WriteImage. Kept small: a layer of 100k files holds 100k
	// Nodes, and the converter's memory budget is per entry.
	nlink  uint32
	placed bool
	ext    bool // extended inode
	layout uint8
	// Implicit marks a directory the converter made up because an entry
	// needed a parent: WriteImage gives it the image's build time, so it
	// costs a compact inode and never depends on the wall clock.
	Implicit bool
}

type dirEntry struct {
	name string
	node *Node
}

// DataKind says how a node's data is stored.
type DataKind uint8

const (
	// DataNone is no data: an empty regular file, a device, fifo or socket.
	DataNone DataKind = iota
	// DataBlocks is data already written by the caller as Size bytes of
	// contiguous blocks from BlkAddr on the primary device (FLAT_PLAIN).
	// The tar converter streams every regular file this way, so each one is
	// block-addressable for fsmeta's chunk indexes.
	DataBlocks
	// DataBytes is data held in memory (Bytes): stored inline after the
	// inode when it fits in the inode's block (FLAT_INLINE), otherwise in
	// whole blocks after the metadata area with the tail inline if it fits.
	// Symlink targets use it; so can small files copied into an fsmeta.
	DataBytes
	// DataChunks is a CHUNK_BASED file: Chunks[i] maps bytes
	// [i<<ChunkBits, (i+1)<<ChunkBits) to a block on a device (device 0 is
	// the image, i the i-th extra device); BlkAddr NullAddr is a hole.
	DataChunks
)

// Data is where a node's contents are stored.
type Data struct {
	// Size is the file size in bytes (for DataBytes, len(Bytes) is used).
	Size uint64
	// Bytes is the content of DataBytes.
	Bytes []byte
	// Chunks are the chunk indexes of DataChunks: ceil(Size >> ChunkBits)
	// of them.
	Chunks []ChunkIndex
	// BlkAddr is the first block of DataBlocks data.
	BlkAddr uint32
	// Kind says which of the fields above apply.
	Kind DataKind
	// ChunkBits is log2 of the chunk size of DataChunks, at least
	// BlockSizeBits and at most BlockSizeBits+31.
	ChunkBits uint8
}

// Mkdev encodes a device number like Linux new_encode_dev, the form EROFS
// stores in i_u.rdev.
func Mkdev(major, minor uint32) uint32 {
	return minor&0xff | major<<8&0xfff00 | (minor&^0xff)<<12
}

// NewTree returns a tree holding only a root directory 0755 root:root,
// marked Implicit.
func NewTree() *Tree {
	return &Tree{
		root:    &Node{Mode: syscall.S_IFDIR | 0o755, Implicit: true},
		entries: make(map[entryKey]*Node),
	}
}

// Root returns the root directory.
func (t *Tree) Root() *Node { return t.root }

// Lookup returns the entry name of directory dir, or nil.
func (t *Tree) Lookup(dir *Node, name string) *Node {
	return t.entries[entryKey{dir, name}]
}

// Link makes name in directory dir refer to n, replacing whatever it named
// before (a replaced directory's subtree becomes unreachable and is not
// written). Linking one non-directory Node under several names makes
// hardlinks. A directory must be linked under one name only.
func (t *Tree) Link(dir *Node, name string, n *Node) error {
	if !dir.IsDir() {
		return fmt.Errorf("erofs: link %q: parent is not a directory", name)
	}
	if err := checkName(name); err != nil {
		return err
	}
	t.entries[entryKey{dir, name}] = n
	return nil
}

// Unlink removes name from directory dir, if present.
func (t *Tree) Unlink(dir *Node, name string) {
	delete(t.entries, entryKey{dir, name})
}

// Len returns the number of names in the tree (reachable or not).
func (t *Tree) Len() int { return len(t.entries) }

// IsDir reports whether n is a directory.
func (n *Node) IsDir() bool { return n.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// SetXattr sets one extended attribute, replacing a previous value.
func (n *Node) SetXattr(name string, value []byte) {
	for i := range n.Xattrs {
		if n.Xattrs[i].Name == name {
			n.Xattrs[i].Value = value
			return
		}
	}
	n.Xattrs = append(n.Xattrs, Xattr{Name: name, Value: value})
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("erofs: invalid file name %q", name)
	case len(name) > NameLen:
		return fmt.Errorf("erofs: file name longer than %d bytes: %q", NameLen, name)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return fmt.Errorf("erofs: file name %q contains %q", name, name[i])
		}
	}
	return nil
}
