package erofs

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
)

// builder is the state the tar and directory front ends share: the tree,
// the data writer, and a cache of the last parent directory resolved
// (entries of one directory come together in tars and walks, so most
// entries skip the component-by-component lookup).
type builder struct {
	tree  *Tree
	data  *dataWriter
	stats ConvertStats

	lastDir     []string // components of the cached parent
	lastDirNode *Node
	scratch     []string // reused by splitPath
}

func newBuilder(ctx context.Context, dst *os.File, opts ConvertOptions) (*builder, error) {
	// The data writer leaves zero blocks as holes: they must read as
	// zeros, so whatever dst held goes first.
	if err := dst.Truncate(0); err != nil {
		return nil, fmt.Errorf("erofs: truncate output: %w", err)
	}
	data, err := newDataWriter(ctx, dst, opts.MaxImageSize)
	if err != nil {
		return nil, err
	}
	if opts.StartWriteback {
		data.writeback = dst
	}
	return &builder{tree: NewTree(), data: data}, nil
}

// parentDir resolves (creating as needed) the directory holding the entry
// whose cleaned components are parts.
func (c *builder) parentDir(parts []string) (*Node, error) {
	dir := parts[:len(parts)-1]
	if c.lastDirNode != nil && slices.Equal(dir, c.lastDir) {
		return c.lastDirNode, nil
	}
	n, err := c.resolveDir(dir, true)
	if err != nil {
		return nil, err
	}
	// Clone: the components are slices of this entry's path, and parts is
	// the builder's scratch slice.
	c.lastDir = c.lastDir[:0]
	for _, p := range dir {
		c.lastDir = append(c.lastDir, strings.Clone(p))
	}
	c.lastDirNode = n
	return n, nil
}

// put links n as name in dir, replacing what was there (tar semantics:
// the later entry wins). Replacing a directory or a symlink can change
// what a cached path resolves to, so it drops the cache.
func (c *builder) put(dir *Node, name string, n *Node) error {
	old := c.tree.Lookup(dir, name)
	if old != nil && (old.IsDir() || isSymlink(old)) {
		c.lastDir, c.lastDirNode = c.lastDir[:0], nil
	}
	// name is a slice of the entry's whole path: keep only the name alive
	// (usr/share/doc/pkg/changelog.gz is 3x its base). Always: assigning
	// an existing map key stores the new key string.
	return c.tree.Link(dir, strings.Clone(name), n)
}

// finish writes the metadata and superblock after the data.
func (c *builder) finish(dst *os.File, opts ConvertOptions) (*ConvertStats, error) {
	info, err := finishImage(dst, c.data, c.tree, opts)
	if err != nil {
		return nil, err
	}
	c.stats.Inodes = int64(info.Inodes)
	c.stats.ImageBytes = int64(info.Blocks) * BlockSize
	c.stats.DataBytes = c.data.written
	return &c.stats, nil
}

func isSymlink(n *Node) bool { return n.Mode&0o170000 == 0o120000 }
