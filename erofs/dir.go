package erofs

import (
	"context"
	"errors"
	"os"
)

// ConvertDir converts a directory tree already in overlayfs upper form
// (whiteouts are 0:0 char devices, opaque dirs carry trusted.overlay.opaque)
// into an EROFS image written to dst.
func ConvertDir(ctx context.Context, dst *os.File, dir string, opts ConvertOptions) (*ConvertStats, error) {
	return nil, errors.New("erofs: ConvertDir not implemented yet")
}
