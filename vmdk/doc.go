// Package vmdk writes and parses plain-text VMDK descriptors of type
// twoGbMaxExtentFlat: a small text file that presents several ordinary files,
// concatenated, as one virtual disk (docs/design.md §7). The snapshotter uses it
// to hand a micro-VM one virtio-blk disk holding fsmeta.erofs followed by
// every layer.erofs; qemu's vmdk driver reads the extents in place, so no
// byte of a layer is ever copied.
//
// The package knows nothing of EROFS: it maps files to extents. It never
// opens the files it describes except to stat them in FilesFromPaths.
//
// Rules the writer enforces, and why (facts from qemu's block/vmdk.c, checked
// with qemu-img 7.2 on this machine kind):
//
//   - Every file size must be a positive multiple of 512 bytes. A descriptor
//     counts sectors; qemu zero-fills reads past the end of a FLAT extent's
//     file instead of failing, so rounding a size up would silently describe
//     bytes that do not exist (and a writable extent would grow the file).
//     Callers pad their files (EROFS images are whole 4 KiB blocks anyway).
//     A zero-length file is an error too: qemu skips extents of 0 sectors.
//   - A file larger than 2 GiB becomes several extent lines of at most
//     MaxExtentSectors each, with increasing sector offsets into the same
//     file, as the twoGbMaxExtentFlat create type promises.
//   - Paths must be absolute and clean: extents of a merged snapshot live in
//     other snapshot directories, and qemu resolves relative paths against
//     the descriptor's own directory. A path is written between double quotes
//     with no escaping, because the format has none: qemu scans it with
//     %511[^\n\r"], so a path containing '"', CR, LF (we refuse every control
//     character and invalid UTF-8 too) or longer than 511 bytes cannot be
//     expressed, and such a line would be silently skipped by qemu. Those are
//     errors. So is a path containing "parentFileNameHint": qemu looks that
//     key up with strstr over the whole descriptor and would take the path
//     for a backing file.
//   - The whole descriptor must fit in MaxDescriptorSize bytes: qemu reads
//     at most 1 MiB - 1 of it and would ignore extents beyond.
//   - CID is derived from the extent lines (CRC-32), so the same files give
//     the same bytes; parentCID is ffffffff (no parent), which qemu requires
//     to be present.
package vmdk
