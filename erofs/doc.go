// Package erofs reads and writes EROFS images (uncompressed, 4 KiB blocks):
// a streaming tar→EROFS converter, an image reader, and the fsmeta builder
// that merges layer images into one multi-device image.
//
// It knows nothing of containerd: it deals in tar streams, files and images.
package erofs
