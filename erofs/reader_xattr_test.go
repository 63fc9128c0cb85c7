package erofs

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"golang.org/x/sys/unix"
)

// TestReaderLongXattrPrefix: the long xattr name prefix table
// (FEATURE_INCOMPAT_XATTR_PREFIXES, written by mkfs.erofs ≥ 1.7, not by
// the 1.5 here) is added to an image by hand and the reader must name the
// xattr as the host kernel does.
func TestReaderLongXattrPrefix(t *testing.T) {
	needRoot(t)
	img := rdLongPrefixImage(t)
	im, err := NewImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := im.Lstat("xattr")
	if err != nil {
		t.Fatal(err)
	}
	const want = "user.long.prefix.k"
	if v, ok := fi.Sys().(*Inode).Xattr(want); !ok || string(v) != "value" {
		t.Fatalf("xattrs %+v, want %s=value", fi.Sys().(*Inode).Xattrs, want)
	}
	p := filepath.Join(t.TempDir(), "prefix.erofs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	v := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(testmount.Erofs(t, p), "xattr"), want, v)
	if err != nil || string(v[:n]) != "value" {
		t.Fatalf("kernel getxattr %s: %q %v", want, v[:max(n, 0)], err)
	}
}

// rdLongPrefixImage is smallImage with the user.k xattr of "xattr" renamed
// through a long prefix: user. + "long.prefix." + k.
func rdLongPrefixImage(t testing.TB) []byte {
	t.Helper()
	img := smallImage(t)
	in := rdInodeAt(t, img, "xattr")
	entry := in.iloc + in.isize + XattrIbodyHeaderSize
	if img[entry+1] != XattrIndexUser || string(img[entry+4:entry+5]) != "k" {
		t.Fatalf("unexpected first xattr entry % x", img[entry:entry+8])
	}
	img[entry+1] = xattrLongPrefixFlag // long prefix 0 (index bits 0)

	// The table in a new last block: le16 length, base index, infix.
	table := len(img)
	rec := append([]byte{XattrIndexUser}, "long.prefix."...)
	blk := make([]byte, BlockSize)
	binary.LittleEndian.PutUint16(blk, uint16(len(rec)))
	copy(blk[2:], rec)
	img = append(img, blk...)
	sb := img[SuperblockOffset:]
	var s Superblock
	if err := Unmarshal(sb, &s); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(sb[36:], s.Blocks+1)                                     // blocks
	binary.LittleEndian.PutUint32(sb[80:], s.FeatureIncompat|featureIncompatXattrPrefixes) // feature_incompat
	sb[91] = 1                                                                             // xattr_prefix_count
	binary.LittleEndian.PutUint32(sb[92:], uint32(table/4))                                // xattr_prefix_start
	fixChecksum(img)

	return img
}
