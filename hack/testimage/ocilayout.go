package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// annotationImageName is containerd's images.AnnotationImageName. ctr images
// import (transfer service, containerd 2.4) names the image after it, as is,
// when it is a full reference; org.opencontainers.image.ref.name only
// carries the tag and would get an "import-<date>" prefix.
const annotationImageName = "io.containerd.image.name"

// archiveEpoch is the mtime of every entry of the archive itself: the
// archive's bytes depend on its content only.
var archiveEpoch = time.Unix(0, 0).UTC()

// imageSpec is what an OCI layout archive is made of.
type imageSpec struct {
	name        string // full reference, e.g. docker.io/library/erofs-test:3layer
	compression string // "gzip" or "zstd"
	created     time.Time
	layers      []string // uncompressed layer tars, base first
	history     []string // created_by of each layer
	tmpDir      string   // where compressed blobs are staged
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func ociCmd(args []string) error {
	fl := flag.NewFlagSet("oci", flag.ContinueOnError)
	out := fl.String("o", "", "output archive `path`")
	name := fl.String("name", "", "image reference (io.containerd.image.name)")
	comp := fl.String("compression", "gzip", "layer compression: gzip or zstd")
	created := fl.String("created", "2025-05-20T00:00:00Z", "creation time (RFC 3339) for config and history")
	var layers, history stringList
	fl.Var(&layers, "layer", "uncompressed layer tar, base first (repeat)")
	fl.Var(&history, "history", "created_by text of the matching -layer (repeat)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" || *name == "" || len(layers) == 0 || fl.NArg() != 0 {
		return errors.New("need -o, -name and at least one -layer")
	}
	if len(history) != len(layers) {
		return fmt.Errorf("%d -layer but %d -history", len(layers), len(history))
	}
	ts, err := time.Parse(time.RFC3339, *created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	spec := imageSpec{
		name: *name, compression: *comp, created: ts.UTC(),
		layers: layers, history: history, tmpDir: filepath.Dir(*out),
	}
	return writeFileAtomic(*out, func(w io.Writer) error { return writeImageArchive(w, spec) })
}

// blob is one content-addressed file of the layout, staged on disk.
type blob struct {
	desc ocispec.Descriptor
	path string // staged file; "" when data holds it
	data []byte
}

// writeImageArchive writes an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) as a tar stream. Layers are compressed to temp files
// first because a tar header needs the size before the data; the temp files
// are removed whatever happens.
func writeImageArchive(w io.Writer, spec imageSpec) error {
	layerType, err := layerMediaType(spec.compression)
	if err != nil {
		return err
	}
	var blobs []blob
	defer func() {
		for _, b := range blobs {
			if b.path != "" {
				os.Remove(b.path)
			}
		}
	}()

	cfg := ocispec.Image{
		Created:  &spec.created,
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config: ocispec.ImageConfig{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"/bin/bash"},
		},
		RootFS: ocispec.RootFS{Type: "layers"},
	}
	mf := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
	}
	for i, l := range spec.layers {
		b, diffID, err := compressLayer(l, spec.compression, spec.tmpDir)
		if err != nil {
			return err
		}
		b.desc.MediaType = layerType
		blobs = append(blobs, b)
		mf.Layers = append(mf.Layers, b.desc)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		cfg.History = append(cfg.History, ocispec.History{Created: &spec.created, CreatedBy: spec.history[i]})
	}
	cfgBlob, err := jsonBlob(ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		return err
	}
	mf.Config = cfgBlob.desc
	mfBlob, err := jsonBlob(ocispec.MediaTypeImageManifest, mf)
	if err != nil {
		return err
	}
	blobs = append(blobs, cfgBlob, mfBlob)

	mfDesc := mfBlob.desc
	mfDesc.Platform = &ocispec.Platform{Architecture: "amd64", OS: "linux"}
	mfDesc.Annotations = map[string]string{
		annotationImageName:       spec.name,
		ocispec.AnnotationRefName: refTag(spec.name),
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{mfDesc},
	})
	if err != nil {
		return err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: archiveEpoch}); err != nil {
			return err
		}
	}
	// Same digest twice (two identical layers) is one file in the layout.
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].desc.Digest < blobs[j].desc.Digest })
	for i, b := range blobs {
		if i > 0 && blobs[i-1].desc.Digest == b.desc.Digest {
			continue
		}
		if err := writeBlob(tw, b); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{ocispec.ImageIndexFile, index}, {ocispec.ImageLayoutFile, layout}} {
		if err := writeTarFile(tw, f.name, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func layerMediaType(compression string) (string, error) {
	switch compression {
	case "gzip":
		return ocispec.MediaTypeImageLayerGzip, nil
	case "zstd":
		return ocispec.MediaTypeImageLayerZstd, nil
	}
	return "", fmt.Errorf("unknown compression %q (gzip or zstd)", compression)
}

// refTag is the tag of a reference ("3layer" of "x/y:3layer"), the short
// form image-spec recommends for org.opencontainers.image.ref.name.
func refTag(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return "latest"
}

// compressLayer compresses the tar at path into a temp file in dir and
// returns it as a blob along with the layer's diff ID, both digests taken in
// the same single read.
func compressLayer(path, compression, dir string) (b blob, diffID digest.Digest, err error) {
	in, err := os.Open(path)
	if err != nil {
		return blob{}, "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, ".blob-*")
	if err != nil {
		return blob{}, "", err
	}
	defer func() {
		out.Close()
		if err != nil {
			os.Remove(out.Name())
		}
	}()
	blobHash := sha256.New()
	counted := &countWriter{w: io.MultiWriter(out, blobHash)}
	var zw io.WriteCloser
	switch compression {
	case "gzip":
		// Fixed level, no name, zero mtime: deterministic output.
		zw, err = gzip.NewWriterLevel(counted, gzip.DefaultCompression)
	case "zstd":
		// One goroutine: the frame layout then depends on the input only.
		zw, err = zstd.NewWriter(counted, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	default:
		err = fmt.Errorf("unknown compression %q", compression)
	}
	if err != nil {
		return blob{}, "", err
	}
	diffHash := sha256.New()
	if _, err := io.Copy(io.MultiWriter(zw, diffHash), in); err != nil {
		return blob{}, "", fmt.Errorf("compress %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return blob{}, "", fmt.Errorf("compress %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		return blob{}, "", err
	}
	return blob{
		desc: ocispec.Descriptor{Digest: sumDigest(blobHash), Size: counted.n},
		path: out.Name(),
	}, sumDigest(diffHash), nil
}

func sumDigest(h hash.Hash) digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
}

func jsonBlob(mediaType string, v any) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, err
	}
	return blob{
		desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))},
		data: data,
	}, nil
}

func writeBlob(tw *tar.Writer, b blob) error {
	name := "blobs/sha256/" + b.desc.Digest.Encoded()
	if b.path == "" {
		return writeTarFile(tw, name, b.data)
	}
	f, err := os.Open(b.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(fileHeader(name, b.desc.Size)); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err != nil {
		return err
	}
	if n != b.desc.Size {
		return fmt.Errorf("blob %s: staged %d bytes, expected %d", b.desc.Digest, n, b.desc.Size)
	}
	return nil
}

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(fileHeader(name, int64(len(data)))); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func fileHeader(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: archiveEpoch}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
