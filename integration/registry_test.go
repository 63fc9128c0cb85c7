package integration

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ociRegistry is a read-only OCI distribution server over the images of an
// OCI layout archive, on 127.0.0.1 over plain HTTP: GET and HEAD of /v2/,
// /v2/<name>/manifests/<tag or digest> and /v2/<name>/blobs/<digest>,
// what a pull needs and nothing else. It serves every image of the
// archive under each repository name in repos (names may contain '/').
type ociRegistry struct {
	Host string // 127.0.0.1:PORT

	repos map[string]bool
	tags  map[string]ocispec.Descriptor // tag -> manifest or index
	blobs map[digest.Digest][]byte
	types map[digest.Digest]string // media types of manifests and indexes

	mu       sync.Mutex
	requests []string // "METHOD path status"
}

// startRegistry serves archive until the test ends. Tags are the
// org.opencontainers.image.ref.name annotations of the archive's index,
// the tag part of a full name ("docker.io/library/x:3layer" -> "3layer").
func startRegistry(t *testing.T, archive string, repos ...string) *ociRegistry {
	t.Helper()
	r := &ociRegistry{repos: map[string]bool{}, tags: map[string]ocispec.Descriptor{}, blobs: map[digest.Digest][]byte{}, types: map[digest.Digest]string{}}
	for _, n := range repos {
		r.repos[n] = true
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var index ocispec.Index
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch name := strings.TrimPrefix(h.Name, "./"); {
		case name == "index.json":
			if err := json.Unmarshal(b, &index); err != nil {
				t.Fatalf("%s: index.json: %v", archive, err)
			}
		case strings.HasPrefix(name, "blobs/sha256/") && h.Typeflag == tar.TypeReg:
			d := digest.FromBytes(b)
			if d.Encoded() != strings.TrimPrefix(name, "blobs/sha256/") {
				t.Fatalf("%s: %s does not match its digest %s", archive, name, d)
			}
			r.blobs[d] = b
		}
	}
	for _, m := range index.Manifests {
		ref := m.Annotations[ocispec.AnnotationRefName]
		if i := strings.LastIndex(ref, ":"); i >= 0 {
			ref = ref[i+1:]
		}
		if ref != "" {
			r.tags[ref] = m
		}
		r.types[m.Digest] = m.MediaType
	}
	if len(r.tags) == 0 {
		t.Fatalf("%s: no tagged image in index.json", archive)
	}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Requests returns the requests served so far ("GET /v2/... 200").
func (r *ociRegistry) Requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.requests...)
}

func (r *ociRegistry) serve(w http.ResponseWriter, req *http.Request) {
	status := r.handle(w, req)
	r.mu.Lock()
	r.requests = append(r.requests, fmt.Sprintf("%s %s %d", req.Method, req.URL.Path, status))
	r.mu.Unlock()
}

func (r *ociRegistry) handle(w http.ResponseWriter, req *http.Request) int {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return registryError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "read-only registry")
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if req.URL.Path == "/v2/" || req.URL.Path == "/v2" {
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
	rest, ok := strings.CutPrefix(req.URL.Path, "/v2/")
	if !ok {
		return registryError(w, http.StatusNotFound, "NAME_UNKNOWN", "not a registry path")
	}
	var name, kind, ref string
	for _, k := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(rest, k); i > 0 {
			name, kind, ref = rest[:i], strings.Trim(k, "/"), rest[i+len(k):]
			break
		}
	}
	if !r.repos[name] {
		return registryError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository "+name+" not known")
	}
	var d digest.Digest
	mediaType := "application/octet-stream"
	if desc, ok := r.tags[ref]; ok && kind == "manifests" {
		d = desc.Digest
	} else if p, err := digest.Parse(ref); err == nil {
		d = p
	} else {
		return registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "unknown tag "+ref)
	}
	if kind == "manifests" {
		mt, ok := r.types[d]
		if !ok {
			// A manifest an index names: its media type is in its body.
			var probe struct {
				MediaType string `json:"mediaType"`
			}
			if b, ok := r.blobs[d]; ok && json.Unmarshal(b, &probe) == nil && probe.MediaType != "" {
				mt = probe.MediaType
			} else {
				return registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "unknown manifest "+ref)
			}
		}
		mediaType = mt
	}
	b, ok := r.blobs[d]
	if !ok {
		code := "BLOB_UNKNOWN"
		if kind == "manifests" {
			code = "MANIFEST_UNKNOWN"
		}
		return registryError(w, http.StatusNotFound, code, d.String())
	}
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		w.Write(b)
	}
	return http.StatusOK
}

// registryError writes an OCI distribution error body.
func registryError(w http.ResponseWriter, status int, code, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	return status
}

// TestRegistryServesArchive: the registry answers what a pull asks, in
// the OCI distribution shape (digest and media type headers, HEAD without
// body, 404 with an error code for unknown names, tags and blobs).
func TestRegistryServesArchive(t *testing.T) {
	archive := differAsset(t, "debian-3layer.oci.tar")
	r := startRegistry(t, archive, "test/erofs")
	get := func(method, p string) (*http.Response, []byte) {
		req, err := http.NewRequest(method, "http://"+r.Host+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	if resp, _ := get("GET", "/v2/"); resp.StatusCode != 200 {
		t.Fatalf("/v2/: %s", resp.Status)
	}
	resp, body := get("GET", "/v2/test/erofs/manifests/3layer")
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != resp.Header.Get("Docker-Content-Digest") {
		t.Fatalf("manifest by tag: %s, digest header %q", resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
	var mf ocispec.Manifest
	if err := json.Unmarshal(body, &mf); err != nil || len(mf.Layers) != 3 || resp.Header.Get("Content-Type") != mf.MediaType {
		t.Fatalf("manifest: %v, %d layers, content type %q", err, len(mf.Layers), resp.Header.Get("Content-Type"))
	}
	if resp, b := get("HEAD", "/v2/test/erofs/blobs/"+mf.Layers[2].Digest.String()); resp.StatusCode != 200 || len(b) != 0 ||
		resp.Header.Get("Content-Length") != strconv.FormatInt(mf.Layers[2].Size, 10) {
		t.Errorf("HEAD blob: %s, %d body bytes, length %q", resp.Status, len(b), resp.Header.Get("Content-Length"))
	}
	if resp, b := get("GET", "/v2/test/erofs/blobs/"+mf.Config.Digest.String()); resp.StatusCode != 200 || digest.FromBytes(b) != mf.Config.Digest {
		t.Errorf("GET config blob: %s", resp.Status)
	}
	for _, p := range []string{"/v2/other/manifests/3layer", "/v2/test/erofs/manifests/nope", "/v2/test/erofs/blobs/" + digest.FromString("x").String()} {
		if resp, b := get("GET", p); resp.StatusCode != 404 || !strings.Contains(string(b), `"code"`) {
			t.Errorf("%s: %s %s", p, resp.Status, b)
		}
	}
	if resp, _ := get("PUT", "/v2/test/erofs/manifests/3layer"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %s", resp.Status)
	}
}
