package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// archiveReport is what verifyArchive learnt about a valid archive.
type archiveReport struct {
	Name    string // io.containerd.image.name of the (only) manifest
	Layers  []layerReport
	Config  ocispec.Image
	Entries int // entries of the archive tar itself
}

// layerReport describes one layer of a verified archive.
type layerReport struct {
	MediaType string
	Blob      digest.Digest
	BlobSize  int64
	DiffID    digest.Digest
	TarSize   int64
	Entries   int // tar entries in the uncompressed layer
}

func verifyCmd(args []string) error {
	if len(args) < 1 {
		return errors.New("need ARCHIVE [LAYER.tar ...]")
	}
	rep, err := verifyArchive(args[0], args[1:])
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s, %s/%s, %d layers\n", args[0], rep.Name, rep.Config.OS, rep.Config.Architecture, len(rep.Layers))
	for i, l := range rep.Layers {
		fmt.Printf("layer %d: diff_id %s tar %d bytes %d entries; blob %s %d bytes %s\n",
			i+1, l.DiffID, l.TarSize, l.Entries, l.Blob, l.BlobSize, l.MediaType)
	}
	return nil
}

// member locates one file inside the archive tar.
type member struct{ off, size int64 }

// verifyArchive checks an OCI layout archive the way an importer relies on
// it: oci-layout version, index → one manifest → config, every blob's size
// and sha256 equal to its descriptor, every layer decompressing (by its media
// type) to the diff ID the config lists, no blob unreferenced. With
// wantLayers (uncompressed tars, base first) it also checks that the image
// carries exactly those layers.
func verifyArchive(path string, wantLayers []string) (*archiveReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	members, err := indexTar(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rep := &archiveReport{Entries: len(members)}
	used := map[string]bool{}
	open := func(name string) (*io.SectionReader, error) {
		m, ok := members[name]
		if !ok {
			return nil, fmt.Errorf("%s: no entry %s", path, name)
		}
		used[name] = true
		return io.NewSectionReader(f, m.off, m.size), nil
	}
	readJSON := func(name string, v any) error {
		r, err := open(name)
		if err != nil {
			return err
		}
		if err := json.NewDecoder(r).Decode(v); err != nil {
			return fmt.Errorf("%s: %s: %w", path, name, err)
		}
		return nil
	}
	// openBlob returns the blob's reader after checking size and digest.
	openBlob := func(d ocispec.Descriptor) (*io.SectionReader, error) {
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%s: descriptor: %w", path, err)
		}
		name := "blobs/" + string(d.Digest.Algorithm()) + "/" + d.Digest.Encoded()
		r, err := open(name)
		if err != nil {
			return nil, err
		}
		if r.Size() != d.Size {
			return nil, fmt.Errorf("%s: %s is %d bytes, descriptor says %d", path, name, r.Size(), d.Size)
		}
		v := d.Digest.Verifier()
		if _, err := io.Copy(v, r); err != nil {
			return nil, err
		}
		if !v.Verified() {
			return nil, fmt.Errorf("%s: %s does not match its digest", path, name)
		}
		return io.NewSectionReader(r, 0, r.Size()), nil
	}

	var layout ocispec.ImageLayout
	if err := readJSON(ocispec.ImageLayoutFile, &layout); err != nil {
		return nil, err
	}
	if layout.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("%s: oci-layout version %q", path, layout.Version)
	}
	var index ocispec.Index
	if err := readJSON(ocispec.ImageIndexFile, &index); err != nil {
		return nil, err
	}
	if index.SchemaVersion != 2 || len(index.Manifests) != 1 {
		return nil, fmt.Errorf("%s: index: schemaVersion %d with %d manifests, want 2 with 1", path, index.SchemaVersion, len(index.Manifests))
	}
	md := index.Manifests[0]
	rep.Name = md.Annotations[annotationImageName]
	if md.MediaType != ocispec.MediaTypeImageManifest || rep.Name == "" {
		return nil, fmt.Errorf("%s: index entry: media type %q, name %q", path, md.MediaType, rep.Name)
	}
	mr, err := openBlob(md)
	if err != nil {
		return nil, err
	}
	var mf ocispec.Manifest
	if err := json.NewDecoder(mr).Decode(&mf); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", path, err)
	}
	if mf.MediaType != ocispec.MediaTypeImageManifest || mf.Config.MediaType != ocispec.MediaTypeImageConfig {
		return nil, fmt.Errorf("%s: manifest media types %q / config %q", path, mf.MediaType, mf.Config.MediaType)
	}
	cr, err := openBlob(mf.Config)
	if err != nil {
		return nil, err
	}
	if err := json.NewDecoder(cr).Decode(&rep.Config); err != nil {
		return nil, fmt.Errorf("%s: config: %w", path, err)
	}
	cfg := rep.Config
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.RootFS.Type != "layers" {
		return nil, fmt.Errorf("%s: config: os %q arch %q rootfs %q", path, cfg.OS, cfg.Architecture, cfg.RootFS.Type)
	}
	if len(cfg.RootFS.DiffIDs) != len(mf.Layers) || len(cfg.History) != len(mf.Layers) {
		return nil, fmt.Errorf("%s: %d layers, %d diff_ids, %d history entries", path, len(mf.Layers), len(cfg.RootFS.DiffIDs), len(cfg.History))
	}
	if wantLayers != nil && len(wantLayers) != len(mf.Layers) {
		return nil, fmt.Errorf("%s: %d layers, expected %d", path, len(mf.Layers), len(wantLayers))
	}
	for i, ld := range mf.Layers {
		lr, err := openBlob(ld)
		if err != nil {
			return nil, err
		}
		l, err := inspectLayer(lr, ld.MediaType)
		if err != nil {
			return nil, fmt.Errorf("%s: layer %d (%s): %w", path, i+1, ld.Digest, err)
		}
		l.Blob, l.BlobSize = ld.Digest, ld.Size
		if l.DiffID != cfg.RootFS.DiffIDs[i] {
			return nil, fmt.Errorf("%s: layer %d decompresses to %s, config diff_id %s", path, i+1, l.DiffID, cfg.RootFS.DiffIDs[i])
		}
		if wantLayers != nil {
			want, err := fileDigest(wantLayers[i])
			if err != nil {
				return nil, err
			}
			if want != l.DiffID {
				return nil, fmt.Errorf("%s: layer %d is %s, %s is %s", path, i+1, l.DiffID, wantLayers[i], want)
			}
		}
		rep.Layers = append(rep.Layers, l)
	}
	for name := range members {
		if strings.HasPrefix(name, "blobs/") && !strings.HasSuffix(name, "/") && !used[name] {
			return nil, fmt.Errorf("%s: unreferenced blob %s", path, name)
		}
	}
	return rep, nil
}

