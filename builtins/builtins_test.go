package builtins

import (
	"testing"

	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
)

// TestRegistered checks that the erofs-vm plugins and containerd's own
// builtins are all registered side by side. Registering a duplicate
// type+ID panics at init, so this test binary starting at all proves ours
// do not collide with containerd's erofs snapshotter and differ.
func TestRegistered(t *testing.T) {
	got := map[string]bool{}
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		got[r.URI()] = true
	}
	for _, uri := range []string{
		"io.containerd.snapshotter.v1.erofs-vm",
		"io.containerd.differ.v1.erofs-vm",
		// containerd's own, which the erofs-vm ID must not shadow
		"io.containerd.snapshotter.v1.erofs",
		"io.containerd.differ.v1.erofs",
		// what the example config relies on
		"io.containerd.snapshotter.v1.overlayfs",
		"io.containerd.differ.v1.walking",
		"io.containerd.service.v1.diff-service",
		"io.containerd.transfer.v1.local",
		"io.containerd.metadata.v1.bolt",
		// CRI is part of the build
		"io.containerd.grpc.v1.cri",
	} {
		if !got[uri] {
			t.Errorf("%s is not registered", uri)
		}
	}
}
