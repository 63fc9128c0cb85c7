package erofs

import "fmt"

// ConvertOptions tunes a conversion. The zero value is the default.
type ConvertOptions struct {
	// MaxImageSize, when > 0, fails the conversion once the image would
	// exceed this many bytes (a defence against decompression bombs).
	MaxImageSize int64

	// StartWriteback asks the kernel to start writing each data buffer
	// to disk as soon as it is in the page cache (sync_file_range
	// SYNC_FILE_RANGE_WRITE), without waiting for it. A caller that
	// fsyncs the image afterwards then waits only for the last few MiB
	// and the metadata instead of the whole image: for a 121 MB layer
	// that fsync went from ~65 ms to a few ms. It does not make anything
	// durable by itself. Ignored when the file system does not support it.
	StartWriteback bool
}

// ConvertStats reports what a conversion produced.
type ConvertStats struct {
	Entries    int64 // tar entries or directory entries read
	Inodes     int64 // inodes written
	ImageBytes int64 // size of the image
	DataBytes  int64 // bytes of regular file data written
	// Skipped says what was left out, and why: sockets (ConvertDir),
	// xattrs no Linux file system stores (ConvertTar). It holds the first
	// maxSkipped; SkippedCount counts them all (a macOS-built layer can
	// carry one such xattr per file).
	Skipped      []string
	SkippedCount int64
}

// maxSkipped bounds ConvertStats.Skipped, so memory stays independent of
// how many entries a layer has.
const maxSkipped = 100

// skip records one thing left out, formatting its description only while
// there is room for it.
func (s *ConvertStats) skip(format string, args ...any) {
	s.SkippedCount++
	if len(s.Skipped) < maxSkipped {
		s.Skipped = append(s.Skipped, fmt.Sprintf(format, args...))
	}
}
