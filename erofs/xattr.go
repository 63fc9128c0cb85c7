package erofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Inline (ibody) extended attributes: a 12-byte header, then one entry per
// attribute: erofs_xattr_entry, the name without its prefix (the prefix is
// a name index), the value, padded to 4 bytes. No shared xattrs are written:
// layers rarely repeat big values, and inline ones need no second lookup.

// maxXattrValue is the largest value an entry can describe (e_value_size is
// 16 bits; Linux's own limit XATTR_SIZE_MAX is one more).
const maxXattrValue = 0xffff

// errXattrNamespace is wrapped when a name is in none of the namespaces
// EROFS has name indexes for. Those are exactly the ones a Linux file
// system stores for a file (xattr(7): other prefixes fail with ENOTSUP on
// every file system; other system.* names are file-system specific).
var errXattrNamespace = errors.New("unsupported namespace (only user., trusted., security. and system.posix_acl_*)")

// xattrName splits a full attribute name into its EROFS name index and the
// suffix stored on disk.
func xattrName(name string) (index uint8, suffix string, err error) {
	for i, prefix := range xattrPrefixes {
		index := uint8(i)
		if prefix == "" || index == XattrIndexLustre {
			continue
		}
		if index == XattrIndexPosixACLAccess || index == XattrIndexPosixACLDefault {
			if name == prefix {
				return index, "", nil
			}
			continue
		}
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			if rest == "" {
				return 0, "", fmt.Errorf("xattr %q: empty name after prefix", name)
			}
			if len(rest) > 255 {
				return 0, "", fmt.Errorf("xattr %q: name longer than 255 bytes after its prefix", name)
			}
			return index, rest, nil
		}
	}
	return 0, "", fmt.Errorf("xattr %q: %w", name, errXattrNamespace)
}

// xattrIbodySize validates xs and returns the size of their inline area.
func xattrIbodySize(xs []Xattr) (int, error) {
	if len(xs) == 0 {
		return 0, nil
	}
	size := XattrIbodyHeaderSize
	for _, x := range xs {
		_, suffix, err := xattrName(x.Name)
		if err != nil {
			return 0, err
		}
		if len(x.Value) > maxXattrValue {
			return 0, fmt.Errorf("xattr %q: value of %d bytes exceeds %d", x.Name, len(x.Value), maxXattrValue)
		}
		size += align(XattrEntrySize+len(suffix)+len(x.Value), 4)
	}
	if (size-XattrIbodyHeaderSize)/4+1 > 0xffff {
		return 0, fmt.Errorf("xattrs: %d bytes exceed the inline xattr area", size)
	}
	return size, nil
}

// appendXattrIbody appends the inline xattr area of xs (already validated
// by xattrIbodySize) to b, entries sorted by name so the bytes never depend
// on input order.
func appendXattrIbody(b []byte, xs []Xattr) []byte {
	if len(xs) == 0 {
		return b
	}
	sorted := make([]Xattr, len(xs))
	copy(sorted, xs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	base := len(b)
	b = append(b, make([]byte, XattrIbodyHeaderSize)...) // name filter off, no shared xattrs
	for _, x := range sorted {
		index, suffix, _ := xattrName(x.Name)
		start := len(b)
		b = append(b, uint8(len(suffix)), index, 0, 0)
		binary.LittleEndian.PutUint16(b[start+2:], uint16(len(x.Value)))
		b = append(b, suffix...)
		b = append(b, x.Value...)
		for (len(b)-base)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

func align(n, a int) int { return (n + a - 1) / a * a }
