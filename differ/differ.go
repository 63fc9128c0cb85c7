// Package differ is the erofs-vm containerd differ.
//
// PLACEHOLDER owned by the differ work (issue 9): replace this file.
// Keep New and Config as the contract plugin/ registers against.
package differ

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Config is the differ's configuration.
type Config struct {
	// MaxLayerSize, when > 0, caps the uncompressed bytes of one layer.
	MaxLayerSize int64
}

// Differ implements diff.Applier and diff.Comparer for erofs-vm snapshots.
type Differ struct {
	store content.Store
	cfg   Config
}

// New returns a differ that reads and writes blobs in store.
func New(store content.Store, cfg Config) *Differ { return &Differ{store: store, cfg: cfg} }

// Apply is not implemented yet.
func (d *Differ) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, fmt.Errorf("erofs-vm differ: %w", errdefs.ErrNotImplemented)
}

// Compare is not implemented yet.
func (d *Differ) Compare(ctx context.Context, lower, upper []mount.Mount, opts ...diff.Opt) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, fmt.Errorf("erofs-vm differ: %w", errdefs.ErrNotImplemented)
}
