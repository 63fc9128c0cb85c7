// Package plugin registers the erofs-vm snapshotter and differ with
// containerd's plugin registry and owns their TOML configuration.
//
// Importing it for its side effects (the builtins package does) adds two
// plugins to a containerd build:
//
//	io.containerd.snapshotter.v1.erofs-vm   (snapshotter.New)
//	io.containerd.differ.v1.erofs-vm        (differ.New, on the metadata DB's content store)
//
// The ID is never "erofs": containerd 2.4's own builtins already register an
// erofs snapshotter, differ and mount handler, and a duplicate ID panics at
// init (docs/design.md §2).
//
// This package only parses and validates configuration, decides whether the
// host can run the plugins at all, and wires them to containerd. It holds no
// snapshot or layer logic of its own.
package plugin
