package plugin

import (
	"fmt"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/platforms"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// ID is the plugin ID of both the snapshotter and the differ. It is what
// operators write in `snapshotter = 'erofs-vm'`, `ctr --snapshotter` and
// the diff service's `default` list.
const ID = "erofs-vm"

// newSnapshotter is snapshotter.New; tests replace it to see what the plugin
// passes without needing a working snapshotter.
var newSnapshotter = snapshotter.New

func init() {
	registry.Register(&plugin.Registration{
		Type:   plugins.SnapshotPlugin,
		ID:     ID,
		Config: DefaultSnapshotterConfig(),
		InitFn: initSnapshotter,
	})
}

// initSnapshotter validates the config, checks the host and opens the
// snapshotter. A bad config is an init error naming the key; a host that
// cannot run it is a skip (see host.snapshotterSkip).
func initSnapshotter(ic *plugin.InitContext) (any, error) {
	c, ok := ic.Config.(*SnapshotterConfig)
	if !ok {
		return nil, fmt.Errorf("erofs-vm snapshotter: unexpected config type %T", ic.Config)
	}
	// Validate before the host check: a typo must be reported even on a
	// machine where the plugin would skip, or it surfaces only in production.
	root, cfg, err := c.Parse(ic.Properties[plugins.PropertyRootDir])
	if err != nil {
		return nil, fmt.Errorf("erofs-vm snapshotter config: %w", err)
	}
	if err := currentHost().snapshotterSkip(cfg); err != nil {
		return nil, err
	}

	ic.Meta.Platforms = append(ic.Meta.Platforms, platforms.DefaultSpec())
	// rebase: Commit accepts a parent (snapshots.WithParent), which lets the
	// unpacker apply layers in parallel when max_concurrent_unpacks > 1.
	ic.Meta.Capabilities = append(ic.Meta.Capabilities, snapshots.RebaseCap)
	ic.Meta.Exports[plugins.SnapshotterRootDir] = root

	sn, err := newSnapshotter(root, cfg)
	if err != nil {
		return nil, fmt.Errorf("erofs-vm snapshotter at %s: %w", root, err)
	}
	return sn, nil
}
