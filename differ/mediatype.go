package differ

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// checkLayerMediaType accepts the layer media types containerd can unpack
// without a stream processor: OCI and Docker layers, uncompressed, gzip or
// zstd (DecompressStream detects which from the magic bytes, as containerd
// does). Encrypted layers need imgcrypt's stream processors and decrypted
// keys we never see: they are refused with a clear error.
//
// The error deliberately does not wrap ErrNotImplemented: the mounts are
// ours, and letting the diff service fall through to walking would extract
// files into the snapshot dir instead of producing a layer.erofs.
func checkLayerMediaType(ctx context.Context, mediaType string) error {
	if _, suffixes, ok := strings.Cut(mediaType, "+"); ok {
		for s := range strings.SplitSeq(suffixes, "+") {
			if s == "encrypted" {
				return fmt.Errorf("encrypted layer media type %q is not supported by erofs-vm (decrypt the image first): %w", mediaType, errdefs.ErrInvalidArgument)
			}
		}
	}
	if _, err := images.DiffCompression(ctx, mediaType); err != nil {
		return fmt.Errorf("layer media type %q is not supported by erofs-vm: %w", mediaType, errdefs.ErrInvalidArgument)
	}
	return nil
}

// compressionFor maps the media type asked of Compare to how the tar must be
// compressed. The empty media type means gzip, as for the walking differ.
func compressionFor(mediaType string) (string, error) {
	switch mediaType {
	case "", ocispec.MediaTypeImageLayerGzip, images.MediaTypeDockerSchema2LayerGzip:
		return "gzip", nil
	case ocispec.MediaTypeImageLayerZstd, images.MediaTypeDockerSchema2LayerZstd:
		return "zstd", nil
	case ocispec.MediaTypeImageLayer, images.MediaTypeDockerSchema2Layer:
		return "", nil
	}
	return "", fmt.Errorf("unsupported diff media type %q: %w", mediaType, errdefs.ErrNotImplemented)
}
