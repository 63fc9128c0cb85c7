package erofs

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
)

// The tar front end. Entries mean what containerd's pkg/archive applier
// (with overlay whiteout conversion) makes of them on a host filesystem:
//
//   - later entries win; a directory over a directory merges metadata
//     (mode, owner, mtime; xattrs are added/overwritten), anything else
//     replaces the old name (a replaced directory's subtree is dropped);
//   - missing parents are created 0755 root:root; the root is 0755 unless
//     the tar has a "./" or "/" directory entry;
//   - ".wh.NAME" becomes a 0:0 char device NAME (mode 0, the entry's owner
//     and mtime), ".wh..wh..opq" sets trusted.overlay.opaque=y on its dir;
//     a whiteout never removes an entry of its own layer (OCI layer.md:
//     whiteouts apply to lower layers only), whichever comes first: a
//     non-directory of the layer stays as it is, a directory stays and
//     becomes opaque (docs/design.md §6);
//   - owner 4294967295 ((uid_t)-1, "leave unchanged" to chown) is stored
//     as 0, what containerd's lchown leaves on a file root created;
//   - hardlinks share the target's inode; the target is resolved inside
//     the layer and must already exist; a later entry replacing the target
//     name leaves the link with the old inode, as link(2) would;
//   - xattrs come from PAX SCHILY.xattr.* and LIBARCHIVE.xattr.* records.
//
// Where containerd and GNU tar differ, GNU tar wins when it is the
// stricter one: a hardlink entry's own mode/owner/mtime are ignored (the
// target's inode keeps its own), and ".." escaping the root is an error.

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	// OpaqueXattr marks an overlayfs opaque directory.
	OpaqueXattr = "trusted.overlay.opaque"

	paxSchilyXattr     = "SCHILY.xattr."
	paxLibarchiveXattr = "LIBARCHIVE.xattr."

	// maxSymlinkLen is the longest symlink target Linux accepts
	// (PATH_MAX including the NUL).
	maxSymlinkLen = 4095
)

// ConvertTar reads an uncompressed OCI layer tar from src and writes an EROFS
// image to dst from offset 0, truncating dst to the image size. OCI whiteouts
// become overlayfs whiteouts. It never seeks src. File data is written once,
// straight to its final blocks, as the tar is read; memory grows with the
// number of entries, never with file sizes. On error dst is truncated to 0
// and the error names the offending entry.
func ConvertTar(ctx context.Context, dst *os.File, src io.Reader, opts ConvertOptions) (*ConvertStats, error) {
	stats, err := convertTar(ctx, dst, src, opts)
	if err != nil {
		_ = dst.Truncate(0)
		return nil, err
	}
	return stats, nil
}

func convertTar(ctx context.Context, dst *os.File, src io.Reader, opts ConvertOptions) (*ConvertStats, error) {
	c, err := newBuilder(ctx, dst, opts)
	if err != nil {
		return nil, err
	}
	defer c.data.close()
	tr := tar.NewReader(src)
	prev := ""
	for {
		if c.stats.Entries%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if prev == "" {
				return nil, fmt.Errorf("erofs: reading tar: first entry: %w", err)
			}
			return nil, fmt.Errorf("erofs: reading tar: entry after %q: %w", prev, err)
		}
		c.stats.Entries++
		prev = hdr.Name
		if err := c.addTarEntry(hdr, tr); err != nil {
			return nil, fmt.Errorf("erofs: tar entry %q: %w", hdr.Name, err)
		}
	}
	return c.finish(dst, opts)
}

