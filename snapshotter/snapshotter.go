// Package snapshotter is the erofs-vm containerd snapshotter.
//
// PLACEHOLDER owned by the snapshotter work (issue 6): replace this file.
// Keep New and Config as the contract plugin/ registers against.
package snapshotter

import (
	"errors"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// CommitMode says how writable snapshots keep their upper layer.
type CommitMode string

const (
	// CommitModeBlock keeps the upper in an ext4 image, rwlayer.img.
	CommitModeBlock CommitMode = "block"
	// CommitModeOverlay keeps the upper in rw/upper and rw/work.
	CommitModeOverlay CommitMode = "overlay"
)

// Config is the snapshotter's configuration, already parsed and validated.
type Config struct {
	DefaultWritableSize int64 // bytes of a new rwlayer.img when no max-size label
	CommitMode          CommitMode
	SetImmutable        bool // chattr +i on committed layer files
}

// New opens (creating if needed) a snapshotter rooted at root.
func New(root string, cfg Config) (snapshots.Snapshotter, error) {
	return nil, errors.New("erofs-vm snapshotter: not implemented yet")
}
