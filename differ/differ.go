package differ

import (
	"context"
	"io"
	"os"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// Config is the differ's configuration.
type Config struct {
	// MaxLayerSize, when > 0, caps the uncompressed bytes of one layer and
	// the size of the EROFS image made from it (a decompression bomb stops
	// there instead of filling the disk).
	MaxLayerSize int64
}

// convertFunc is the shape of erofs.ConvertTar; tests swap it.
type convertFunc func(ctx context.Context, dst *os.File, src io.Reader, opts erofs.ConvertOptions) (*erofs.ConvertStats, error)

// Differ implements diff.Applier and diff.Comparer for erofs-vm snapshots.
// It holds no mutable state, so any number of Apply and Compare calls may
// run at once (containerd's parallel unpack does that).
type Differ struct {
	store   content.Store
	cfg     Config
	convert convertFunc
}

var (
	_ diff.Applier  = (*Differ)(nil)
	_ diff.Comparer = (*Differ)(nil)
)

// New returns a differ that reads and writes blobs in store.
func New(store content.Store, cfg Config) *Differ {
	return &Differ{store: store, cfg: cfg, convert: erofs.ConvertTar}
}
