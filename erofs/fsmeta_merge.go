package erofs

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"syscall"
)

// The merged tree of an fsmeta image is exactly what a read-only overlay
// mount with the layers as lowerdirs (newest first) presents, so the three
// views of a stack (multi-device mount, flat mount, overlay of the layers)
// agree entry by entry. The rules, from overlayfs' lookup and readdir:
//
//   - Names in a merged dir are the union over the layers in the dir's stack;
//     the topmost layer that has a name decides what it is.
//   - A whiteout (char device 0:0) as the topmost entry deletes the name.
//   - A non-directory hides every lower entry of that name.
//   - A directory merges with the directories of the same name below it,
//     down to the first layer where the name is a whiteout or non-dir, or
//     down to and including the first opaque directory; its metadata comes
//     from the topmost one.
//   - The root merges all layers (overlayfs never consults opacity there).
//   - trusted.overlay.* xattrs are overlayfs' private bookkeeping: they are
//     consumed, never copied. user.overlay.* is private only in userxattr
//     mode, which our layers never use, so it is ordinary data here.

// overlayXattrPrefix marks overlayfs' private xattrs in our layers.
const overlayXattrPrefix = "trusted.overlay."

// overlayOpaqueXattr with value "y" makes a directory opaque.
const overlayOpaqueXattr = overlayXattrPrefix + "opaque"

// layerFS is what the builder needs of a layer image; *Image provides it.
// Directories are listed by inode, not by path: a path walk from the root
// per directory and layer was half of the merge's time. Keeping it an
// interface lets the merge rules be tested on synthetic layers that no
// mkfs could produce.
type layerFS interface {
	// Root returns the root directory's inode.
	Root() (*Inode, error)
	// ReadDirInode lists directory dir (at path p, for errors), sorted.
	ReadDirInode(dir *Inode, p string) ([]fs.DirEntry, error)
	// Extents maps the data of a regular file or symlink.
	Extents(ino *Inode) ([]Extent, error)
	// ReadAt reads raw bytes of the layer image (device 0).
	ReadAt(b []byte, off int64) (int, error)
}

// layerDir is one layer's directory in a merged directory's stack.
type layerDir struct {
	layer int
	ino   *Inode
}

// hardlinkKey identifies one inode of one layer.
type hardlinkKey struct {
	layer int
	nid   uint64
}

// mergeStats counts what the merge saw, for the caller's report.
type mergeStats struct {
	Entries   int // merged names, root excluded
	Inodes    int // distinct inodes, root included (hardlinks counted once)
	Whiteouts int // names a whiteout hid
}

// dataFunc returns how the merged image finds the contents of a regular
// file or symlink that the merge takes from layer at path p.
type dataFunc func(layer int, p string, ino *Inode) (Data, error)

// mergeLayers builds the merged tree of layers (oldest first) as a Tree
// ready for WriteImage. Nothing but the Tree is kept per entry, so memory
// grows with the merged entries, not with layers × entries.
func mergeLayers(ctx context.Context, layers []layerFS, data dataFunc) (*Tree, mergeStats, error) {
	var st mergeStats
	if len(layers) == 0 {
		return nil, st, fmt.Errorf("erofs: fsmeta needs at least one layer")
	}
	stack := make([]layerDir, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		ino, err := layers[i].Root()
		if err != nil {
			return nil, st, fmt.Errorf("erofs: layer %d: root: %w", i, err)
		}
		stack = append(stack, layerDir{i, ino})
	}
	m := &merger{ctx: ctx, layers: layers, data: data, tree: NewTree(), links: map[hardlinkKey]*Node{}}
	root := m.tree.Root()
	fillNode(root, stack[0].ino)
	root.Implicit = false
	if err := m.mergeDir(root, ".", stack); err != nil {
		return nil, st, err
	}
	m.stats.Inodes++
	return m.tree, m.stats, nil
}

// fillNode copies an inode's metadata, minus overlayfs' private xattrs.
func fillNode(n *Node, ino *Inode) {
	n.Mode, n.UID, n.GID = ino.Mode, ino.UID, ino.GID
	n.Mtime, n.MtimeNsec, n.Rdev = ino.Mtime, ino.MtimeNsec, ino.Rdev
	n.Xattrs = ino.Xattrs
	if slices.ContainsFunc(ino.Xattrs, isOverlayXattr) {
		n.Xattrs = slices.DeleteFunc(slices.Clone(ino.Xattrs), isOverlayXattr)
	}
}

type merger struct {
	ctx    context.Context
	layers []layerFS
	data   dataFunc
	tree   *Tree
	links  map[hardlinkKey]*Node
	stats  mergeStats
}

// candidate is a name of a merged dir while its layers are being read.
type candidate struct {
	layer  int
	entry  fs.DirEntry
	dir    bool
	stack  []layerDir // for a dir: the dirs of this name that merge, top first
	closed bool       // no lower layer can contribute any more
	gone   bool       // topmost entry is a whiteout
}

