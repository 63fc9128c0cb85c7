package plugin

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/docker/go-units"

	"github.com/erofs-vm/containerd-erofs/differ"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// SnapshotterConfig is the TOML table
// [plugins.'io.containerd.snapshotter.v1.erofs-vm'] (docs/design.md §2).
//
// Sizes are strings so operators write '1GiB' rather than a byte count; they
// are parsed with binary units (k = 1024), as docker/go-units RAMInBytes does.
type SnapshotterConfig struct {
	// RootPath is where snapshots live. Empty means the plugin's root under
	// containerd's root: <root>/io.containerd.snapshotter.v1.erofs-vm.
	RootPath string `toml:"root_path"`
	// DefaultWritableSize is the size of rwlayer.img of a writable snapshot
	// that carries no containerd.io/snapshot/max-size label, e.g. '1GiB'.
	DefaultWritableSize string `toml:"default_writable_size"`
	// CommitMode is 'block' (ext4 rwlayer.img) or 'overlay' (rw/upper, rw/work).
	CommitMode string `toml:"commit_mode"`
	// SetImmutable sets FS_IMMUTABLE_FL (chattr +i) on committed layer files.
	SetImmutable bool `toml:"set_immutable"`
}

// DifferConfig is the TOML table [plugins.'io.containerd.differ.v1.erofs-vm'].
type DifferConfig struct {
	// MaxLayerSize caps the uncompressed size of one applied layer, e.g.
	// '20GiB'. Empty or '0' means no cap.
	MaxLayerSize string `toml:"max_layer_size"`
}

// DefaultSnapshotterConfig returns the snapshotter's defaults: what
// `containerd-erofs config default` prints and what a config file that
// omits a key gets.
func DefaultSnapshotterConfig() *SnapshotterConfig {
	return &SnapshotterConfig{
		DefaultWritableSize: "1GiB",
		CommitMode:          string(snapshotter.CommitModeBlock),
		SetImmutable:        true,
	}
}

// DefaultDifferConfig returns the differ's defaults: no layer size cap.
func DefaultDifferConfig() *DifferConfig {
	return &DifferConfig{}
}

// Parse validates c and returns the snapshotter's root and its Config.
// defaultRoot is used when root_path is empty. Every error names the TOML
// key and the value it rejected.
func (c *SnapshotterConfig) Parse(defaultRoot string) (string, snapshotter.Config, error) {
	var cfg snapshotter.Config

	root := c.RootPath
	if root == "" {
		root = defaultRoot
	}
	if root == "" {
		return "", cfg, fmt.Errorf("root_path: empty and containerd passed no plugin root")
	}
	// A relative root would depend on the daemon's working directory, which
	// systemd and a shell set differently: the same config would put
	// snapshots in two places.
	if !filepath.IsAbs(root) {
		return "", cfg, fmt.Errorf("root_path %q: must be an absolute path", c.RootPath)
	}

	size, err := parseSize(c.DefaultWritableSize)
	if err != nil {
		return "", cfg, fmt.Errorf("default_writable_size %q: %w", c.DefaultWritableSize, err)
	}
	// The snapshotter's own bounds (it checks max-size labels against them
	// too), checked here so the error names the config key.
	if size < snapshotter.MinWritableSize {
		return "", cfg, fmt.Errorf("default_writable_size %q: %d bytes is below the minimum of 1MiB (missing unit? write e.g. '1GiB')", c.DefaultWritableSize, size)
	}
	if size > snapshotter.MaxWritableSize {
		return "", cfg, fmt.Errorf("default_writable_size %q: %d bytes is above the maximum of 8TiB", c.DefaultWritableSize, size)
	}

	mode := snapshotter.CommitMode(c.CommitMode)
	switch mode {
	case snapshotter.CommitModeBlock, snapshotter.CommitModeOverlay:
	default:
		return "", cfg, fmt.Errorf("commit_mode %q: must be %q or %q", c.CommitMode, snapshotter.CommitModeBlock, snapshotter.CommitModeOverlay)
	}

	cfg.DefaultWritableSize = size
	cfg.CommitMode = mode
	cfg.SetImmutable = c.SetImmutable
	return filepath.Clean(root), cfg, nil
}

// Parse validates c and returns the differ's Config. Every error names the
// TOML key and the value it rejected.
func (c *DifferConfig) Parse() (differ.Config, error) {
	var cfg differ.Config
	if strings.TrimSpace(c.MaxLayerSize) == "" {
		return cfg, nil
	}
	size, err := parseSize(c.MaxLayerSize)
	if err != nil {
		return cfg, fmt.Errorf("max_layer_size %q: %w", c.MaxLayerSize, err)
	}
	cfg.MaxLayerSize = size
	return cfg, nil
}

// parseSize reads a human size with binary units: "1GiB", "1g", "512MiB",
// "1.5G", "1073741824". go-units accepts a few spellings we do not want in a
// config (an empty string, values past int64); those are rejected here with a
// message that says what is wrong.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size (write e.g. '1GiB')")
	}
	n, err := units.RAMInBytes(t)
	if err != nil {
		return 0, fmt.Errorf("not a size (write e.g. '1GiB', '512MiB'): %w", err)
	}
	// go-units rejects a negative number but converts an overflowing
	// float to int64 unchecked, which comes out negative.
	if n < 0 {
		return 0, fmt.Errorf("size out of range")
	}
	return n, nil
}
