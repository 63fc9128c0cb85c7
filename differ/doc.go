// Package differ is the erofs-vm containerd differ: a diff.Applier that
// turns an OCI layer blob straight into the layer.erofs of an erofs-vm
// extract snapshot, and a diff.Comparer that turns the writable upper of an
// erofs-vm snapshot back into an OCI layer tar.
//
// Apply streams the blob from the content store through decompression, a
// digester (the diff ID is verified before anything becomes visible) and
// the tar→EROFS converter of package erofs into a temp file that is renamed
// into place only on success. It never extracts files on the host.
//
// Compare reads the committed lower stack in process with the EROFS reader
// and the upper (an overlayfs upper dir: char 0:0 whiteouts, opaque xattrs)
// from the ext4 rwlayer mounted read-only, or from rw/upper in overlay mode.
//
// Mounts that are not erofs-vm's are answered with errdefs.ErrNotImplemented
// so containerd's diff service falls through to the next differ (walking).
package differ
