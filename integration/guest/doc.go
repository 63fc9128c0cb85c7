// Package guest boots the test micro-VM (docs/design.md §9) and turns a
// snapshotter's mounts into the disks and guest-side mounts a VM runtime
// would make of them (docs/design.md §4). It is test infrastructure shared by
// every package that wants the guest kernel to judge its output: the kernel
// in the guest, not our own reader, decides whether an EROFS image, a flat
// multi-device VMDK or an ext4 writable layer really works.
//
// The guest is Debian's 6.12 cloud kernel plus a busybox initramfs, built by
// hack/build-guest.sh into _output/guest/. Boot appends a second cpio
// archive holding the caller's script as /test.sh, runs qemu under TCG with
// the disks attached as virtio-blk, and returns what the script printed
// between the markers hack/guest/init writes. qemu always runs with
// -accel tcg -cpu max,-cx16 and under a timeout that kills its process
// group: KVM fails on this machine kind and QEMU 7.2's cmpxchg16b emulation
// crashes the 6.12 guest (docs/design.md §9).
//
// Nothing here mounts anything on the host.
package guest