// mergeDir fills dir.kids from the directory p of the layers in stack (top
// first) and recurses. Recursion depth is the tree depth, bounded by
// PATH_MAX, so it cannot overflow the goroutine stack.
func (m *merger) mergeDir(dir *Node, p string, stack []layerDir) error {
	if err := m.ctx.Err(); err != nil {
		return err
	}
	cands := map[string]*candidate{}
	var names []string
	for _, ld := range stack {
		li := ld.layer
		ents, err := m.layers[li].ReadDirInode(ld.ino, p)
		if err != nil {
			return fmt.Errorf("erofs: layer %d: read dir %q: %w", li, p, err)
		}
		for _, e := range ents {
			c := cands[e.Name()]
			if c == nil {
				c = &candidate{layer: li, entry: e}
				wo, err := m.isWhiteout(li, p, e)
				if err != nil {
					return err
				}
				switch {
				case wo:
					c.gone, c.closed = true, true
				case e.IsDir():
					c.dir = true
					opq, ino, err := m.isOpaque(li, p, e)
					if err != nil {
						return err
					}
					c.stack = []layerDir{{li, ino}}
					c.closed = opq
				default:
					c.closed = true
				}
				cands[e.Name()] = c
				names = append(names, e.Name())
				continue
			}
			if c.closed {
				continue
			}
			// c is a dir still open to lower layers.
			if !e.IsDir() {
				c.closed = true // a lower whiteout or non-dir ends the stack
				continue
			}
			opq, ino, err := m.isOpaque(li, p, e)
			if err != nil {
				return err
			}
			c.stack = append(c.stack, layerDir{li, ino})
			c.closed = opq
		}
	}
	slices.Sort(names) // deterministic hardlink and error order
	for _, name := range names {
		c := cands[name]
		delete(cands, name) // let the candidate go as soon as it is used
		if c.gone {
			m.stats.Whiteouts++
			continue
		}
		cp := path.Join(p, name)
		ino, err := m.entryInode(c, cp)
		if err != nil {
			return err
		}
		m.stats.Entries++
		var n *Node
		if !c.dir && ino.Nlink > 1 {
			k := hardlinkKey{c.layer, ino.Nid}
			n = m.links[k]
			if n == nil {
				n = &Node{}
				m.links[k] = n
			}
		}
		if n == nil || n.Mode == 0 { // a new inode, not another name of one
			if n == nil {
				n = &Node{}
			}
			fillNode(n, ino)
			m.stats.Inodes++
			if t := ino.Mode & syscall.S_IFMT; t == syscall.S_IFREG || t == syscall.S_IFLNK {
				if n.Data, err = m.data(c.layer, cp, ino); err != nil {
					return fmt.Errorf("erofs: layer %d: %q: %w", c.layer, cp, err)
				}
			}
		}
		if err := m.tree.Link(dir, name, n); err != nil {
			return fmt.Errorf("erofs: layer %d: %q: %w", c.layer, cp, err)
		}
		if c.dir {
			if err := m.mergeDir(n, cp, c.stack); err != nil {
				return err
			}
		}
	}
	return nil
}

// entryInode returns the inode of a candidate's topmost entry; a dir's was
// already read for its opacity.
func (m *merger) entryInode(c *candidate, p string) (*Inode, error) {
	if c.dir {
		return c.stack[0].ino, nil
	}
	info, err := c.entry.Info()
	if err != nil {
		return nil, fmt.Errorf("erofs: layer %d: %q: %w", c.layer, p, err)
	}
	return inodeOf(info, c.layer, p)
}

// isWhiteout reports whether e is an overlay whiteout: a char device 0:0.
// Only char devices need their inode read.
func (m *merger) isWhiteout(layer int, dir string, e fs.DirEntry) (bool, error) {
	if e.Type()&fs.ModeCharDevice == 0 {
		return false, nil
	}
	info, err := e.Info()
	if err != nil {
		return false, fmt.Errorf("erofs: layer %d: %q: %w", layer, path.Join(dir, e.Name()), err)
	}
	ino, err := inodeOf(info, layer, path.Join(dir, e.Name()))
	if err != nil {
		return false, err
	}
	return ino.Rdev == 0, nil
}

// isOpaque reports whether the directory entry e of dir p is opaque, and
// returns its inode.
func (m *merger) isOpaque(layer int, p string, e fs.DirEntry) (bool, *Inode, error) {
	info, err := e.Info()
	if err != nil {
		return false, nil, fmt.Errorf("erofs: layer %d: %q: %w", layer, path.Join(p, e.Name()), err)
	}
	ino, err := inodeOf(info, layer, path.Join(p, e.Name()))
	if err != nil {
		return false, nil, err
	}
	for _, x := range ino.Xattrs {
		if x.Name == overlayOpaqueXattr {
			return string(x.Value) == "y", ino, nil
		}
	}
	return false, ino, nil
}

func inodeOf(info fs.FileInfo, layer int, p string) (*Inode, error) {
	ino, ok := info.Sys().(*Inode)
	if !ok || ino == nil {
		return nil, fmt.Errorf("erofs: layer %d: %q: no inode behind the file info", layer, p)
	}
	return ino, nil
}

func isOverlayXattr(x Xattr) bool { return strings.HasPrefix(x.Name, overlayXattrPrefix) }
