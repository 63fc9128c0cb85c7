package erofs

// PLACEHOLDER owned by the writer work (issue 4): replace this file with the
// real converter in writer.go & co. The signatures below are the contract the
// differ and snapshotter code against; keep them (extend ConvertOptions freely).

import (
	"context"
	"errors"
	"io"
	"os"
)

// ConvertOptions tunes a conversion. The zero value is the default.
type ConvertOptions struct {
	// MaxImageSize, when > 0, fails the conversion once the image would
	// exceed this many bytes (a defence against decompression bombs).
	MaxImageSize int64
}

// ConvertStats reports what a conversion produced.
type ConvertStats struct {
	Entries    int64 // tar entries or directory entries read
	Inodes     int64 // inodes written
	ImageBytes int64 // size of the image
}

// ConvertTar reads an uncompressed OCI layer tar from src and writes an EROFS
// image to dst from offset 0, truncating dst to the image size. OCI whiteouts
// become overlayfs whiteouts. It never seeks src.
func ConvertTar(ctx context.Context, dst *os.File, src io.Reader, opts ConvertOptions) (*ConvertStats, error) {
	return nil, errors.New("erofs: ConvertTar not implemented yet")
}

// ConvertDir converts a directory tree already in overlayfs upper form
// (whiteouts are 0:0 char devices, opaque dirs carry trusted.overlay.opaque)
// into an EROFS image written to dst.
func ConvertDir(ctx context.Context, dst *os.File, dir string, opts ConvertOptions) (*ConvertStats, error) {
	return nil, errors.New("erofs: ConvertDir not implemented yet")
}
