package erofs

import (
	"fmt"
	"io"
)

// readExtents fills buf with the file bytes from off, given the file's
// extents in layer l (a single-device image: every extent is on device 0).
func readExtents(l layerFS, exts []Extent, buf []byte, off uint64) error {
	end := off + uint64(len(buf))
	for _, e := range exts {
		s, t := max(off, e.Logical), min(end, e.Logical+e.Length)
		if s >= t {
			continue
		}
		dst := buf[s-off : t-off]
		if e.Hole {
			clear(dst)
			continue
		}
		if e.Device != 0 {
			return fmt.Errorf("data on extra device %d: multi-device layers are not supported", e.Device)
		}
		n, err := l.ReadAt(dst, int64(e.Physical+(s-e.Logical)))
		if n < len(dst) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read %d bytes at %d: %w", len(dst), e.Physical+(s-e.Logical), err)
		}
	}
	return nil
}
