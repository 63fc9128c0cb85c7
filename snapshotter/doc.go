// Package snapshotter is the erofs-vm containerd snapshotter: a
// snapshots.Snapshotter whose mounts a micro-VM runtime attaches as disks
// (docs/design.md §2–§5).
//
// Every committed snapshot is one uncompressed EROFS image, layer.erofs.
// The first Prepare or View that takes a committed snapshot with parents as
// its parent also writes, before it returns, that snapshot's fsmeta.erofs
// (the merged metadata of the whole stack), layers.manifest and
// merged.vmdk (a flat VMDK over fsmeta.erofs and every layer, oldest
// first). So the mounts of anything built on it have their final shape
// from the start, a committed snapshot's mount shape never changes under a
// running container, and an unpack (whose extract snapshots get bind
// mounts) builds no merged disk at all.
//
// What it never does: mount anything on the host to hand it out (the only
// host mount is the short read-only loop mount of an ext4 writable layer
// while it is converted at Commit, under the commit gate of
// internal/commitgate), return an `overlay` mount (the guest builds the
// overlay), or run long work inside the bolt write transaction
// (conversion, fsmeta, VMDK and mkfs.ext4 run before or outside it, in the
// snapshot's own directory).
//
// Files: snapshotter.go (New, Config, paths), labels.go (§5 label names),
// create.go (Prepare, View, Mounts), mounts.go (the §4 shapes), commit.go,
// layer.go (layer validation, conversion of an upper), fsmeta.go (the merged
// disk, built at first use), remove.go (Remove, Cleanup, recovery at startup), info.go (Stat,
// Update, Walk, Usage), rwlayer.go and ext4uuid.go (the ext4 writable
// layer), size.go, immutable.go, locks.go, hooks.go (crash-test hook).
package snapshotter