// indexTar maps each regular file of the tar to where its data lies. The
// tar reader consumes exactly the headers before returning from Next, so the
// offset of the underlying reader is the data offset.
func indexTar(f *os.File) (map[string]member, error) {
	cr := &countReader{r: f}
	tr := tar.NewReader(cr)
	members := map[string]member{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return members, nil
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if _, dup := members[name]; dup {
			return nil, fmt.Errorf("duplicate entry %s", name)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			members[name] = member{off: cr.n, size: hdr.Size}
		case tar.TypeDir:
			members[strings.TrimSuffix(name, "/")+"/"] = member{}
		default:
			return nil, fmt.Errorf("entry %s: type %q not expected in an image layout", name, hdr.Typeflag)
		}
	}
}

// inspectLayer decompresses a layer blob by media type and returns its diff
// ID, uncompressed size and entry count; the tar must parse to its end.
func inspectLayer(r io.Reader, mediaType string) (layerReport, error) {
	var plain io.Reader
	switch mediaType {
	case ocispec.MediaTypeImageLayerGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return layerReport{}, err
		}
		defer zr.Close()
		plain = zr
	case ocispec.MediaTypeImageLayerZstd:
		zr, err := zstd.NewReader(r)
		if err != nil {
			return layerReport{}, err
		}
		defer zr.Close()
		plain = zr
	case ocispec.MediaTypeImageLayer:
		plain = r
	default:
		return layerReport{}, fmt.Errorf("media type %q", mediaType)
	}
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(plain, h)}
	n, err := countEntries(cr)
	if err != nil {
		return layerReport{}, err
	}
	// Drain the zero blocks after the end marker: they are in the digest.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return layerReport{}, err
	}
	return layerReport{MediaType: mediaType, DiffID: sumDigest(h), TarSize: cr.n, Entries: n}, nil
}

func countEntries(r io.Reader) (int, error) {
	tr := tar.NewReader(r)
	n := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("after %d entries: %w", n, err)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return n, fmt.Errorf("%s: %w", hdr.Name, err)
		}
		n++
	}
}

func fileDigest(path string) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return digest.SHA256.FromReader(bufio.NewReaderSize(f, 1<<20))
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
