package erofs

import (
	"context"
	"errors"
	"io"
	"os"
)

// ConvertTar reads an uncompressed OCI layer tar from src and writes an EROFS
// image to dst from offset 0, truncating dst to the image size. OCI whiteouts
// become overlayfs whiteouts. It never seeks src.
func ConvertTar(ctx context.Context, dst *os.File, src io.Reader, opts ConvertOptions) (*ConvertStats, error) {
	return nil, errors.New("erofs: ConvertTar not implemented yet")
}
