package plugin

import (
	"fmt"

	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/erofs-vm/containerd-erofs/differ"
)

// newDiffer is differ.New; a variable for the same reason as newSnapshotter.
var newDiffer = differ.New

func init() {
	registry.Register(&plugin.Registration{
		Type: plugins.DiffPlugin,
		ID:   ID,
		// The differ reads layer blobs from and writes diffs to the content
		// store behind the metadata DB, so blobs stay namespaced and leased
		// like every other differ's (walking does the same).
		Requires: []plugin.Type{plugins.MetadataPlugin},
		Config:   DefaultDifferConfig(),
		InitFn:   initDiffer,
	})
}

// initDiffer validates the config and builds the differ on the metadata
// DB's content store.
//
// It sets no ic.Meta.Platforms on purpose: the transfer service picks a
// differ by platform for every unpack_config entry that names none, and the
// erofs-vm differ must never be picked for another snapshotter's mounts (it
// answers them with ErrNotImplemented, which the diff service falls through
// but the unpacker does not). Operators name it: differ = 'erofs-vm'.
func initDiffer(ic *plugin.InitContext) (any, error) {
	c, ok := ic.Config.(*DifferConfig)
	if !ok {
		return nil, fmt.Errorf("erofs-vm differ: unexpected config type %T", ic.Config)
	}
	cfg, err := c.Parse()
	if err != nil {
		return nil, fmt.Errorf("erofs-vm differ config: %w", err)
	}
	if err := currentHost().differSkip(); err != nil {
		return nil, err
	}
	md, err := ic.GetSingle(plugins.MetadataPlugin)
	if err != nil {
		return nil, err
	}
	db, ok := md.(*metadata.DB)
	if !ok {
		return nil, fmt.Errorf("erofs-vm differ: metadata plugin is %T, want *metadata.DB", md)
	}
	return newDiffer(db.ContentStore(), cfg), nil
}
