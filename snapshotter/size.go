package snapshotter

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// Bounds of a writable layer's size.
const (
	// DefaultWritableSize is used when Config.DefaultWritableSize is 0.
	DefaultWritableSize = 1 << 30
	// MinWritableSize: below a mebibyte an ext4 layer holds nothing a
	// container would write; such a value is a missing unit, not a wish.
	MinWritableSize = 1 << 20
	// MaxWritableSize is 8 TiB. The file is sparse, but the largest file
	// the usual host filesystem (ext4, 4 KiB blocks) can hold is 16 TiB
	// minus a block, and mkfs.ext4 already allocates ~110 MiB of metadata
	// at 8 TiB: a larger value is a typo.
	MaxWritableSize = 8 << 40
	// writableAlign is the ext4 block size we format with.
	writableAlign = 4096
)

// writableSize returns the size of the rwlayer.img of a new writable
// snapshot: the containerd.io/snapshot/max-size label (decimal bytes) or the
// configured default, rounded up to whole 4 KiB blocks. A malformed or out
// of range label is ErrInvalidArgument naming the key and the label.
func (s *Snapshotter) writableSize(key string, labels map[string]string) (int64, error) {
	v, ok := labels[snapshots.LabelSnapshotMaxSize]
	if !ok {
		return alignWritable(s.cfg.DefaultWritableSize), nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("snapshot %q: label %s=%q: not a decimal byte count: %w", key, snapshots.LabelSnapshotMaxSize, v, errdefs.ErrInvalidArgument)
	}
	if err := checkWritableSize(n); err != nil {
		return 0, fmt.Errorf("snapshot %q: label %s=%q: %w", key, snapshots.LabelSnapshotMaxSize, v, err)
	}
	return alignWritable(n), nil
}

// checkWritableSize rejects sizes outside [MinWritableSize, MaxWritableSize].
func checkWritableSize(n int64) error {
	if n < MinWritableSize {
		return fmt.Errorf("%d bytes is below the minimum of %d (1 MiB): %w", n, MinWritableSize, errdefs.ErrInvalidArgument)
	}
	if n > MaxWritableSize {
		return fmt.Errorf("%d bytes is above the maximum of %d (8 TiB): %w", n, int64(MaxWritableSize), errdefs.ErrInvalidArgument)
	}
	return nil
}

func alignWritable(n int64) int64 {
	return (n + writableAlign - 1) / writableAlign * writableAlign
}
