package integration

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// differRegistry serves the images of an OCI layout archive over the
// registry API (plain HTTP, read-only, just what containerd's resolver and
// fetcher call), so tests can pull: containerd unpacks layers in parallel
// only on pull, never on import.
//
// The repository is the last path element of the image name in the
// archive ("erofs-test" for docker.io/library/erofs-test:3layer); tags are
// the org.opencontainers.image.ref.name annotations.
func differRegistry(t *testing.T, archive string) (host string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[digest.Digest][]byte{}
	var index ocispec.Index
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.Name == "index.json":
			if err := json.Unmarshal(b, &index); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(h.Name, "blobs/sha256/") && h.Typeflag == tar.TypeReg:
			blobs[digest.NewDigestFromEncoded(digest.SHA256, strings.TrimPrefix(h.Name, "blobs/sha256/"))] = b
		}
	}
	tags := map[string]ocispec.Descriptor{}
	for _, m := range index.Manifests {
		tags[m.Annotations[ocispec.AnnotationRefName]] = m
	}
	mediaTypes := map[digest.Digest]string{}
	for _, m := range index.Manifests {
		mediaTypes[m.Digest] = m.MediaType
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		if len(parts) != 3 {
			http.NotFound(w, r)
			return
		}
		kind, ref := parts[1], parts[2]
		var d digest.Digest
		mt := "application/octet-stream"
		if desc, ok := tags[ref]; ok && kind == "manifests" {
			d, mt = desc.Digest, desc.MediaType
		} else if p, err := digest.Parse(ref); err == nil {
			d = p
			if m, ok := mediaTypes[d]; ok {
				mt = m
			}
		}
		b, ok := blobs[d]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", mt)
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
