package erofs

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Path handling of the converters, matching what containerd's
// pkg/archive applier means by a tar path: a leading "/" or "./" is
// dropped, "." and empty components vanish, ".." goes up one level, and
// symlinks met in a *parent* component are followed inside the layer
// (containerd resolves parents with continuity's fs.RootPath, which keeps
// ".." and absolute targets inside the root). One deliberate difference: a
// name whose ".." would climb above the root is an error here, where
// containerd silently clamps it to the root (docs/design.md §6: reject escapes).

// errEscape is wrapped when a path climbs out of the layer root.
var errEscape = errors.New("path escapes the layer root")

// splitPath cleans a tar path into its components (empty for the root),
// appended to parts[:0] (a scratch slice the caller may reuse).
func splitPath(p string, parts []string) ([]string, error) {
	parts = parts[:0]
	for comp := range strings.SplitSeq(p, "/") {
		switch comp {
		case "", ".":
		case "..":
			if len(parts) == 0 {
				return nil, errEscape
			}
			parts = parts[:len(parts)-1]
		default:
			parts = append(parts, comp)
		}
	}
	return parts, nil
}

// maxSymlinkFollows bounds symlink resolution like Linux's MAXSYMLINKS.
const maxSymlinkFollows = 40

// resolveDir returns the directory that components parts name, following
// symlinks inside the tree. With create, missing directories are made
// (0755 root, Implicit); without, a missing one is an error.
func (c *builder) resolveDir(parts []string, create bool) (*Node, error) {
	stack := []*Node{c.tree.Root()}
	queue := parts
	follows := 0
	for len(queue) > 0 {
		comp := queue[0]
		queue = queue[1:]
		switch comp {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 { // ".." of the root is the root, as in RootPath
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := stack[len(stack)-1]
		n := c.tree.Lookup(cur, comp)
		if n == nil {
			if !create {
				return nil, fmt.Errorf("%q: %w", comp, syscall.ENOENT)
			}
			n = &Node{Mode: syscall.S_IFDIR | 0o755, Implicit: true}
			if err := c.tree.Link(cur, strings.Clone(comp), n); err != nil {
				return nil, err
			}
		} else if create && isWhiteout(n) {
			// A whiteout of this layer, then an entry inside that name:
			// the whiteout is for the lower layers only (OCI layer.md),
			// so the layer gets its directory, opaque so that the lower
			// one's content stays hidden.
			n = &Node{Mode: syscall.S_IFDIR | 0o755, Implicit: true}
			n.SetXattr(OpaqueXattr, []byte("y"))
			if err := c.tree.Link(cur, strings.Clone(comp), n); err != nil {
				return nil, err
			}
		}
		switch n.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			stack = append(stack, n)
		case syscall.S_IFLNK:
			if follows++; follows > maxSymlinkFollows {
				return nil, fmt.Errorf("%q: %w", comp, syscall.ELOOP)
			}
			target := string(n.Data.Bytes)
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			queue = append(strings.Split(target, "/"), queue...)
		default:
			return nil, fmt.Errorf("%q: %w", comp, syscall.ENOTDIR)
		}
	}
	return stack[len(stack)-1], nil
}
