// Package builtins is imported for its side effects: it registers every
// plugin containerd itself builds in (CRI included, exactly the set of
// cmd/containerd/builtins at the go.mod version) plus the erofs-vm
// snapshotter and differ. A binary that imports it and runs containerd's
// command.App() is containerd with erofs-vm added, nothing removed.
package builtins

import (
	// Every stock containerd plugin: content, metadata, overlayfs, walking,
	// containerd's own erofs snapshotter/differ/mount handler, CRI, ...
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"

	// The erofs-vm snapshotter and differ.
	_ "github.com/erofs-vm/containerd-erofs/plugin"
)
