package differ

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// extractDir returns the snapshot dir behind the mounts of an erofs-vm
// extract snapshot: exactly one bind mount of a dir that holds the
// .erofslayer marker (docs/design.md §4). Any other shape is not ours and yields an
// error wrapping errdefs.ErrNotImplemented, which makes containerd's diff
// service try the next differ.
func extractDir(mounts []mount.Mount) (string, error) {
	if len(mounts) != 1 {
		return "", fmt.Errorf("erofs-vm differ: %d mounts are not an erofs-vm extract snapshot: %w", len(mounts), errdefs.ErrNotImplemented)
	}
	m := mounts[0]
	if m.Type != "bind" && m.Type != "rbind" {
		return "", fmt.Errorf("erofs-vm differ: mount type %q is not an erofs-vm extract snapshot: %w", m.Type, errdefs.ErrNotImplemented)
	}
	if !filepath.IsAbs(m.Source) {
		return "", fmt.Errorf("erofs-vm differ: bind source %q is not absolute: %w", m.Source, errdefs.ErrNotImplemented)
	}
	fi, err := os.Lstat(filepath.Join(m.Source, layout.MarkerFile))
	if err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("erofs-vm differ: %s has no %s marker: %w", m.Source, layout.MarkerFile, errdefs.ErrNotImplemented)
	}
	for _, o := range m.Options {
		if o == "ro" {
			// The snapshotter never hands out a read-only extract dir; if
			// one shows up the layer is already there (containerd's
			// unpacker skips Apply for such mounts).
			return "", fmt.Errorf("erofs-vm differ: extract dir %s is mounted read-only: %w", m.Source, errdefs.ErrFailedPrecondition)
		}
	}
	return filepath.Clean(m.Source), nil
}
