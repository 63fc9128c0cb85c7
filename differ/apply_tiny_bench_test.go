package differ

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BenchmarkApplyTinyLayer applies a layer of 20 small files (gzip), the
// kind a deep image stacks by the hundred, with the real converter and with
// containerd's own applier: what one layer costs besides its data.
func BenchmarkApplyTinyLayer(b *testing.B) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "opt/layer/", Mode: 0o755})
	for i := range 20 {
		body := bytes.Repeat([]byte(fmt.Sprintf("file %d\n", i)), 40)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("opt/layer/file-%02d", i), Mode: 0o644, Size: int64(len(body))})
		tw.Write(body)
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	f := newFixture(b)
	f.d = New(f.store, Config{})
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz.Bytes()), Size: int64(gz.Len())}
	if err := content.WriteBlob(context.Background(), f.store, "bench-tiny", bytes.NewReader(gz.Bytes()), desc); err != nil {
		b.Fatal(err)
	}
	benchAppliers(b, f, desc, false)
}