func (c *builder) addTarEntry(hdr *tar.Header, tr io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	parts, err := splitPath(hdr.Name, c.scratch)
	if err != nil {
		return err
	}
	c.scratch = parts
	n, err := nodeFromHeader(hdr)
	if err != nil {
		return err
	}
	xs, dropped, err := tarXattrs(hdr.PAXRecords)
	if err != nil {
		return err
	}
	n.Xattrs = xs
	for _, name := range dropped {
		c.stats.skip("%s: xattr %q dropped: no Linux file system stores that namespace", hdr.Name, name)
	}
	if len(parts) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("names the layer root but is not a directory")
		}
		mergeDir(c.tree.Root(), n)
		return nil
	}
	dir, err := c.parentDir(parts)
	if err != nil {
		return fmt.Errorf("parent directory: %w", err)
	}
	base := parts[len(parts)-1]

	if base == whiteoutOpaque {
		dir.SetXattr(OpaqueXattr, []byte("y"))
		return nil
	}
	if orig, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		if orig == "" || orig == "." || orig == ".." {
			return fmt.Errorf("invalid whiteout name %q", base)
		}
		// OCI layer.md: a whiteout applies only to lower layers, never to
		// an entry of its own layer, in whichever order the two come.
		// Everything in this tree is this layer's own, so an entry already
		// here stays: a non-directory hides the lower name by itself, and
		// a directory becomes opaque, which hides the lower directory's
		// content exactly as the whiteout asked.
		switch own := c.tree.Lookup(dir, orig); {
		case own == nil || isWhiteout(own):
		case own.IsDir():
			own.SetXattr(OpaqueXattr, []byte("y"))
			return nil
		default:
			return nil
		}
		wh := &Node{Mode: syscall.S_IFCHR, UID: n.UID, GID: n.GID, Mtime: n.Mtime, MtimeNsec: n.MtimeNsec}
		return c.put(dir, orig, wh)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		old := c.tree.Lookup(dir, base)
		if old != nil && old.IsDir() {
			mergeDir(old, n)
			return nil
		}
		if old != nil && isWhiteout(old) {
			// The same rule, whiteout first: this layer's directory
			// replaces the whiteout and keeps hiding the lower one's
			// content.
			n.SetXattr(OpaqueXattr, []byte("y"))
		}
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse: // Next already turns old TypeRegA into TypeReg
		if hdr.Size < 0 {
			return fmt.Errorf("negative size %d", hdr.Size)
		}
		blk, err := c.data.writeFile(tr, hdr.Size)
		if err != nil {
			return err
		}
		n.Data = Data{Kind: DataBlocks, BlkAddr: blk, Size: uint64(hdr.Size)}
	case tar.TypeLink:
		target, err := c.lookupLink(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
		}
		if c.tree.Lookup(dir, base) == target {
			return nil // a link to itself: nothing changes
		}
		return c.put(dir, base, target)
	}
	return c.put(dir, base, n)
}

// nodeFromHeader makes the inode an entry describes (data not yet read).
func nodeFromHeader(hdr *tar.Header) (*Node, error) {
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 1<<32-1 || int64(hdr.Gid) > 1<<32-1 {
		return nil, fmt.Errorf("uid/gid %d/%d out of range", hdr.Uid, hdr.Gid)
	}
	mt := hdr.ModTime
	n := &Node{
		Mode:      uint32(hdr.Mode & 0o7777),
		UID:       tarOwner(hdr.Uid),
		GID:       tarOwner(hdr.Gid),
		Mtime:     mt.Unix(),
		MtimeNsec: uint32(mt.Nanosecond()),
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		n.Mode |= syscall.S_IFDIR
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse, tar.TypeLink:
		n.Mode |= syscall.S_IFREG
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return nil, errors.New("symlink with an empty target")
		}
		if len(hdr.Linkname) > maxSymlinkLen || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return nil, fmt.Errorf("invalid symlink target of %d bytes", len(hdr.Linkname))
		}
		n.Mode = syscall.S_IFLNK | 0o777 // Linux symlinks have no mode of their own
		n.Data = Data{Kind: DataBytes, Bytes: []byte(hdr.Linkname)}
	case tar.TypeChar, tar.TypeBlock:
		if hdr.Devmajor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor < 0 || hdr.Devminor > 0xfffff {
			return nil, fmt.Errorf("device number %d:%d out of range", hdr.Devmajor, hdr.Devminor)
		}
		n.Mode |= syscall.S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			n.Mode = n.Mode&^syscall.S_IFMT | syscall.S_IFBLK
		}
		n.Rdev = Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		n.Mode |= syscall.S_IFIFO
	default:
		return nil, fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	return n, nil
}

// noOwner is the owner 4294967295, (uid_t)-1, which chown(2) takes to
// mean "leave unchanged".
const noOwner = 1<<32 - 1

