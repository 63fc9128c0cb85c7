package plugin

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"github.com/containerd/plugin"

	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// host is what the plugins need to know about the machine to decide whether
// they can run on it. It is a value so tests can describe other machines.
type host struct {
	goos     string
	euid     int
	lookPath func(file string) (string, error)
}

// currentHost describes the machine the daemon runs on. It is a variable so
// tests can make InitFn see another machine.
var currentHost = func() host {
	return host{goos: runtime.GOOS, euid: os.Geteuid(), lookPath: exec.LookPath}
}

// snapshotterSkip returns nil when the snapshotter can run here with cfg, or
// an error wrapping plugin.ErrSkipPlugin that says what is missing.
//
// Skipping rather than failing matters: containerd's metadata plugin loads
// every snapshotter, and one that fails (rather than skips) fails the
// metadata plugin and with it every service of the daemon (docs/design.md §2).
// So only what the snapshotter truly cannot do without is checked here:
//
//   - Linux: the snapshotter sets FS_IMMUTABLE_FL with a Linux ioctl and
//     reads an ext4 upper back at commit (docs/design.md §8); its mounts are for
//     a Linux guest.
//   - root: FS_IMMUTABLE_FL needs CAP_LINUX_IMMUTABLE (and lifting it on
//     Remove too); a container's upper holds files of any owner, which only
//     root can delete (overlay mode) or loop-mount to read (block mode).
//     Rootless containerd is not supported.
//   - mkfs.ext4 in block mode: every writable snapshot is an ext4 image
//     made by it. Overlay mode never calls it.
//
// Not checked, on purpose:
//   - EROFS in the host kernel. Our layers are written and read in process
//     and mounted only inside the guest VM (no host mount, ever:
//     docs/design.md §14), so a host without the erofs module runs the
//     snapshotter fine.
//   - loop devices and ext4 on the host. Block mode needs them only to
//     commit a container's writable layer into a new layer (it loop-mounts
//     rwlayer.img read-only); unpacking images and running containers work
//     without, so that one operation reports its own error instead of the
//     whole snapshotter going missing.
func (h host) snapshotterSkip(cfg snapshotter.Config) error {
	if h.goos != "linux" {
		return fmt.Errorf("erofs-vm snapshotter needs Linux, this is %s: %w", h.goos, plugin.ErrSkipPlugin)
	}
	if h.euid != 0 {
		return fmt.Errorf("erofs-vm snapshotter needs root (running as uid %d): %w", h.euid, plugin.ErrSkipPlugin)
	}
	if cfg.CommitMode == snapshotter.CommitModeBlock {
		if _, err := h.lookPath("mkfs.ext4"); err != nil {
			return fmt.Errorf("erofs-vm snapshotter: commit_mode 'block' needs mkfs.ext4 on PATH (install e2fsprogs, or set commit_mode = 'overlay'): %v: %w", err, plugin.ErrSkipPlugin)
		}
	}
	return nil
}

// differSkip returns nil when the differ can run here, or an error wrapping
// plugin.ErrSkipPlugin.
//
// The differ only needs Linux: it converts layers in process and hands any
// mount that is not an erofs-vm snapshot back to the diff service as not
// implemented. It does not skip when not root or when the snapshotter
// skips: with diff-service default = ['erofs-vm', 'walking'] a missing
// erofs-vm differ fails the diff service ("needed differ not loaded"),
// while a present one that sees no erofs-vm mounts costs nothing.
func (h host) differSkip() error {
	if h.goos != "linux" {
		return fmt.Errorf("erofs-vm differ needs Linux, this is %s: %w", h.goos, plugin.ErrSkipPlugin)
	}
	return nil
}
