package integration

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ArchiveLayer is one layer of the image WriteImageArchive writes.
type ArchiveLayer struct {
	Blob      []byte // the blob as stored: compressed or not, as MediaType says
	MediaType string
	// DiffID goes into the config's rootfs. It need not match the blob:
	// tests of bad input rely on that.
	DiffID digest.Digest
}

// WriteImageArchive writes an OCI image layout archive (what `ctr images
// import` reads) of one linux/amd64 image named name with the given
// layers, oldest first. Blobs are written in digest order, so the same
// layers give the same bytes.
func WriteImageArchive(path, name string, layers []ArchiveLayer) error {
	blobs := map[digest.Digest][]byte{}
	put := func(b []byte, mediaType string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		blobs[d] = b
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	plat := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	cfg := ocispec.Image{Platform: plat, RootFS: ocispec.RootFS{Type: "layers"}}
	mf := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
	mf.SchemaVersion = 2
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		mf.Layers = append(mf.Layers, put(l.Blob, l.MediaType))
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	mf.Config = put(cb, ocispec.MediaTypeImageConfig)
	mb, err := json.Marshal(mf)
	if err != nil {
		return err
	}
	md := put(mb, ocispec.MediaTypeImageManifest)
	md.Platform = &plat
	md.Annotations = map[string]string{images.AnnotationImageName: name, ocispec.AnnotationRefName: "latest"}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	idx.SchemaVersion = 2
	ib, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	add := func(n string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	err = errors.Join(add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)), add("index.json", ib))
	for _, d := range slices.Sorted(maps.Keys(blobs)) {
		err = errors.Join(err, add(fmt.Sprintf("blobs/%s/%s", d.Algorithm(), d.Encoded()), blobs[d]))
	}
	return errors.Join(err, tw.Close(), f.Close())
}