// tarOwner is the owner an extraction leaves on disk for a tar uid or gid.
// containerd's applier and GNU tar create the file as root and then call
// lchown with the header's ids, and lchown(-1) changes nothing: the file
// stays 0. Storing 4294967295 instead would show the guest the overflow
// id 65534, an owner no other extraction of the layer gives.
func tarOwner(id int) uint32 {
	if id == noOwner {
		return 0
	}
	return uint32(id)
}

// isWhiteout reports whether n is an overlay whiteout: a 0:0 char device.
func isWhiteout(n *Node) bool {
	return n.Mode&syscall.S_IFMT == syscall.S_IFCHR && n.Rdev == 0
}

// tarXattrs collects the xattrs of PAX records, in key order so the result
// never depends on map iteration. LIBARCHIVE.xattr.* (URL-escaped name,
// base64 value) overrides SCHILY.xattr.* for the same name, as libarchive
// reads them.
//
// Names in a namespace no Linux file system can hold for a file
// (com.apple.*, which macOS tars carry, or system.* other than the POSIX
// ACLs) are dropped and returned: extracting the tar on Linux, as
// containerd's applier and GNU tar do, fails that setxattr with ENOTSUP and
// goes on, so rejecting the layer would refuse images every other
// snapshotter unpacks, to keep data no Linux guest could read anyway.
func tarXattrs(recs map[string]string) (_ []Xattr, dropped []string, _ error) {
	if len(recs) == 0 {
		return nil, nil, nil
	}
	var keys []string
	for k := range recs {
		if strings.HasPrefix(k, paxSchilyXattr) || strings.HasPrefix(k, paxLibarchiveXattr) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil, nil
	}
	// "LIBARCHIVE." sorts before "SCHILY.": put SCHILY first so the
	// libarchive form wins.
	slices.SortFunc(keys, func(a, b string) int {
		la, lb := strings.HasPrefix(a, paxLibarchiveXattr), strings.HasPrefix(b, paxLibarchiveXattr)
		if la != lb {
			if la {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})
	n := &Node{}
	for _, k := range keys {
		if name, ok := strings.CutPrefix(k, paxSchilyXattr); ok {
			n.SetXattr(name, []byte(recs[k]))
			continue
		}
		name, err := url.PathUnescape(strings.TrimPrefix(k, paxLibarchiveXattr))
		if err != nil {
			return nil, nil, fmt.Errorf("PAX record %q: %w", k, err)
		}
		v, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(recs[k], "="))
		if err != nil {
			return nil, nil, fmt.Errorf("PAX record %q: value is not base64: %w", k, err)
		}
		n.SetXattr(name, v)
	}
	kept := n.Xattrs[:0]
	for _, x := range n.Xattrs {
		if _, _, err := xattrName(x.Name); errors.Is(err, errXattrNamespace) {
			dropped = append(dropped, x.Name)
			continue
		}
		kept = append(kept, x)
	}
	if _, err := xattrIbodySize(kept); err != nil {
		return nil, nil, err
	}
	return kept, dropped, nil
}

// mergeDir applies a directory entry's metadata to an existing directory,
// like extracting a tar over a directory that already exists.
func mergeDir(dst, src *Node) {
	dst.Mode, dst.UID, dst.GID = src.Mode, src.UID, src.GID
	dst.Mtime, dst.MtimeNsec = src.Mtime, src.MtimeNsec
	for _, x := range src.Xattrs {
		dst.SetXattr(x.Name, x.Value)
	}
	dst.Implicit = false
}

// lookupLink resolves a hardlink target inside the layer: its parent
// directories like any path (symlinks followed), its last component not.
func (c *builder) lookupLink(name string) (*Node, error) {
	parts, err := splitPath(name, nil)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, errors.New("target is the layer root")
	}
	dir, err := c.resolveDir(parts[:len(parts)-1], false)
	if err != nil {
		return nil, fmt.Errorf("target not in the layer: %w", err)
	}
	n := c.tree.Lookup(dir, parts[len(parts)-1])
	switch {
	case n == nil:
		return nil, fmt.Errorf("target not in the layer: %w", syscall.ENOENT)
	case n.IsDir():
		return nil, errors.New("target is a directory")
	}
	return n, nil
}
