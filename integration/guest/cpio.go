package guest

import (
	"compress/gzip"
	"fmt"
	"io"
	"sort"
)

// writeCpio writes files (path inside the archive → content) as one gzip'd
// newc cpio archive, the format the kernel unpacks into its rootfs. Every
// file is a regular file, mode 0755, owned by root, mtime 0; parent
// directories must already exist in the base initramfs.
func writeCpio(w io.Writer, files map[string][]byte) error {
	zw := gzip.NewWriter(w)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if err := cpioEntry(zw, uint32(i+1), 0o100755, n, files[n]); err != nil {
			return err
		}
	}
	if err := cpioEntry(zw, 0, 0, "TRAILER!!!", nil); err != nil {
		return err
	}
	return zw.Close()
}

// cpioEntry writes one newc entry: a 110-byte ASCII header of 13 hex fields,
// the NUL-terminated name padded to 4 bytes, the data padded to 4 bytes.
func cpioEntry(w io.Writer, ino, mode uint32, name string, data []byte) error {
	nlink := 1
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	_, err := w.Write(buf)
	return err
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
